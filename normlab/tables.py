"""Tidy tables from a trained sweep. Every table starts with the columns
``dataset, variant, input, norm, depth`` (the ``ids``), then its own long-format columns.

A table here is a column mapping ``{name: 1-D numpy array}``, all of one length, in column order:
``pandas.DataFrame(table)`` is the frame, and ``io.write_csv`` writes it byte for byte as pandas'
``to_csv(index=False)`` would. Building them needs no pandas, so the jobs that only write tables
(train, analyze) do not pay for importing it.
"""

from __future__ import annotations

import numbers

import numpy as np

ID_COLUMNS = ["dataset", "variant", "input", "norm", "depth"]
# The per-layer metrics of gradients.csv, in row order: the sweep arrays of the same names (``train.weight_log``).
GRADIENT_METRICS = ("grad_norm", "relative_grad_norm", "weight_norm", "effective_lr")
GRADIENT_NORMS = ("grad_norm", "relative_grad_norm")  # measured at the steps flagged by GRADIENT_STEPS only
GRADIENT_STEPS = "grad_step"  # the sweep's (T,) flags of the evaluation steps where the gradient was measured

Table = dict[str, np.ndarray]


def n_rows(table: Table) -> int:
    return len(next(iter(table.values()))) if table else 0


def with_ids(ids: dict, table: Table) -> Table:
    """Prepend the id columns (constant over the table) in the fixed order."""
    n = n_rows(table)
    front = {k: np.array([ids[k]] * n) if n else np.array([], type(ids[k])) for k in ID_COLUMNS}
    return {**front, **table}


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_, numbers.Integral))
                         and np.isnan(v))


def column(values: list) -> np.ndarray:
    """One column from Python / numpy scalars, typed as pandas types a column built from them: all
    booleans -> bool; all numbers (a missing value, None or NaN, allowed) -> int64 if all integers and
    none missing, else float64; anything else -> object (missing values stay None)."""
    present = [v for v in values if not _is_missing(v)]
    if values and len(present) == len(values) and all(isinstance(v, (bool, np.bool_)) for v in values):
        return np.array(values, bool)
    if all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in present):
        if len(present) == len(values) and all(isinstance(v, numbers.Integral) for v in values):
            return np.array(values, np.int64)
        return np.array([np.nan if _is_missing(v) else float(v) for v in values], np.float64)
    out = np.empty(len(values), object)
    out[:] = [None if _is_missing(v) else v for v in values]
    return out


def concat(tables: list[Table]) -> Table:
    """Rows of several tables with the same columns, in order."""
    return {k: np.concatenate([np.asarray(t[k]) for t in tables]) for k in tables[0]}


def runs_table(ids: dict, sweep: dict, grid: bool = True) -> Table:
    """runs.csv rows: one per run (lr, seed) of a ``train.train_runs`` result; ``grid``: True for the
    runs of the LR grid, False for the refinement runs inside a max-stable bracket. initial_train_loss and
    final_train_loss are evaluation-set losses (after 0 and after all updates); train_mode_loss and
    test_mode_loss the evaluation-set loss at the end in training mode (mean over batch-size chunks, each
    with its own batch statistics) and in test mode (fixed statistics), NaN for a model without batch
    statistics and for a diverged run (``train.final_metrics``)."""
    n = len(sweep["lr"])
    table = {
        "lr": sweep["lr"], "seed": sweep["seed"], "grid": np.full(n, bool(grid)),
        "diverged": sweep["diverged"].astype(bool),
        "diverged_step": np.where(sweep["diverged"], sweep["diverged_step"], np.nan),
        "initial_train_loss": sweep["train_loss"][:, 0], "final_train_loss": sweep["final_train_loss"],
        "test_accuracy": sweep["test_accuracy"], "test_loss": sweep["test_loss"],
        "steps_to_target": sweep["steps_to_target"],
        "train_mode_loss": sweep["train_mode_loss"], "test_mode_loss": sweep["test_mode_loss"],
    }
    return with_ids(ids, {k: np.asarray(v) for k, v in table.items()})


def training_table(ids: dict, sweep: dict) -> Table:
    """training.csv rows: one per (lr, seed, step) for step = 0 .. steps of every run of a sweep.
    ``train_loss``: the mini-batch loss of that step (batch ``step`` at the parameters after ``step``
    updates; NaN at step = steps, where no batch follows); ``eval_loss``: the evaluation-set loss after
    ``step`` updates at the steps of the evaluation schedule (``sweep["eval_step"]``), NaN at the others;
    ``frozen`` marks the steps after the run's divergence step."""
    batch = np.asarray(sweep["batch_loss"])
    R, n_steps = batch.shape
    S = n_steps + 1
    step = np.tile(np.arange(S, dtype=np.int64), R)
    train_loss = np.concatenate([batch, np.full((R, 1), np.nan, batch.dtype)], axis=1)
    eval_loss = np.full((R, S), np.nan)
    eval_loss[:, np.asarray(sweep["eval_step"], np.int64)] = sweep["train_loss"]
    # int64 before the sentinel: with the int32 diverged_step, numpy would wrap int64 max to -1 (every step frozen)
    div_step = np.repeat(np.where(sweep["diverged"], np.asarray(sweep["diverged_step"], np.int64),
                                  np.iinfo(np.int64).max), S)
    table = {
        "lr": np.repeat(sweep["lr"], S), "seed": np.repeat(sweep["seed"], S), "step": step,
        "train_loss": train_loss.reshape(-1), "eval_loss": eval_loss.reshape(-1), "frozen": step > div_step,
    }
    return with_ids(ids, {k: np.asarray(v) for k, v in table.items()})


def gradients_table(ids: dict, sweep: dict, run_rows) -> Table:
    """gradients.csv rows for the analysis runs: run (common|best), lr, seed, step (the evaluation
    schedule, ``sweep["step"]``; for grad_norm and relative_grad_norm the steps of it flagged by
    ``sweep["grad_step"]``, where the gradient was measured), layer, metric (``GRADIENT_METRICS``: grad_norm |
    relative_grad_norm | weight_norm | effective_lr, the sweep's (R, T, L) arrays; effective_lr is NaN for a
    layer without scale-invariant weights), value. run_rows: the
    (run name, row of the sweep) pairs, as a mapping {run: row} or an iterable of pairs (one per run and
    seed); rows in that order."""
    pairs = run_rows.items() if hasattr(run_rows, "items") else run_rows
    steps = np.asarray(sweep["step"])
    every = np.ones(len(steps), bool)
    # the gradient's norms only at the steps where it was measured (all of them in a sweep without the flags)
    measured = np.asarray(sweep[GRADIENT_STEPS], bool) if GRADIENT_STEPS in sweep else every
    parts = []
    for run, r in pairs:
        for metric in GRADIENT_METRICS:
            keep = measured if metric in GRADIENT_NORMS else every
            vals = np.asarray(sweep[metric][r])[keep]  # (T', L)
            T, L = vals.shape
            n = T * L
            parts.append({
                "run": np.array([run] * n), "lr": np.full(n, sweep["lr"][r]), "seed": np.full(n, sweep["seed"][r]),
                "step": np.repeat(steps[keep], L), "layer": np.tile(np.arange(1, L + 1), T),
                "metric": np.array([metric] * n), "value": vals.reshape(-1),
            })
    return with_ids(ids, concat(parts))


def long_rows(ids: dict, rows: list[dict], columns: list[str]) -> Table:
    """A table from a list of dicts, with the id columns first and ``columns`` in order (a key absent
    from a row is a missing value)."""
    return with_ids(ids, {c: column([r.get(c) for r in rows]) for c in columns})
