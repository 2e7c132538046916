"""Tests of normlab.selection on synthetic runs tables whose answers are known by construction."""

import numpy as np
import pandas as pd
import pytest

from normlab import selection as S

LRS = [0.01, 0.1, 1.0, 10.0]


def runs(final, diverged=None, variant="raw-none-d2", initial=2.0, accuracy=None, steps=None, seeds=None, lrs=None):
    """A runs table of one variant's grid runs: final[i][j] = final train loss at lrs[i] (default LRS),
    seed j (seeds[j], default 0, 1, ...)."""
    final = np.asarray(final, float)
    n_lr, n_seeds = final.shape
    diverged = np.zeros_like(final, bool) if diverged is None else np.asarray(diverged, bool)
    accuracy = np.full_like(final, 0.5) if accuracy is None else np.asarray(accuracy, float)
    steps = np.full_like(final, np.nan) if steps is None else np.asarray(steps, float)
    inp, norm, depth = variant.split("-")
    lrs = LRS if lrs is None else lrs
    seeds = np.arange(n_seeds) if seeds is None else np.asarray(seeds)
    return pd.DataFrame({
        "dataset": "toy", "variant": variant, "input": inp, "norm": norm, "depth": int(depth[1:]),
        "lr": np.repeat(lrs[:n_lr], n_seeds), "seed": np.tile(seeds, n_lr), "grid": True,
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
    table, per_seed = S.dataset_summary(pd.concat([c, a, b], ignore_index=True))
    assert len(per_seed) == 3 * 2 and per_seed["variant"].tolist()[::2] == table["variant"].tolist()
    assert table["variant"].tolist() == ["raw-batchnorm-d4", "raw-none-d2", "standardize-batchnorm-d2"]
    assert list(table.columns[:5]) == ["dataset", "variant", "input", "norm", "depth"]
    assert table["max_stable_lr"].tolist() == [1.0, 10.0, 0.1]
    assert (table["common_lr"] == 0.1).all()
    assert table["common_lr_stable_everywhere"].all()
    assert table["depth"].tolist() == [4, 2, 2]
    # add a variant that never converges: common LR = the smallest LR of the grid, flagged
    d = runs([[3.0, 3.0], [3.0, 3.0], [3.0, 3.0], [3.0, 3.0]], variant="raw-layernorm-d2")
    table, _ = S.dataset_summary(pd.concat([a, b, c, d], ignore_index=True))
    assert (table["common_lr"] == 0.01).all()
    assert not table["common_lr_stable_everywhere"].any()
    assert np.isnan(table.set_index("variant").loc["raw-layernorm-d2", "best_lr"])


def test_depth_0_is_left_out_of_the_common_lr_and_then_given_it():
    """The depth-0 arms (max stable 0.01 on raw inputs; one never converges) would lower the common LR from 1
    to 0.01 and flag it; they are left out of it, and every row, depth 0 included, gets the networks' value."""
    a = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], variant="raw-none-d2")  # max stable 10
    b = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], [[0, 0], [0, 0], [0, 0], [0, 1]],
             variant="batchnorm-none-d2")  # max stable 1: the common LR
    d0 = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], [[0, 0], [0, 1], [1, 1], [1, 1]],
              variant="raw-none-d0")  # max stable 0.01
    never = runs([[3.0, 3.0]] * 4, variant="standardize-none-d0")
    table, _ = S.dataset_summary(pd.concat([a, b, d0, never], ignore_index=True))
    v = table.set_index("variant")
    assert v.loc["raw-none-d0", "max_stable_grid_lr"] == 0.01 and np.isnan(v.loc["standardize-none-d0", "best_lr"])
    assert (table["common_lr"] == 1.0).all() and table["common_lr_stable_everywhere"].all()
    # a case (dataset, depth, input) with one arm: its level is that arm's own (depth 0; the batchnorm input)
    assert v.loc["raw-none-d0", "matched_level"] == 1.0 and v.loc["raw-none-d0", "case_target"] == 2.0
    assert v.loc["batchnorm-none-d2", "matched_level"] == 0.3 and v.loc["raw-none-d2", "matched_level"] == 0.2
    assert np.isnan(v.loc["standardize-none-d0", "matched_level"])


def test_a_study_of_depth_0_alone_takes_its_common_lr_from_depth_0():
    d0 = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], [[0, 0], [0, 0], [1, 0], [1, 1]],
              variant="raw-none-d0")  # max stable 0.1
    std = runs([[1.0, 1.0], [0.5, 0.5], [0.3, 0.3], [0.2, 0.2]], variant="standardize-none-d0")  # 10
    table, seeds = S.dataset_summary(pd.concat([d0, std], ignore_index=True))
    assert (table["common_lr"] == 0.1).all() and table["common_lr_stable_everywhere"].all()
    assert table["best_lr"].tolist() == [0.1, 10.0] and len(seeds) == 4
    never = runs([[3.0, 3.0]] * 4, variant="batchnorm-none-d0")
    table, _ = S.dataset_summary(pd.concat([d0, std, never], ignore_index=True))
    assert (table["common_lr"] == 0.01).all() and not table["common_lr_stable_everywhere"].any()


def test_dataset_common_lr():
    nan = np.nan
    assert S.dataset_common_lr([1.0, 10.0, 0.01], [2, 4, 0], 1e-4) == (1.0, True)
    assert S.dataset_common_lr([1.0, 10.0, nan], [2, 4, 0], 1e-4) == (1.0, True)  # depth 0 never decides
    assert S.dataset_common_lr([1.0, nan, 0.01], [2, 4, 0], 1e-4) == (1e-4, False)
    assert S.dataset_common_lr([0.1, 0.01], [0, 0], 1e-4) == (0.01, True)  # only depth 0: from depth 0
    assert S.dataset_common_lr([0.1, nan], [0, 0], 1e-4) == (1e-4, False)


# ---------------------------------------------------------------------------------------------------------
# the max-stable bracket and its refinement

DEFAULT_GRID = [float(f"{v:.4g}") for v in np.logspace(-4, 1, 13)]  # the default study's grid, 2.61x apart


def test_refinement_lrs_inside_the_bracket_of_the_default_grid():
    conv = np.arange(13) <= 8  # converged up to 0.1468, not at 0.3831
    inside = S.refinement_lrs(DEFAULT_GRID, conv)
    lo, hi = DEFAULT_GRID[8], DEFAULT_GRID[9]
    assert len(inside) == 7 and (inside > lo).all() and (inside < hi).all()
    ladder = np.concatenate([[lo], inside, [hi]])
    ratios = ladder[1:] / ladder[:-1]
    assert ratios.max() <= 1.15 and ratios.max() == pytest.approx(2.61 ** (1 / 8), rel=2e-3)
    assert ratios.min() > 1.12  # log-spaced: none bunched
    # any order of the grid gives the same points; a finer resolution asks for more of them
    order = np.random.default_rng(0).permutation(13)
    np.testing.assert_array_equal(S.refinement_lrs(np.array(DEFAULT_GRID)[order], conv[order]), inside)
    assert len(S.refinement_lrs(DEFAULT_GRID, conv, max_ratio=1.05)) == 19


def test_refinement_lrs_use_the_largest_converged_grid_lr_and_skip_when_there_is_no_bracket():
    # converged at 1e-3 and at 0.1468 with a failure between: the bracket is above the largest
    conv = np.zeros(13, bool)
    conv[[2, 8]] = True
    inside = S.refinement_lrs(DEFAULT_GRID, conv)
    assert (inside > DEFAULT_GRID[8]).all() and (inside < DEFAULT_GRID[9]).all()
    assert len(S.refinement_lrs(DEFAULT_GRID, np.zeros(13, bool))) == 0  # no stable LR: skipped
    assert len(S.refinement_lrs(DEFAULT_GRID, np.ones(13, bool))) == 0  # stable at lr_max: nothing above
    conv_top = np.zeros(13, bool)
    conv_top[12] = True  # only the largest converged (the smaller ones did not lower the loss)
    assert len(S.refinement_lrs(DEFAULT_GRID, conv_top)) == 0


def test_max_stable_bracket_walks_up_from_the_largest_converged_grid_lr():
    grid_lrs = [0.1, 0.2, 0.4]
    lrs = [0.1, 0.2, 0.4, 0.22, 0.25, 0.3, 0.35, 0.15]
    grid = [True, True, True, False, False, False, False, False]
    # converged: 0.1, 0.2 (grid), 0.22 yes, 0.25 no, 0.3 yes (does not count: above the first failure),
    # 0.35 no, 0.4 no; 0.15 (below the lower end, failed) is ignored
    conv = [True, True, False, True, False, True, False, False]
    assert S.max_stable_bracket(lrs, conv, grid) == (0.22, 0.25)
    # just either side: the first failure one point later moves both ends
    conv2 = [True, True, False, True, True, True, False, False]
    assert S.max_stable_bracket(lrs, conv2, grid) == (0.3, 0.35)
    # no refinement run (stable at the largest grid LR): (lower, NaN)
    lo, up = S.max_stable_bracket(grid_lrs, [True, True, True], [True] * 3)
    assert lo == 0.4 and np.isnan(up)
    # no converged grid LR: (NaN, NaN), even if a refinement run converged
    lo, up = S.max_stable_bracket(lrs, [False, False, False, True, True, True, True, True], grid)
    assert np.isnan(lo) and np.isnan(up)
    # above the lower end, the same LR run twice counts as failed if either failed; the lower end is the
    # grid's word
    assert S.max_stable_bracket([0.1, 0.2, 0.3, 0.3, 0.4], [True, True, True, False, False],
                                [True, True, False, False, True]) == (0.2, 0.3)
    assert S.max_stable_bracket([0.1, 0.2, 0.2, 0.4], [True, True, False, False],
                                [True, True, False, True]) == (0.2, 0.4)


def test_seed_best_lr_ties_and_none():
    assert S.seed_best_lr([0.1, 0.2, 0.4, 0.8], [True, True, True, False], [0.3, 0.1, 0.1, 0.0]) == 0.2
    assert np.isnan(S.seed_best_lr([0.1, 0.2], [False, False], [0.3, 0.1]))


def test_per_seed_brackets_and_the_variant_level():
    """Variant max = the smallest seed max (every seed stable up to it); its upper = the smallest seed upper;
    refinement rows (grid False) never become the best LR, however low their loss."""
    grid = runs([[1.0, 1.0], [0.5, 0.5], [0.25, 3.0], [0.1, 3.0]], [[0, 0], [0, 0], [0, 0], [1, 1]], seeds=[7, 5])
    refine = pd.DataFrame({**{k: grid[k].iloc[0] for k in ("dataset", "variant", "input", "norm", "depth")},
                           "lr": [1.5, 2.2, 3.3, 0.13, 0.2, 0.4], "seed": [7, 7, 7, 5, 5, 5], "grid": False,
                           "diverged": [False, True, False, False, False, True],
                           "final_train_loss": [1e-6, np.nan, 0.2, 0.4, 2.5, np.nan], "initial_train_loss": 2.0,
                           "test_accuracy": 0.9, "steps_to_target": np.nan})
    table = pd.concat([grid, refine], ignore_index=True)
    seeds = S.seed_summaries(table)
    assert [s["seed"] for s in seeds] == [7, 5]  # config order, not sorted
    # seed 7: stable at grid 1.0, refinement 1.5 ok, 2.2 diverged -> (1.5, 2.2); 3.3 converged above it: ignored
    assert (seeds[0]["max_stable_lr"], seeds[0]["max_stable_lr_upper"]) == (1.5, 2.2)
    # seed 5: grid 1.0 ends above its initial loss -> lower end 0.1; 0.13 ok, 0.2 did not lower the loss
    assert (seeds[1]["max_stable_lr"], seeds[1]["max_stable_lr_upper"]) == (0.13, 0.2)
    assert seeds[0]["best_lr"] == 1.0 and seeds[1]["best_lr"] == 0.1
    s = S.variant_summary(table)
    assert (s["max_stable_lr"], s["max_stable_lr_upper"]) == (0.13, 0.2) and s["stable_lr_found"]
    assert s["max_stable_grid_lr"] == 0.1 and s["best_lr"] == 0.1 and s["n_lr_stable"] == 2
    # without the grid column every row is a grid row: the refinement's 1e-6 would win; with it, never
    assert S.variant_summary(table.drop(columns="grid"))["best_lr"] != 0.1
    # one seed without any stable LR: the variant has none either
    s = S.variant_summary(runs([[1.0, 3.0], [0.5, 3.0]], seeds=[7, 5]))
    assert np.isnan(s["max_stable_lr"]) and np.isnan(s["max_stable_lr_upper"]) and not s["stable_lr_found"]
    # every seed stable at the largest LR: no upper
    s = S.variant_summary(runs([[1.0, 1.0], [0.5, 0.5]]))
    assert s["max_stable_lr"] == 0.1 and np.isnan(s["max_stable_lr_upper"])


# ---------------------------------------------------------------------------------------------------------
# speed on the smoothed mini-batch loss

def test_smoothed_batch_loss_steps_to_level_and_budgets():
    np.testing.assert_array_equal(S.smoothed_batch_loss([4, 2, 0, 2, 4], 2), [4, 3, 1, 1, 3])
    np.testing.assert_array_equal(S.smoothed_batch_loss([4, 2, 0, 2, 4], 3), [4, 3, 2, 4 / 3, 2])
    sm = S.smoothed_batch_loss([4, 2, 0, 2, 4], 2, diverged_step=3)
    assert sm[:3].tolist() == [4, 3, 1] and np.isnan(sm[3:]).all()  # from the divergence step on: never
    assert S.steps_to_level([4, 3, 1, 1, 3], 1.0) == 2  # equal counts
    assert np.isnan(S.steps_to_level([4, 3, 1, 1, 3], 0.999))
    assert S.steps_to_level([np.nan, 3, 1], 5.0) == 1  # NaN never counts
    x = np.arange(600.0)
    assert S.loss_at_fraction(x, 0.1) == 59 and S.loss_at_fraction(x, 0.3) == 179 and S.loss_at_fraction(x, 1.0) == 599
    assert S.smoothing_window(21, 600) == 21 and S.smoothing_window(100, 600) == 30
    assert S.smoothing_window(2, 600) == 2 and S.smoothing_window(5, 10) == 1


def curve(pieces, steps=100):
    """A batch-loss curve: pieces = [(until_step, value), ...] (value up to, not including, until_step)."""
    out = np.empty(steps)
    start = 0
    for until, value in pieces:
        out[start:until] = value
        start = until
    return out


def case_fixture():
    """One dataset, seeds (7, 5) in that order, LRs 0.01 .. 10:
    * raw-none-d2: best LR 0.1 (median final 0.02); seed 7 converges at 1.0 too (its own best), seed 5
      diverges there (a seed diverging in one run only); refinement rows for both seeds;
    * raw-batchnorm-d2: stable everywhere, best LR 10 (median final 0.0625 = the case's matched level);
    * standardize-none-d2: another case (input), much worse (median 4.0): its level is its own;
    * raw-none-d4: another case (depth) with no stable LR."""
    seeds = [7, 5]
    none = runs([[0.5, 0.5], [0.01, 0.03], [0.005, 0.4], [3.0, 3.0]], [[0, 0], [0, 0], [0, 1], [1, 1]],
                accuracy=[[0.6] * 2, [0.9, 0.8], [0.95, 0.1], [0.1] * 2], seeds=seeds)
    refine = pd.DataFrame({**{k: none[k].iloc[0] for k in ("dataset", "variant", "input", "norm", "depth")},
                           "lr": [1.5, 2.2, 0.2, 0.4], "seed": [7, 7, 5, 5], "grid": False,
                           "diverged": [False, True, False, True], "final_train_loss": [1e-6, np.nan, 0.3, np.nan],
                           "initial_train_loss": 2.0, "test_accuracy": 0.99, "steps_to_target": np.nan})
    bn = runs([[0.5, 0.5], [0.25, 0.25], [0.125, 0.125], [0.03125, 0.09375]], variant="raw-batchnorm-d2",
              accuracy=[[0.5] * 2, [0.6] * 2, [0.7] * 2, [0.8, 0.7]], seeds=seeds)
    std = runs([[4.0, 4.0], [5.0, 5.0], [6.0, 6.0], [7.0, 7.0]], variant="standardize-none-d2", initial=8.0,
               seeds=seeds)
    deep = runs([[3.0, 3.0]] * 4, [[1, 1]] * 4, variant="raw-none-d4", seeds=seeds)
    table = pd.concat([bn, none, refine, std, deep], ignore_index=True)

    lr, seed = np.repeat(LRS, 2), np.tile(seeds, 4)
    flat = np.full((8, 100), 0.01)  # every other run: a low flat curve (a distractor for the row lookup)

    def arrays(rows, diverged_step=None):
        loss = flat.copy()
        for r, c in rows.items():
            loss[r] = c
        div = np.full(8, -1) if diverged_step is None else np.asarray(diverged_step)
        return {"lr": lr, "seed": seed, "batch_loss": loss, "diverged_step": div, "batches_per_epoch": np.asarray(4)}

    curves = {
        # best LR 0.1 = rows 2 (seed 7) and 3 (seed 5); window 4; target 0.125
        "raw-none-d2": arrays({2: curve([(10, 2.0), (50, 0.5), (100, 0.0)]),     # 0.125 exactly at step 52
                               3: curve([(10, 2.0), (50, 0.5001), (100, 0.0)])},  # 0.125025 at 52, 0 at 53
                              diverged_step=[-1, -1, -1, -1, -1, 0, 0, 0]),
        # best LR 10 = rows 6 (seed 7) and 7 (seed 5)
        "raw-batchnorm-d2": arrays({6: curve([(100, 0.2)]), 7: curve([(20, 1.0), (100, 0.0)])}),
        "standardize-none-d2": arrays({}),
        "raw-none-d4": arrays({}),
    }
    return table, curves


def test_dataset_summary_outcome_and_speed_at_the_best_lr():
    table, curves = case_fixture()
    variants, seeds = S.dataset_summary(table, curves)
    v = variants.set_index("variant")
    # grid LRs only: the refinement's 1e-6 final loss at 1.5 is not the best LR
    assert v.loc["raw-none-d2", "best_lr"] == 0.1 and v.loc["raw-batchnorm-d2", "best_lr"] == 10.0
    assert (v.loc["raw-none-d2", "max_stable_lr"], v.loc["raw-none-d2", "max_stable_lr_upper"]) == (0.2, 0.4)
    assert v.loc["raw-batchnorm-d2", "max_stable_lr"] == 10.0
    assert np.isnan(v.loc["raw-batchnorm-d2", "max_stable_lr_upper"])
    # matched level: the largest best-LR median final loss among the case's arms (not the other input's 4.0)
    assert v.loc["raw-none-d2", "matched_level"] == 0.0625 and v.loc["raw-batchnorm-d2", "matched_level"] == 0.0625
    assert v.loc["raw-none-d2", "case_target"] == 0.125
    assert v.loc["standardize-none-d2", "matched_level"] == 4.0 and v.loc["standardize-none-d2", "case_target"] == 8.0
    # steps to the case target, just either side of it: seed 7 reaches 0.125 exactly at 52, seed 5 at 53
    assert v.loc["raw-none-d2", "steps_to_case_target_min"] == 52
    assert v.loc["raw-none-d2", "steps_to_case_target_max"] == 53
    assert v.loc["raw-none-d2", "steps_to_case_target_median"] == 52.5
    assert v.loc["raw-none-d2", "n_seeds_reached_case_target"] == 2
    # budgets: step 9 (2.0), step 29 (0.5 for seed 7, 0.5001 for seed 5), step 99 (0.0)
    assert v.loc["raw-none-d2", "loss_at_10pct_median"] == 2.0
    assert (v.loc["raw-none-d2", "loss_at_30pct_min"], v.loc["raw-none-d2", "loss_at_30pct_max"]) == (0.5, 0.5001)
    assert v.loc["raw-none-d2", "loss_at_100pct_max"] == 0.0
    # the BN arm: seed 7 never reaches 0.125 (flat 0.2): it ranks last, so the median and max are NaN
    assert np.isnan(v.loc["raw-batchnorm-d2", "steps_to_case_target_median"])
    assert np.isnan(v.loc["raw-batchnorm-d2", "steps_to_case_target_max"])
    assert v.loc["raw-batchnorm-d2", "steps_to_case_target_min"] == 23  # window 20..23 all 0.0 -> 0 (0.25 at 22)
    assert v.loc["raw-batchnorm-d2", "n_seeds_reached_case_target"] == 1
    assert v.loc["raw-batchnorm-d2", "final_train_loss_median"] == 0.0625
    assert v.loc["raw-batchnorm-d2", "test_accuracy_min"] == 0.7
    # no stable LR: NaN, flagged
    deep = v.loc["raw-none-d4"]
    assert not deep["stable_lr_found"] and np.isnan(deep["best_lr"]) and np.isnan(deep["max_stable_lr"])
    assert np.isnan(deep["matched_level"]) and np.isnan(deep["steps_to_case_target_min"])
    assert np.isnan(deep["loss_at_100pct_median"]) and deep["n_seeds_reached_case_target"] == 0
    assert v["stable_lr_found"].tolist() == [True, True, False, True]
    assert (variants["common_lr"] == 0.01).all() and not variants["common_lr_stable_everywhere"].any()

    # per seed, in config order (7, 5)
    assert list(seeds.columns[:6]) == [*S.ID_KEYS, "seed"]
    n = seeds[seeds["variant"] == "raw-none-d2"].set_index("seed")
    assert n.index.tolist() == [7, 5]
    assert (n.loc[7, "max_stable_lr"], n.loc[7, "max_stable_lr_upper"]) == (1.5, 2.2)
    assert (n.loc[5, "max_stable_lr"], n.loc[5, "max_stable_lr_upper"]) == (0.2, 0.4)
    assert n.loc[7, "best_lr"] == 1.0 and n.loc[5, "best_lr"] == 0.1  # each seed's own best grid LR
    # outcome at the VARIANT's best LR (0.1), not the seed's own
    assert n.loc[7, "final_train_loss"] == 0.01 and n.loc[7, "test_accuracy"] == 0.9
    assert n.loc[7, "steps_to_case_target"] == 52 and n.loc[5, "steps_to_case_target"] == 53
    assert n.loc[5, "loss_at_30pct"] == 0.5001 and n.loc[7, "case_target"] == 0.125
    assert (n["matched_level"] == 0.0625).all()
    b = seeds[seeds["variant"] == "raw-batchnorm-d2"].set_index("seed")
    assert np.isnan(b.loc[7, "steps_to_case_target"]) and b.loc[5, "steps_to_case_target"] == 23
    d = seeds[seeds["variant"] == "raw-none-d4"]
    assert len(d) == 2 and not d["stable_lr_found"].any() and d["final_train_loss"].isna().all()


def test_dataset_summary_of_a_target_that_a_threshold_scaled_by_three_would_change():
    """With the target at 3 x the level instead of 2 x, seed 7 of raw-none-d2 would reach it earlier."""
    table, curves = case_fixture()
    curves["raw-none-d2"]["batch_loss"][2] = curve([(10, 2.0), (50, 0.75), (100, 0.0)])  # 0.1875 at 52
    variants, seeds = S.dataset_summary(table, curves)
    # 0.1875 > 0.125 at 52, 0 at 53; a 3x target (0.1875) would give 52
    assert seeds.set_index(["variant", "seed"]).loc[("raw-none-d2", 7), "steps_to_case_target"] == 53


def test_a_diverged_runs_steps_never_reach_the_target():
    # window 4: (1 + 1 + 0 + 0) / 4 = 0.5 at step 11; diverged at step 11, that step never counts
    out = S.speed_at(curve([(10, 1.0), (100, 0.0)]), 11, 4, 0.5)
    assert np.isnan(out["steps_to_case_target"]) and np.isnan(out["loss_at_100pct"])
    assert out["loss_at_10pct"] == 1.0  # step 9, before the divergence
    out = S.speed_at(curve([(10, 1.0), (100, 0.0)]), 12, 4, 0.5)  # diverged one step later: step 11 counts
    assert out["steps_to_case_target"] == 11


def test_one_seed():
    table = pd.concat([runs([[0.5], [0.25], [4.0], [4.0]], seeds=[3]),
                       runs([[0.5], [0.125], [0.0625], [4.0]], variant="raw-batchnorm-d2", seeds=[3])],
                      ignore_index=True)
    lr = np.asarray(LRS, float)
    curves = {v: {"lr": lr, "seed": np.full(4, 3), "batch_loss": np.tile(curve([(30, 1.0), (100, 0.1)]), (4, 1)),
                  "diverged_step": np.full(4, -1), "batches_per_epoch": np.asarray(1)}
              for v in ("raw-none-d2", "raw-batchnorm-d2")}
    variants, seeds = S.dataset_summary(table, curves)
    assert len(seeds) == 2 and (variants["n_seeds"] == 1).all()
    v = variants.set_index("variant")
    assert v.loc["raw-none-d2", "matched_level"] == 0.25 and v.loc["raw-none-d2", "best_lr"] == 0.1
    for stat in ("median", "min", "max"):
        assert v.loc["raw-none-d2", f"steps_to_case_target_{stat}"] == 30  # window 1 (100 steps // 20 = 5 > 1)
        assert v.loc["raw-batchnorm-d2", f"final_train_loss_{stat}"] == 0.0625


def test_speed_columns_without_curves_are_nan():
    table, _ = case_fixture()
    variants, seeds = S.dataset_summary(table)
    assert variants["steps_to_case_target_min"].isna().all() and seeds["loss_at_10pct"].isna().all()
    assert variants.set_index("variant").loc["raw-none-d2", "best_lr"] == 0.1
