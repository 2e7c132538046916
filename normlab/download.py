"""Downloads: a file from a URL with a required sha256, and OpenML datasets by id; both cached on disk.

* :func:`fetch_url` streams the file into a temporary name beside its cache path, showing progress on
  stderr, checks the sha256 and only then moves it into place (``os.replace``): a wrong checksum, an
  HTTP error or an interrupted download leaves no file under the cache name. A cached file whose sha256
  matches is used without any network access.
* :func:`fetch_openml` reads the dataset description from OpenML's public REST API
  (``<base>/api/v1/json/data/<id>``), downloads the ARFF file it points to (checked against the
  description's md5 when given) and caches both under ``<cache>/<id>/``; later fetches use the cache.
  The base address is ``$NORMLAB_OPENML_URL`` (default ``https://www.openml.org``).
* :func:`read_arff` / :func:`parse_arff` read an ARFF file / text into a DataFrame with liac-arff (the ARFF
  reader scikit-learn's own ``fetch_openml`` uses): dense or sparse data; numeric, integer, nominal, string
  and date attributes; ``?`` is a missing value.

scikit-learn's ``fetch_openml`` is not used: its OpenML addresses are fixed, while the download and cache code
here serves both ``url:`` and ``openml:`` sources and is tested offline against a local server
(``$NORMLAB_OPENML_URL``). Progress lines go to the ``normlab.download`` logger unless a ``progress``
callable is given.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd

from normlab import io
from normlab.checksums import sha256_of
from normlab.columns import check_column_names
from normlab.errors import DatasetError

OPENML_URL = "https://www.openml.org"
TIMEOUT_S = 60.0
CHUNK = 1 << 16
PROGRESS_EVERY_S = 0.5
ARFF_FORMATS = ("arff", "sparse_arff")  # OpenML's names (any case) of the formats read_arff reads


log = logging.getLogger(__name__)


def _progress_line(line: str) -> None:
    """The default ``progress``: one INFO line of the ``normlab.download`` logger (inside a job: the terminal
    and the job's log, labelled with the job)."""
    log.info(line)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _safe_basename(url: str, default: str = "download") -> str:
    name = Path(urllib.parse.urlparse(url).path).name
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".")
    return name[:100] or default


class DownloadHTTPError(DatasetError):
    """The server answered with an HTTP error status (``code``)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def _open(url: str, what: str, fix: str):
    """urlopen with errors turned into DatasetError."""
    if urllib.parse.urlparse(url).scheme not in ("http", "https"):
        raise DatasetError(f"{what}: {url!r} is not an http:// or https:// address; {fix}")
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "normlab"}),
                                      timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        raise DownloadHTTPError(f"{what}: download of {url} failed with HTTP {exc.code} ({exc.reason}); {fix}",
                                exc.code) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"{what}: could not download {url} ({reason}); check the address and the network, "
                           f"then rerun") from None


def download(url: str, dest, *, what: str, fix: str, expect_sha256: str | None = None,
             expect_md5: str | None = None, progress=None) -> str:
    """Stream ``url`` into ``dest`` atomically; returns its sha256. With ``expect_sha256`` (or
    ``expect_md5``) a mismatch raises DatasetError and leaves no file at ``dest``. Progress lines
    (bytes, percent when the size is known, at most one every PROGRESS_EVERY_S, plus a last one) go to
    ``progress`` (default: the ``normlab.download`` logger)."""
    progress = progress or _progress_line
    sha, md5 = hashlib.sha256(), hashlib.md5()
    start = last = time.monotonic()
    with _open(url, what, fix) as resp, io.atomic_path(dest) as tmp:
        total = resp.headers.get("Content-Length")
        total = int(total) if total and total.isdigit() else None
        size = f" of {human_bytes(total)}" if total is not None else ""
        progress(f"downloading {url}{size}")
        done = 0
        with open(tmp, "wb") as f:
            while True:
                try:
                    block = resp.read(CHUNK)
                except (OSError, http.client.HTTPException):
                    block = None
                if block is None or (not block and total is not None and done != total):
                    of = f" of {total}" if total is not None else ""
                    raise DatasetError(f"{what}: download of {url} stopped at {done}{of} bytes (the connection "
                                       "broke off); rerun to try again")
                if not block:
                    break
                f.write(block)
                sha.update(block)
                md5.update(block)
                done += len(block)
                now = time.monotonic()
                if now - last >= PROGRESS_EVERY_S:
                    last = now
                    pct = f" ({100 * done / total:.0f}%)" if total else ""
                    progress(f"  {human_bytes(done)}{size}{pct}")
        pct = " (100%)" if total else ""
        progress(f"  {human_bytes(done)}{size}{pct} in {time.monotonic() - start:.1f} s")
        got = sha.hexdigest()
        if expect_sha256 is not None and got != expect_sha256.lower():
            raise DatasetError(
                f"{what}: sha256 mismatch for {url}: expected {expect_sha256.lower()}, got {got}; the download was "
                "discarded. Check the address; if the file changed on purpose, set 'sha256' to the new checksum"
            )
        if expect_md5 is not None and md5.hexdigest() != expect_md5.lower():
            raise DatasetError(
                f"{what}: md5 mismatch for {url}: expected {expect_md5.lower()}, got {md5.hexdigest()}; "
                "the download was discarded. Rerun to try again"
            )
    return got


def fetch_url(url: str, sha256: str, cache_dir, *, name: str = "dataset", progress=None) -> Path:
    """The local path of the file at ``url`` whose sha256 must be ``sha256``: from the cache
    (``<cache_dir>/<sha256[:16]>-<file name>``) when there with that checksum, else downloaded."""
    sha256 = str(sha256).strip().lower()
    what = f"dataset {name!r}"
    if not re.fullmatch(r"[0-9a-f]{64}", sha256):
        raise DatasetError(f"{what}: 'sha256' must be 64 hexadecimal digits (the output of sha256sum), "
                           f"got {sha256!r}")
    dest = Path(cache_dir) / f"{sha256[:16]}-{_safe_basename(url)}"
    if dest.is_file():
        if sha256_of(dest) == sha256:
            (progress or _progress_line)(f"using cached {dest} (sha256 {sha256[:16]}...)")
            return dest
        dest.unlink()  # a damaged cache entry: fetch again
    download(url, dest, what=what, fix="check the 'url' in its config entry", expect_sha256=sha256,
             progress=progress)
    return dest


# --- OpenML -----------------------------------------------------------------------------------------------

def openml_base() -> str:
    return os.environ.get("NORMLAB_OPENML_URL", OPENML_URL).rstrip("/")


def _openml_id(data_id) -> str:
    s = str(data_id).strip()
    if not s.isdigit() or int(s) < 1:
        raise DatasetError(f"'openml' must be a positive integer dataset id, got {data_id!r}")
    return str(int(s))


def openml_description_cached(data_id, cache_dir) -> dict | None:
    """The cached OpenML description of ``data_id``, or None when not fetched yet."""
    path = Path(cache_dir) / _openml_id(data_id) / "description.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def openml_description(data_id, cache_dir, *, name: str = "dataset", progress=None) -> dict:
    """The ``data_set_description`` of an OpenML dataset, from the cache or the REST API (then cached)."""
    data_id = _openml_id(data_id)
    cached = openml_description_cached(data_id, cache_dir)
    if cached is not None:
        return cached
    what = f"dataset {name!r} (openml {data_id})"
    url = f"{openml_base()}/api/v1/json/data/{data_id}"
    try:
        with _open(url, what, f"check that OpenML dataset {data_id} exists ({OPENML_URL}/d/{data_id})") as resp:
            body = resp.read()
    except DownloadHTTPError as exc:
        if exc.code in (404, 412):
            raise DatasetError(f"{what}: OpenML has no dataset with id {data_id} ({url} answered HTTP {exc.code}); "
                               "fix 'openml' in its config entry") from None
        raise
    try:
        desc = json.loads(body)["data_set_description"]
    except (ValueError, KeyError, TypeError):
        raise DatasetError(f"{what}: {url} did not answer with an OpenML dataset description; check "
                           "$NORMLAB_OPENML_URL") from None
    if str(desc.get("format", "ARFF")).lower() not in ARFF_FORMATS:
        raise DatasetError(f"{what}: OpenML format {desc.get('format')!r} is not supported (only ARFF and "
                           "sparse ARFF)")
    if not desc.get("url"):
        raise DatasetError(f"{what}: the OpenML description has no download address ('url')")
    io.write_text(Path(cache_dir) / data_id / "description.json", json.dumps(desc, indent=2, sort_keys=True) + "\n")
    return desc


def fetch_openml(data_id, cache_dir, *, name: str = "dataset", progress=None) -> pd.DataFrame:
    """An OpenML dataset as a DataFrame (all its columns but its row id and ignored attributes; the entry's
    ``target`` picks the label). The description and the ARFF file are cached under ``<cache_dir>/<id>/``
    after the first fetch. Sparse ARFF is read into a dense table (absent values are 0)."""
    return fetch_openml_file(data_id, cache_dir, name=name, progress=progress)[0]


def fetch_openml_file(data_id, cache_dir, *, name: str = "dataset", progress=None) -> tuple[pd.DataFrame, Path]:
    """``fetch_openml``'s table and the path of the cached ARFF file it was read from."""
    data_id = _openml_id(data_id)
    what = f"dataset {name!r} (openml {data_id})"
    desc = openml_description(data_id, cache_dir, name=name, progress=progress)
    file_id = re.sub(r"[^0-9A-Za-z_-]", "_", str(desc.get("file_id", "data")))
    path = Path(cache_dir) / data_id / f"{file_id}.arff"
    md5 = desc.get("md5_checksum") or None
    if path.is_file() and (md5 is None or hashlib.md5(path.read_bytes()).hexdigest() == md5.lower()):
        (progress or _progress_line)(f"using cached {path}")
    else:
        download(str(desc["url"]), path, what=what, fix="rerun later, or check the dataset on OpenML",
                 expect_md5=md5, progress=progress)
    df = read_arff(path, f"{what} file {path}")
    ignore = [c for c in str(desc.get("ignore_attribute") or "").split(",") if c]
    row_id = [c for c in str(desc.get("row_id_attribute") or "").split(",") if c]
    drop = [c for c in ignore + row_id if c in df.columns]
    return (df.drop(columns=drop) if drop else df), path


# --- ARFF -------------------------------------------------------------------------------------------------

# An attribute of type DATE (with or without a format): liac-arff has no date type, so its header line is read
# as a STRING attribute (the dates stay text, as a CSV source's would).
_DATE_ATTRIBUTE = re.compile(r"""^(\s*@attribute\s+(?:'[^']*'|"[^"]*"|[^\s{}%,]+)\s+)date\b.*$""", re.IGNORECASE)


def _dates_as_strings(lines):
    """The lines of an ARFF file with DATE attributes declared as STRING; data lines unchanged."""
    in_header = True
    for line in lines:
        if in_header:
            if line.lstrip()[:5].lower() == "@data":
                in_header = False
            else:
                line = _DATE_ATTRIBUTE.sub(r"\1STRING", line)
        yield line.rstrip("\r\n")


def _arff_frame(lines, where: str) -> pd.DataFrame:
    import arff  # liac-arff

    try:
        decoded = arff.load(_dates_as_strings(lines), return_type=arff.DENSE)
    except arff.ArffException as exc:
        reason = str(exc).rstrip(".")
        raise DatasetError(f"{where}: not a valid ARFF file ({reason}); fix the file, or convert it to CSV") from None
    names = [str(name) for name, _ in decoded["attributes"]]
    check_column_names(names, where)
    rows = decoded["data"]
    cols = {}
    for j, (name, kind) in enumerate(decoded["attributes"]):
        values = [row[j] for row in rows]
        if kind in ("NUMERIC", "REAL", "INTEGER"):
            try:
                cols[str(name)] = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
            except (TypeError, ValueError):
                bad = next(v for v in values if v is not None and not _is_float(v))
                raise DatasetError(f"{where}: numeric attribute {name!r} has the value {bad!r}") from None
        else:  # nominal (a list of its values) or STRING: text, missing values None
            cols[str(name)] = pd.Series(values, dtype=object)
    return pd.DataFrame(cols, columns=names)


def read_arff(path, where: str = "ARFF file") -> pd.DataFrame:
    """An ARFF file (dense or sparse) as a DataFrame: numeric and integer attributes as float64 (``?`` ->
    NaN), nominal, string and date attributes as text (``?`` -> None); in sparse data an absent value is 0
    (a nominal attribute's first value). A malformed file raises DatasetError with liac-arff's reason and
    line number; ``where`` starts the message."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        return _arff_frame(f, where)


def parse_arff(text: str, where: str = "ARFF file") -> pd.DataFrame:
    """``read_arff`` of ARFF text."""
    return _arff_frame(text.splitlines(), where)


def _is_float(v) -> bool:
    try:
        float(v)
    except (TypeError, ValueError):
        return False
    return True
