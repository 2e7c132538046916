"""From a raw table to model-ready arrays: checks, a fixed, seeded train/test split and the input treatments.

Checks (:func:`validate`): every problem a table can have stops the run with a
:class:`normlab.errors.DatasetError` that names the dataset, the columns concerned and the fix: a
missing target or categorical column, a feature column without any value, non-numeric feature columns
not declared ``categorical``, missing values without ``impute``, infinite values, a target with a single
class (classification) or non-numeric values (regression). Then, on the split (:func:`check_split`): fewer
test rows than ``split.min_test_rows`` or fewer training rows than the mini-batch size; and on the values
(:func:`check_range`): columns too large for the study's dtype (``sweep.dtype``) as they are or after an
input treatment (their squares, summed over a split, must stay finite). Every remedy a message names,
followed, gets past these checks. Constant columns are allowed. The entry's ``drop`` removes columns
before any check.

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

import json
import math
import re
import warnings

import numpy as np
import pandas as pd

from normlab.datasets import IMPUTE, TASKS, task_of
from normlab.errors import DatasetError
from normlab.splits import MIN_TEST_ROWS, check_split, n_test_rows, plural
from normlab.variants import DATA_INPUTS

MAX_CATEGORIES = 1000
DTYPES = ("float32", "float64")  # sweep.dtype: the precision the study trains and analyses in


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
    n_test = n_test_rows(n, test_fraction)
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


def _columns(cols, word: str = "column") -> str:
    """'column 'a'' or '2 columns ['a', 'b']'."""
    return f"{word} {str(cols[0])!r}" if len(cols) == 1 else f"{len(cols)} {word}s {_names(cols)}"


def _is_numeric(s: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)


def drop_advice(columns) -> str:
    """The ``drop`` entry that removes ``columns``, as YAML to paste into a config entry."""
    return f"drop: {json.dumps([str(c) for c in columns], ensure_ascii=False)}"


def _refuse_unknown_columns(where: str, key: str, names: list[str], columns: list[str]) -> None:
    """Raise DatasetError when the entry's list ``key`` names columns that are not in the table."""
    unknown = [c for c in names if c not in columns]
    if unknown:
        raise DatasetError(f"{where}: '{key}' names {_names(unknown)}, not in the table; its columns are "
                           f"{_names(columns)}. Fix '{key}' in its config entry")


def drop_columns(df: pd.DataFrame, drop, target: str, categorical=(), name: str = "dataset") -> pd.DataFrame:
    """``df`` without the columns listed in a dataset entry's ``drop``; naming the target, a column that is not
    in the table or one listed under ``categorical`` too is an error."""
    drop = [str(c) for c in drop]
    if not drop:
        return df
    where = f"dataset {name!r}"
    columns = [str(c) for c in df.columns]
    if target in drop:
        raise DatasetError(f"{where}: 'drop' names the target column {target!r}; remove it from 'drop' (to train on "
                           "another label column, set 'target' to it)")
    _refuse_unknown_columns(where, "drop", drop, columns)
    both = [c for c in drop if c in {str(k) for k in categorical}]
    if both:
        is_, it = ("is", "it") if len(both) == 1 else ("are", "each")
        raise DatasetError(f"{where}: {_columns(both)} {is_} listed under both 'drop' and 'categorical'; remove {it} "
                           "from one of them (a dropped column is not used at all)")
    return df.drop(columns=drop)


def validate(df: pd.DataFrame, target: str, *, task: str = "classification", categorical=(), impute: str = "none",
             name: str = "dataset", dropped=()) -> None:
    """Raise DatasetError for the first problem of the table (see the module docstring); batch-size
    and training-split checks happen in :func:`prepare`, which knows the split. ``dropped``: the columns
    the entry's ``drop`` removed (named when no feature column is left)."""
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
    _refuse_unknown_columns(where, "categorical", categorical, columns)
    features = [c for c in columns if c != target]
    if not features:
        raise DatasetError(f"{where}: the table has no feature columns besides the target {target!r}"
                           f"{' once drop removed ' + _names(dropped) if dropped else ''}; add feature columns")
    if len(df) < 2:
        raise DatasetError(f"{where}: the table has {plural(len(df), 'row')}; it needs at least 2 "
                           "(rows to train on and rows to test on)")
    empty = [c for c in features if df[c].isna().all()]
    if empty:
        it, has = ("it", "has") if len(empty) == 1 else ("them", "have")
        raise DatasetError(
            f"{where}: {_columns(empty, 'feature column')} {has} no values at all (every cell is empty), which "
            f"'impute' cannot fill; drop {it}: add {drop_advice(empty)} to its config entry"
        )
    text = [c for c in features if c not in categorical and not _is_numeric(df[c])]
    commas = [c for c in text if _decimal_commas(df[c])]
    if commas:
        col = commas[0]
        raise DatasetError(
            f"{where}: feature columns {_names(commas)} hold numbers written with a decimal comma (e.g. {col!r} "
            f"holds {_example(df[col])!r}), which are read as text; save the file with '.' as the decimal mark "
            "(and a comma, semicolon, tab or pipe between the columns)"
        )
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
        raise DatasetError(f"{where}: the target column {target!r} has {plural(n_missing, 'missing value')}; "
                           "remove those rows from the data ('impute' fills feature columns only)")
    if task == "regression":
        if not _is_numeric(y):
            example = _example(y)
            raise DatasetError(f"{where}: task is regression but the target column {target!r} is not numeric "
                               f"(e.g. {example!r}); use a numeric target or set 'task: classification'")
        n_inf = int(np.isinf(y.to_numpy(dtype=np.float64)).sum())
        if n_inf:
            raise DatasetError(f"{where}: the target column {target!r} has {plural(n_inf, 'infinite value')}; "
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
            f"{where}: {plural(sum(infs.values()), 'infinite value')} (inf) in "
            f"{plural(len(infs), 'column')}: {_counts(infs)}; replace them in the data ('impute' fills only "
            "missing values)"
        )
    if impute == "none":
        nans = {c: int(df[c].isna().sum()) for c in features}
        nans = {c: k for c, k in nans.items() if k}
        if nans:
            total = sum(nans.values())
            it, rows = ("it", "that row") if total == 1 else ("them", "those rows")
            raise DatasetError(
                f"{where}: {plural(total, 'missing value')} (NaN) in {plural(len(nans), 'column')}: "
                f"{_counts(nans)}; set 'impute: mean' in its config entry to fill {it} with the training-split mean, "
                f"or remove {rows} from the data"
            )


DECIMAL_COMMA = re.compile(r"^[+-]?\d+,\d+$")  # "1,5": a number with a decimal comma (not "1,000.5")


def _decimal_commas(s: pd.Series) -> bool:
    """True when every value of ``s`` that is not a number reads as one with a decimal comma ("-1,5"), and one
    such value exists: a number column of a file saved with a decimal comma, which pandas reads as text."""
    odd = [str(v).strip() for v in s.dropna() if not _float_ok(v)]
    return bool(odd) and all(DECIMAL_COMMA.match(v) for v in odd)


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
    X, names, _ = _encode_features(df, features, categorical)
    return X, names


def _encode_features(df: pd.DataFrame, features: list[str], categorical):
    """``encode_features``' (X, names) and each feature's table column (a one-hot column's categorical one)."""
    categorical = {str(c) for c in categorical}
    blocks, names, sources = [], [], []
    for c in features:
        if c not in categorical:
            blocks.append(df[c].to_numpy(dtype=np.float64)[:, None])
            names.append(c)
            sources.append(c)
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
        sources += [c] * len(values)
    return np.concatenate(blocks, axis=1), names, sources


def range_limit(dtype: str, cells: int) -> float:
    """The largest magnitude whose squares, summed over ``cells`` values, stay below ``dtype``'s largest number."""
    return math.sqrt(float(np.finfo(dtype).max) / max(int(cells), 1))


def _too_large(names, values: np.ndarray, limit: float) -> list[tuple[str, float, float, float]]:
    """(name, min, max, largest magnitude) of the columns of ``values`` (rows, columns) beyond ``limit``."""
    if values.size == 0:
        return []
    mags = np.abs(values).max(axis=0)
    return [(n, float(values[:, j].min()), float(values[:, j].max()), float(mags[j]))
            for j, n in enumerate(names) if not mags[j] <= limit]


def _described(bad, word: str = "column") -> str:
    shown = ", ".join(f"{n!r} (from {lo:.3g} to {hi:.3g})" for n, lo, hi, _ in bad[:5])
    more = f", and {len(bad) - 5} more" if len(bad) > 5 else ""
    return f"{plural(len(bad), word).split(' ', 1)[1]} {shown}{more}"


def _divide_by(magnitude: float, limit: float) -> str:
    """A power of ten that brings ``magnitude`` a thousand times below ``limit``."""
    return f"{10.0 ** math.ceil(math.log10(magnitude * 1000.0 / limit)):.0e}"


def check_range(where: str, names, values: np.ndarray, n_train: int, split_rows: int, n_features: int, treatments,
                dtype: str) -> None:
    """Refuse numeric feature columns (``values``: every row, after imputation) too large for the study:
    their squares, summed over a split's rows x features, must stay finite in ``dtype`` when the network
    takes them as they are (the 'raw' treatment, which batch norm on the inputs trains on too), and
    their squares summed over the training rows must stay finite in float64 for 'standardize' to be
    fitted. The message names the columns, their range and a divisor that brings them within both."""
    limits = []
    if "raw" in treatments:
        limits.append((range_limit(dtype, split_rows * n_features), f"the study's {dtype} (sweep.dtype), in which "
                       f"the network takes them as they are (input treatment 'raw')",
                       f"{split_rows} rows x {plural(n_features, 'feature')}"))
    if "standardize" in treatments:
        limits.append((range_limit("float64", n_train), "float64, in which the 'standardize' input treatment is "
                       "fitted", f"the {n_train} training rows"))
    if not limits:
        return
    limit, context, cells = min(limits, key=lambda x: x[0])
    bad = _too_large(names, values, limit)
    if bad:
        worst = max(bad, key=lambda b: b[3])
        it = "it" if len(bad) == 1 else "them"
        raise DatasetError(
            f"{where}: {_described(bad)} {'holds' if len(bad) == 1 else 'hold'} values too large for {context}: "
            f"their squares, summed over {cells}, overflow (magnitudes up to {limit:.2g} fit). Rescale {it} in "
            f"the data (e.g. divide {worst[0]!r} by {_divide_by(worst[3], limit)}), or drop {it}: add "
            f"{drop_advice([b[0] for b in bad])} to its config entry"
        )


def check_treated_range(where: str, treatment: str, names, values: np.ndarray, split_rows: int, n_features: int,
                        dtype: str) -> None:
    """Refuse numeric feature columns whose values after ``treatment`` (every row) are too large for
    ``dtype`` (squares summed over a split's rows x features): rows far outside the training split's
    spread of a column (or a column that barely varies on it)."""
    limit = range_limit(dtype, split_rows * n_features)
    bad = _too_large(names, values, limit)
    if bad:
        it = "it" if len(bad) == 1 else "them"
        raise DatasetError(
            f"{where}: after the {treatment!r} input treatment, {_described(bad)} "
            f"{'holds' if len(bad) == 1 else 'hold'} values too large for the study's {dtype} (sweep.dtype): their "
            f"squares, summed over {split_rows} rows x {plural(n_features, 'feature')}, overflow (magnitudes up to "
            f"{limit:.2g} fit). Some rows lie far outside the training split's spread of {it}: fix or remove those "
            f"rows in the data, or drop {it}: add {drop_advice([b[0] for b in bad])} to its config entry"
        )


def check_target_range(where: str, target: str, y: np.ndarray, n_train: int, split_rows: int, dtype: str,
                       standardized: bool = False) -> None:
    """Refuse a regression target too large to standardize (squares summed over the training rows in
    float64) or, ``standardized``, too large after it for ``dtype`` (summed over a split's rows)."""
    if not standardized:
        limit = range_limit("float64", n_train)
        bad = _too_large([target], y[:, None], limit)
        if bad:
            raise DatasetError(
                f"{where}: the target {_described(bad)} holds values too large for float64, in which it is "
                f"standardized: their squares, summed over the {n_train} training rows, overflow (magnitudes up "
                f"to {limit:.2g} fit). Rescale it in the data (e.g. divide it by {_divide_by(bad[0][3], limit)})"
            )
        return
    limit = range_limit(dtype, split_rows)
    bad = _too_large([target], y[:, None], limit)
    if bad:
        raise DatasetError(
            f"{where}: standardized with the training split's mean and standard deviation, the target "
            f"{_described(bad)} holds values too large for the study's {dtype} (sweep.dtype): their squares, summed "
            f"over {split_rows} rows, overflow (magnitudes up to {limit:.2g} fit). Some rows lie far outside the "
            "training split's spread of the target: fix or remove those rows in the data"
        )


def prepare_dataset(df: pd.DataFrame, entry: dict, target: str, split: dict, treatments, batch_size: int,
                    name: str, dtype: str = "float32"):
    """:func:`prepare` for a dataset of the config: its entry's ``task`` (or the bundled dataset's own),
    ``categorical``, ``impute`` and ``drop``; the config's ``split`` (``test_fraction``, ``seed``,
    ``min_test_rows``); ``target`` as the fetch step resolved it (its provenance's); ``dtype``: the study's
    sweep.dtype."""
    return prepare(df, target, split["test_fraction"], split["seed"], treatments, task=task_of(entry),
                   categorical=entry.get("categorical", []), impute=entry.get("impute", "none"),
                   batch_size=batch_size, name=name, drop=entry.get("drop", []),
                   min_test_rows=split.get("min_test_rows", MIN_TEST_ROWS), dtype=dtype)


def prepare(df: pd.DataFrame, target: str, test_fraction: float, seed: int, treatments=DATA_INPUTS, *,
            task: str = "classification", categorical=(), impute: str = "none", batch_size: int | None = None,
            name: str = "dataset", drop=(), min_test_rows: int = MIN_TEST_ROWS, dtype: str = "float32"):
    """Check ``df`` (see :func:`validate`), split it once and apply every input treatment. Returns
    {treatment: arrays} where arrays has X_train, y_train, X_test, y_test (float64 features; int64 labels
    for classification, standardized float64 targets for regression), feature_names, classes (empty for
    regression), task, the treatment's fitted input_mean/input_scale if any, and for regression
    target_mean/target_scale. ``drop``: columns removed first. The test split must have at least
    ``min_test_rows`` rows and the training split at least ``batch_size`` (when given). Every value after
    its input treatment must fit ``dtype`` (the study's precision) with room for sums of squares
    (:func:`check_range`)."""
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {DTYPES}")
    df = df.copy()
    df.columns = [str(c) for c in df.columns]
    dropped = [str(c) for c in drop]
    df = drop_columns(df, dropped, target, categorical, name)
    validate(df, target, task=task, categorical=categorical, impute=impute, name=name, dropped=dropped)
    where = f"dataset {name!r}"
    features = [c for c in df.columns if c != target]
    X, feature_names, sources = _encode_features(df, features, categorical)
    if task == "classification":
        y, classes = encode_labels(df[target])
        classes = np.array([str(c) for c in classes])
    else:
        y, classes = df[target].to_numpy(dtype=np.float64), np.array([], dtype=str)
    train, test = split_indices(y, test_fraction, seed, stratify=task == "classification")
    check_split(len(df), len(train), len(test), test_fraction, min_test_rows, batch_size, where, task)
    X_train, X_test = X[train], X[test]
    if impute == "mean" and np.isnan(X).any():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # "mean of empty slice": reported below
            fill = np.nanmean(X_train, axis=0)
        empty = list(dict.fromkeys(c for c, f in zip(sources, fill, strict=True) if math.isnan(f)))
        if empty:
            it = "it" if len(empty) == 1 else "them"
            raise DatasetError(
                f"{where}: {_columns(empty)} {'has' if len(empty) == 1 else 'have'} no values in the training split "
                f"(only in the test split), so 'impute: mean' cannot fill {it}; drop {it}: add {drop_advice(empty)} "
                "to its config entry"
            )
        X_train = np.where(np.isnan(X_train), fill, X_train)
        X_test = np.where(np.isnan(X_test), fill, X_test)
    y_train, y_test = y[train], y[test]
    numeric = [j for j, (f, c) in enumerate(zip(feature_names, sources, strict=True)) if f == c]
    check_range(where, [feature_names[j] for j in numeric], np.concatenate([X_train, X_test])[:, numeric],
                len(train), max(len(train), len(test)), len(feature_names), treatments, dtype)
    extra = {"task": np.array(task)}
    if task == "regression":
        check_target_range(where, target, y, len(train), max(len(train), len(test)), dtype)
        t_mean, t_scale = fit_standardizer(y_train[:, None])
        y_train, y_test = (y_train - t_mean[0]) / t_scale[0], (y_test - t_mean[0]) / t_scale[0]
        extra.update(target_mean=t_mean, target_scale=t_scale)
        check_target_range(where, target, np.concatenate([y_train, y_test]), len(train),
                           max(len(train), len(test)), dtype, standardized=True)
    out = {}
    for t in treatments:
        Xtr, Xte, fitted = apply_input(t, X_train, X_test)
        if t != "raw":  # the raw values were checked above
            check_treated_range(where, t, [feature_names[j] for j in numeric], np.concatenate([Xtr, Xte])[:, numeric],
                                max(len(train), len(test)), len(feature_names), dtype)
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
