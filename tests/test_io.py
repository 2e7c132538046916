"""Tables written without pandas are byte-identical to pandas' CSV, and read back with the same types; every
read and write is logged."""

import logging

import numpy as np
import pandas as pd
import pytest

from normlab import io, tables

IDS = {"dataset": "toy", "variant": "raw-none-d2", "input": "raw", "norm": "none", "depth": 2}


def _pandas_csv(table, path):
    pd.DataFrame(table).to_csv(path, index=False)
    return path.read_bytes()


def test_column_table_csv_is_pandas_csv_byte_for_byte(tmp_path):
    table = tables.with_ids(IDS, {
        "f64": np.array([0.1, 1e-5, np.nan, np.inf, -2.5e300, 1.0, 0.46172051000000003]),
        "f32": np.array([0.1, 1e-5, np.nan, 0.4582518, -np.inf, 3.0, 1 / 3], np.float32),
        "i64": np.arange(7) - 3,
        "i32": np.arange(7, dtype=np.int32),
        "flag": np.array([True, False, True, True, False, False, True]),
        "text": np.array(["a", "b,c", 'say "x"', "", "e", "f g", "h"]),
        "mixed": tables.column([1, 2.5, None, np.float32(0.1), 3, np.nan, 7]),
        "maybe_bool": tables.column([True, None, False, True, True, False, True]),
    })
    io.write_csv(tmp_path / "ours.csv", table)
    assert (tmp_path / "ours.csv").read_bytes() == _pandas_csv(table, tmp_path / "pandas.csv")


def test_long_rows_types_columns_as_pandas_does(tmp_path):
    rows = [{"layer": 1, "metric": "rms", "value": np.float32(0.25), "live": True},
            {"layer": 2, "metric": "rms", "value": 1.5, "live": False},
            {"layer": 3, "metric": "cond", "value": np.nan}]  # no "live": missing
    cols = ["layer", "metric", "value", "live"]
    ours = tables.long_rows(IDS, rows, cols)
    theirs = pd.concat([pd.DataFrame({k: [IDS[k]] * 3 for k in tables.ID_COLUMNS}),
                        pd.DataFrame(rows, columns=cols)], axis=1)
    io.write_csv(tmp_path / "ours.csv", ours)
    theirs.to_csv(tmp_path / "pandas.csv", index=False)
    assert (tmp_path / "ours.csv").read_bytes() == (tmp_path / "pandas.csv").read_bytes()
    assert tables.column([1, 2, 3]).dtype == np.int64 and tables.column([1, None]).dtype == np.float64
    assert tables.column([True, False]).dtype == bool and tables.column(["a", None]).dtype == object


def test_empty_table_has_the_header_only(tmp_path):
    table = tables.long_rows(IDS, [], ["layer", "value"])
    io.write_csv(tmp_path / "t.csv", table)
    assert (tmp_path / "t.csv").read_text() == ",".join(tables.ID_COLUMNS + ["layer", "value"]) + "\n"


def test_read_csv_rows_types_cells_like_read_csv(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("variant,depth,best_lr,common_lr,flag,note\nraw-none-d2,2,0.1,,True,x y\nstd,8,1e-05,3,False,\n")
    rows = io.read_csv_rows(path)
    assert rows[0]["variant"] == "raw-none-d2" and rows[0]["depth"] == 2 and isinstance(rows[0]["depth"], int)
    assert rows[0]["best_lr"] == 0.1 and np.isnan(rows[0]["common_lr"]) and rows[0]["flag"] is True
    assert rows[1]["best_lr"] == pytest.approx(1e-5) and rows[1]["flag"] is False and np.isnan(rows[1]["note"])
    frame = pd.read_csv(path)
    for r, (_, expected) in zip(rows, frame.iterrows(), strict=True):
        for k, v in r.items():
            e = expected[k]
            assert (isinstance(v, float) and np.isnan(v) and pd.isna(e)) or v == e, (k, v, e)


def test_concat_csv_keeps_rows_and_text_and_refuses_other_columns(tmp_path):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    io.write_csv(a, tables.with_ids(IDS, {"step": np.array([0, 10]), "value": np.array([0.5, np.nan], np.float32)}))
    io.write_csv(b, tables.with_ids({**IDS, "depth": 8}, {"step": np.array([0]), "value": np.array([1e-5])}))
    io.concat_csv(tmp_path / "all.csv", [a, b])
    text = (tmp_path / "all.csv").read_text().splitlines()
    assert text[0] == ",".join(tables.ID_COLUMNS + ["step", "value"]) and len(text) == 4
    assert text[1:] == a.read_text().splitlines()[1:] + b.read_text().splitlines()[1:]
    frame = pd.read_csv(tmp_path / "all.csv")
    assert frame["depth"].tolist() == [2, 2, 8] and frame["value"].iloc[2] == 1e-5 and np.isnan(frame["value"].iloc[1])
    c = tmp_path / "c.csv"
    c.write_text("dataset,other\ntoy,1\n")
    with pytest.raises(ValueError, match="c.csv: its columns"):
        io.concat_csv(tmp_path / "bad.csv", [a, c])
    assert not (tmp_path / "bad.csv").exists()


def test_reads_and_writes_are_logged_with_their_rows(tmp_path, caplog):
    """normlab.io logs each file it reads or writes (DEBUG, logger normlab.io, with ``io`` and ``rows``): a job
    (normlab.runtime.job) shows them in its log and counts them in its closing line."""
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    with caplog.at_level(logging.DEBUG, logger="normlab.io"):
        io.write_csv(a, pd.DataFrame({"x": [1, 2, 3]}))
        io.write_csv(b, {"x": np.array([4])})
        io.concat_csv(tmp_path / "all.csv", [a, b])
        frame = io.read_csv(tmp_path / "all.csv")
    records = [(r.getMessage(), r.io, r.rows) for r in caplog.records if r.name == "normlab.io"]
    assert records == [
        (f"wrote {a} (3 rows, 1 column)", "wrote", 3),
        (f"wrote {b} (1 row, 1 column)", "wrote", 1),
        (f"read {a} (3 rows)", "read", 3),
        (f"read {b} (1 row)", "read", 1),
        (f"wrote {tmp_path / 'all.csv'} (4 rows, from 2 tables)", "wrote", 4),
        (f"read {tmp_path / 'all.csv'} (4 rows, 1 column)", "read", 4),
    ]
    assert frame["x"].tolist() == [1, 2, 3, 4]
