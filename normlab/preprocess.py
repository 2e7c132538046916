"""From a raw table to model-ready arrays: a fixed, seeded train/test split and the input treatments.

Input treatments (the ``input`` part of a variant name):
* ``raw``: the features as they are.
* ``standardize``: per feature, subtract the training-split mean and divide by the training-split
  standard deviation; a constant feature (std 0) is centred and left at scale 1, never divided by 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

INPUTS = ("raw", "standardize")


def split_indices(y: np.ndarray, test_fraction: float, seed: int, stratify: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test); the train indices come shuffled by ``seed``. Stratified by class
    when ``stratify`` and every class has at least two rows."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(y))
    strat = y if stratify and np.unique(y, return_counts=True)[1].min() >= 2 else None
    train, test = train_test_split(idx, test_size=test_fraction, random_state=seed, shuffle=True, stratify=strat)
    return np.asarray(train), np.sort(np.asarray(test))


def encode_labels(y: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Class labels -> integers 0..K-1 (in sorted order of the original values), and the classes."""
    classes, codes = np.unique(y.to_numpy(), return_inverse=True)
    return codes.astype(np.int64), classes


def fit_standardizer(X_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature (mean, scale) from the training rows X_train (m, n); scale = std, or 1 where the
    feature is constant on the training rows."""
    mean = X_train.mean(axis=0)
    std = X_train.std(axis=0)
    scale = np.where(std > 0, std, 1.0)
    return mean, scale


def apply_input(treatment: str, X_train: np.ndarray, X_test: np.ndarray):
    """(X_train, X_test, params) after the named input treatment, fitted on X_train only."""
    if treatment == "raw":
        return X_train, X_test, {}
    if treatment == "standardize":
        mean, scale = fit_standardizer(X_train)
        return (X_train - mean) / scale, (X_test - mean) / scale, {"mean": mean, "scale": scale}
    raise ValueError(f"unknown input treatment {treatment!r}; choose one of {INPUTS}")


def prepare(df: pd.DataFrame, target: str, test_fraction: float, seed: int, treatments=INPUTS):
    """Split ``df`` once and apply every input treatment. Returns {treatment: arrays} where arrays has
    X_train, y_train, X_test, y_test (float64 features, int64 labels), feature_names, classes,
    and the treatment's fitted mean/scale if any."""
    features = [c for c in df.columns if c != target]
    X = df[features].to_numpy(dtype=np.float64)
    y, classes = encode_labels(df[target])
    train, test = split_indices(y, test_fraction, seed, stratify=True)
    out = {}
    for t in treatments:
        Xtr, Xte, fitted = apply_input(t, X[train], X[test])
        out[t] = {
            "X_train": Xtr, "y_train": y[train], "X_test": Xte, "y_test": y[test],
            "feature_names": np.array([str(f) for f in features]), "classes": np.array([str(c) for c in classes]),
            **{f"input_{k}": v for k, v in fitted.items()},
        }
    return out
