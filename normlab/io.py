"""Reading and writing a job's files. Atomic writes: every output is written to a temporary name beside it
and moved into place, so an interrupted job never leaves a truncated or stale file under the final name.

Each file read or written here is logged (DEBUG, logger ``normlab.io``) with what it holds (table rows,
arrays): inside a job (``normlab.runtime.job``) those lines go to the job's log and make up the job's
closing "read ... wrote ..." line; elsewhere nothing is printed unless the caller configures ``logging``."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from pathlib import Path

from normlab import runtime

log = logging.getLogger(runtime.IO_LOGGER)


def log_read(path, what: str = "", rows: int | None = None) -> None:
    """Record that the job read ``path`` (a file, or a source such as a bundled dataset): one log line
    ``read <path> (<what>)``; ``rows``: the table rows it held, counted in the job's closing line."""
    _log_io("read", path, what, rows)


def log_written(path, what: str = "", rows: int | None = None) -> None:
    """Record that the job wrote ``path`` (see ``log_read``); the writers below call it themselves."""
    _log_io("wrote", path, what, rows)


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _log_io(action: str, path, what: str, rows: int | None) -> None:
    detail = ", ".join(x for x in (_count(rows, "row") if rows is not None else "", what) if x)
    log.debug(f"{action} {path}" + (f" ({detail})" if detail else ""), extra={"io": action, "rows": rows})


def _size(path) -> str:
    n = os.path.getsize(path)
    return _count(n, "byte") if n < 1 << 20 else f"{n / (1 << 20):.1f} MiB"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path in the same folder; on success rename it to ``path``, else delete it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    runtime.output_written(path)  # where a job's injected fault may wait (see normlab.runtime)


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    log_written(path, _size(path))


def read_text(path) -> str:
    """A text file's content (UTF-8), logged as read."""
    text = Path(path).read_text(encoding="utf-8")
    log_read(path, _size(path))
    return text


def read_csv(path, **kwargs):
    """``pandas.read_csv(path, **kwargs)``, logged as read with its rows."""
    import pandas as pd

    table = pd.read_csv(path, **kwargs)
    log_read(path, _count(table.shape[1], "column"), rows=len(table))
    return table


def load_npz(path) -> dict:
    """Every array of an .npz file (``numpy.load``, no pickles), as a dict; logged as read."""
    with open_npz(path) as f:
        return {k: f[k] for k in f.files}


@contextlib.contextmanager
def open_npz(path):
    """``numpy.load(path)`` (no pickles) as a context manager, its arrays read on access; logged as read."""
    import numpy as np

    with np.load(path, allow_pickle=False) as f:
        log_read(path, f"{_count(len(f.files), 'array')}, {_size(path)}")
        yield f


def write_csv(path, table) -> None:
    """Write a table as CSV; floats in their shortest exact form (byte-deterministic). ``table``: a
    pandas DataFrame, or a column mapping {name: 1-D array} (``normlab.tables``), written without
    pandas exactly as ``DataFrame(table).to_csv(index=False)`` writes it: missing values (NaN, None)
    empty, booleans True / False, each float by numpy's shortest repr in its own precision."""
    with atomic_path(path) as tmp:
        if hasattr(table, "to_csv"):
            table.to_csv(tmp, index=False)
            rows, columns = len(table), table.shape[1]
        else:
            import csv

            names = list(table)
            cells = [_csv_cells(table[k]) for k in names]
            with open(tmp, "w", newline="") as f:
                w = csv.writer(f, lineterminator="\n")
                w.writerow(names)
                w.writerows(zip(*cells, strict=True))
            rows, columns = (len(cells[0]) if cells else 0), len(names)
    log_written(path, _count(columns, "column"), rows=rows)


def concat_csv(path, parts) -> None:
    """Write the rows of the CSV files ``parts`` (in order) under one header: their lines, unparsed
    (each value keeps its text). Every part must have the same header line."""
    parts = [Path(p) for p in parts]
    if not parts:
        raise ValueError(f"{path}: no tables to concatenate")
    header, total = None, 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as out:
        for part in parts:
            with open(part, newline="") as f:
                first = f.readline()
                if header is None:
                    header = first
                    out.write(first)
                elif first != header:
                    raise ValueError(f"{part}: its columns ({first.strip()}) differ from those of {parts[0]} "
                                     f"({header.strip()}); rerun the jobs that wrote them")
                body = f.read()
                out.write(body)
            rows = body.count("\n") + (1 if body and not body.endswith("\n") else 0)
            log_read(part, rows=rows)
            total += rows
    log_written(path, f"from {_count(len(parts), 'table')}", rows=total)


def read_csv_rows(path) -> list[dict]:
    """The rows of a CSV file with a header, as dicts, each cell typed the way pandas' ``read_csv`` types
    a lone value: an integer -> int, a number -> float, empty -> NaN, True / False -> bool, else the
    string. For jobs that read one small table and need no pandas."""
    import csv

    with open(path, newline="") as f:
        rows = [{k: _parse_cell(v) for k, v in row.items()} for row in csv.DictReader(f)]
    log_read(path, rows=len(rows))
    return rows


def _parse_cell(text: str):
    if text == "":
        return float("nan")
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _csv_cells(values) -> list[str]:
    import numpy as np

    a = np.asarray(values)
    if a.dtype.kind == "f":
        return ["" if np.isnan(x) else str(x) for x in a]
    if a.dtype.kind == "O":
        return ["" if v is None or (isinstance(v, float) and v != v) else str(v) for v in a]
    return [str(x) for x in a.tolist()]


def write_npz(path, arrays: dict) -> None:
    """Write arrays as an uncompressed .npz that ``numpy.load`` reads, byte-deterministic: unlike
    ``numpy.savez`` it stamps every member with a fixed date, not the current time."""
    import zipfile

    import numpy as np

    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for name in sorted(arrays):
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(arrays[name]), allow_pickle=False)
    log_written(path, f"{_count(len(arrays), 'array')}, {_size(path)}")
