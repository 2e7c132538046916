"""Tidy tables from a trained sweep. Every table starts with the columns
``dataset, variant, input, norm, depth`` (the ``ids``), then its own long-format columns."""

from __future__ import annotations

import numpy as np
import pandas as pd

ID_COLUMNS = ["dataset", "variant", "input", "norm", "depth"]


def with_ids(ids: dict, df: pd.DataFrame) -> pd.DataFrame:
    """Prepend the id columns (constant over df) in the fixed order."""
    front = pd.DataFrame({k: [ids[k]] * len(df) for k in ID_COLUMNS}, index=df.index)
    return pd.concat([front, df], axis=1)


def runs_table(ids: dict, sweep: dict) -> pd.DataFrame:
    """runs.csv rows: one per (lr, seed)."""
    df = pd.DataFrame({
        "lr": sweep["lr"], "seed": sweep["seed"], "diverged": sweep["diverged"].astype(bool),
        "diverged_step": np.where(sweep["diverged"], sweep["diverged_step"], np.nan),
        "initial_train_loss": sweep["train_loss"][:, 0], "final_train_loss": sweep["final_train_loss"],
        "test_accuracy": sweep["test_accuracy"], "test_loss": sweep["test_loss"],
        "steps_to_target": sweep["steps_to_target"],
    })
    return with_ids(ids, df)


def training_table(ids: dict, sweep: dict) -> pd.DataFrame:
    """training.csv rows: one per (lr, seed, logged step); ``frozen`` marks steps after divergence."""
    R, T = sweep["train_loss"].shape
    step = np.tile(sweep["step"], R)
    # int64 before the sentinel: with the int32 diverged_step, numpy would wrap int64 max to -1 (every step frozen)
    div_step = np.repeat(np.where(sweep["diverged"], np.asarray(sweep["diverged_step"], np.int64),
                                  np.iinfo(np.int64).max), T)
    df = pd.DataFrame({
        "lr": np.repeat(sweep["lr"], T), "seed": np.repeat(sweep["seed"], T), "step": step,
        "train_loss": sweep["train_loss"].reshape(-1), "frozen": step > div_step,
    })
    return with_ids(ids, df)


def gradients_table(ids: dict, sweep: dict, run_rows: dict[str, int]) -> pd.DataFrame:
    """gradients.csv rows for the analysis runs: run (common|best), step, layer, metric
    (grad_norm | relative_grad_norm), value. run_rows maps the run name to its row in the sweep."""
    parts = []
    for run, r in run_rows.items():
        for metric in ("grad_norm", "relative_grad_norm"):
            vals = sweep[metric][r]  # (T, L)
            T, L = vals.shape
            parts.append(pd.DataFrame({
                "run": run, "lr": sweep["lr"][r], "seed": sweep["seed"][r],
                "step": np.repeat(sweep["step"], L), "layer": np.tile(np.arange(1, L + 1), T),
                "metric": metric, "value": vals.reshape(-1),
            }))
    return with_ids(ids, pd.concat(parts, ignore_index=True))


def long_rows(ids: dict, rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """A table from a list of dicts, with the id columns first and ``columns`` in order."""
    return with_ids(ids, pd.DataFrame(rows, columns=columns))
