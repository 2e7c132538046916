"""Tests of normlab.preprocess: the split, label encoding, and standardization fitted on the training
split only (the test rows are transformed with the TRAIN mean and scale)."""

import numpy as np
import pandas as pd
import pytest

from normlab import preprocess as P

SEED, FRACTION = 3, 0.25


def table(n=200):
    """Features of different scales, one constant column, string labels; the rows that the split puts
    in the test set are then moved far away (x10, +100), so that train and test distributions differ
    (the split only depends on the labels, the seed and the fraction, not on the features)."""
    rng = np.random.default_rng(0)
    labels = np.array(["dog", "cat", "emu"])[rng.integers(0, 3, n)]
    df = pd.DataFrame({
        "a": rng.normal(5.0, 2.0, n),
        "b": rng.normal(-1000.0, 300.0, n),
        "const": np.full(n, 7.5),
        "label": labels,
        "c": rng.uniform(0, 1, n),
    })
    codes = np.unique(labels, return_inverse=True)[1]
    _, test = P.split_indices(codes, FRACTION, SEED, stratify=True)
    for col in ("a", "b", "c"):
        df.loc[test, col] = df.loc[test, col] * 10.0 + 100.0
    return df, test


def test_standardize_uses_train_statistics_only():
    df, test_rows = table()
    out = P.prepare(df, "label", FRACTION, SEED)
    raw, std = out["raw"], out["standardize"]
    features = ["a", "b", "const", "c"]
    assert std["feature_names"].tolist() == features  # target dropped, order kept
    Xtr, Xte = std["X_train"], std["X_test"]
    # train columns: mean 0, std 1 (constant column: 0 and scale 1)
    np.testing.assert_allclose(Xtr.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Xtr.std(axis=0), [1.0, 1.0, 0.0, 1.0], atol=1e-12)
    # the test rows transformed with the TRAIN mean and std, computed here by hand
    X = df[features].to_numpy(float)
    test_mask = np.zeros(len(df), bool)
    test_mask[test_rows] = True
    train_X = X[~test_mask]
    mean = train_X.mean(axis=0)
    sd = train_X.std(axis=0)
    sd[2] = 1.0
    np.testing.assert_allclose(std["input_mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(std["input_scale"], sd, rtol=1e-12)
    np.testing.assert_allclose(Xte, (X[np.sort(test_rows)] - mean) / sd, rtol=1e-10)
    # ... so the shifted test rows are far from mean 0 / std 1 (their own statistics were not used)
    assert (np.abs(Xte[:, [0, 1, 3]].mean(axis=0)) > 3).all()
    assert (Xte[:, [0, 1, 3]].std(axis=0) > 3).all()
    # raw treatment: untouched values, same rows
    np.testing.assert_array_equal(raw["X_test"], X[np.sort(test_rows)])
    np.testing.assert_allclose(std["X_train"] * sd + mean, raw["X_train"], rtol=1e-10, atol=1e-9)
    np.testing.assert_array_equal(std["y_train"], raw["y_train"])
    np.testing.assert_array_equal(std["y_test"], raw["y_test"])


def test_constant_column_is_centred_not_divided_by_zero():
    df, _ = table()
    std = P.prepare(df, "label", FRACTION, SEED)["standardize"]
    for k in ("X_train", "X_test", "input_mean", "input_scale"):
        assert np.isfinite(std[k]).all(), k
    np.testing.assert_array_equal(std["X_train"][:, 2], 0.0)
    np.testing.assert_array_equal(std["X_test"][:, 2], 0.0)
    assert std["input_scale"][2] == 1.0 and std["input_mean"][2] == 7.5
    # a column constant on the train rows but not on the test rows: centred by the train value, scale 1
    mean, scale = P.fit_standardizer(np.array([[2.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_array_equal(mean, [2.0, 2.0])
    np.testing.assert_array_equal(scale, [1.0, 1.0])
    _, Xte, _ = P.apply_input("standardize", np.array([[2.0, 1.0], [2.0, 3.0]]), np.array([[5.0, 2.0]]))
    np.testing.assert_array_equal(Xte, [[3.0, 0.0]])


def test_split_is_deterministic_shuffled_and_stratified():
    df, test_rows = table()
    a = P.prepare(df, "label", FRACTION, SEED)["raw"]
    b = P.prepare(df, "label", FRACTION, SEED)["raw"]
    for k in ("X_train", "y_train", "X_test", "y_test"):
        np.testing.assert_array_equal(a[k], b[k])
    other = P.prepare(df, "label", FRACTION, SEED + 1)["raw"]
    assert not np.array_equal(a["X_train"], other["X_train"])
    assert len(a["X_test"]) == 50 and len(a["X_train"]) == 150
    codes = np.unique(df["label"], return_inverse=True)[1]
    train_idx, test_idx = P.split_indices(codes, FRACTION, SEED, stratify=True)
    assert sorted(np.concatenate([train_idx, test_idx]).tolist()) == list(range(200))  # a partition
    np.testing.assert_array_equal(np.sort(test_idx), np.sort(test_rows))
    np.testing.assert_array_equal(test_idx, np.sort(test_idx))  # test rows keep their order
    assert not np.all(np.diff(train_idx) > 0)  # train rows come shuffled
    np.testing.assert_array_equal(a["X_train"], df[["a", "b", "const", "c"]].to_numpy(float)[train_idx])
    # stratified: each class's share of the test split is within one row of its share overall
    for k in range(3):
        assert abs((a["y_test"] == k).sum() - 50 * (codes == k).mean()) <= 1


def test_labels_encoded_in_sorted_order():
    df, _ = table()
    out = P.prepare(df, "label", FRACTION, SEED)["raw"]
    assert out["classes"].tolist() == ["cat", "dog", "emu"]
    full = np.concatenate([out["y_train"], out["y_test"]])
    assert sorted(set(full.tolist())) == [0, 1, 2] and full.dtype == np.int64
    codes, classes = P.encode_labels(pd.Series([10, -3, 10, 4]))
    assert codes.tolist() == [2, 0, 2, 1] and classes.tolist() == [-3, 4, 10]
    # the raw label of each train row maps to its code
    train_idx, _ = P.split_indices(np.unique(df["label"], return_inverse=True)[1], FRACTION, SEED, True)
    assert (out["classes"][out["y_train"]] == df["label"].to_numpy()[train_idx]).all()


def test_unknown_treatment_and_tiny_classes():
    with pytest.raises(ValueError, match="whiten"):
        P.apply_input("whiten", np.zeros((2, 2)), np.zeros((1, 2)))
    # a class with a single row cannot be stratified: the split falls back to unstratified
    y = np.array([0] * 10 + [1] * 9 + [2])
    train, test = P.split_indices(y, 0.25, 0, stratify=True)
    assert len(train) + len(test) == 20 and len(set(train) | set(test)) == 20


def test_stratified_split_known_counts_and_properties():
    # 100 rows in classes of 50 / 30 / 20, 25 test rows: exact shares 12.5 / 7.5 / 5, largest remainder
    # (tie: the lower class) gives 13 / 7 / 5
    np.testing.assert_array_equal(P.stratified_test_counts(np.array([50, 30, 20]), 25), [13, 7, 5])
    # a rare class keeps one row in each split: 40 / 2 with 10 test rows -> exact 9.52 / 0.48 -> 9 / 1
    np.testing.assert_array_equal(P.stratified_test_counts(np.array([40, 2]), 10), [9, 1])
    with pytest.raises(ValueError, match="cannot stratify"):
        P.stratified_test_counts(np.array([3, 3]), 5)
    y = np.repeat([2, 0, 1], [50, 30, 20])[np.random.default_rng(3).permutation(100)]
    train, test = P.split_indices(y, 0.25, 7, stratify=True)
    assert len(test) == 25 and np.all(np.diff(test) > 0) and sorted(np.concatenate([train, test])) == list(range(100))
    # classes 0 / 1 / 2 hold 30 / 20 / 50 rows: shares 7.5 / 5 / 12.5, the tie goes to class 0
    np.testing.assert_array_equal(np.bincount(y[test]), [8, 5, 12])
    again = P.split_indices(y, 0.25, 7, stratify=True)
    np.testing.assert_array_equal(again[0], train)
    np.testing.assert_array_equal(again[1], test)
    other = P.split_indices(y, 0.25, 8, stratify=True)[1]
    assert not np.array_equal(other, test)  # the seed matters
    assert not np.all(np.diff(train) > 0)  # train rows come shuffled
    plain_train, plain_test = P.split_indices(y, 0.25, 7, stratify=False)
    assert len(plain_test) == 25 and len(plain_train) == 75 and not set(plain_train) & set(plain_test)
