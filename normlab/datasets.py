"""Dataset sources: turn a config entry into a raw table (pandas DataFrame) plus its provenance.

A dataset entry names exactly one source: ``sklearn: <bundled name>`` (offline), ``synthetic: lecture``
(the lecture's slide, generated), or ``csv: <path>``. ``target`` names the label column.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pandas as pd

SKLEARN_LOADERS = {
    "breast_cancer": "load_breast_cancer",
    "digits": "load_digits",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}
SOURCE_KEYS = ("sklearn", "synthetic", "csv")


class DatasetError(ValueError):
    """A dataset cannot be read or used; the message says what, where and how to fix it."""


def source_of(entry: dict) -> tuple[str, str]:
    """The (kind, value) of the single source key in a dataset entry."""
    found = [k for k in SOURCE_KEYS if k in entry]
    if len(found) != 1:
        raise DatasetError(
            f"a dataset entry needs exactly one source key out of {list(SOURCE_KEYS)}, found {found or 'none'}"
        )
    return found[0], str(entry[found[0]])


def load_sklearn(name: str, target: str = "target") -> pd.DataFrame:
    """One of scikit-learn's bundled datasets (no network) as a DataFrame: feature columns + target."""
    import sklearn.datasets

    if name not in SKLEARN_LOADERS:
        raise DatasetError(f"unknown bundled scikit-learn dataset {name!r}; choose one of {sorted(SKLEARN_LOADERS)}")
    bunch = getattr(sklearn.datasets, SKLEARN_LOADERS[name])()
    names = [str(n) for n in getattr(bunch, "feature_names", [])] or [f"x{i}" for i in range(bunch.data.shape[1])]
    df = pd.DataFrame(np.asarray(bunch.data, dtype=np.float64), columns=names)
    df[target] = bunch.target
    return df


def lecture_dataset(n: int = 1000, scale_ratio: float = 1000.0, seed: int = 0, target: str = "target"):
    """The slide's two-feature problem: x1 ~ N(0, scale_ratio^2), x2 ~ N(0, 1); the known linear rule
    y = 1[x1 / scale_ratio + x2 > 0]. Returns a DataFrame with columns x1, x2, target."""
    rng = np.random.default_rng(seed)
    x1 = rng.normal(0.0, scale_ratio, n)
    x2 = rng.normal(0.0, 1.0, n)
    y = (x1 / scale_ratio + x2 > 0).astype(np.int64)
    return pd.DataFrame({"x1": x1, "x2": x2, target: y})


def load_source(entry: dict) -> pd.DataFrame:
    """The raw table a dataset entry points to."""
    kind, value = source_of(entry)
    target = entry.get("target", "target")
    if kind == "sklearn":
        return load_sklearn(value, target)
    if kind == "synthetic":
        if value != "lecture":
            raise DatasetError(f"unknown synthetic dataset {value!r}; the only one is 'lecture'")
        return lecture_dataset(
            n=int(entry.get("rows", 1000)), scale_ratio=float(entry.get("scale_ratio", 1000.0)),
            seed=int(entry.get("seed", 0)), target=target,
        )
    try:
        return pd.read_csv(value)
    except FileNotFoundError:
        raise DatasetError(f"csv file {value!r} does not exist; fix the path in the dataset entry") from None


def sha256_of(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def provenance(entry: dict, df: pd.DataFrame, csv_path) -> str:
    """JSON text: source, sha256 of the written CSV, rows, columns. No timestamps (byte-deterministic)."""
    kind, value = source_of(entry)
    record = {
        "source": {kind: value},
        "sha256": sha256_of(csv_path),
        "rows": int(len(df)),
        "columns": [str(c) for c in df.columns],
        "target": entry.get("target", "target"),
    }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"
