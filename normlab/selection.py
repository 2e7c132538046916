"""Learning-rate and outcome summaries of a dataset's sweeps: which runs converged, the max stable LR
(resolved inside a grid step), the best and common LRs, and each arm's outcome and speed at its best LR.

Definitions (documented in README, used by the report):
* a run *converges* when it did not diverge and its final training loss (evaluation set) is below its
  initial one (``run_converged``);
* grid runs (``grid`` True in runs.csv) are the LR grid x seeds; refinement runs (``grid`` False) are the
  extra LRs trained inside each seed's max-stable bracket (``refinement_lrs``). Only the max stable LR
  reads refinement runs; every other figure here reads grid runs only;
* a seed's ``max_stable_lr``: its bracket's lower end is its largest converged grid LR; going up from it
  through every LR run for the seed (grid and refinement), the first non-converged LR is
  ``max_stable_lr_upper`` and the LR just below it is ``max_stable_lr`` (``max_stable_bracket``). A seed
  converged at the largest grid LR has that LR and no upper (NaN); a seed with no converged grid LR has
  neither (NaN, NaN; ``stable_lr_found`` False);
* ``max_stable_grid_lr``: the largest grid LR at which every seed converges. A variant's
  ``max_stable_lr``: the smallest seed ``max_stable_lr`` (each seed's bracket lies at or above it; where a
  seed's stability is monotone in the LR up to its bracket, every seed is stable up to it), NaN when no
  grid LR is stable for every seed (``stable_lr_found`` False); its ``max_stable_lr_upper``: the
  smallest seed upper, i.e. the smallest LR known unstable above it (NaN when every seed converged at
  the largest grid LR);
* ``best_lr``: among grid LRs where every seed converges, the one with the lowest median final training
  loss (ties: the smaller LR); a seed's own ``best_lr`` is its converged grid LR of lowest final loss;
* ``common_lr`` of a dataset: the smallest ``max_stable_grid_lr`` over its variants, i.e. the largest grid
  LR at which every variant converges for every seed. If some variant never converges, the smallest LR of
  the grid, and ``common_lr_stable_everywhere`` is False. The variants of depth 0 are left out of that
  computation: the common LR is where the networks' arms are compared, and a depth-0 model (no hidden
  layer, one arm per input treatment) takes no part in that comparison, while on raw inputs its stable LR
  follows the inputs' scale and would pull every network's common LR down. The values computed from the
  other variants are given to every row, depth 0 included. A dataset whose variants are all of depth 0
  computes them from those (``dataset_common_lr``);
* a *case* is (dataset, depth, input); its arms are the norms (one arm at depth 0, ``none``, and for an
  input treatment trained with one norm only, e.g. ``batchnorm``). ``matched_level``: the largest best-LR
  median final training loss among the case's arms; ``case_target`` = 2 x matched_level;
* speed, per seed at the variant's best LR, on the *smoothed mini-batch loss* (``smoothed_batch_loss``:
  trailing mean over a window of ``smoothing_window`` steps, about one epoch's batches; the steps from a
  run's divergence step on never count): ``steps_to_case_target`` = the first step whose smoothed loss is
  <= case_target (NaN: never); ``loss_at_<p>pct`` = the smoothed loss at the last step of the first p% of
  the steps (``loss_at_fraction``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

# Consecutive LRs of a refined bracket differ by at most this factor (before rounding to 4 significant
# digits), so max_stable_lr_upper / max_stable_lr <= 1.15 with room for the rounding: no LR rule may use a
# threshold finer than that.
REFINE_MAX_RATIO = 1.13
# Budgets of the loss_at_<p>pct columns, as fractions of the steps.
BUDGETS = {"loss_at_10pct": 0.1, "loss_at_30pct": 0.3, "loss_at_100pct": 1.0}
# Outcome columns summarised over seeds at the best LR in variants.csv (<x>_median, <x>_min, <x>_max).
SPREAD_COLUMNS = ("final_train_loss", "test_accuracy", "steps_to_target", "steps_to_case_target", *BUDGETS)
ID_KEYS = ["dataset", "variant", "input", "norm", "depth"]
CASE_KEYS = ["dataset", "depth", "input"]


def run_converged(diverged, initial_loss, final_loss) -> np.ndarray:
    """Per run: not diverged and final loss < initial loss (arrays of one length; a NaN loss fails)."""
    return ~np.asarray(diverged, bool) & (np.asarray(final_loss, float) < np.asarray(initial_loss, float))


def converged(runs: pd.DataFrame) -> pd.Series:
    """``run_converged`` of a runs table's rows."""
    import pandas as pd

    return pd.Series(run_converged(runs["diverged"].astype(bool), runs["initial_train_loss"],
                                   runs["final_train_loss"]), index=runs.index)


def _round4(x: np.ndarray) -> np.ndarray:
    return np.array([float(f"{v:.4g}") for v in np.atleast_1d(x)], np.float64)


def refinement_lrs(grid_lrs, converged_at, max_ratio: float = REFINE_MAX_RATIO) -> np.ndarray:
    """The LRs (ascending) to train inside one seed's bracket: lower = its largest converged grid LR,
    upper = the next grid LR above it; n = ceil(log(upper/lower) / log(max_ratio)) - 1 log-spaced points
    strictly between them, rounded to 4 significant digits, so that consecutive LRs of lower, points,
    upper differ by at most ``max_ratio`` (7 points, 1.127x, for a grid step of 10^(5/12) = 2.61x). Empty
    when no grid LR converged or the largest grid LR did. grid_lrs (n_lr,), converged_at (n_lr,) bool,
    in any order."""
    lrs = np.asarray(grid_lrs, np.float64)
    conv = np.asarray(converged_at, bool)
    if not conv.any():
        return np.empty(0)
    lower = lrs[conv].max()
    above = lrs[lrs > lower]
    if not len(above):
        return np.empty(0)
    upper = above.min()
    n = max(0, math.ceil(math.log(upper / lower) / math.log(max_ratio) - 1e-9) - 1)
    points = _round4(lower * (upper / lower) ** (np.arange(1, n + 1) / (n + 1)))
    return np.unique(points[(points > lower) & (points < upper)])


def max_stable_bracket(lrs, converged_at, grid) -> tuple[float, float]:
    """(max_stable_lr, max_stable_lr_upper) of one seed from every run of it: lrs, converged_at and grid
    (bool: a grid LR) of shape (n,), any order. Lower end: the largest converged grid LR; going up from it
    through every LR run, upper = the first non-converged LR and max = the LR just below it. (lower, NaN)
    when nothing above lower failed; (NaN, NaN) when no grid LR converged."""
    lrs = np.asarray(lrs, np.float64)
    conv, grid = np.asarray(converged_at, bool), np.asarray(grid, bool)
    stable_grid = lrs[grid & conv]
    if not len(stable_grid):
        return np.nan, np.nan
    lower = stable_grid.max()
    # above the lower end, an LR run twice counts as unstable if either run failed
    distinct = np.unique(lrs[lrs > lower])
    ok = np.array([conv[lrs == v].all() for v in distinct], bool)
    ladder = np.concatenate([[lower], distinct])
    bad = np.flatnonzero(~ok)
    if not len(bad):
        return float(ladder[-1]), np.nan
    return float(ladder[bad[0]]), float(ladder[bad[0] + 1])


def seed_best_lr(lrs, converged_at, final_loss) -> float:
    """One seed's best LR over its grid runs (lrs, converged_at, final_loss of shape (n,)): the converged
    LR of lowest final loss (ties: the smaller LR); NaN when none converged."""
    lrs, conv, final = np.asarray(lrs, np.float64), np.asarray(converged_at, bool), np.asarray(final_loss, float)
    if not conv.any():
        return np.nan
    best = final[conv].min()
    return float(lrs[conv & (final == best)].min())


def smoothing_window(batches_per_epoch: int, steps: int) -> int:
    """Width (steps) of the trailing mean of ``smoothed_batch_loss``: one epoch's batches, at most a
    twentieth of the steps (so that the 10% budget averages over its own steps), at least 1."""
    return int(max(1, min(int(batches_per_epoch), int(steps) // 20)))


def smoothed_batch_loss(batch_loss, window: int, diverged_step: int = -1) -> np.ndarray:
    """Trailing mean (steps,) of one run's mini-batch losses (steps,): value t is the mean of the losses
    of steps max(0, t - window + 1) .. t (fewer at the start), each window summed on its own (no running
    sum whose rounding would carry over). From a diverged run's divergence step on (diverged_step >= 0)
    the values are NaN: those steps never count."""
    x = np.asarray(batch_loss, np.float64)
    w = max(1, int(window))
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([np.zeros(w - 1), x]), w)
    out = windows.sum(axis=1) / np.minimum(np.arange(1, len(x) + 1), w)
    if diverged_step is not None and int(diverged_step) >= 0:
        out[int(diverged_step):] = np.nan
    return out


def steps_to_level(smoothed, level: float) -> float:
    """The first step t with smoothed[t] <= level (NaN values never count); NaN when none."""
    hit = np.flatnonzero(np.asarray(smoothed, float) <= level)
    return float(hit[0]) if len(hit) else np.nan


def loss_at_fraction(smoothed, fraction: float) -> float:
    """The smoothed loss at step ceil(fraction x steps) - 1: the last mini-batch of the first ``fraction``
    of the steps (steps = len(smoothed); fraction 1: the last step)."""
    n = len(smoothed)
    t = min(n - 1, max(0, math.ceil(fraction * n - 1e-9) - 1))
    return float(np.asarray(smoothed, float)[t])


def dataset_common_lr(max_stable_grid_lr, depth, smallest_lr: float) -> tuple[float, bool]:
    """(common_lr, common_lr_stable_everywhere) of a dataset from its variants' ``max_stable_grid_lr`` (n,)
    (NaN: no grid LR stable for every seed) and ``depth`` (n,): over the variants of depth > 0 (all of them
    when every one has depth 0), the smallest max_stable_grid_lr and True, or ``smallest_lr`` (the grid's
    smallest LR) and False when one of them has none."""
    lrs, depth = np.asarray(max_stable_grid_lr, float), np.asarray(depth)
    pool = lrs[depth != 0] if (depth != 0).any() else lrs
    if np.isnan(pool).any():
        return float(smallest_lr), False
    return float(pool.min()), True


def _grid_rows(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["grid"].astype(bool)] if "grid" in runs else runs


def _seed_order(runs: pd.DataFrame) -> list:
    """The seeds in the order of the grid rows (the config's order: rows are lr-major, seed-minor)."""
    return list(dict.fromkeys(_grid_rows(runs)["seed"].tolist()))


def _spread(values, prefix: str, never_last: bool = False) -> dict:
    """{prefix_median, prefix_min, prefix_max} over seeds, NaN values skipped (all NaN: NaN). never_last: a
    NaN means "never" and ranks after every value: it raises the median and max (NaN when it decides
    them) and leaves the min to the values that exist."""
    v = np.asarray(values, float)
    if never_last:
        v = np.where(np.isnan(v), np.inf, v)
        med, lo, hi = (float(np.median(v)), float(v.min()), float(v.max())) if len(v) else (np.inf,) * 3
        stats = [x if np.isfinite(x) else np.nan for x in (med, lo, hi)]
    else:
        ok = v[~np.isnan(v)]
        stats = [float(np.median(ok)), float(ok.min()), float(ok.max())] if len(ok) else [np.nan] * 3
    return dict(zip((f"{prefix}_median", f"{prefix}_min", f"{prefix}_max"), stats, strict=True))


def seed_summaries(runs: pd.DataFrame) -> list[dict]:
    """One dict per seed of one variant's runs (grid and refinement rows), in config order: seed,
    stable_lr_found, max_stable_lr, max_stable_lr_upper (``max_stable_bracket``), best_lr (the seed's own
    best grid LR, ``seed_best_lr``)."""
    conv = converged(runs).to_numpy()
    grid = runs["grid"].astype(bool).to_numpy() if "grid" in runs else np.ones(len(runs), bool)
    out = []
    for s in _seed_order(runs):
        m = (runs["seed"] == s).to_numpy()
        lo, up = max_stable_bracket(runs["lr"].to_numpy()[m], conv[m], grid[m])
        g = m & grid
        out.append({"seed": s, "stable_lr_found": bool(np.isfinite(lo)), "max_stable_lr": lo,
                    "max_stable_lr_upper": up,
                    "best_lr": seed_best_lr(runs["lr"].to_numpy()[g], conv[g], runs["final_train_loss"].to_numpy()[g])})
    return out


def variant_summary(runs: pd.DataFrame) -> dict:
    """LR summary of one variant's runs (columns lr, seed, grid (absent: every row is a grid run),
    diverged, initial_train_loss, final_train_loss, test_accuracy, steps_to_target): max_stable_lr,
    max_stable_lr_upper, stable_lr_found, max_stable_grid_lr, best_lr (NaN if no grid LR is stable for
    every seed), n_seeds, n_lr_stable (grid LRs stable for every seed), and at the best LR the median / min
    / max over seeds of final_train_loss, test_accuracy and steps_to_target (see the module docstring)."""
    grid = _grid_rows(runs).assign(converged=converged(_grid_rows(runs)))
    by_lr = grid.groupby("lr")
    stable = by_lr["converged"].all()
    stable_lrs = stable[stable].index
    seeds = seed_summaries(runs)
    los = np.array([s["max_stable_lr"] for s in seeds])
    ups = np.array([s["max_stable_lr_upper"] for s in seeds])
    found = bool(len(stable_lrs)) and bool(np.isfinite(los).all())
    out = {"max_stable_lr": float(los.min()) if found else np.nan,
           "max_stable_lr_upper": float(np.nanmin(ups)) if found and np.isfinite(ups).any() else np.nan,
           "stable_lr_found": found,
           "max_stable_grid_lr": float(stable_lrs.max()) if len(stable_lrs) else np.nan}
    if len(stable_lrs):
        med = by_lr["final_train_loss"].median().loc[stable_lrs]
        best = float(med[med == med.min()].index.min())
    else:
        best = np.nan
    out["best_lr"] = best
    at_best = grid[grid["lr"] == best]
    for col in ("final_train_loss", "test_accuracy", "steps_to_target"):
        out.update(_spread(at_best[col].astype(float), col))
    out["n_seeds"] = len(seeds)
    out["n_lr_stable"] = int(len(stable_lrs))
    return out


def _curve_row(curves: Mapping | None, variant: str, lr: float, seed) -> tuple[np.ndarray, int, int] | None:
    """(batch_loss (steps,), diverged_step, batches_per_epoch) of the grid run (lr, seed) of a variant, from
    curves[variant] (its sweep.npz arrays: lr, seed, batch_loss, diverged_step, batches_per_epoch); None
    when absent."""
    if curves is None or variant not in curves or not np.isfinite(lr):
        return None
    c = curves[variant]
    rows = np.flatnonzero(np.isclose(np.asarray(c["lr"], float), lr, rtol=1e-9, atol=0)
                          & (np.asarray(c["seed"]) == seed))
    if not len(rows):
        return None
    r = int(rows[0])
    per_epoch = int(np.asarray(c["batches_per_epoch"]))
    return np.asarray(c["batch_loss"])[r], int(np.asarray(c["diverged_step"])[r]), per_epoch


def speed_at(batch_loss, diverged_step: int, batches_per_epoch: int, case_target: float) -> dict:
    """steps_to_case_target and the loss_at_<p>pct budgets of one run's mini-batch losses (steps,)."""
    smooth = smoothed_batch_loss(batch_loss, smoothing_window(batches_per_epoch, len(batch_loss)), diverged_step)
    out = {"steps_to_case_target": steps_to_level(smooth, case_target) if np.isfinite(case_target) else np.nan}
    out.update({name: loss_at_fraction(smooth, f) for name, f in BUDGETS.items()})
    return out


def dataset_summary(runs: pd.DataFrame, curves: Mapping[str, Mapping] | None = None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(variants, variant_seeds) tables of one dataset (see the module docstring for every column).

    runs: every variant's runs.csv rows (ids + ``variant_summary``'s columns; grid and refinement rows).
    curves: {variant name: its sweep.npz arrays (at least lr, seed, batch_loss (R, steps), diverged_step,
    batches_per_epoch)}; a variant missing from it (or curves None) gets NaN speed columns.

    variants: one row per variant, ids first: max_stable_lr, max_stable_lr_upper, stable_lr_found,
    max_stable_grid_lr, best_lr, common_lr, common_lr_stable_everywhere, n_seeds, n_lr_stable,
    <x>_median|_min|_max for x in ``SPREAD_COLUMNS`` (steps_to_case_target: a seed that never reaches the
    target ranks last; the median and max are NaN when such a seed decides them),
    n_seeds_reached_case_target, case_target, matched_level.
    variant_seeds: one row per variant x seed (config order), ids first: seed, stable_lr_found,
    max_stable_lr, max_stable_lr_upper, best_lr (the seed's own), final_train_loss, test_accuracy (at the
    variant's best LR), steps_to_case_target, case_target, loss_at_10pct, loss_at_30pct, loss_at_100pct,
    matched_level. A variant with no stable grid LR has best_lr NaN and NaN outcome and speed columns.
    """
    import pandas as pd  # here, not at the top: the analyze job uses run_lr and need not import pandas

    vrows, srows = [], []
    for key, g in runs.groupby(ID_KEYS, sort=True):
        ids = dict(zip(ID_KEYS, key, strict=True))
        summary = variant_summary(g)
        grid = _grid_rows(g)
        for s in seed_summaries(g):
            at = grid[(grid["seed"] == s["seed"]) & (grid["lr"] == summary["best_lr"])]
            final = float(at["final_train_loss"].iloc[0]) if len(at) else np.nan
            acc = float(at["test_accuracy"].iloc[0]) if len(at) else np.nan
            srows.append({**ids, **s, "final_train_loss": final, "test_accuracy": acc})
        vrows.append({**ids, **summary})
    variants_t, seeds_t = pd.DataFrame(vrows), pd.DataFrame(srows)

    common, everywhere = dataset_common_lr(variants_t["max_stable_grid_lr"], variants_t["depth"],
                                           float(_grid_rows(runs)["lr"].min()))
    variants_t["common_lr"] = common
    variants_t["common_lr_stable_everywhere"] = everywhere
    level = variants_t.groupby(CASE_KEYS)["final_train_loss_median"].transform("max")  # NaN skipped; all NaN: NaN
    variants_t["matched_level"] = level
    variants_t["case_target"] = 2.0 * level

    by_variant = variants_t.set_index("variant")
    speed = []
    for _, row in seeds_t.iterrows():
        v = by_variant.loc[row["variant"]]
        curve = _curve_row(curves, row["variant"], float(v["best_lr"]), row["seed"])
        got = speed_at(*curve, float(v["case_target"])) if curve is not None else {}
        speed.append({k: got.get(k, np.nan) for k in ("steps_to_case_target", *BUDGETS)})
    speed = pd.DataFrame(speed, index=seeds_t.index, columns=["steps_to_case_target", *BUDGETS], dtype=float)
    seeds_t = pd.concat([seeds_t, speed], axis=1)
    seeds_t["case_target"] = seeds_t["variant"].map(by_variant["case_target"])
    seeds_t["matched_level"] = seeds_t["variant"].map(by_variant["matched_level"])

    extra = []
    for variant in variants_t["variant"]:
        s = seeds_t[seeds_t["variant"] == variant]
        row = _spread(s["steps_to_case_target"], "steps_to_case_target", never_last=True)
        for name in BUDGETS:
            row.update(_spread(s[name], name))
        row["n_seeds_reached_case_target"] = int(s["steps_to_case_target"].notna().sum())
        extra.append(row)
    variants_t = pd.concat([variants_t, pd.DataFrame(extra, index=variants_t.index)], axis=1)

    spread = [f"{x}_{stat}" for x in SPREAD_COLUMNS for stat in ("median", "min", "max")]
    variant_columns = [*ID_KEYS, "max_stable_lr", "max_stable_lr_upper", "stable_lr_found", "max_stable_grid_lr",
                       "best_lr", "common_lr", "common_lr_stable_everywhere", "n_seeds", "n_lr_stable", *spread,
                       "n_seeds_reached_case_target", "case_target", "matched_level"]
    seed_columns = [*ID_KEYS, "seed", "stable_lr_found", "max_stable_lr", "max_stable_lr_upper", "best_lr",
                    "final_train_loss", "test_accuracy", "steps_to_case_target", "case_target", *BUDGETS,
                    "matched_level"]
    return variants_t[variant_columns].reset_index(drop=True), seeds_t[seed_columns].reset_index(drop=True)


def run_lr(summary_row, run: str, lrs) -> float:
    """The LR of the ``common`` or ``best`` analysis run of a variant (summary_row: a row of
    variants.csv, a pandas Series or a dict); a variant with no stable LR uses
    the smallest LR of the grid for ``best`` (it is then flagged in the tables)."""
    lr = summary_row["common_lr"] if run == "common" else summary_row["best_lr"]
    return float(min(lrs)) if not np.isfinite(lr) else float(lr)
