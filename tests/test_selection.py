"""Tests of normlab.selection on synthetic runs tables whose answers are known by construction."""

import numpy as np
import pandas as pd
import pytest

from normlab import selection as S

LRS = [0.01, 0.1, 1.0, 10.0]


def runs(final, diverged=None, variant="raw-none-d2", initial=2.0, accuracy=None, steps=None):
    """A runs table of one variant: final[i][j] = final train loss at LRS[i], seed j."""
    final = np.asarray(final, float)
    n_lr, n_seeds = final.shape
    diverged = np.zeros_like(final, bool) if diverged is None else np.asarray(diverged, bool)
    accuracy = np.full_like(final, 0.5) if accuracy is None else np.asarray(accuracy, float)
    steps = np.full_like(final, np.nan) if steps is None else np.asarray(steps, float)
    inp, norm, depth = variant.split("-")
    return pd.DataFrame({
        "dataset": "toy", "variant": variant, "input": inp, "norm": norm, "depth": int(depth[1:]),
        "lr": np.repeat(LRS[:n_lr], n_seeds), "seed": np.tile(np.arange(n_seeds), n_lr),
        "diverged": diverged.ravel(), "final_train_loss": final.ravel(), "initial_train_loss": initial,
        "test_accuracy": accuracy.ravel(), "steps_to_target": steps.ravel(),
    })


def test_max_stable_and_best_lr():
    # medians: 1.0, 0.3, 0.2 (best), and at lr=10 one seed diverged
    final = [[1.0, 1.0, 1.0], [0.3, 0.2, 0.4], [0.1, 0.2, 0.9], [0.05, 0.05, 0.05]]
    div = [[0, 0, 0], [0, 0, 0], [0, 0, 0], [0, 1, 0]]
    acc = [[0.5] * 3, [0.6] * 3, [0.7, 0.9, 0.8], [0.1] * 3]
    steps = [[np.nan] * 3, [50, 60, 70], [10, 30, 20], [5] * 3]
    s = S.variant_summary(runs(final, div, accuracy=acc, steps=steps))
    assert s["max_stable_lr"] == 1.0
    assert s["best_lr"] == 1.0
    assert s["n_lr_stable"] == 3 and s["n_seeds"] == 3
    assert s["final_train_loss_median"] == pytest.approx(0.2)
    assert (s["final_train_loss_min"], s["final_train_loss_max"]) == pytest.approx((0.1, 0.9))
    assert (s["test_accuracy_median"], s["test_accuracy_min"], s["test_accuracy_max"]) == pytest.approx((0.8, 0.7, 0.9))
    assert (s["steps_to_target_median"], s["steps_to_target_min"], s["steps_to_target_max"]) == (20, 10, 30)


def test_a_run_that_does_not_lower_its_loss_has_not_converged():
    # lr=1 "finishes" above its initial loss (2.0) for one seed without being flagged diverged
    final = [[1.0, 1.0], [0.5, 0.5], [0.1, 2.5]]
    s = S.variant_summary(runs(final))
    assert s["max_stable_lr"] == 0.1 and s["best_lr"] == 0.1
    # equal to the initial loss is not below it either
    s = S.variant_summary(runs([[1.0, 1.0], [2.0, 0.5]]))
    assert s["max_stable_lr"] == 0.01


def test_max_stable_is_the_largest_stable_lr_even_above_an_unstable_one():
    final = [[1.0, 1.0], [0.5, 0.5], [0.4, 0.4]]
    div = [[0, 0], [1, 0], [0, 0]]
    s = S.variant_summary(runs(final, div))
    assert s["max_stable_lr"] == 1.0 and s["n_lr_stable"] == 2


def test_best_lr_ties_go_to_the_smaller_lr():
    final = [[0.7, 0.9], [0.3, 0.5], [0.4, 0.4], [0.2, 0.6]]  # medians 0.8, 0.4, 0.4, 0.4
    s = S.variant_summary(runs(final))
    assert s["best_lr"] == 0.1
    assert s["max_stable_lr"] == 10.0


def test_no_stable_lr():
    final = [[1.0, np.nan], [np.inf, 0.5]]
    div = [[0, 1], [1, 0]]
    s = S.variant_summary(runs(final, div))
    assert np.isnan(s["max_stable_lr"]) and np.isnan(s["best_lr"])
    assert s["n_lr_stable"] == 0
    assert np.isnan(s["final_train_loss_median"]) and np.isnan(s["test_accuracy_median"])
    # run_lr falls back to the smallest LR of the grid for the 'best' run
    row = {"best_lr": s["best_lr"], "common_lr": 0.1}
    assert S.run_lr(row, "best", LRS) == 0.01
    assert S.run_lr(row, "common", LRS) == 0.1


def test_common_lr_over_variants():
    a = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], variant="raw-none-d2")  # max stable 10
    b = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], [[0, 0], [0, 0], [0, 1], [1, 1]],
             variant="standardize-batchnorm-d2")  # max stable 0.1
    c = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], [[0, 0], [0, 0], [0, 0], [0, 1]],
             variant="raw-batchnorm-d4")  # max stable 1
    table = S.dataset_summary(pd.concat([c, a, b], ignore_index=True))
    assert table["variant"].tolist() == ["raw-batchnorm-d4", "raw-none-d2", "standardize-batchnorm-d2"]
    assert list(table.columns[:5]) == ["dataset", "variant", "input", "norm", "depth"]
    assert table["max_stable_lr"].tolist() == [1.0, 10.0, 0.1]
    assert (table["common_lr"] == 0.1).all()
    assert table["common_lr_stable_everywhere"].all()
    assert table["depth"].tolist() == [4, 2, 2]
    # add a variant that never converges: common LR = the smallest LR of the grid, flagged
    d = runs([[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [3.0, 3.0]], variant="raw-layernorm-d2")
    table = S.dataset_summary(pd.concat([a, b, c, d], ignore_index=True))
    assert (table["common_lr"] == 0.01).all()
    assert not table["common_lr_stable_everywhere"].any()
    assert np.isnan(table.set_index("variant").loc["raw-layernorm-d2", "best_lr"])
