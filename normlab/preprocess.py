"""From a raw table to model-ready arrays: checks, a fixed, seeded train/test split and the input treatments.

Checks (:func:`validate`): every problem a table can have stops the run with a
:class:`normlab.errors.DatasetError` that names the dataset, the columns concerned and the fix: a
missing target or categorical column, non-numeric feature columns not declared ``categorical``, missing
values without ``impute``, infinite values, a target with a single class (classification) or non-numeric
values (regression), fewer training rows than the mini-batch size. Constant columns are allowed.

Feature encoding: numeric columns as they are; columns listed under ``categorical`` are one-hot encoded
(one 0/1 column ``<column>=<value>`` per distinct value, in sorted order, built from the whole table so
that both splits share the columns). A missing categorical value gives NaN in all of its one-hot columns.
``impute: mean`` fills every NaN with its column's training-split mean (for one-hot columns: the value's
frequency); ``impute: none`` (default) refuses missing values.

Targets: classification labels become integers 0..K-1 (``classes`` holds the original values, sorted);
regression targets are standardized with the training split's mean and std (``target_mean``,
``target_scale``; ``classes`` is empty), so the MSE starts near 1 whatever the target's unit.

Input treatments (the ``input`` part of a variant name):
* ``raw``: the features as they are.
* ``standardize``: per feature, subtract the training-split mean and divide by the training-split
  standard deviation; a constant feature (std 0) is centred and left at scale 1, never divided by 0.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from normlab.datasets import IMPUTE, TASKS, task_of
from normlab.errors import DatasetError
from normlab.variants import DATA_INPUTS

MAX_CATEGORIES = 1000


def split_indices(y: np.ndarray, test_fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test): ceil(test_fraction x rows) test rows, the train indices shuffled, the
    test indices sorted; a function of (y, test_fraction, seed) only (numpy's default generator seeded
    by ``seed``).

    Stratified by class when ``stratify``, every class has at least two rows and each split can hold
    every class: each class then gets its share of the test rows (``stratified_test_counts``: at least
    one in each split), drawn uniformly from its rows. Otherwise a uniform random subset. Numpy only:
    importing scikit-learn's splitter would cost every preprocess job, on every study's critical path.
    """
    n = len(y)
    n_test = math.ceil(test_fraction * n)
    rng = np.random.default_rng(seed)
    classes, inverse = np.unique(y, return_inverse=True) if stratify else (np.array([0]), np.zeros(n, int))
    counts = np.bincount(inverse.ravel(), minlength=len(classes))
    if stratify and counts.min() >= 2 and min(n_test, n - n_test) >= len(counts):
        k = stratified_test_counts(counts, n_test)
        test = np.concatenate([rng.permutation(np.flatnonzero(inverse.ravel() == c))[:k[c]]
                               for c in range(len(counts))])
    else:
        test = rng.permutation(n)[:n_test]
    train = rng.permutation(np.setdiff1d(np.arange(n), test))
    return train, np.sort(test)


def stratified_test_counts(counts: np.ndarray, n_test: int) -> np.ndarray:
    """Test rows per class (K,) summing to n_test: proportional to the class counts (K,), rounded by
    largest remainder (ties: the lower class), and kept within [1, count - 1] so that every class is in
    both splits. Needs K <= n_test <= sum(counts) - K and every count >= 2."""
    counts = np.asarray(counts, np.int64)
    if counts.min() < 2 or not len(counts) <= n_test <= counts.sum() - len(counts):
        raise ValueError(f"cannot stratify {n_test} test rows over class counts {counts.tolist()}")
    exact = counts * n_test / counts.sum()
    k = np.clip(np.floor(exact).astype(np.int64), 1, counts - 1)
    while k.sum() < n_test:
        k[np.argmax(np.where(k < counts - 1, exact - k, -np.inf))] += 1
    while k.sum() > n_test:
        k[np.argmin(np.where(k > 1, exact - k, np.inf))] -= 1
    return k


def encode_labels(y: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Class labels -> integers 0..K-1 (in sorted order of the original values), and the classes."""
    classes, codes = np.unique(y.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), classes


def fit_standardizer(X_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, scale) from the training rows X_train (m, n); scale = std, or 1 where the
    feature is constant on the training rows."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    return mean, scale


def apply_input(treatment: str, X_train: np.ndarray, X_test: np.ndarray):
    """(X_train, X_test, params) after the named input treatment, fitted on X_train only."""
    if treatment == "raw":
        return X_train, X_test, {}
    if treatment == "standardize":
        mean, scale = fit_standardizer(X_train)
        return (X_train - mean) / scale, (X_test - mean) / scale, {"mean": mean, "scale": scale}
    raise ValueError(f"unknown data input treatment {treatment!r}; choose one of {DATA_INPUTS} (batch norm on "
                     "the inputs trains on the raw file)")


def _names(cols, limit: int = 20) -> str:
    cols = [str(c) for c in cols]
    text = ", ".join(repr(c) for c in cols[:limit])
    return f"[{text}{f', ... ({len(cols) - limit} more)' if len(cols) > limit else ''}]"


def _counts(counts: dict[str, int], limit: int = 20) -> str:
    items = list(counts.items())
    text = ", ".join(f"{c!r} ({k})" for c, k in items[:limit])
    return text + (f", ... ({len(items) - limit} more columns)" if len(items) > limit else "")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def validate(df: pd.DataFrame, target: str, *, task: str = "classification", categorical=(), impute: str = "none",
             name: str = "dataset") -> None:
    """Raise DatasetError for the first problem of the table (see the module docstring); batch-size
    and training-split checks happen in :func:`prepare`, which knows the split."""
    where = f"dataset {name!r}"
    columns = [str(c) for c in df.columns]
    if task not in TASKS:
        raise DatasetError(f"{where}: unknown task {task!r}; set 'task' to one of {list(TASKS)}")
    if impute not in IMPUTE:
        raise DatasetError(f"{where}: unknown impute {impute!r}; set 'impute' to one of {list(IMPUTE)}")
    if target not in columns:
        raise DatasetError(f"{where}: target column {target!r} is not in the table; its columns are "
                           f"{_names(columns)}. Set 'target' in its config entry to the label column")
    categorical = [str(c) for c in categorical]
    if target in categorical:
        raise DatasetError(f"{where}: the target column {target!r} is listed under 'categorical'; remove it "
                           "there (the target's encoding follows 'task')")
    unknown = [c for c in categorical if c not in columns]
    if unknown:
        raise DatasetError(f"{where}: 'categorical' names {_names(unknown)}, not in the table; its columns are "
                           f"{_names(columns)}. Fix 'categorical' in its config entry")
    features = [c for c in columns if c != target]
    if not features:
        raise DatasetError(f"{where}: the table has no feature columns besides the target {target!r}; "
                           "add feature columns")
    if len(df) < 2:
        raise DatasetError(f"{where}: the table has {_plural(len(df), 'row')}; it needs at least 2 "
                           "(rows to train on and rows to test on)")
    text = [c for c in features if c not in categorical and not _is_numeric(df[c])]
    if text:
        col = text[0]
        example = _example(df[col])
        raise DatasetError(
            f"{where}: feature columns {_names(text)} are not numeric (e.g. {col!r} holds {example!r}); list them "
            "under 'categorical' in its config entry to one-hot encode them, or remove them from the data"
        )
    for c in categorical:
        n_values = df[c].dropna().astype(str).nunique()
        if n_values > MAX_CATEGORIES:
            raise DatasetError(f"{where}: categorical column {c!r} has {n_values} distinct values (more than "
                               f"{MAX_CATEGORIES}); it is probably an identifier: remove it or bin its values")
    y = df[target]
    n_missing = int(y.isna().sum())
    if n_missing:
        raise DatasetError(f"{where}: the target column {target!r} has {_plural(n_missing, 'missing value')}; "
                           "remove those rows from the data ('impute' fills feature columns only)")
    if task == "regression":
        if not _is_numeric(y):
            example = _example(y)
            raise DatasetError(f"{where}: task is regression but the target column {target!r} is not numeric "
                               f"(e.g. {example!r}); use a numeric target or set 'task: classification'")
        n_inf = int(np.isinf(y.to_numpy(dtype=np.float64)).sum())
        if n_inf:
            raise DatasetError(f"{where}: the target column {target!r} has {_plural(n_inf, 'infinite value')}; "
                               "remove or fix those rows")
    else:
        classes = pd.unique(y)
        if len(classes) < 2:
            raise DatasetError(
                f"{where}: the target column {target!r} has a single class ({str(classes[0])!r}); classification "
                "needs at least two. Use data with two or more classes, or set 'task: regression' for a numeric target"
            )
    numeric = [c for c in features if c not in categorical]
    values = df[numeric].to_numpy(dtype=np.float64) if numeric else np.zeros((len(df), 0))
    infs = {c: int(k) for c, k in zip(numeric, np.isinf(values).sum(axis=0), strict=True) if k}
    if infs:
        raise DatasetError(
            f"{where}: {_plural(sum(infs.values()), 'infinite value')} (inf) in "
            f"{_plural(len(infs), 'column')}: {_counts(infs)}; replace them in the data ('impute' fills only "
            "missing values)"
        )
    if impute == "none":
        nans = {c: int(df[c].isna().sum()) for c in features}
        nans = {c: k for c, k in nans.items() if k}
        if nans:
            total = sum(nans.values())
            it, rows = ("it", "that row") if total == 1 else ("them", "those rows")
            raise DatasetError(
                f"{where}: {_plural(total, 'missing value')} (NaN) in {_plural(len(nans), 'column')}: "
                f"{_counts(nans)}; set 'impute: mean' in its config entry to fill {it} with the training-split mean, "
                f"or remove {rows} from the data"
            )


def _example(s: pd.Series):
    """A value of ``s`` that is not a number (the first one), for messages."""
    values = s.dropna()
    return next((v for v in values if not _float_ok(v)), values.iloc[0] if len(values) else None)


def _float_ok(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True


def encode_features(df: pd.DataFrame, features: list[str], categorical) -> tuple[np.ndarray, list[str]]:
    """(X float64 with NaN where missing, feature names): numeric columns as is, categorical ones
    one-hot (``<column>=<value>``, values in sorted order), in the table's column order."""
    categorical = {str(c) for c in categorical}
    blocks, names = [], []
    for c in features:
        if c not in categorical:
            blocks.append(df[c].to_numpy(dtype=np.float64)[:, None])
            names.append(c)
            continue
        col = df[c]
        missing = col.isna().to_numpy()
        text = col.map(lambda v: None if pd.isna(v) else str(v))
        values = sorted(set(text.dropna()))
        onehot = np.stack([(text == v).to_numpy(dtype=np.float64) for v in values], axis=1) if values else \
            np.zeros((len(df), 0))
        onehot[missing] = np.nan
        blocks.append(onehot)
        names += [f"{c}={v}" for v in values]
    return np.concatenate(blocks, axis=1), names


def prepare_dataset(df: pd.DataFrame, entry: dict, target: str, split: dict, treatments, batch_size: int,
                    name: str):
    """:func:`prepare` for a dataset of the config: its entry's ``task`` (or the bundled dataset's own),
    ``categorical`` and ``impute``; the config's ``split`` (``test_fraction``, ``seed``); ``target`` as the
    fetch step resolved it (its provenance's)."""
    return prepare(df, target, split["test_fraction"], split["seed"], treatments, task=task_of(entry),
                   categorical=entry.get("categorical", []), impute=entry.get("impute", "none"),
                   batch_size=batch_size, name=name)


def prepare(df: pd.DataFrame, target: str, test_fraction: float, seed: int, treatments=DATA_INPUTS, *,
            task: str = "classification", categorical=(), impute: str = "none", batch_size: int | None = None,
            name: str = "dataset"):
    """Check ``df`` (see :func:`validate`), split it once and apply every input treatment. Returns
    {treatment: arrays} where arrays has X_train, y_train, X_test, y_test (float64 features; int64 labels
    for classification, standardized float64 targets for regression), feature_names, classes (empty for
    regression), task, the treatment's fitted input_mean/input_scale if any, and for regression
    target_mean/target_scale. ``batch_size``: the training split must have at least this many rows."""
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    validate(df, target, task=task, categorical=categorical, impute=impute, name=name)
    where = f"dataset {name!r}"
    features = [c for c in df.columns if c != target]
    X, feature_names = encode_features(df, features, categorical)
    if task == "classification":
        y, classes = encode_labels(df[target])
        classes = np.array([str(c) for c in classes])
    else:
        y, classes = df[target].to_numpy(dtype=np.float64), np.array([], dtype=str)
    train, test = split_indices(y, test_fraction, seed, stratify=task == "classification")
    if batch_size is not None and len(train) < batch_size:
        raise DatasetError(
            f"{where}: the training split has {len(train)} rows ({len(df)} rows, test_fraction {test_fraction}), "
            f"fewer than sweep.batch_size {batch_size}; lower sweep.batch_size to {len(train)} or less, or use "
            "more rows"
        )
    X_train, X_test = X[train], X[test]
    if impute == "mean" and np.isnan(X).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": reported below
            fill = np.nanmean(X_train, axis=0)
        empty = [n for n, f in zip(feature_names, fill, strict=True) if math.isnan(f)]
        if empty:
            raise DatasetError(f"{where}: feature {empty[0]!r} has no values in the training split, so "
                               "'impute: mean' cannot fill it; remove that column from the data")
        X_train = np.where(np.isnan(X_train), fill, X_train)
        X_test = np.where(np.isnan(X_test), fill, X_test)
    y_train, y_test = y[train], y[test]
    extra = {"task": np.array(task)}
    if task == "regression":
        t_mean, t_scale = fit_standardizer(y_train[:, None])
        y_train, y_test = (y_train - t_mean[0]) / t_scale[0], (y_test - t_mean[0]) / t_scale[0]
        extra.update(target_mean=t_mean, target_scale=t_scale)
    out = {}
    for t in treatments:
        Xtr, Xte, fitted = apply_input(t, X_train, X_test)
        arrays = {
            "X_train": Xtr, "y_train": y_train, "X_test": Xte, "y_test": y_test,
            "feature_names": np.array(feature_names), "classes": classes,
            **{f"input_{k}": v for k, v in fitted.items()}, **extra,
        }
        bad = [k for k, v in arrays.items() if v.dtype.kind == "f" and not np.isfinite(v).all()]
        if bad:  # cannot happen after validate; a guard so no NaN/inf ever reaches training
            raise DatasetError(f"{where}: non-finite values in {bad} after preprocessing; please report this")
        out[t] = arrays
    return out
