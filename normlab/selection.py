"""Learning-rate summaries of a sweep: which runs converged, the max stable LR, the best LR, and the
LR shared by all variants of a dataset.

Definitions (documented in README, used by the report):
* a run *converges* when it did not diverge and its final training loss is below its initial one;
* ``max_stable_lr`` of a variant: the largest LR of the grid at which every seed converges;
* ``best_lr``: among LRs where every seed converges, the one with the lowest median final training
  loss (ties: the smaller LR);
* ``common_lr`` of a dataset: the smallest ``max_stable_lr`` over its variants, i.e. the largest LR
  at which every variant converges for every seed. If some variant never converges, the smallest LR
  of the grid, and ``common_lr_stable_everywhere`` is False.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd


def converged(runs: pd.DataFrame) -> pd.Series:
    return (~runs["diverged"].astype(bool)) & (runs["final_train_loss"] < runs["initial_train_loss"])


def variant_summary(runs: pd.DataFrame) -> dict:
    """Summary of one variant's runs (columns lr, seed, diverged, final_train_loss, initial_train_loss,
    test_accuracy, steps_to_target): max_stable_lr, best_lr (NaN if no LR is stable), and at the best
    LR the median / min / max over seeds of final_train_loss, test_accuracy and steps_to_target."""
    runs = runs.assign(converged=converged(runs))
    by_lr = runs.groupby("lr")
    stable = by_lr["converged"].all()
    stable_lrs = stable[stable].index
    out = {"max_stable_lr": float(stable_lrs.max()) if len(stable_lrs) else np.nan}
    if len(stable_lrs):
        med = by_lr["final_train_loss"].median().loc[stable_lrs]
        best = float(med[med == med.min()].index.min())
    else:
        best = np.nan
    out["best_lr"] = best
    at_best = runs[runs["lr"] == best]
    for col in ("final_train_loss", "test_accuracy", "steps_to_target"):
        vals = at_best[col].astype(float)
        out[f"{col}_median"] = float(vals.median()) if len(vals) else np.nan
        out[f"{col}_min"] = float(vals.min()) if len(vals) else np.nan
        out[f"{col}_max"] = float(vals.max()) if len(vals) else np.nan
    out["n_seeds"] = int(runs["seed"].nunique())
    out["n_lr_stable"] = int(len(stable_lrs))
    return out


def dataset_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per variant of one dataset (runs has a ``variant`` column plus the variant columns):
    the variant_summary plus common_lr and common_lr_stable_everywhere."""
    import pandas as pd  # here, not at the top: the analyze job uses run_lr and need not import pandas

    keys = ["dataset", "variant", "input", "norm", "depth"]
    rows = [{**dict(zip(keys, k, strict=True)), **variant_summary(g)} for k, g in runs.groupby(keys, sort=True)]
    table = pd.DataFrame(rows)
    everywhere = bool(table["max_stable_lr"].notna().all())
    common = float(table["max_stable_lr"].min()) if everywhere else float(runs["lr"].min())
    table["common_lr"] = common
    table["common_lr_stable_everywhere"] = everywhere
    return table


def run_lr(summary_row, run: str, lrs) -> float:
    """The LR of the ``common`` or ``best`` analysis run of a variant (summary_row: a row of
    variants.csv, a pandas Series or a dict); a variant with no stable LR uses
    the smallest LR of the grid for ``best`` (it is then flagged in the tables)."""
    lr = summary_row["common_lr"] if run == "common" else summary_row["best_lr"]
    return float(min(lrs)) if not np.isfinite(lr) else float(lr)
