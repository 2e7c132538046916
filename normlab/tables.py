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


def runs_table(ids: dict, sweep: dict) -> Table:
    """runs.csv rows: one per (lr, seed)."""
    table = {
        "lr": sweep["lr"], "seed": sweep["seed"], "diverged": sweep["diverged"].astype(bool),
        "diverged_step": np.where(sweep["diverged"], sweep["diverged_step"], np.nan),
        "initial_train_loss": sweep["train_loss"][:, 0], "final_train_loss": sweep["final_train_loss"],
        "test_accuracy": sweep["test_accuracy"], "test_loss": sweep["test_loss"],
        "steps_to_target": sweep["steps_to_target"],
    }
    return with_ids(ids, {k: np.asarray(v) for k, v in table.items()})


def training_table(ids: dict, sweep: dict) -> Table:
    """training.csv rows: one per (lr, seed, logged step); ``frozen`` marks steps after divergence."""
    R, T = sweep["train_loss"].shape
    step = np.tile(sweep["step"], R)
    # int64 before the sentinel: with the int32 diverged_step, numpy would wrap int64 max to -1 (every step frozen)
    div_step = np.repeat(np.where(sweep["diverged"], np.asarray(sweep["diverged_step"], np.int64),
                                  np.iinfo(np.int64).max), T)
    table = {
        "lr": np.repeat(sweep["lr"], T), "seed": np.repeat(sweep["seed"], T), "step": step,
        "train_loss": sweep["train_loss"].reshape(-1), "frozen": step > div_step,
    }
    return with_ids(ids, {k: np.asarray(v) for k, v in table.items()})


def gradients_table(ids: dict, sweep: dict, run_rows: dict[str, int]) -> Table:
    """gradients.csv rows for the analysis runs: run (common|best), step, layer, metric
    (grad_norm | relative_grad_norm), value. run_rows maps the run name to its row in the sweep."""
    parts = []
    for run, r in run_rows.items():
        for metric in ("grad_norm", "relative_grad_norm"):
            vals = sweep[metric][r]  # (T, L)
            T, L = vals.shape
            n = T * L
            parts.append({
                "run": np.array([run] * n), "lr": np.full(n, sweep["lr"][r]), "seed": np.full(n, sweep["seed"][r]),
                "step": np.repeat(sweep["step"], L), "layer": np.tile(np.arange(1, L + 1), T),
                "metric": np.array([metric] * n), "value": vals.reshape(-1),
            })
    return with_ids(ids, concat(parts))


def long_rows(ids: dict, rows: list[dict], columns: list[str]) -> Table:
    """A table from a list of dicts, with the id columns first and ``columns`` in order (a key absent
    from a row is a missing value)."""
    return with_ids(ids, {c: column([r.get(c) for r in rows]) for c in columns})
