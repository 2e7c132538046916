"""URL and OpenML sources against a local HTTP server on 127.0.0.1 (no internet needed).

The server serves fixed answers per path and counts requests, so the tests see when the cache is used.
Checked: download + sha256 + atomic move into place (the final name never holds a partial file), a wrong
checksum / HTTP error / broken connection leaves no file, progress lines, the cache, and OpenML's REST
API (description JSON + ARFF file, dense or sparse) with its cache, unknown ids, unsupported formats (refused
before any download) and md5 check; plus reading ARFF with liac-arff."""

import collections
import hashlib
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest

from normlab import datasets as D
from normlab import download as DL

CSV = b"a,b,label\n1.0,2.0,x\n3.0,4.0,y\n5.0,6.0,x\n"
SHA = hashlib.sha256(CSV).hexdigest()


class LocalServer:
    """A threaded HTTP server on 127.0.0.1 (free port). ``routes[path]`` is (status, body bytes, headers)
    or a callable(handler) that answers by itself; ``hits[path]`` counts requests."""

    def __init__(self):
        self.routes, self.hits = {}, collections.Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                server.hits[self.path] += 1
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if callable(route):
                    route(self)
                    return
                status, body, headers = route
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def serve(self, path: str, body: bytes, status: int = 200, **headers) -> str:
        self.routes[path] = (status, body, headers)
        return self.url(path)

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = LocalServer()
    yield s
    s.close()


def files_in(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# --- URL downloads -----------------------------------------------------------------------------------------

def test_download_checks_the_checksum_and_moves_the_file_into_place(server, tmp_path):
    url = server.serve("/files/data.csv", CSV)
    lines = []
    path = DL.fetch_url(url, SHA, tmp_path / "cache", name="d", progress=lines.append)
    assert path == tmp_path / "cache" / f"{SHA[:16]}-data.csv"
    assert path.read_bytes() == CSV
    assert files_in(tmp_path / "cache") == [path.name]  # no temporary file left beside it
    assert lines[0] == f"downloading {url} of {len(CSV)} B"
    assert re.fullmatch(rf"  {len(CSV)} B of {len(CSV)} B \(100%\) in \d+\.\d s", lines[-1])


def test_a_cached_file_is_used_without_network(server, tmp_path):
    url = server.serve("/data.csv", CSV)
    DL.fetch_url(url, SHA, tmp_path, progress=lambda m: None)
    server.close()  # no server any more: the cache must answer
    lines = []
    path = DL.fetch_url(url, SHA.upper(), tmp_path, progress=lines.append)
    assert path.read_bytes() == CSV and server.hits["/data.csv"] == 1
    assert lines == [f"using cached {path} (sha256 {SHA[:16]}...)"]


def test_a_damaged_cache_entry_is_downloaded_again(server, tmp_path):
    url = server.serve("/data.csv", CSV)
    (tmp_path / f"{SHA[:16]}-data.csv").write_bytes(b"truncat")
    path = DL.fetch_url(url, SHA, tmp_path, progress=lambda m: None)
    assert path.read_bytes() == CSV and server.hits["/data.csv"] == 1


def test_a_wrong_checksum_leaves_no_file(server, tmp_path):
    url = server.serve("/data.csv", CSV)
    wrong = "0" * 64
    with pytest.raises(D.DatasetError) as err:
        DL.fetch_url(url, wrong, tmp_path / "cache", name="mydata", progress=lambda m: None)
    assert str(err.value) == (
        f"dataset 'mydata': sha256 mismatch for {url}: expected {wrong}, got {SHA}; the download was discarded. "
        "Check the address; if the file changed on purpose, set 'sha256' to the new checksum"
    )
    assert files_in(tmp_path / "cache") == []


def test_the_final_name_never_holds_a_partial_download(server, tmp_path):
    """While the body is still arriving, only a temporary file exists; the final name appears whole."""
    body = b"a,y\n" + b"1.0,0\n" * 50_000
    sha = hashlib.sha256(body).hexdigest()
    release = threading.Event()

    def slow(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body[:1000])
        handler.wfile.flush()
        release.wait(20)
        handler.wfile.write(body[1000:])

    server.routes["/slow.csv"] = slow
    dest = tmp_path / f"{sha[:16]}-slow.csv"
    result = {}
    t = threading.Thread(target=lambda: result.update(path=DL.fetch_url(server.url("/slow.csv"), sha, tmp_path,
                                                                         progress=lambda m: None)))
    t.start()
    deadline = time.monotonic() + 20
    while not files_in(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    partial = files_in(tmp_path)
    assert len(partial) == 1 and partial[0].startswith(f".{dest.name}.") and partial[0].endswith(".tmp.csv")
    assert not dest.exists()
    release.set()
    t.join(20)
    assert result["path"] == dest and dest.read_bytes() == body and files_in(tmp_path) == [dest.name]


def test_a_broken_connection_leaves_no_file(server, tmp_path):
    def broken(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", "1000")
        handler.end_headers()
        handler.wfile.write(b"a,b\n1,2\n")
        handler.close_connection = True

    server.routes["/broken.csv"] = broken
    url = server.url("/broken.csv")
    with pytest.raises(D.DatasetError) as err:
        DL.fetch_url(url, SHA, tmp_path, name="d", progress=lambda m: None)
    assert str(err.value) == (f"dataset 'd': download of {url} stopped at 8 of 1000 bytes (the connection broke off); "
                              "rerun to try again")
    assert files_in(tmp_path) == []


def test_http_errors_and_unreachable_servers_are_clear(server, tmp_path):
    url = server.url("/missing.csv")
    with pytest.raises(D.DatasetError) as err:
        DL.fetch_url(url, SHA, tmp_path, name="d", progress=lambda m: None)
    assert str(err.value) == (f"dataset 'd': download of {url} failed with HTTP 404 (Not Found); "
                              "check the 'url' in its config entry")
    port = server.httpd.server_address[1]
    server.close()
    dead = f"http://127.0.0.1:{port}/x.csv"
    with pytest.raises(D.DatasetError) as err:
        DL.fetch_url(dead, SHA, tmp_path, name="d", progress=lambda m: None)
    assert str(err.value) == (f"dataset 'd': could not download {dead} ([Errno 111] Connection refused); check the "
                              "address and the network, then rerun")
    assert files_in(tmp_path) == []


def test_progress_is_reported_while_downloading(server, tmp_path, monkeypatch):
    monkeypatch.setattr(DL, "PROGRESS_EVERY_S", 0.0)
    monkeypatch.setattr(DL, "CHUNK", 64 * 1024)
    body = b"0" * (256 * 1024)
    url = server.serve("/big.bin", body)
    lines = []
    DL.fetch_url(url, hashlib.sha256(body).hexdigest(), tmp_path, progress=lines.append)
    assert lines[0] == f"downloading {url} of 256.0 KiB"
    pcts = [int(m.group(1)) for ln in lines[1:-1] if (m := re.search(r"\((\d+)%\)$", ln))]
    assert pcts and pcts == sorted(pcts) and pcts[-1] == 100
    assert "256.0 KiB of 256.0 KiB (100%) in" in lines[-1]


def test_progress_goes_to_the_download_logger_by_default(server, tmp_path, caplog):
    """Inside a job (normlab.runtime.job) the logger's lines reach the terminal and the job's log."""
    url = server.serve("/data.csv", CSV)
    with caplog.at_level(logging.INFO, logger="normlab.download"):
        DL.fetch_url(url, SHA, tmp_path)
    lines = [r.getMessage() for r in caplog.records if r.name == "normlab.download"]
    assert lines[0] == f"downloading {url} of {len(CSV)} B" and "(100%)" in lines[-1]


def test_bad_sha256_and_scheme_are_refused(tmp_path):
    with pytest.raises(D.DatasetError) as err:
        DL.fetch_url("http://127.0.0.1:1/x.csv", "abc", tmp_path, name="d")
    assert str(err.value) == "dataset 'd': 'sha256' must be 64 hexadecimal digits (the output of sha256sum), got 'abc'"
    with pytest.raises(D.DatasetError) as err:
        DL.fetch_url("file:///etc/passwd", SHA, tmp_path, name="d")
    assert str(err.value) == ("dataset 'd': 'file:///etc/passwd' is not an http:// or https:// address; "
                              "check the 'url' in its config entry")


def test_url_entry_end_to_end_through_load_source(server, tmp_path):
    url = server.serve("/get", CSV)
    df = D.load_source({"url": url, "sha256": SHA, "format": "csv", "target": "label"}, name="u",
                       cache_dir=tmp_path, progress=lambda m: None)
    assert df.to_csv(index=False).encode() == CSV
    assert files_in(tmp_path / "url") == [f"{SHA[:16]}-get"]
    arff = ARFF.encode()
    url = server.serve("/toy.arff", arff)
    df = D.load_source({"url": url, "sha256": hashlib.sha256(arff).hexdigest(), "target": "class"}, name="u",
                       cache_dir=tmp_path, progress=lambda m: None)
    assert list(df.columns) == ["id", "sepal length", "colour", "note", "class"]


# --- OpenML ------------------------------------------------------------------------------------------------

ARFF = """% a toy dataset in OpenML's ARFF dialect
@RELATION toy

@ATTRIBUTE id INTEGER
@ATTRIBUTE 'sepal length' REAL
@ATTRIBUTE colour {red,'dark blue'}
@ATTRIBUTE note STRING
@ATTRIBUTE class {a,b}

@DATA
1,5.1,red,'fine',a
2, 4.9 ,'dark blue',"quoted, with comma",b
% a comment inside the data
3,?,?,'esc \\' quote',a
4,6.0,red,plain,b
"""


def openml_routes(server, data_id=42, arff=ARFF, md5=None, fmt="ARFF"):
    body = arff.encode()
    arff_url = server.serve("/data/v1/download/99/toy.arff", body)
    desc = {"data_set_description": {
        "id": str(data_id), "name": "toy", "version": "1", "format": fmt, "file_id": "99", "url": arff_url,
        "default_target_attribute": "class", "row_id_attribute": "id", "ignore_attribute": "note",
        "md5_checksum": md5 or hashlib.md5(body).hexdigest(), "status": "active"}}
    server.serve(f"/api/v1/json/data/{data_id}", json.dumps(desc).encode(), **{"Content-Type": "application/json"})


def test_openml_dataset_is_fetched_through_the_api_and_cached(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OPENML_URL", server.url("/"))
    openml_routes(server)
    cache = tmp_path / "cache"
    lines = []
    df = D.load_source({"openml": 42}, name="toy", cache_dir=cache, progress=lines.append)
    assert list(df.columns) == ["sepal length", "colour", "class"]  # row id and ignored attribute dropped
    assert df["sepal length"].tolist()[:2] == [5.1, 4.9] and np.isnan(df["sepal length"][2])
    assert df["colour"].tolist() == ["red", "dark blue", None, "red"]
    assert df["class"].tolist() == ["a", "b", "a", "b"]
    assert any(ln.startswith("downloading ") for ln in lines)
    assert files_in(cache / "openml") == ["99.arff", "description.json"]
    assert D.resolved_target({"openml": 42}, cache) == "class"
    assert D.resolved_target({"openml": 42, "target": "colour"}, cache) == "colour"
    hits = dict(server.hits)
    server.close()
    again = D.load_source({"openml": 42}, name="toy", cache_dir=cache, progress=lambda m: None)
    pd.testing.assert_frame_equal(again, df)
    assert dict(server.hits) == hits


def test_openml_unknown_id(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OPENML_URL", server.url(""))
    server.serve("/api/v1/json/data/7", b'{"error": {"code": "111", "message": "Unknown dataset"}}', status=412)
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"openml": 7}, name="o", cache_dir=tmp_path)
    assert str(err.value) == (f"dataset 'o' (openml 7): OpenML has no dataset with id 7 "
                              f"({server.url('/api/v1/json/data/7')} answered HTTP 412); fix 'openml' in its config "
                              "entry")
    assert files_in(tmp_path) == []


def test_openml_md5_mismatch_keeps_no_data_file(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OPENML_URL", server.url(""))
    openml_routes(server, md5="0" * 32)
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"openml": 42}, name="o", cache_dir=tmp_path, progress=lambda m: None)
    assert str(err.value).startswith(f"dataset 'o' (openml 42): md5 mismatch for "
                                     f"{server.url('/data/v1/download/99/toy.arff')}: expected {'0' * 32}, got ")
    assert files_in(tmp_path / "openml") == ["description.json"]


def test_openml_answer_that_is_not_a_description(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OPENML_URL", server.url(""))
    server.serve("/api/v1/json/data/5", b"<html>maintenance</html>")
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"openml": 5}, name="o", cache_dir=tmp_path)
    assert str(err.value) == (f"dataset 'o' (openml 5): {server.url('/api/v1/json/data/5')} did not answer with an "
                              "OpenML dataset description; check $NORMLAB_OPENML_URL")


SPARSE_ARFF = """@RELATION sparse
@ATTRIBUTE id INTEGER
@ATTRIBUTE w1 NUMERIC
@ATTRIBUTE w2 NUMERIC
@ATTRIBUTE class {neg,pos}
@DATA
{0 1, 1 2.5, 3 pos}
{0 2, 2 ?}
{0 3, 1 0.5, 2 1.5, 3 neg}
"""


def test_openml_sparse_arff_is_read_into_a_dense_table(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OPENML_URL", server.url(""))
    openml_routes(server, arff=SPARSE_ARFF, fmt="Sparse_ARFF")
    df = D.load_source({"openml": 42}, name="sp", cache_dir=tmp_path, progress=lambda m: None)
    assert list(df.columns) == ["w1", "w2", "class"]  # the row id attribute dropped
    assert df["w1"].tolist() == [2.5, 0.0, 0.5] and df["w2"].tolist()[::2] == [0.0, 1.5] and np.isnan(df["w2"][1])
    assert df["class"].tolist() == ["pos", "neg", "neg"]  # absent: the nominal's first value, as 0 is


def test_openml_format_that_is_not_arff_is_refused_before_any_download(server, tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_OPENML_URL", server.url(""))
    openml_routes(server, fmt="Parquet")
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"openml": 42}, name="o", cache_dir=tmp_path, progress=lambda m: None)
    assert str(err.value) == ("dataset 'o' (openml 42): OpenML format 'Parquet' is not supported (only ARFF and "
                              "sparse ARFF)")
    assert server.hits["/data/v1/download/99/toy.arff"] == 0 and files_in(tmp_path) == []


def test_arff_reader():
    df = DL.parse_arff(ARFF)
    assert list(df.columns) == ["id", "sepal length", "colour", "note", "class"]
    assert df["note"].tolist() == ["fine", "quoted, with comma", "esc ' quote", "plain"]
    assert df["id"].dtype == np.float64 and df["id"].tolist() == [1.0, 2.0, 3.0, 4.0]
    dates = DL.parse_arff("@relation r\n@attribute 'when' DATE \"yyyy-MM-dd HH:mm:ss\"\n@attribute a real\n"
                          "@data\n'2001-04-03 12:12:12',1\n?,2\n")
    assert dates["when"].tolist() == ["2001-04-03 12:12:12", None] and dates["a"].tolist() == [1.0, 2.0]


def test_arff_reader_reads_a_file_as_its_text(tmp_path):
    (tmp_path / "toy.arff").write_bytes(ARFF.replace("\n", "\r\n").encode())
    pd.testing.assert_frame_equal(DL.read_arff(tmp_path / "toy.arff"), DL.parse_arff(ARFF))


@pytest.mark.parametrize("text, reason", [
    ("@relation r\n@attribute a real\n@data\n1\nx\n", "Invalid numerical value, at line 5"),
    ("@relation r\n@attribute a real\n@attribute b real\n@data\n1\n",
     "Bad @DATA instance format in line 5: 1"),
    ("@relation r\n@attribute a real\n@attribute a real\n@data\n1,2\n",
     "Bad @ATTRIBUTE name a at line 3, this name is already in use in line 2"),
    ("@relation r\n@attribute c {x,y}\n@data\nz\n", "Data value z not found in nominal declaration, at line 4"),
    ("@relation r\n@attribute a relational\n@data\n", "Bad @ATTRIBUTE type, at line 2"),
    ("@relation r\n@attribute a real\n", "Invalid layout of the ARFF file, at line 2"),
])
def test_a_malformed_arff_file_is_one_clear_error(text, reason):
    with pytest.raises(D.DatasetError) as err:
        DL.parse_arff(text, "toy")
    assert str(err.value) == f"toy: not a valid ARFF file ({reason}); fix the file, or convert it to CSV"
