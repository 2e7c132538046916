"""Dataset sources: turn a config entry into a raw table (pandas DataFrame) plus its provenance.

A dataset entry names exactly one source:

* ``sklearn: <name>``: a dataset bundled with scikit-learn (offline);
* ``synthetic: lecture``: the lecture's slide, generated;
* ``csv: <path>`` or ``parquet: <path>``: a local file with a header row (paths relative to the directory
  Snakemake runs in);
* ``url: <address>`` with its ``sha256``: downloaded once into ``data/cache/url/`` and checked;
* ``openml: <id>``: fetched from OpenML's public HTTP API once and cached under ``data/cache/openml/``.

``target`` names the label column (default ``target``; for OpenML the dataset's default target).
The optional keys ``task``, ``categorical`` and ``impute`` are used by :mod:`normlab.preprocess`.

Every problem with a source raises :class:`DatasetError`, whose message says what is wrong, where, and
how to fix it; the job then stops with that one line and leaves no output file behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from normlab import io

# the shared pieces live in leaf modules (download needs them too); callers may still name them from here
from normlab.checksums import sha256_of
from normlab.columns import check_column_names
from normlab.errors import DatasetError

SKLEARN_LOADERS = {
    "breast_cancer": "load_breast_cancer",
    "digits": "load_digits",
    "wine": "load_wine",
    "iris": "load_iris",
    "diabetes": "load_diabetes",
}
SKLEARN_TASKS = {"diabetes": "regression"}
SOURCE_KEYS = ("sklearn", "synthetic", "csv", "parquet", "url", "openml")
FILE_FORMATS = ("csv", "parquet", "arff")
TASKS = ("classification", "regression")
IMPUTE = ("none", "mean")
DEFAULT_CACHE = "data/cache"
PARQUET_LOCK = "requirements-parquet.lock"  # pyarrow's pin (the optional 'parquet' extra), at the repository root


def source_of(entry: dict) -> tuple[str, str]:
    """The (kind, value) of the single source key in a dataset entry."""
    found = [k for k in SOURCE_KEYS if k in entry]
    if len(found) != 1:
        raise DatasetError(
            f"a dataset entry needs exactly one source key out of {list(SOURCE_KEYS)}, found {found or 'none'}"
        )
    return found[0], str(entry[found[0]])


def task_of(entry: dict) -> str:
    """``classification`` or ``regression``: the entry's ``task``, else the bundled dataset's own task."""
    task = entry.get("task") or SKLEARN_TASKS.get(str(entry.get("sklearn")), "classification")
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; choose one of {list(TASKS)}")
    return task


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


def read_csv_file(path, where: str) -> pd.DataFrame:
    """A CSV file with a header row, its column names checked; pandas' parse errors become DatasetError."""
    try:
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        check_column_names(header, where)
        return pd.read_csv(path)
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{where}: the file is empty; it needs a header row and at least two data rows") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{where}: not a valid CSV file ({' '.join(str(exc).split())}); "
                           "fix the file (every row needs as many fields as the header)") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: the file is not UTF-8 text; save it as UTF-8") from None


def parquet_missing(where: str) -> DatasetError | None:
    """The error to raise for a Parquet source when pyarrow, which pandas reads Parquet with, is not installed
    (it is normlab's optional ``parquet`` extra), else None. Checked before any download."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return DatasetError(
            f"{where}: reading Parquet needs normlab's optional 'parquet' extra (the pyarrow package), which "
            f"is not installed; install it (make setup EXTRAS=parquet, or pip install -r {PARQUET_LOCK}, or "
            "pip install 'normlab[parquet]'), or convert the file to CSV and use 'csv:'"
        )
    return None


def read_parquet_file(path, where: str) -> pd.DataFrame:
    """A Parquet file, read by pandas with pyarrow (the optional ``parquet`` extra; see ``parquet_missing``)."""
    missing = parquet_missing(where)
    if missing is not None:
        raise missing
    try:
        df = pd.read_parquet(path, engine="pyarrow")
    except Exception as exc:  # noqa: BLE001  (pyarrow raises its own error types)
        raise DatasetError(f"{where}: not a valid Parquet file ({exc}); check the file") from None
    check_column_names(list(df.columns), where)
    df.columns = [str(c) for c in df.columns]
    return df


def read_table_file(path, fmt: str, where: str) -> pd.DataFrame:
    """A local table file of the given format (csv | parquet | arff)."""
    if fmt == "csv":
        return read_csv_file(path, where)
    if fmt == "parquet":
        return read_parquet_file(path, where)
    if fmt == "arff":
        from normlab.download import read_arff

        return read_arff(path, where)
    raise DatasetError(f"{where}: unknown file format {fmt!r}; choose one of {list(FILE_FORMATS)}")


def local_file(kind: str, value: str, name: str) -> Path:
    """The path of a ``csv:`` / ``parquet:`` source, which must exist and be a file."""
    path = Path(value)
    if not path.exists():
        raise DatasetError(
            f"{kind} file {value!r} of dataset {name!r} does not exist (looked for {path.absolute()}); "
            f"fix '{kind}' in its config entry (a relative path starts at the directory snakemake runs in)"
        )
    if not path.is_file():
        raise DatasetError(f"{kind} path {value!r} of dataset {name!r} is not a file; point '{kind}' at the file")
    return path


def url_format(entry: dict) -> str:
    """The file format of a ``url:`` source: its ``format`` key, else from the address's file ending."""
    if entry.get("format"):
        return str(entry["format"])
    tail = str(entry["url"]).split("?", 1)[0].split("#", 1)[0].lower()
    for suffix, fmt in ((".parquet", "parquet"), (".pq", "parquet"), (".arff", "arff"), (".csv", "csv"),
                        (".csv.gz", "csv"), (".csv.bz2", "csv"), (".csv.zip", "csv"), (".csv.xz", "csv")):
        if tail.endswith(suffix):
            return fmt
    return "csv"


def load_source(entry: dict, name: str = "dataset", cache_dir=DEFAULT_CACHE, progress=None) -> pd.DataFrame:
    """The raw table a dataset entry points to. ``cache_dir`` keeps downloads (url, openml) between runs;
    ``progress`` (a callable taking one line) reports download progress (default: the ``normlab.download``
    logger). What was read (the file or source, rows and columns) is logged (``normlab.io.log_read``)."""
    kind, value = source_of(entry)
    df, read = _load_source(kind, value, entry, name, cache_dir, progress)
    io.log_read(read, f"{df.shape[1]} column{'' if df.shape[1] == 1 else 's'}", rows=len(df))
    return df


def _load_source(kind, value, entry, name, cache_dir, progress) -> tuple[pd.DataFrame, str]:
    """(table, what was read: a path or a description) of ``load_source``."""
    target = entry.get("target", "target")
    if kind == "sklearn":
        return load_sklearn(value, target), f"scikit-learn's bundled dataset {value!r}"
    if kind == "synthetic":
        if value != "lecture":
            raise DatasetError(f"unknown synthetic dataset {value!r}; the only one is 'lecture'")
        df = lecture_dataset(
            n=int(entry.get("rows", 1000)), scale_ratio=float(entry.get("scale_ratio", 1000.0)),
            seed=int(entry.get("seed", 0)), target=target,
        )
        return df, "the synthetic dataset 'lecture' (generated)"
    if kind in ("csv", "parquet"):
        path = local_file(kind, value, name)
        return read_table_file(path, kind, f"{kind} file {value!r} of dataset {name!r}"), str(path)
    from normlab import download

    if kind == "url":
        if "sha256" not in entry:
            raise DatasetError(f"dataset {name!r} has 'url' but no 'sha256'; add the file's sha256 checksum "
                               "(sha256sum FILE) to its config entry")
        fmt, where = url_format(entry), f"file {value} of dataset {name!r}"
        if fmt == "parquet" and (missing := parquet_missing(where)) is not None:
            raise missing  # before the download
        path = download.fetch_url(value, str(entry["sha256"]), Path(cache_dir) / "url", name=name,
                                  progress=progress)
        return read_table_file(path, fmt, where), f"{path} (downloaded from {value})"
    df, path = download.fetch_openml_file(value, Path(cache_dir) / "openml", name=name, progress=progress)
    return df, f"{path} (OpenML dataset {value})"


def resolved_target(entry: dict, cache_dir=DEFAULT_CACHE) -> str:
    """The target column: the entry's ``target``; for OpenML without one, the dataset's default target."""
    if "target" in entry:
        return str(entry["target"])
    if "openml" in entry:
        from normlab import download

        desc = download.openml_description_cached(str(entry["openml"]), Path(cache_dir) / "openml")
        if desc and desc.get("default_target_attribute"):
            return str(desc["default_target_attribute"]).split(",")[0]
    return "target"


def provenance(entry: dict, df: pd.DataFrame, csv_path, cache_dir=DEFAULT_CACHE) -> str:
    """JSON text: source, sha256 of the written CSV, rows, columns, target, task and the preprocessing
    options. No timestamps (byte-deterministic)."""
    kind, value = source_of(entry)
    source = {kind: value}
    if kind == "url":
        source["sha256"] = str(entry["sha256"]).lower()
    record = {
        "source": source,
        "sha256": sha256_of(csv_path),
        "rows": int(len(df)),
        "columns": [str(c) for c in df.columns],
        "target": resolved_target(entry, cache_dir),
        "task": task_of(entry),
        "categorical": [str(c) for c in entry.get("categorical", [])],
        "impute": str(entry.get("impute", "none")),
    }
    return json.dumps(record, indent=2, sort_keys=True) + "\n"
