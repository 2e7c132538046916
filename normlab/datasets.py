"""Dataset sources: turn a config entry into a raw table (pandas DataFrame) plus its provenance.

A dataset entry names exactly one source:

* ``sklearn: <name>``: a dataset bundled with scikit-learn (offline);
* ``synthetic: lecture``: the lecture's slide, generated;
* ``csv: <path>`` or ``parquet: <path>``: a local file with a header row (paths relative to the directory
  Snakemake runs in);
* ``url: <address>`` with its ``sha256``: downloaded once into ``data/cache/url/`` and checked;
* ``openml: <id>``: fetched from OpenML's public HTTP API once and cached under ``data/cache/openml/``.

``target`` names the label column (default ``target``; for OpenML the dataset's default target).
The optional keys ``task``, ``categorical``, ``impute`` and ``drop`` are used by :mod:`normlab.preprocess`.

CSV files (``csv:``, and ``url:`` in CSV format) are read as users have them: gzip, bz2, xz and
single-file zip compression are recognised by the file's content (not its name), and the delimiter
(comma, semicolon, tab or pipe) is detected on the first lines unless the entry's ``delimiter`` sets it.
A file that is not delimited text (an Excel workbook, a zip archive of several files, binary data, ...)
is refused with what it looks like.

Every problem with a source raises :class:`DatasetError`, whose message says what is wrong, where, and
how to fix it; the job then stops with that one line and leaves no output file behind.
"""

from __future__ import annotations

import bz2
import codecs
import csv
import gzip
import io as io_module
import json
import logging
import lzma
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from normlab import io

# the shared pieces live in leaf modules (download needs them too); callers may still name them from here
from normlab.checksums import sha256_of
from normlab.columns import check_column_names
from normlab.errors import DatasetError
from normlab.splits import SYNTHETIC_ROWS

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

log = logging.getLogger(__name__)


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


# --- delimited text files ------------------------------------------------------------------------------------

DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}  # detected, in order of preference
DELIMITER_NAMES = {name: d for d, name in DELIMITERS.items()}  # 'delimiter: tab' = 'delimiter: "\t"'
SNIFF_BYTES = 1 << 18  # the sample (decompressed) that the delimiter is detected on
# content signatures (magic bytes at the start of a file) of the compressed formats read directly ...
COMPRESSED = (("gzip", b"\x1f\x8b"), ("bz2", b"BZh"), ("xz", b"\xfd7zXZ\x00"), ("zip", b"PK\x03\x04"),
              ("zip", b"PK\x05\x06"))
# ... and of the formats that are not delimited text: what the file looks like, and what to do with it
NOT_TEXT = (
    (b"PAR1", "a Parquet file", "use 'parquet:' for it instead of 'csv:'"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "an Excel workbook (xls) or another old Microsoft Office file",
     "save the sheet as CSV (CSV UTF-8) and point '{key}' at that file"),
    (b"%PDF", "a PDF document", "export the table as CSV and point '{key}' at that file"),
    (b"SQLite format 3\x00", "an SQLite database", "export the table as CSV and point '{key}' at that file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file", "export the table as CSV and point '{key}' at that file"),
    (b"\x93NUMPY", "a NumPy array file (.npy)", "save the table as CSV and point '{key}' at that file"),
    (b"(\xb5/\xfd", "zstd-compressed data", "decompress it (unzstd FILE), or compress it with gzip instead"),
    (b"7z\xbc\xaf\x27\x1c", "a 7-Zip archive", "extract the table and point '{key}' at it"),
    (b"Rar!\x1a\x07", "a RAR archive", "extract the table and point '{key}' at it"),
    (b"\x89PNG", "a PNG image", "point '{key}' at the table's CSV file"),
    (b"\xff\xd8\xff", "a JPEG image", "point '{key}' at the table's CSV file"),
    (b"GIF8", "a GIF image", "point '{key}' at the table's CSV file"),
)


def _signature(head: bytes):
    """(compression or None, None) for a compressed format read directly, (None, (what, fix)) for a
    format that is not delimited text, (None, None) otherwise; from the first bytes ``head``. A signature
    of printable characters (PAR1, %PDF, GIF8) counts only when the rest is not text (a header row may
    start with them); bz2's 'BZh' only with its block or end-of-stream marker after the level digit."""
    for kind, magic in COMPRESSED:
        if head.startswith(magic):
            if kind == "bz2" and not (head[3:4].isdigit() and head[4:10] in (b"1AY&SY", b"\x17rE8P\x90")):
                continue
            return kind, None
    for magic, what, fix in NOT_TEXT:
        if head.startswith(magic) and not (magic.isascii() and magic.decode().isprintable() and _is_text(head)):
            return None, (what, fix)
    if len(head) >= 262 and head[257:262] == b"ustar":
        return None, ("a tar archive", "extract the table and point '{key}' at it")
    return None, None


def _zip_member(path, where: str, key: str) -> str:
    """The one data member of a zip archive (directories and macOS' __MACOSX/ entries aside); an Excel
    (xlsx) or OpenDocument (ods) workbook, or an archive with no or several members, is an error."""
    def refuse(what, fix):
        return DatasetError(f"{where}: the file is not CSV text: it looks like {what}; {fix.format(key=key)}")

    try:
        with zipfile.ZipFile(path) as zf:
            names = [i.filename for i in zf.infolist() if not i.is_dir()]
            mimetype = zf.read("mimetype")[:100] if "mimetype" in names else b""
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise DatasetError(f"{where}: the file looks like a zip archive but cannot be read ({exc}); the file is "
                           f"damaged or incomplete: copy or download it again") from None
    if "[Content_Types].xml" in names and any(n.startswith("xl/") for n in names):
        raise refuse("an Excel workbook (xlsx)", "save the sheet as CSV (CSV UTF-8) and point '{key}' at that file")
    if mimetype.startswith(b"application/vnd.oasis.opendocument"):
        raise refuse("an OpenDocument file (ods)", "save the sheet as CSV (UTF-8) and point '{key}' at that file")
    data = [n for n in names if not n.startswith("__MACOSX/") and not n.rsplit("/", 1)[-1].startswith("._")]
    if len(data) != 1:
        members = "no members" if not data else \
            f"{len(data)} members ({', '.join(repr(n) for n in data[:5])}{', ...' if len(data) > 5 else ''})"
        raise refuse(f"a zip archive with {members}",
                     "extract the table you want and point '{key}' at it (a zip archive with a single file in it "
                     "is read directly)")
    return data[0]


def _open_content(path, compression: str | None, member: str | None):
    """A binary stream of the file's (decompressed) content."""
    if compression is None:
        return open(path, "rb")
    if compression == "zip":
        zf = zipfile.ZipFile(path)
        stream = zf.open(member)
        stream.close = lambda close=stream.close: (close(), zf.close())  # closing the member closes the archive
        return stream
    return {"gzip": gzip.open, "bz2": bz2.open, "xz": lzma.open}[compression](path, "rb")


DECOMPRESSION_ERRORS = (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile)


def _damaged(where: str, compression: str, exc) -> DatasetError:
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return DatasetError(f"{where}: the file is {compression}-compressed but cannot be decompressed ({reason}); the "
                        "file is damaged or incomplete: copy or download it again")


def _is_text(head: bytes) -> bool:
    """Whether ``head`` (a file's first bytes, maybe cut inside a character) is UTF-8 text."""
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head[:4096], final=False)
    except UnicodeDecodeError:
        return False
    return not _looks_binary(head[:4096])


def _looks_binary(data: bytes) -> bool:
    """Whether ``data`` (a file's first bytes) is binary rather than text in some 8-bit encoding: a NUL
    byte, or more than 10% control characters (tab, newlines and form feed aside)."""
    if b"\x00" in data:
        return True
    controls = sum(1 for b in data if b < 32 and b not in (9, 10, 12, 13))
    return controls > 0.1 * max(len(data), 1)


def _sample_text(head: bytes, complete: bool, where: str, key: str, inside: str) -> str:
    """The decoded sample (UTF-8, a BOM dropped; the last, maybe cut, line dropped unless ``complete``);
    a file that is not UTF-8 text says what it looks like."""
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetError(f"{where}: the file{inside} is UTF-16 text (as Excel's 'Unicode Text' writes it), not "
                           "UTF-8; save it as CSV UTF-8")
    _, other = _signature(head)
    if other is not None:
        what, fix = other
        raise DatasetError(f"{where}: the file{inside} is not CSV text: it looks like {what}; {fix.format(key=key)}")
    try:
        text = codecs.getincrementaldecoder("utf-8-sig")().decode(head, final=complete)
    except UnicodeDecodeError:
        if _looks_binary(head[:4096]):
            start = " ".join(f"{b:02x}" for b in head[:8])
            raise DatasetError(f"{where}: the file{inside} is not CSV text: it looks like binary data (it starts with "
                               f"the bytes {start}); point '{key}' at a CSV text file") from None
        raise DatasetError(f"{where}: the file is not UTF-8 text; save it as UTF-8") from None
    if _looks_binary(head[:4096]):
        start = " ".join(f"{b:02x}" for b in head[:8])
        raise DatasetError(f"{where}: the file{inside} is not CSV text: it looks like binary data (it starts with "
                           f"the bytes {start}); point '{key}' at a CSV text file")
    return text if complete else text.rsplit("\n", 1)[0]


def detect_delimiter(sample: str) -> str:
    """The column delimiter of delimited text (``sample``: its first lines) out of comma, semicolon, tab and
    pipe: comma when every record of the sample has as many fields as the header and that is at least two
    (a file that pandas reads as comma-separated today stays so); else the candidate under which the
    records agree with the header's field count (at least two) most often, then the most fields, then the
    order above; comma when no candidate splits the header."""
    records = {}
    for d in DELIMITERS:
        try:
            rows = [r for r in csv.reader(io_module.StringIO(sample), delimiter=d) if r]
        except csv.Error:  # e.g. a field longer than the csv module's limit: not this delimiter's layout
            continue
        if rows and len(rows[0]) >= 2:
            records[d] = rows
    if not records:
        return ","

    def agreement(d):
        rows = records[d]
        return sum(len(r) == len(rows[0]) for r in rows) / len(rows)

    if "," in records and agreement(",") == 1.0:
        return ","
    order = list(DELIMITERS)
    return max(records, key=lambda d: (agreement(d), len(records[d][0]), -order.index(d)))


def resolve_delimiter(delimiter, where: str) -> str | None:
    """The delimiter character of an entry's ``delimiter`` (a character or its name), None when unset."""
    if delimiter is None:
        return None
    d = DELIMITER_NAMES.get(str(delimiter), str(delimiter))
    if d not in DELIMITERS:
        choices = ", ".join(f"{c!r} ({n})" for c, n in DELIMITERS.items())
        raise DatasetError(f"{where}: unknown 'delimiter' {delimiter!r}; set it to one of {choices}, or remove it "
                           "(the delimiter is then detected)")
    return d


def read_csv_file(path, where: str, delimiter=None, key: str = "csv") -> pd.DataFrame:
    """A delimited text file with a header row, its column names checked; pandas' parse errors become
    DatasetError. Compressed files (gzip, bz2, xz, a zip archive with one file) are recognised by their
    content, whatever their name; the delimiter (comma, semicolon, tab or pipe) is ``delimiter`` (a
    character or its name) or detected on the first lines (:func:`detect_delimiter`). A file that is not
    delimited text says what it looks like; ``key`` (the entry's source key) names what to point elsewhere."""
    with open(path, "rb") as f:
        raw_head = f.read(SNIFF_BYTES + 1)
    compression, other = _signature(raw_head)
    if other is not None:
        what, fix = other
        raise DatasetError(f"{where}: the file is not CSV text: it looks like {what}; {fix.format(key=key)}")
    member = _zip_member(path, where, key) if compression == "zip" else None
    head = raw_head
    if compression is not None:
        try:
            with _open_content(path, compression, member) as f:
                head = f.read(SNIFF_BYTES + 1)
        except DECOMPRESSION_ERRORS as exc:
            raise _damaged(where, compression, exc) from None
    inside = "" if compression is None else f" ({compression}-compressed)"
    sample = _sample_text(head[:SNIFF_BYTES], len(head) <= SNIFF_BYTES, where, key, inside)
    sep = resolve_delimiter(delimiter, where) or detect_delimiter(sample)
    notes = [f"{DELIMITERS[sep]}-separated ({'set by delimiter' if delimiter is not None else 'detected'})"]
    if compression is not None:
        notes.append(f"{compression}-compressed" + (f", member {member!r}" if member else ""))
    if sep != "," or compression is not None:
        log.info(f"{where}: {', '.join(notes)}")

    def read(**kwargs):
        if compression is None:  # by content, not by name (pandas would infer it from a .gz ending)
            return pd.read_csv(path, sep=sep, compression=None, **kwargs)
        with _open_content(path, compression, member) as f:
            return pd.read_csv(f, sep=sep, **kwargs)

    try:
        header = read(header=None, nrows=1, dtype=str, keep_default_na=False).iloc[0].tolist()
        _check_header_splits(header, sep, delimiter, where)
        check_column_names(header, where)
        return read()
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{where}: the file is empty; it needs a header row and at least two data rows") from None
    except pd.errors.ParserError as exc:
        raise DatasetError(f"{where}: not a valid CSV file ({' '.join(str(exc).split())}); "
                           "fix the file (every row needs as many fields as the header)") from None
    except UnicodeDecodeError:
        raise DatasetError(f"{where}: the file is not UTF-8 text; save it as UTF-8") from None
    except DECOMPRESSION_ERRORS as exc:
        if compression is None:
            raise
        raise _damaged(where, compression, exc) from None


def _check_header_splits(header: list, sep: str, delimiter, where: str) -> None:
    """A header row that is a single column: with a ``delimiter`` set that the header does not hold, name
    the delimiter it does hold; else say that no known delimiter separates the names."""
    if len(header) != 1:
        return
    name = str(header[0])
    found = [d for d in DELIMITERS if d != sep and d in name]
    if delimiter is not None and found:
        raise DatasetError(
            f"{where}: with 'delimiter: {DELIMITERS[sep]}' the header row is a single column ({name!r}), which "
            f"holds {DELIMITERS[found[0]]}s; set 'delimiter: {DELIMITERS[found[0]]}' in its config entry, or remove "
            "'delimiter' (the delimiter is then detected)"
        )
    if delimiter is None:
        raise DatasetError(
            f"{where}: the header row is a single column ({name!r}): no comma, semicolon, tab or pipe separates "
            "column names in it, and a table needs a target and feature columns; save the file with one of "
            "those between the columns"
        )


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


def read_table_file(path, fmt: str, where: str, delimiter=None, key: str = "csv") -> pd.DataFrame:
    """A local table file of the given format (csv | parquet | arff); ``delimiter`` and ``key``: see
    :func:`read_csv_file`."""
    if fmt == "csv":
        return read_csv_file(path, where, delimiter, key)
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
    if "delimiter" in entry and not (kind == "csv" or (kind == "url" and url_format(entry) == "csv")):
        raise DatasetError(f"dataset {name!r}: 'delimiter' applies to CSV files only (csv:, or url: in CSV format), "
                           f"not to this {kind}: source; remove it from its config entry")
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
            n=int(entry.get("rows", SYNTHETIC_ROWS)), scale_ratio=float(entry.get("scale_ratio", 1000.0)),
            seed=int(entry.get("seed", 0)), target=target,
        )
        return df, "the synthetic dataset 'lecture' (generated)"
    if kind in ("csv", "parquet"):
        path = local_file(kind, value, name)
        where = f"{kind} file {value!r} of dataset {name!r}"
        return read_table_file(path, kind, where, entry.get("delimiter"), kind), str(path)
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
        return read_table_file(path, fmt, where, entry.get("delimiter"), "url"), f"{path} (downloaded from {value})"
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
