"""Dataset entries: every source kind, the schema's dataset part, and the encodings that `preprocess.prepare`
applies (categorical one-hot, mean imputation, regression targets) with its output contract.

Unit tests: no Snakemake, no network (URL and OpenML sources are in test_download.py)."""

import json
import logging
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from normlab import datasets as D
from normlab import download as DL
from normlab import preprocess as P

REPO = Path(__file__).resolve().parents[1]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
CONTRACT = {"X_train", "y_train", "X_test", "y_test", "feature_names", "classes", "task"}


def check(entry: dict) -> dict:
    """Validate a one-dataset config against the schema; returns the config (with the defaults filled)."""
    cfg = {"datasets": {"d": entry}}
    validate(cfg, SCHEMA)
    return cfg


# --- sources -----------------------------------------------------------------------------------------------

def test_sklearn_and_synthetic_sources():
    iris = D.load_source({"sklearn": "iris", "target": "species"})
    assert iris.shape == (150, 5) and iris.columns[-1] == "species"
    diabetes = {"sklearn": "diabetes", "target": "target"}
    assert D.task_of(diabetes) == "regression" and D.task_of({"sklearn": "iris"}) == "classification"
    assert D.task_of({"sklearn": "diabetes", "task": "classification"}) == "classification"
    lec = D.load_source({"synthetic": "lecture", "rows": 50, "target": "t"})
    assert list(lec.columns) == ["x1", "x2", "t"] and len(lec) == 50


def test_csv_source_reads_the_file_as_is(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("a,b,<i>label</i>\n1.5,x,0\n2,y,1\ninf,,1\n")
    df = D.load_source({"csv": "d.csv"}, name="d")
    assert list(df.columns) == ["a", "b", "<i>label</i>"]
    assert df["a"].tolist()[:2] == [1.5, 2.0] and np.isinf(df["a"][2]) and pd.isna(df["b"][2])


def test_parquet_source(tmp_path, monkeypatch):
    """The test environment has the 'parquet' extra (pyarrow, requirements-parquet.lock), so a Parquet file
    reads back exactly."""
    monkeypatch.chdir(tmp_path)
    df = pd.DataFrame({"a": [1.0, 2.0, 3.0], "y": [0, 1, 0]})
    df.to_parquet("d.parquet")
    pd.testing.assert_frame_equal(D.load_source({"parquet": "d.parquet"}, name="pq"), df)


def test_parquet_without_its_extra_is_one_clear_error_before_any_download(tmp_path, monkeypatch):
    """Without pyarrow (simulated: its import fails) a Parquet source stops with an error that names the
    optional 'parquet' extra and how to install it; a url: source in Parquet stops before downloading."""
    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": [1.0, 2.0], "y": [0, 1]}).to_parquet("d.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # `import pyarrow` now raises ImportError
    expected = ("reading Parquet needs normlab's optional 'parquet' extra (the pyarrow package), which is not "
                "installed; install it (make setup EXTRAS=parquet, or pip install -r requirements-parquet.lock, or "
                "pip install 'normlab[parquet]'), or convert the file to CSV and use 'csv:'")
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"parquet": "d.parquet"}, name="pq")
    assert str(err.value) == f"parquet file 'd.parquet' of dataset 'pq': {expected}"

    def no_download(*args, **kwargs):
        raise AssertionError("downloaded")

    monkeypatch.setattr(DL, "fetch_url", no_download)
    url = "http://127.0.0.1:1/data.parquet"
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"url": url, "sha256": "0" * 64}, name="u", cache_dir=tmp_path / "cache")
    assert str(err.value) == f"file {url} of dataset 'u': {expected}"
    assert not (tmp_path / "cache").exists()


def test_load_source_logs_what_it_read(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.csv").write_text("a,y\n1,0\n2,1\n3,0\n")
    with caplog.at_level(logging.DEBUG, logger="normlab.io"):
        D.load_source({"csv": "d.csv", "target": "y"}, name="d")
        D.load_source({"sklearn": "iris"})
    reads = [(r.getMessage(), r.io, r.rows) for r in caplog.records if r.name == "normlab.io"]
    assert reads == [("read d.csv (3 rows, 2 columns)", "read", 3),
                     ("read scikit-learn's bundled dataset 'iris' (150 rows, 5 columns)", "read", 150)]


def test_provenance_records_source_options_and_checksum(tmp_path):
    df = pd.DataFrame({"a": [1.0, 2.0], "y": ["u", "v"]})
    csv = tmp_path / "raw.csv"
    df.to_csv(csv, index=False)
    entry = {"url": "http://h/x.csv", "sha256": "AB" * 32, "target": "y", "task": "classification",
             "categorical": ["a"], "impute": "mean"}
    rec = json.loads(D.provenance(entry, df, csv))
    assert rec == {"source": {"url": "http://h/x.csv", "sha256": "ab" * 32}, "sha256": D.sha256_of(csv), "rows": 2,
                   "columns": ["a", "y"], "target": "y", "task": "classification", "categorical": ["a"],
                   "impute": "mean"}
    assert D.provenance(entry, df, csv) == D.provenance(entry, df, csv)  # byte-deterministic


def test_url_format_from_the_address_or_the_format_key():
    assert D.url_format({"url": "https://h/a/data.parquet?x=1"}) == "parquet"
    assert D.url_format({"url": "https://h/a/data.csv.gz"}) == "csv"
    assert D.url_format({"url": "https://h/a/data.arff"}) == "arff"
    assert D.url_format({"url": "https://h/download?id=3", "format": "parquet"}) == "parquet"


# --- delimited text as users have it --------------------------------------------------------------------------

TEXT_TABLE = 'f0,f1,"name, full",target\n' + "".join(f'{i},{i / 7:.4f},"x; y | {i}",{i % 2}\n' for i in range(30))


def comma_frame(tmp_path) -> pd.DataFrame:
    (tmp_path / "comma.csv").write_text(TEXT_TABLE)
    return D.read_csv_file(tmp_path / "comma.csv", "w")


def with_delimiter(text: str, d: str) -> str:
    """``TEXT_TABLE`` with ``d`` between the fields (the quoted field keeps its commas)."""
    rows = [next(__import__("csv").reader([line])) for line in text.splitlines()]
    return "".join(d.join(f'"{f}"' if any(c in f for c in ",;|\t") else f for f in row) + "\n" for row in rows)


@pytest.mark.parametrize("d", [",", ";", "\t", "|"])
def test_the_delimiter_is_detected(tmp_path, d):
    """Comma, semicolon, tab and pipe: the same table, whatever the other delimiters inside quoted fields."""
    expected = comma_frame(tmp_path)
    (tmp_path / "d.txt").write_text(with_delimiter(TEXT_TABLE, d))
    pd.testing.assert_frame_equal(D.read_csv_file(tmp_path / "d.txt", "w"), expected)
    assert expected.columns.tolist() == ["f0", "f1", "name, full", "target"] and len(expected) == 30


def test_detection_keeps_what_reads_as_comma_separated_today():
    """Comma wins when every sampled record has the header's (at least two) fields, even if another
    delimiter splits more; otherwise the delimiter most records agree on, then the most fields."""
    assert D.detect_delimiter("a|b|c|d,e\n1|2|3|4,5\n") == ","
    assert D.detect_delimiter("a;b;y\n1,5;2,5;0\n") == ";"  # decimal commas: the header has no comma
    assert D.detect_delimiter("a;b;y\n1;2;0\n1;2;3;4\n3;4;1\n") == ";"  # one ragged row: still semicolons
    assert D.detect_delimiter("a;b;c|d|e|f\n1;2;3\n4;5;6\n") == ";"  # agreement first, then the most fields
    assert D.detect_delimiter("a;b\n1;2\n") == ";" and D.detect_delimiter("a\tb|c|d\n1\t2|3|4\n") == "|"
    assert D.detect_delimiter("a\tb|c\n1\t2|3\n") == "\t"  # a tie: the order comma, semicolon, tab, pipe
    assert D.detect_delimiter("a b y\n1 2 3\n") == "," and D.detect_delimiter("") == ","


def test_the_delimiter_key_sets_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    expected = comma_frame(tmp_path)
    Path("d.csv").write_text(with_delimiter(TEXT_TABLE, ";"))
    for d in (";", "semicolon"):
        pd.testing.assert_frame_equal(D.load_source({"csv": "d.csv", "delimiter": d}, name="d"), expected)
    Path("t.csv").write_text("a\tb\ty\n1,5\t2,5\t0\n3,5\t4,5\t1\n")  # tab-separated, decimal commas
    assert D.load_source({"csv": "t.csv"}).columns.tolist() == ["a", "b", "y"]
    assert D.load_source({"csv": "t.csv", "delimiter": "tab"}).columns.tolist() == ["a", "b", "y"]
    Path("c.csv").write_text("a\tb,c\ty\n1\t2,5\t0\n")  # a comma in the header and in every row: read as today
    assert D.load_source({"csv": "c.csv"}).columns.tolist() == ["a\tb", "c\ty"]
    assert D.load_source({"csv": "c.csv", "delimiter": "\t"}).columns.tolist() == ["a", "b,c", "y"]
    check({"csv": "d.csv", "delimiter": "\t"})
    check({"csv": "d.csv", "delimiter": "pipe"})
    assert schema_error({"csv": "d.csv", "delimiter": " "})[1] == "On instance['datasets']['d']['delimiter']:"


@pytest.mark.parametrize("kind", ["gzip", "bz2", "xz", "zip"])
def test_compressed_files_are_recognised_by_their_content(tmp_path, kind):
    """Whatever the file's name: a .csv holding gzip data, a .txt holding a zip archive of one file."""
    import bz2
    import gzip
    import lzma
    import zipfile

    expected = comma_frame(tmp_path)
    body = with_delimiter(TEXT_TABLE, ";").encode()
    path = tmp_path / ("data.csv" if kind != "zip" else "data.txt")
    if kind == "zip":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("inner/table.csv", body)
            zf.writestr("__MACOSX/inner/._table.csv", b"\x00\x05")  # macOS' resource fork: ignored
    else:
        path.write_bytes({"gzip": gzip.compress, "bz2": bz2.compress, "xz": lzma.compress}[kind](body))
    pd.testing.assert_frame_equal(D.read_csv_file(path, "w"), expected)
    # and a plain file named like a compressed one is read as plain text
    (tmp_path / "plain.csv.gz").write_text(TEXT_TABLE)
    pd.testing.assert_frame_equal(D.read_csv_file(tmp_path / "plain.csv.gz", "w"), expected)


def test_text_that_starts_like_a_signature_is_text(tmp_path):
    """A header row may start with a printable signature (Parquet's PAR1, bz2's BZh): still read as text."""
    (tmp_path / "d.csv").write_text("PAR1,BZh9,y\n1,2,0\n")
    (tmp_path / "e.csv").write_text("BZh9;b;y\n1;2;0\n")
    assert D.read_csv_file(tmp_path / "d.csv", "w").columns.tolist() == ["PAR1", "BZh9", "y"]
    assert D.read_csv_file(tmp_path / "e.csv", "w").columns.tolist() == ["BZh9", "b", "y"]


def test_a_url_source_is_sniffed_like_a_local_file(tmp_path, monkeypatch):
    """A gzip, semicolon-separated download whose address says nothing about either."""
    import gzip

    expected = comma_frame(tmp_path)
    cached = tmp_path / "cached"
    cached.write_bytes(gzip.compress(with_delimiter(TEXT_TABLE, ";").encode()))
    monkeypatch.setattr(DL, "fetch_url", lambda *a, **k: cached)
    got = D.load_source({"url": "https://h/download?id=3", "sha256": "0" * 64}, name="u", cache_dir=tmp_path)
    pd.testing.assert_frame_equal(got, expected)


def test_delimiter_applies_to_csv_sources_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(D.DatasetError) as err:
        D.load_source({"sklearn": "iris", "delimiter": ";"}, name="i")
    assert str(err.value) == ("dataset 'i': 'delimiter' applies to CSV files only (csv:, or url: in CSV format), not "
                              "to this sklearn: source; remove it from its config entry")


# --- schema: the dataset part ------------------------------------------------------------------------------

@pytest.mark.parametrize("entry", [
    {"sklearn": "iris", "target": "target"},
    {"sklearn": "diabetes", "task": "regression"},
    {"synthetic": "lecture", "rows": 100},
    {"csv": "data/my.csv", "target": "label", "categorical": ["colour", "size"], "impute": "mean"},
    {"parquet": "data/my.parquet", "target": "y", "task": "regression"},
    {"url": "https://example.org/x.csv", "sha256": "0" * 64, "target": "y"},
    {"url": "https://example.org/get?id=1", "sha256": "a" * 64, "format": "arff", "target": "y"},
    {"openml": 61, "target": "class"},
    {"openml": 61},
])
def test_schema_accepts_every_source_kind(entry):
    check(entry)


def test_the_default_config_files_still_validate():
    for name in ("config.yaml", "quick.yaml"):
        validate(yaml.safe_load((REPO / "config" / name).read_text()), SCHEMA)


def schema_error(entry_or_config) -> list[str]:
    """The 'ValidationError: ...' and 'On instance...' lines of the schema error."""
    cfg = entry_or_config if "datasets" in entry_or_config else {"datasets": {"d": entry_or_config}}
    with pytest.raises(WorkflowError) as err:
        validate(cfg, SCHEMA)
    lines = str(err.value).splitlines()
    return [lines[1]] + [ln for ln in lines if ln.startswith("On instance")]


def test_schema_rejects_bad_dataset_entries_naming_the_key():
    assert schema_error({"url": "https://h/x.csv", "target": "y"}) == [
        "ValidationError: 'sha256' is a dependency of 'url'", "On instance['datasets']['d']:"]
    assert schema_error({"csv": "x.csv", "sha256": "0" * 64}) == [
        "ValidationError: 'url' is a dependency of 'sha256'", "On instance['datasets']['d']:"]
    assert schema_error({"url": "https://h/x.csv", "sha256": "123"}) == [
        "ValidationError: '123' does not match '^[0-9a-fA-F]{64}$'", "On instance['datasets']['d']['sha256']:"]
    assert schema_error({"url": "ftp://h/x.csv", "sha256": "0" * 64}) == [
        "ValidationError: 'ftp://h/x.csv' does not match '^https?://[^\\\\s]+$'",
        "On instance['datasets']['d']['url']:"]
    assert schema_error({"csv": "x.csv", "task": "ranking"}) == [
        "ValidationError: 'ranking' is not one of ['classification', 'regression']",
        "On instance['datasets']['d']['task']:"]
    assert schema_error({"csv": "x.csv", "categorical": "colour"}) == [
        "ValidationError: 'colour' is not of type 'array'", "On instance['datasets']['d']['categorical']:"]
    assert schema_error({"csv": "x.csv", "impute": "median"}) == [
        "ValidationError: 'median' is not one of ['none', 'mean']", "On instance['datasets']['d']['impute']:"]
    assert schema_error({"openml": "61"}) == [
        "ValidationError: '61' is not of type 'integer'", "On instance['datasets']['d']['openml']:"]
    assert schema_error({"csv": "x.csv", "inpute": "mean"}) == [  # a typo of a key
        "ValidationError: Additional properties are not allowed ('inpute' was unexpected)",
        "On instance['datasets']['d']:"]
    assert schema_error({"target": "y"})[0] == "ValidationError: {'target': 'y'} is not valid under any of the given " \
                                               "schemas"
    two = schema_error({"csv": "x.csv", "sklearn": "iris"})[0]
    assert two == ("ValidationError: {'csv': 'x.csv', 'sklearn': 'iris'} is valid under each of "
                   "{'required': ['csv']}, {'required': ['sklearn']}")


# --- encodings and the prepare contract --------------------------------------------------------------------

def mixed_table(n=40):
    rng = np.random.default_rng(1)
    colour = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, n)]
    colour[[2, 7]] = None
    x = rng.normal(10.0, 3.0, n)
    x[[4]] = np.nan
    return pd.DataFrame({"x": x, "colour": colour, "const": 1.0, "size": rng.integers(1, 4, n),
                         "y": np.where(rng.normal(size=n) > 0, "pos", "neg")})


def test_categorical_one_hot_and_mean_imputation_fitted_on_the_training_split():
    df = mixed_table()
    out = P.prepare(df, "y", 0.25, 0, task="classification", categorical=["colour", "size"], impute="mean",
                    batch_size=8)
    raw = out["raw"]
    assert set(raw) == CONTRACT
    assert raw["feature_names"].tolist() == ["x", "colour=blue", "colour=green", "colour=red", "const",
                                             "size=1", "size=2", "size=3"]
    assert raw["classes"].tolist() == ["neg", "pos"] and str(raw["task"]) == "classification"
    assert raw["y_train"].dtype == np.int64 and raw["X_train"].dtype == np.float64
    for arrays in out.values():
        assert all(np.isfinite(arrays[k]).all() for k in ("X_train", "X_test"))
    # expected arrays built by hand: the same split, one-hot by value, NaN -> training-split column mean
    codes = np.unique(df["y"], return_inverse=True)[1]
    train, test = P.split_indices(codes, 0.25, 0, stratify=True)
    X = np.column_stack([df["x"]] + [(df["colour"] == v).astype(float) for v in ("blue", "green", "red")]
                        + [df["const"]] + [(df["size"] == v).astype(float) for v in (1, 2, 3)])
    X[df["colour"].isna().to_numpy(), 1:4] = np.nan
    fill = np.nanmean(X[train], axis=0)
    expect_train = np.where(np.isnan(X[train]), fill, X[train])
    expect_test = np.where(np.isnan(X[test]), fill, X[test])
    np.testing.assert_array_equal(raw["X_train"], expect_train)
    np.testing.assert_array_equal(raw["X_test"], expect_test)
    np.testing.assert_array_equal(raw["y_train"], codes[train])
    assert np.isnan(X).sum() == 1 + 2 * 3  # one missing x, two missing colours (3 one-hot columns each)
    # standardize: centred on the (imputed) training split, constant column left at scale 1
    std = out["standardize"]
    np.testing.assert_allclose(std["X_train"].mean(axis=0), 0.0, atol=1e-12)
    assert std["input_scale"][4] == 1.0 and np.all(std["X_train"][:, 4] == 0.0)


def test_missing_categorical_value_is_filled_with_each_values_frequency():
    df = pd.DataFrame({"c": ["a", "b", "a", None, "a", "b", "a", "b"], "y": [0, 1, 0, 1, 0, 1, 0, 1]})
    out = P.prepare(df, "y", 0.25, 0, categorical=["c"], impute="mean", min_test_rows=1)["raw"]
    X = np.concatenate([out["X_train"], out["X_test"]])
    onehot = np.all((X == 0) | (X == 1), axis=1)
    np.testing.assert_array_equal(X[onehot].sum(axis=1), 1.0)
    filled = X[~onehot]
    assert filled.shape == (1, 2)
    train = out["X_train"][np.all((out["X_train"] == 0) | (out["X_train"] == 1), axis=1)]
    np.testing.assert_allclose(filled[0], train.mean(axis=0))
    np.testing.assert_allclose(filled[0].sum(), 1.0)


def test_regression_target_standardized_on_the_training_split():
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    df["price"] = 1000.0 + 300.0 * df["a"] + rng.normal(size=60)
    out = P.prepare(df, "price", 0.25, 0, task="regression", batch_size=16)
    for arrays in out.values():
        assert set(arrays) >= CONTRACT | {"target_mean", "target_scale"}
        assert arrays["classes"].shape == (0,) and str(arrays["task"]) == "regression"
        assert arrays["y_train"].dtype == np.float64
        assert arrays["y_train"].mean() == pytest.approx(0.0, abs=1e-12)
        assert arrays["y_train"].std() == pytest.approx(1.0)
    raw = out["raw"]
    y = df["price"].to_numpy()
    back = raw["y_train"] * raw["target_scale"][0] + raw["target_mean"][0]
    assert all(np.isclose(y, v).any() for v in back)
    back_test = raw["y_test"] * raw["target_scale"][0] + raw["target_mean"][0]
    assert all(np.isclose(y, v).any() for v in back_test)


def test_regression_trains_with_mse_and_one_output():
    """The pieces scripts/train.py uses: a regression npz gives an MSE model with one output, and a sweep
    over it runs (test_accuracy is NaN, the loss falls)."""
    from normlab import train, variants

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    df["y"] = 50.0 * df["a"] - 20.0 * df["b"]
    data = P.prepare(df, "y", 0.25, 0, ("standardize",), task="regression", batch_size=16)["standardize"]
    v = variants.Variant.parse("standardize-batchnorm-d1")
    spec = variants.model_spec(v, 2, 1, 8, "relu", 1e-5, loss="mse")
    cfg = train.TrainConfig(steps=40, batch_size=16, log_every=20)
    res = train.train_sweep(spec, cfg, data, [0.05], [0], 64, 0.1, progress=lambda m: None)
    assert np.isnan(res["test_accuracy"]).all() and np.isfinite(res["test_loss"]).all()
    assert res["train_loss"][0, -1] < res["train_loss"][0, 0]


def test_constant_columns_and_a_constant_regression_target_stay_finite():
    df = pd.DataFrame({"a": np.arange(40.0), "k": 5.0, "z": 0.0, "y": 3.0})
    out = P.prepare(df, "y", 0.25, 0, task="regression")
    for arrays in out.values():
        for k, v in arrays.items():
            if v.dtype.kind == "f":
                assert np.isfinite(v).all(), k
    assert out["standardize"]["target_scale"][0] == 1.0 and np.all(out["standardize"]["y_train"] == 0.0)


def test_a_small_table_with_many_classes_is_split_without_stratification():
    """8 rows, 3 classes, test_fraction 0.25: 2 test rows cannot hold every class, so the split is plain
    (split.min_test_rows lowered to 1 for the sake of the unit)."""
    df = pd.DataFrame({"a": np.arange(8.0), "y": ["u", "u", "u", "v", "v", "w", "w", "w"]})
    out = P.prepare(df, "y", 0.25, 0, batch_size=4, min_test_rows=1)["raw"]
    assert len(out["X_train"]) == 6 and len(out["X_test"]) == 2 and out["classes"].tolist() == ["u", "v", "w"]


def test_prepare_is_deterministic():
    df = mixed_table()
    a = P.prepare(df, "y", 0.25, 5, categorical=["colour", "size"], impute="mean")
    b = P.prepare(df.copy(), "y", 0.25, 5, categorical=["colour", "size"], impute="mean")
    for t in a:
        for k in a[t]:
            np.testing.assert_array_equal(a[t][k], b[t][k])
