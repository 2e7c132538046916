"""Every bad input stops with one clear message (what, where, how to fix) and leaves no output behind.

The messages are asserted word for word at the library level (``normlab.datasets`` / ``preprocess``,
which the fetch and preprocess jobs call); the workflow-level tests check that the same lines reach the
user through Snakemake (``<job> <dataset>: error: <message>`` on stderr and in the job's log) and that a
failed job leaves no file, and that a study whose every run diverges still finishes with a report."""

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import study_folders
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate
from test_download import LocalServer
from test_reruns import (
    HTML_TARGET,
    TINY,
    TINY_STUDY,
    new_workdir,
    snakemake,
    temp_files,
    tiny_config,
    tiny_csv,
    write_config,
)

from normlab import datasets as D
from normlab import preprocess as P

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")


def table(n=40, **extra) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n), "y": np.where(np.arange(n) % 2, "yes", "no")})
    for k, v in extra.items():
        df[k] = v
    return df[[c for c in df.columns if c != "y"] + ["y"]]


def prepare_error(df, target="y", **kw) -> str:
    kw.setdefault("name", "mydata")
    with pytest.raises(D.DatasetError) as err:
        P.prepare(df, target, 0.25, 0, **kw)
    return str(err.value)


def source_error(entry, name="mydata", **kw) -> str:
    with pytest.raises(D.DatasetError) as err:
        D.load_source(entry, name=name, **kw)
    return str(err.value)


# --- files ------------------------------------------------------------------------------------------------

def test_missing_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert source_error({"csv": "data/nope.csv", "target": "y"}) == (
        f"csv file 'data/nope.csv' of dataset 'mydata' does not exist (looked for {tmp_path}/data/nope.csv); "
        "fix 'csv' in its config entry (a relative path starts at the directory snakemake runs in)"
    )
    assert source_error({"parquet": "/no/such.parquet"}) == (
        "parquet file '/no/such.parquet' of dataset 'mydata' does not exist (looked for /no/such.parquet); "
        "fix 'parquet' in its config entry (a relative path starts at the directory snakemake runs in)"
    )
    (tmp_path / "folder").mkdir()
    assert source_error({"csv": "folder"}) == (
        "csv path 'folder' of dataset 'mydata' is not a file; point 'csv' at the file")


def test_duplicate_column_names(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("d.csv").write_text("a,b,a,y,b,b\n1,2,3,0,5,6\n4,5,6,1,7,8\n")
    assert source_error({"csv": "d.csv"}) == (
        "csv file 'd.csv' of dataset 'mydata': duplicate column names 'a' (2 times), 'b' (3 times); rename the "
        "columns so that every name is unique"
    )


def test_unreadable_csv_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("empty.csv").write_text("")
    assert source_error({"csv": "empty.csv"}) == (
        "csv file 'empty.csv' of dataset 'mydata': the file is empty; it needs a header row and at least two data rows")
    Path("index.csv").write_text(",a,y\n0,1.0,x\n1,2.0,y\n")
    assert source_error({"csv": "index.csv"}) == (
        "csv file 'index.csv' of dataset 'mydata': column 1 has an empty name in the header row; give every column "
        "a name (a blank first name is usually a saved row index: write the file without it)"
    )
    Path("ragged.csv").write_text("a,y\n1,2\n3,4,5,6\n")
    assert source_error({"csv": "ragged.csv"}) == (
        "csv file 'ragged.csv' of dataset 'mydata': not a valid CSV file (Error tokenizing data. C error: Expected 2 "
        "fields in line 3, saw 4); fix the file (every row needs as many fields as the header)"
    )
    Path("latin1.csv").write_bytes("a,y\n1,caf\xe9\n".encode("latin-1"))
    assert source_error({"csv": "latin1.csv"}) == (
        "csv file 'latin1.csv' of dataset 'mydata': the file is not UTF-8 text; save it as UTF-8")


def test_delimited_text_as_users_have_it_is_read(tmp_path, monkeypatch):
    """A semicolon-separated file and a gzip file named .csv: read as the comma-separated original (they gave
    "target column 'target' is not in the table; its columns are ['f0;f1;f2;f3;target']" and "the file is
    not UTF-8 text")."""
    import gzip

    monkeypatch.chdir(tmp_path)
    text = "f0,f1,f2,f3,target\n" + "".join(f"{i},{i * 2},{i % 3},{i / 7:.3f},{i % 2}\n" for i in range(40))
    Path("comma.csv").write_text(text)
    Path("semicolon.csv").write_text(text.replace(",", ";"))
    Path("gzip.csv").write_bytes(gzip.compress(text.replace(",", "\t").encode()))
    expected = D.load_source({"csv": "comma.csv"})
    for f in ("semicolon.csv", "gzip.csv"):
        df = D.load_source({"csv": f}, name="mydata")
        pd.testing.assert_frame_equal(df, expected)
        P.prepare(df, "target", 0.25, 0)


def test_files_that_are_not_delimited_text_say_what_they_look_like(tmp_path, monkeypatch):
    import gzip
    import zipfile

    monkeypatch.chdir(tmp_path)
    with zipfile.ZipFile("three.csv", "w") as zf:
        for n in ("a.csv", "b.csv", "notes.txt"):
            zf.writestr(n, "a,y\n1,0\n")
    assert source_error({"csv": "three.csv"}) == (
        "csv file 'three.csv' of dataset 'mydata': the file is not CSV text: it looks like a zip archive with 3 "
        "members ('a.csv', 'b.csv', 'notes.txt'); extract the table you want and point 'csv' at it (a zip archive "
        "with a single file in it is read directly)"
    )
    with zipfile.ZipFile("book.csv", "w") as zf:  # the layout of an Excel workbook
        for n in ("[Content_Types].xml", "_rels/.rels", "xl/workbook.xml", "xl/worksheets/sheet1.xml"):
            zf.writestr(n, "<x/>")
    assert source_error({"csv": "book.csv"}) == (
        "csv file 'book.csv' of dataset 'mydata': the file is not CSV text: it looks like an Excel workbook (xlsx); "
        "save the sheet as CSV (CSV UTF-8) and point 'csv' at that file"
    )
    Path("old.csv").write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + bytes(600))
    assert source_error({"csv": "old.csv"}) == (
        "csv file 'old.csv' of dataset 'mydata': the file is not CSV text: it looks like an Excel workbook (xls) or "
        "another old Microsoft Office file; save the sheet as CSV (CSV UTF-8) and point 'csv' at that file"
    )
    Path("noise.csv").write_bytes(bytes([0x9f, 0x3a, 0x00, 0x11]) + bytes(range(256)) * 4)
    assert source_error({"csv": "noise.csv"}) == (
        "csv file 'noise.csv' of dataset 'mydata': the file is not CSV text: it looks like binary data (it starts with "
        "the bytes 9f 3a 00 11 00 01 02 03); point 'csv' at a CSV text file"
    )
    Path("inside.csv").write_bytes(gzip.compress(bytes(range(256)) * 4))
    assert source_error({"csv": "inside.csv"}) == (
        "csv file 'inside.csv' of dataset 'mydata': the file (gzip-compressed) is not CSV text: it looks like binary "
        "data (it starts with the bytes 00 01 02 03 04 05 06 07); point 'csv' at a CSV text file"
    )
    Path("cut.csv").write_bytes(gzip.compress(b"a,y\n" + b"1,0\n" * 1000)[:30])
    assert source_error({"csv": "cut.csv"}) == (
        "csv file 'cut.csv' of dataset 'mydata': the file is gzip-compressed but cannot be decompressed (Compressed "
        "file ended before the end-of-stream marker was reached); the file is damaged or incomplete: copy or "
        "download it again"
    )
    Path("utf16.csv").write_bytes("a\ty\n1\t0\n".encode("utf-16"))
    assert source_error({"csv": "utf16.csv"}) == (
        "csv file 'utf16.csv' of dataset 'mydata': the file is UTF-16 text (as Excel's 'Unicode Text' writes it), "
        "not UTF-8; save it as CSV UTF-8"
    )
    pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}).to_parquet("table.csv")
    assert source_error({"csv": "table.csv"}) == (
        "csv file 'table.csv' of dataset 'mydata': the file is not CSV text: it looks like a Parquet file; use "
        "'parquet:' for it instead of 'csv:'"
    )
    Path("spaces.csv").write_text("a b y\n1 2 0\n3 4 1\n")
    assert source_error({"csv": "spaces.csv"}) == (
        "csv file 'spaces.csv' of dataset 'mydata': the header row is a single column ('a b y'): no comma, semicolon, "
        "tab or pipe separates column names in it, and a table needs a target and feature columns; save the file "
        "with one of those between the columns"
    )
    Path("semi.csv").write_text("a;b;y\n1;2;0\n3;4;1\n")
    assert source_error({"csv": "semi.csv", "delimiter": "tab"}) == (
        "csv file 'semi.csv' of dataset 'mydata': with 'delimiter: tab' the header row is a single column "
        "('a;b;y'), which holds semicolons; set 'delimiter: semicolon' in its config entry, or remove 'delimiter' "
        "(the delimiter is then detected)"
    )
    assert D.load_source({"csv": "semi.csv", "delimiter": "semicolon"}).columns.tolist() == ["a", "b", "y"]


def test_checksum_mismatch_leaves_no_file(tmp_path):
    server = LocalServer()
    try:
        body = b"a,y\n1,0\n2,1\n"
        url = server.serve("/d.csv", body)
        got = __import__("hashlib").sha256(body).hexdigest()
        msg = source_error({"url": url, "sha256": "f" * 64}, cache_dir=tmp_path, progress=lambda m: None)
    finally:
        server.close()
    assert msg == (f"dataset 'mydata': sha256 mismatch for {url}: expected {'f' * 64}, got {got}; the download "
                   "was discarded. Check the address; if the file changed on purpose, set 'sha256' to the new checksum")
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


# --- table contents ---------------------------------------------------------------------------------------

def test_missing_target_column():
    assert prepare_error(table(), target="label") == (
        "dataset 'mydata': target column 'label' is not in the table; its columns are ['a', 'b', 'y']. "
        "Set 'target' in its config entry to the label column"
    )


def test_non_numeric_feature_columns_are_named():
    df = table(colour=["red", "blue"] * 20, size=["1,5", "2,25", "-3,0", "4"] * 10)
    decimal_comma = (
        "dataset 'mydata': feature columns ['size'] hold numbers written with a decimal comma (e.g. 'size' holds "
        "'1,5'), which are read as text; save the file with '.' as the decimal mark (and a comma, semicolon, tab or "
        "pipe between the columns)"
    )
    # numbers with a decimal comma get the fix that makes them numbers, not the advice to one-hot encode them
    assert prepare_error(df) == decimal_comma
    assert prepare_error(df, categorical=["colour"]) == decimal_comma
    text = (
        "dataset 'mydata': feature columns ['colour'] are not numeric (e.g. 'colour' holds 'red'); list them "
        "under 'categorical' in its config entry to one-hot encode them, or remove them from the data"
    )
    assert prepare_error(df.assign(size=1.0)) == text
    # a text value among them, or a thousands separator, is not a decimal comma: the categorical advice
    for other in ("red", "1,000.5"):
        mixed = df.assign(size=["1,5", other] * 20)
        assert prepare_error(mixed, categorical=["colour"]) == (
            "dataset 'mydata': feature columns ['size'] are not numeric (e.g. 'size' holds '1,5'); list them "
            "under 'categorical' in its config entry to one-hot encode them, or remove them from the data"
        ), other
    P.prepare(df, "y", 0.25, 0, categorical=["colour", "size"])  # both declared: fine


def test_missing_values_without_impute_are_counted_per_column():
    df = table()
    df.loc[[1, 5, 9], "a"] = np.nan
    df.loc[[2], "b"] = np.nan
    assert prepare_error(df) == (
        "dataset 'mydata': 4 missing values (NaN) in 2 columns: 'a' (3), 'b' (1); set 'impute: mean' in its config "
        "entry to fill them with the training-split mean, or remove those rows from the data"
    )
    one = table()
    one.loc[3, "b"] = np.nan
    assert prepare_error(one) == (
        "dataset 'mydata': 1 missing value (NaN) in 1 column: 'b' (1); set 'impute: mean' in its config entry to fill "
        "it with the training-split mean, or remove that row from the data"
    )
    out = P.prepare(df, "y", 0.25, 0, impute="mean")
    assert all(np.isfinite(a["X_train"]).all() and np.isfinite(a["X_test"]).all() for a in out.values())


def test_missing_values_read_from_a_csv(tmp_path, monkeypatch):
    """Empty cells and NA markers are missing values too; a missing categorical value counts as well."""
    monkeypatch.chdir(tmp_path)
    Path("d.csv").write_text("a,c,y\n1.0,u,0\n,v,1\nNA,,0\n4.0,u,1\n5.0,v,0\n6.0,u,1\n")
    df = D.load_source({"csv": "d.csv"}, name="mydata")
    assert prepare_error(df, categorical=["c"]) == (
        "dataset 'mydata': 3 missing values (NaN) in 2 columns: 'a' (2), 'c' (1); set 'impute: mean' in its config "
        "entry to fill them with the training-split mean, or remove those rows from the data"
    )


def test_infinite_values():
    df = table()
    df.loc[0, "a"] = np.inf
    df.loc[3, "a"] = -np.inf
    msg = ("dataset 'mydata': 2 infinite values (inf) in 1 column: 'a' (2); replace them in the data ('impute' "
           "fills only missing values)")
    assert prepare_error(df) == msg
    assert prepare_error(df, impute="mean") == msg


def test_constant_column_is_allowed_and_stays_finite():
    df = table(k=3.0, zero=0.0)
    out = P.prepare(df, "y", 0.25, 0)
    for arrays in out.values():
        for key, v in arrays.items():
            assert v.dtype.kind != "f" or np.isfinite(v).all(), key
    std = out["standardize"]
    assert std["input_scale"].tolist()[2:] == [1.0, 1.0] and not std["X_train"][:, 2:].any()


def test_single_class():
    df = table()
    df["y"] = "yes"
    assert prepare_error(df) == (
        "dataset 'mydata': the target column 'y' has a single class ('yes'); classification needs at least two. "
        "Use data with two or more classes, or set 'task: regression' for a numeric target"
    )


def test_fewer_training_rows_than_the_batch_size():
    assert prepare_error(table(n=60), batch_size=64) == (
        "dataset 'mydata': the training split has 45 rows (60 rows, test_fraction 0.25), fewer than "
        "sweep.batch_size 64; lower sweep.batch_size to 45 or less, or use more rows"
    )
    P.prepare(table(n=60), "y", 0.25, 0, batch_size=45)  # the advice, followed


def follow(message: str, n_rows: int, split: dict, batch_size: int) -> tuple[int, dict, int]:
    """(rows, split, batch_size) after the advice of a split message: the fewest rows it names, or the
    test_fraction (and batch_size) it names."""
    split = dict(split)
    if m := re.search(r"split\.test_fraction: ([0-9.]+)", message):
        split["test_fraction"] = float(m.group(1))
        if b := re.search(r"sweep\.batch_size: (\d+) or less", message):
            batch_size = int(b.group(1))
        return n_rows, split, batch_size
    return int(re.search(r"use more rows \(at least (\d+)", message).group(1)), split, batch_size


def test_too_few_test_rows_are_refused_and_every_remedy_works():
    """5 rows used to be advised 'batch_size: 3', after which the study reported accuracy on 2 test rows."""
    assert prepare_error(table(n=5), batch_size=3) == (
        "dataset 'mydata': the test split has 2 rows (5 rows, test_fraction 0.25), fewer than split.min_test_rows 10: "
        "a test score measured on so few rows means little (one row moves the test accuracy by 50 percentage "
        "points). To fix it, use more rows (at least 37 at test_fraction 0.25 and sweep.batch_size 3)"
    )
    assert prepare_error(table(n=20), batch_size=16) == (
        "dataset 'mydata': the test split has 5 rows (20 rows, test_fraction 0.25), fewer than split.min_test_rows "
        "10: a test score measured on so few rows means little (one row moves the test accuracy by 20 percentage "
        "points). To fix it, use more rows (at least 37 at test_fraction 0.25 and sweep.batch_size 16), or set "
        "split.test_fraction: 0.46 and sweep.batch_size: 10 or less (10 test rows, 10 training rows)"
    )
    assert prepare_error(table(n=30), batch_size=16).endswith(
        "To fix it, use more rows (at least 37 at test_fraction 0.25 and sweep.batch_size 16), or set "
        "split.test_fraction: 0.31 (10 test rows, 20 training rows)")
    # the boundary: 40 rows give 10 test rows (enough), 36 rows 9; the threshold is split.min_test_rows
    P.prepare(table(n=40), "y", 0.25, 0, batch_size=30)
    assert "the test split has 9 rows (36 rows" in prepare_error(table(n=36))
    P.prepare(table(n=36), "y", 0.25, 0, min_test_rows=9)
    assert "fewer than split.min_test_rows 11" in prepare_error(table(n=40), min_test_rows=11)
    reg = table(n=20).assign(y=np.arange(20.0))
    assert "means little (one row carries 20% of the test loss). To fix it" in prepare_error(reg, task="regression")
    # every remedy, followed, passes both split checks (and the rows named are the fewest that do)
    for n in (2, 5, 9, 11, 20, 36, 50, 90):
        for f in (0.1, 0.25, 0.5, 0.8):
            for b in (1, 3, 16, 64):
                for k in (1, 10, 25):
                    kw = dict(name="mydata", batch_size=b, min_test_rows=k)
                    try:
                        P.prepare(table(n=n), "y", f, 0, **kw)
                        continue
                    except D.DatasetError as err:
                        message = str(err)
                    if "test split" not in message:
                        assert "lower sweep.batch_size to" in message, message
                        continue
                    possible = any(k <= math.ceil(q / 100 * n) < n for q in range(1, 100))
                    assert ("split.test_fraction" in message) == possible, message  # offered whenever one exists
                    for remedy in message.split("To fix it, ")[1].split(", or "):
                        rows, split, batch = follow(remedy, n, {"test_fraction": f}, b)
                        P.prepare(table(n=rows), "y", split["test_fraction"], 0, **{**kw, "batch_size": batch})
                        if rows > n:
                            with pytest.raises(D.DatasetError):  # one row fewer does not do
                                P.prepare(table(n=rows - 1), "y", f, 0, **kw)


def test_min_test_rows_comes_from_the_config_split():
    entry, split = {"csv": "x.csv"}, {"test_fraction": 0.25, "seed": 0}
    P.prepare_dataset(table(n=40), entry, "y", split, ("raw",), 16, "mydata")  # default 10: 10 test rows pass
    with pytest.raises(D.DatasetError, match="fewer than split.min_test_rows 12"):
        P.prepare_dataset(table(n=40), entry, "y", {**split, "min_test_rows": 12}, ("raw",), 16, "mydata")
    config = {"datasets": {"d": {"sklearn": "iris"}}}
    validate(config, SCHEMA)
    assert config["split"]["min_test_rows"] == P.MIN_TEST_ROWS == 10


def test_values_too_large_for_the_studys_dtype():
    """A column around 1e300 ended in "non-finite values in ['input_scale'] after preprocessing; please report
    this"; now the column, its range and the fix. The bound: the squares summed over a split's rows x
    features must stay finite in sweep.dtype as the network takes them (raw), and in float64 for the
    standardization to be fitted."""
    big = table()
    big.loc[3, "a"], big.loc[5, "a"] = 1e300, -2e299
    assert prepare_error(big) == (
        "dataset 'mydata': column 'a' (from -2e+299 to 1e+300) holds values too large for the study's float32 "
        "(sweep.dtype), in which the network takes them as they are (input treatment 'raw'): their squares, summed "
        "over 30 rows x 2 features, overflow (magnitudes up to 2.4e+18 fit). Rescale it in the data (e.g. divide "
        "'a' by 1e+285), or drop it: add drop: [\"a\"] to its config entry"
    )
    assert prepare_error(big, treatments=("standardize",)) == (
        "dataset 'mydata': column 'a' (from -2e+299 to 1e+300) holds values too large for float64, in which the "
        "'standardize' input treatment is fitted: their squares, summed over the 30 training rows, overflow "
        "(magnitudes up to 2.4e+153 fit). Rescale it in the data (e.g. divide 'a' by 1e+150), or drop it: add "
        "drop: [\"a\"] to its config entry"
    )
    # the advice, followed: divided by the number named, or dropped
    for treatments, divisor in ((P.DATA_INPUTS, 1e285), (("standardize",), 1e150)):
        P.prepare(big.assign(a=big["a"] / divisor), "y", 0.25, 0, treatments)
        P.prepare(big, "y", 0.25, 0, treatments, drop=["a"])
    # the bound: 30 rows x 2 features in float32 allow sqrt(3.4e38 / 60) = 2.4e18 as they are
    near = table()
    near.loc[3, "b"] = 2.3e18
    P.prepare(near, "y", 0.25, 0)
    near.loc[3, "b"] = 2.5e18
    assert "column 'b' (from -2.2 to 2.5e+18) holds values too large" in prepare_error(near)
    P.prepare(near, "y", 0.25, 0, ("standardize",))  # standardized, they are small
    P.prepare(near, "y", 0.25, 0, dtype="float64")  # and float64 holds them
    entry, split = {"csv": "x.csv"}, {"test_fraction": 0.25, "seed": 0}
    P.prepare_dataset(near, entry, "y", split, ("raw",), 16, "mydata", "float64")
    with pytest.raises(D.DatasetError, match="too large for the study's float32"):
        P.prepare_dataset(near, entry, "y", split, ("raw",), 16, "mydata", "float32")


def test_values_too_large_after_standardizing():
    """A test row far outside the training rows' spread is small as read but huge once standardized."""
    df = table()
    _, test = P.split_indices(np.unique(df["y"], return_inverse=True)[1], 0.25, 0, True)
    df.loc[test[0], "b"] = 1e20
    assert prepare_error(df, treatments=("standardize",)) == (
        "dataset 'mydata': after the 'standardize' input treatment, column 'b' (from -2.11 to 8.65e+19) holds values "
        "too large for the study's float32 (sweep.dtype): their squares, summed over 30 rows x 2 features, overflow "
        "(magnitudes up to 2.4e+18 fit). Some rows lie far outside the training split's spread of it: fix or remove "
        "those rows in the data, or drop it: add drop: [\"b\"] to its config entry"
    )
    P.prepare(df, "y", 0.25, 0, ("standardize",), drop=["b"])
    P.prepare(df.drop(index=test[0]), "y", 0.25, 0, ("standardize",))


def test_regression_targets_too_large():
    reg = table().assign(y=np.arange(40.0) * 1e200)
    assert prepare_error(reg, task="regression") == (
        "dataset 'mydata': the target column 'y' (from 0 to 3.9e+201) holds values too large for float64, in which it "
        "is standardized: their squares, summed over the 30 training rows, overflow (magnitudes up to 2.4e+153 fit). "
        "Rescale it in the data (e.g. divide it by 1e+52)"
    )
    P.prepare(reg.assign(y=reg["y"] / 1e52), "y", 0.25, 0, task="regression")
    reg = table().assign(y=np.arange(40.0))
    _, test = P.split_indices(reg["y"].to_numpy(), 0.25, 0, False)
    reg.loc[test[0], "y"] = 1e25
    assert prepare_error(reg, task="regression") == (
        "dataset 'mydata': standardized with the training split's mean and standard deviation, the target column 'y' "
        "(from -1.9 to 8.98e+23) holds values too large for the study's float32 (sweep.dtype): their squares, summed "
        "over 30 rows, overflow (magnitudes up to 3.4e+18 fit). Some rows lie far outside the training split's "
        "spread of the target: fix or remove those rows in the data"
    )


def test_drop_removes_columns_before_any_check():
    df = table(id=[f"u{i}" for i in range(40)], notes=np.nan)
    out = P.prepare(df, "y", 0.25, 0, drop=["id", "notes"])["raw"]
    assert out["feature_names"].tolist() == ["a", "b"]
    np.testing.assert_array_equal(out["X_train"], P.prepare(table(), "y", 0.25, 0)["raw"]["X_train"])
    assert prepare_error(df, drop=["y"]) == (
        "dataset 'mydata': 'drop' names the target column 'y'; remove it from 'drop' (to train on another label "
        "column, set 'target' to it)"
    )
    assert prepare_error(df, drop=["id", "colour"]) == (
        "dataset 'mydata': 'drop' names ['colour'], not in the table; its columns are ['a', 'b', 'id', 'notes', "
        "'y']. Fix 'drop' in its config entry"
    )
    assert prepare_error(df, drop=["id"], categorical=["id"]) == (
        "dataset 'mydata': column 'id' is listed under both 'drop' and 'categorical'; remove it from one of them (a "
        "dropped column is not used at all)"
    )
    assert prepare_error(table(), drop=["a", "b"]) == (
        "dataset 'mydata': the table has no feature columns besides the target 'y' once drop removed ['a', 'b']; "
        "add feature columns"
    )


def test_an_empty_column_is_to_be_dropped_and_dropping_it_works():
    """It used to advise 'impute: mean', which then failed with a second error and no way to drop it."""
    df = table(notes=np.nan)
    msg = ("dataset 'mydata': feature column 'notes' has no values at all (every cell is empty), which 'impute' "
           "cannot fill; drop it: add drop: [\"notes\"] to its config entry")
    assert prepare_error(df) == msg and prepare_error(df, impute="mean") == msg
    assert prepare_error(table(e=np.nan, f=np.nan)).startswith(
        "dataset 'mydata': 2 feature columns ['e', 'f'] have no values at all (every cell is empty), which 'impute' "
        "cannot fill; drop them: add drop: [\"e\", \"f\"] to its config entry")
    P.prepare(df, "y", 0.25, 0, drop=["notes"])
    # values in the test split only: 'impute: mean' has nothing to fill from
    _, test = P.split_indices(np.unique(df["y"], return_inverse=True)[1], 0.25, 0, True)
    df.loc[test[:2], "notes"] = 1.0
    assert prepare_error(df, impute="mean") == (
        "dataset 'mydata': column 'notes' has no values in the training split (only in the test split), so 'impute: "
        "mean' cannot fill it; drop it: add drop: [\"notes\"] to its config entry"
    )
    P.prepare(df, "y", 0.25, 0, impute="mean", drop=["notes"])


def test_drop_and_the_new_split_key_in_the_schema():
    config = {"datasets": {"d": {"csv": "x.csv", "drop": ["id"], "delimiter": ";"}},
              "split": {"min_test_rows": 20}}
    validate(config, SCHEMA)
    assert schema_message({"datasets": {"d": {"csv": "x.csv", "drop": "id"}}}) == [
        "ValidationError: 'id' is not of type 'array'", "On instance['datasets']['d']['drop']:"]
    assert schema_message({"datasets": {"d": {"csv": "x.csv"}}, "split": {"min_test_rows": 0}}) == [
        "ValidationError: 0 is less than the minimum of 1", "On instance['split']['min_test_rows']:"]


def test_other_table_problems():
    df = table()
    df.loc[4, "y"] = None
    assert prepare_error(df) == (
        "dataset 'mydata': the target column 'y' has 1 missing value; remove those rows from the data ('impute' "
        "fills feature columns only)"
    )
    assert prepare_error(table(), task="regression") == (
        "dataset 'mydata': task is regression but the target column 'y' is not numeric (e.g. 'no'); use a numeric "
        "target or set 'task: classification'"
    )
    reg = table().assign(y=np.arange(40.0))
    reg.loc[2, "y"] = np.inf
    assert prepare_error(reg, task="regression") == (
        "dataset 'mydata': the target column 'y' has 1 infinite value; remove or fix those rows")
    assert prepare_error(table(), categorical=["colour"]) == (
        "dataset 'mydata': 'categorical' names ['colour'], not in the table; its columns are ['a', 'b', 'y']. "
        "Fix 'categorical' in its config entry"
    )
    assert prepare_error(table(), categorical=["y"]) == (
        "dataset 'mydata': the target column 'y' is listed under 'categorical'; remove it there (the target's "
        "encoding follows 'task')"
    )
    assert prepare_error(table()[["y"]]) == (
        "dataset 'mydata': the table has no feature columns besides the target 'y'; add feature columns")
    assert prepare_error(table().iloc[:1]) == (
        "dataset 'mydata': the table has 1 row; it needs at least 2 (rows to train on and rows to test on)")
    ids = table(n=1200).assign(user=[f"u{i}" for i in range(1200)])
    assert prepare_error(ids, categorical=["user"]) == (
        "dataset 'mydata': categorical column 'user' has 1200 distinct values (more than 1000); it is probably an "
        "identifier: remove it or bin its values"
    )


def test_html_in_names_is_kept_as_data():
    """Names are data, never markup: they pass through unchanged (the report escapes them, see test_reruns)."""
    df = table().rename(columns={"a": "<img src=x onerror=alert(1)>", "y": HTML_TARGET})
    out = P.prepare(df, HTML_TARGET, 0.25, 0)["raw"]
    assert out["feature_names"].tolist() == ["<img src=x onerror=alert(1)>", "b"]


# --- configuration ----------------------------------------------------------------------------------------

def schema_message(config) -> list[str]:
    with pytest.raises(WorkflowError) as err:
        validate(config, SCHEMA)
    lines = str(err.value).splitlines()
    return [lines[1]] + [ln for ln in lines if ln.startswith("On instance")]


@pytest.mark.parametrize("name", ["../etc", "a;rm -rf x", "$(id)", "a b", "<b>x</b>", "x/y", "`x`", "d\nx", ""])
def test_dataset_names_with_path_shell_or_html_characters_are_rejected(name):
    assert schema_message({"datasets": {name: {"sklearn": "iris"}}}) == [
        f"ValidationError: {name!r} does not match '^[A-Za-z0-9_-]+$'", "On instance['datasets']:"]


def test_a_trailing_newline_in_a_dataset_name_is_rejected():
    """(a regular expression's $ matches before a final newline, so the schema says 'no newline' as well)"""
    assert schema_message({"datasets": {"d\n": {"sklearn": "iris"}}}) == [
        "ValidationError: 'd\\n' should not be valid under {'pattern': '\\n'}", "On instance['datasets']:"]


def test_unknown_keys_and_wrong_types_name_the_key():
    base = {"datasets": {"d": {"sklearn": "iris"}}}
    assert schema_message({**base, "sweeps": {}}) == [
        "ValidationError: Additional properties are not allowed ('sweeps' was unexpected)", "On instance:"]
    assert schema_message({**base, "sweep": {"stpes": 10}}) == [
        "ValidationError: Additional properties are not allowed ('stpes' was unexpected)", "On instance['sweep']:"]
    assert schema_message({**base, "sweep": {"steps": "many"}}) == [
        "ValidationError: 'many' is not of type 'integer'", "On instance['sweep']['steps']:"]
    assert schema_message({**base, "sweep": {"seeds": 0}}) == [
        "ValidationError: 0 is not of type 'array'", "On instance['sweep']['seeds']:"]
    assert schema_message({**base, "split": {"test_fraction": 1.5}}) == [
        "ValidationError: 1.5 is greater than or equal to the maximum of 1", "On instance['split']['test_fraction']:"]
    assert schema_message({"datasets": {"d": {"sklearn": "iris", "target": 3}}}) == [
        "ValidationError: 3 is not of type 'string'", "On instance['datasets']['d']['target']:"]
    assert schema_message({"datasets": {}}) == [
        "ValidationError: {} should be non-empty", "On instance['datasets']:"]
    long = "x" * 65
    assert schema_message({"datasets": {long: {"sklearn": "iris"}}})[0] == f"ValidationError: {long!r} is too long"


@pytest.mark.parametrize("name", ["../etc", "x/y", "/abs", "a b", "a;rm -rf x", "$(id)", "~", ".", ""])
def test_study_names_with_path_or_shell_characters_are_refused_naming_the_key(name):
    assert schema_message({"study": name, "datasets": {"d": {"sklearn": "iris"}}}) == [
        f"ValidationError: {name!r} does not match '^[A-Za-z0-9_-]+$'", "On instance['study']:"]


def test_other_bad_study_names_are_refused_naming_the_key():
    base = {"datasets": {"d": {"sklearn": "iris"}}}
    assert schema_message({**base, "study": "d\n"}) == [
        "ValidationError: 'd\\n' should not be valid under {'pattern': '\\n'}", "On instance['study']:"]
    assert schema_message({**base, "study": "cache"}) == [  # data/cache/ holds the downloads of every study
        "ValidationError: 'cache' should not be valid under {'const': 'cache'}", "On instance['study']:"]
    assert schema_message({**base, "study": 3}) == ["ValidationError: 3 is not of type 'string'",
                                                    "On instance['study']:"]


def test_a_config_without_study_gets_the_default_name_and_evaluation_set():
    config = {"datasets": {"d": {"sklearn": "iris"}}}
    validate(config, SCHEMA)
    assert config["study"] == "default"
    assert config["sweep"]["eval_examples"] == 512 == config["analysis"]["max_examples"]


@pytest.mark.workflow
def test_workflow_refuses_bad_names_before_running_anything(tmp_path):
    root = new_workdir(tmp_path / "names")
    cfg = tiny_config({"a;touch pwned": {"sklearn": "iris"}})
    proc = snakemake(root, tmp_path / "jax", "--configfile", write_config(root, cfg), "--dry-run", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("datasets: the dataset name 'a;touch pwned' (';', ' ' are not allowed); a dataset name must be ASCII "
            "letters, digits, _ and - only, at most 64 characters (it becomes a file name and a Snakemake wildcard) "
            "(e.g. rename it a_touch_pwned)") in out, out
    # a study name with path characters: refused by the schema, naming the key
    cfg = tiny_config({"iris": {"sklearn": "iris"}}, study="../elsewhere")
    proc = snakemake(root, tmp_path / "jax", "--configfile", write_config(root, cfg), "--dry-run", check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert ("study is '../elsewhere' ('.', '/' are not allowed); it must be ASCII letters, digits, _ and - only, at "
            "most 64 characters, not cache (it becomes a folder name, and data/cache/ holds the downloads every study "
            "shares) (e.g. study: elsewhere)") in out, out
    # wildcard constraints: a target whose dataset part has path or shell characters matches no rule
    cfg = tiny_config({"iris": {"sklearn": "iris"}})
    data = f"data/{TINY_STUDY}"
    for target in (f"{data}/raw/a;b.csv", f"{data}/processed/../x/standardize.npz", f"{data}/raw/<b>.csv"):
        proc = snakemake(root, tmp_path / "jax", "--configfile", write_config(root, cfg), "--dry-run", target,
                         check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0 and "MissingRuleException" in out, out
    assert not (root / "pwned").exists() and not (root / "data").exists()


# --- through Snakemake ------------------------------------------------------------------------------------

@pytest.mark.workflow
def test_bad_datasets_fail_with_their_message_and_leave_no_files(tmp_path):
    root = new_workdir(tmp_path / "bad")
    tiny_csv(root / "good.csv")
    (root / "dup.csv").write_text("a,a,y\n1,2,0\n3,4,1\n")
    text = pd.read_csv(root / "good.csv").assign(colour="red")
    text.to_csv(root / "text.csv", index=False)
    pd.read_csv(root / "good.csv").iloc[:20].to_csv(root / "few.csv", index=False)
    pd.read_csv(root / "good.csv").assign(x1=lambda d: d["x1"] * 1e298).to_csv(root / "huge.csv", index=False)
    pd.read_csv(root / "good.csv").assign(notes=np.nan).to_csv(root / "empty.csv", index=False)
    with __import__("zipfile").ZipFile(root / "three.csv", "w") as zf:
        for n in ("a.csv", "b.csv", "c.csv"):
            zf.writestr(n, (root / "good.csv").read_text())
    server = LocalServer()
    try:
        url = server.serve("/good.csv", (root / "good.csv").read_bytes())
        got = D.sha256_of(root / "good.csv")
        datasets = {
            "missing_file": {"csv": "nope.csv", "target": "y"},
            "dup": {"csv": "dup.csv", "target": "y"},
            "bad_sum": {"url": url, "sha256": "0" * 64, "target": HTML_TARGET},
            "no_target": {"csv": "good.csv", "target": "label"},
            "text": {"csv": "text.csv", "target": HTML_TARGET},
            "few": {"csv": "few.csv", "target": HTML_TARGET},
            "huge": {"csv": "huge.csv", "target": HTML_TARGET},
            "empty": {"csv": "empty.csv", "target": HTML_TARGET},
            "three": {"csv": "three.csv", "target": HTML_TARGET},
        }
        cfg = write_config(root, tiny_config(datasets))
        targets = [f"data/{TINY_STUDY}/processed/{d}/standardize.npz" for d in datasets]
        proc = snakemake(root, tmp_path / "jax", "--configfile", cfg, "--keep-going", *targets, check=False)
    finally:
        server.close()
    assert proc.returncode != 0
    study = study_folders(root, TINY_STUDY)
    expected = {
        ("fetch", "missing_file"): f"csv file 'nope.csv' of dataset 'missing_file' does not exist (looked for "
                                   f"{root}/nope.csv); fix 'csv' in its config entry (a relative path starts at the "
                                   "directory snakemake runs in)",
        ("fetch", "dup"): "csv file 'dup.csv' of dataset 'dup': duplicate column names 'a' (2 times); rename the "
                          "columns so that every name is unique",
        ("fetch", "bad_sum"): f"dataset 'bad_sum': sha256 mismatch for {url}: expected {'0' * 64}, got {got}; the "
                              "download was discarded. Check the address; if the file changed on purpose, set "
                              "'sha256' to the new checksum",
        ("preprocess", "no_target"): "dataset 'no_target': target column 'label' is not in the table; its columns "
                                     f"are ['x1', '<script>alert(1)</script>', 'const', '{HTML_TARGET}']. Set "
                                     "'target' in its config entry to the label column",
        ("preprocess", "text"): "dataset 'text': feature columns ['colour'] are not numeric (e.g. 'colour' holds "
                                "'red'); list them under 'categorical' in its config entry to one-hot encode them, "
                                "or remove them from the data",
        ("preprocess", "few"): "dataset 'few': the test split has 5 rows (20 rows, test_fraction 0.25), fewer than "
                               "split.min_test_rows 10: a test score measured on so few rows means little (one row "
                               "moves the test accuracy by 20 percentage points). To fix it, use more rows (at least "
                               "37 at test_fraction 0.25 and sweep.batch_size 16), or set split.test_fraction: 0.46 "
                               "and sweep.batch_size: 10 or less (10 test rows, 10 training rows)",
        ("preprocess", "huge"): prepare_error(pd.read_csv(root / "huge.csv"), HTML_TARGET, name="huge",
                                              treatments=("standardize",)),
        ("preprocess", "empty"): "dataset 'empty': feature column 'notes' has no values at all (every cell is empty), "
                                 "which 'impute' cannot fill; drop it: add drop: [\"notes\"] to its config entry",
        ("fetch", "three"): "csv file 'three.csv' of dataset 'three': the file is not CSV text: it looks like a zip "
                            "archive with 3 members ('a.csv', 'b.csv', 'c.csv'); extract the table you want and point "
                            "'csv' at it (a zip archive with a single file in it is read directly)",
    }
    for (job, ds), msg in expected.items():
        line = f"{job} {ds}: error: {msg}"
        # on failure: what that job did print (pytest shortens a long message's repr to its ends)
        printed = [ln for ln in proc.stderr.splitlines() if f"{job} {ds}" in ln] or proc.stderr.splitlines()[-40:]
        assert line in proc.stderr.splitlines(), "\n".join(["expected:", line, "printed:", *printed])
        assert (study.logs / job / f"{ds}.log").read_text().splitlines()[-1] == line
        assert not list((study.data / "processed").glob(f"{ds}/*")), ds
        if job == "fetch":
            assert not list((study.data / "raw").glob(f"{ds}.*")), ds
    assert [p for p in (root / "data" / "cache").rglob("*") if p.is_file()] == []  # the bad download was dropped
    assert temp_files(root) == []
    assert "huge" in expected[("preprocess", "huge")] and "drop: [\"x1\"]" in expected[("preprocess", "huge")]

    # every advice, followed, gets the dataset past preprocess: few (split.test_fraction and sweep.batch_size),
    # huge and empty (drop); with them a gzip-compressed, semicolon-separated file named .csv
    (root / "packed.csv").write_bytes(__import__("gzip").compress((root / "good.csv").read_text().replace(",", ";")
                                                                  .encode()))
    fixed = tiny_config({"few": datasets["few"], "huge": datasets["huge"], "empty": datasets["empty"],
                         "packed": {"csv": "packed.csv", "target": HTML_TARGET}})
    for (_, ds), msg in expected.items():
        if ds in fixed["datasets"]:
            if m := re.search(r"add (drop: \[.*?\]) to its config entry", msg):
                fixed["datasets"][ds].update(yaml.safe_load(m.group(1)))
            if m := re.search(r"set split\.test_fraction: ([0-9.]+) and sweep\.batch_size: (\d+) or less", msg):
                fixed["split"]["test_fraction"], fixed["sweep"]["batch_size"] = float(m.group(1)), int(m.group(2))
    assert fixed["split"]["test_fraction"] == 0.46 and fixed["datasets"]["empty"]["drop"] == ["notes"]
    targets = [f"data/{TINY_STUDY}/processed/{d}/standardize.npz" for d in fixed["datasets"]]
    snakemake(root, tmp_path / "jax", *targets, "--configfile", write_config(root, fixed, "fixed.yaml"))
    for d in fixed["datasets"]:
        with np.load(study.data / "processed" / d / "standardize.npz") as f:
            assert len(f["X_test"]) >= 10 and np.isfinite(f["X_train"]).all(), d
    with np.load(study.data / "processed" / "packed" / "standardize.npz") as f:
        assert f["feature_names"].tolist() == ["x1", "<script>alert(1)</script>", "const"]


@pytest.fixture(scope="module")
def all_diverged(tmp_path_factory):
    """The tiny study with learning rates so high that every run diverges (raw inputs on scales 100:1, no
    norm, LR 100 and 1000): (folder, report text)."""
    root = new_workdir(tmp_path_factory.mktemp("diverge"))
    tiny_csv(root / "tiny.csv")
    cfg = tiny_config({"tiny": TINY}, lr_min=100.0, lr_max=1000.0)
    cfg["variants"] = {"inputs": ["raw"], "norms": ["none"], "depths": [1], "width": 8}
    snakemake(root, root / "jax", "--configfile", write_config(root, cfg))
    return root, study_folders(root, TINY_STUDY).report.read_text()


@pytest.mark.workflow
def test_every_run_diverging_is_recorded_and_the_pipeline_finishes(all_diverged):
    root, html = all_diverged
    tables = study_folders(root, TINY_STUDY).tables
    runs = pd.read_csv(tables / "runs.csv")
    assert len(runs) == 2 and runs["diverged"].all() and (runs["diverged_step"] >= 0).all()
    assert runs["test_accuracy"].isna().all()
    variants = pd.read_csv(tables / "variants.csv")
    assert variants["max_stable_lr"].isna().all() and variants["best_lr"].isna().all()
    assert not variants["common_lr_stable_everywhere"].any() and (variants["n_lr_stable"] == 0).all()
    training = pd.read_csv(tables / "training.csv")
    assert training["frozen"].any()
    row = re.search(r"<tr><td class=\"l\">raw-none-d1</td>(.*?)</tr>", html, re.S)
    assert row is not None, "the variant's row is missing from the report"
    cells = re.findall(r"<td>(.*?)</td>", row.group(1), re.S)
    assert cells[0] == "2 of 2"  # runs diverged
    assert cells[1] == "n/a" and cells[2] == "n/a"  # no stable and no best learning rate: shown, not hidden


@pytest.mark.workflow
def test_the_report_says_that_every_run_diverged(all_diverged):
    _, html = all_diverged
    text = re.sub(r"<pre>.*?</pre>", " ", html, flags=re.S)  # not the configuration (divergence_factor)
    text = re.sub(r"<[^>]+>", " ", text)
    assert "already stable" not in text
    assert re.search(r"2 of 2 runs diverged", text), "the report does not say that the runs diverged"
    assert "Every run of this dataset diverged" in text
