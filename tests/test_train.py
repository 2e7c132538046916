"""Tests of normlab.train: divergence is detected at the right step and frozen, runs are ordered
lr-major / seed-minor, a vmapped sweep computes exactly what each run computes alone (whatever its chunking
and evaluation schedule), every seed's checkpoints are saved and read back, and the max-stable-LR
refinement brackets the known divergence threshold of full-batch gradient descent on a quadratic. Batch
statistics: the running input statistics, the test-mode and training-mode metrics of input-BN and hidden-BN
models, and the logged weight norms and effective learning rates, each against numpy written out here.

The reference is a plain Python loop of SGD steps (params - lr * grad) written here, one step at a time,
with the divergence rule of the module docstring. Training runs in float64 so that the vmapped sweep,
the single-run sweep and the reference loop agree to ~1e-10. Compilation dominates the cost, so the
module trains only five small sweeps (the fixture, the run alone, the quadratic, and an input-BN sweep
with and without hidden BN) and the reference loop reuses one jitted gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from normlab import io, tables
from normlab import model as M
from normlab import selection as S
from normlab import train as T

rng = np.random.default_rng(0)
N = 96
X = rng.normal(size=(N, 4))
Y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64) + (X[:, 2] > 1).astype(np.int64)
X_TEST = rng.normal(size=(40, 4))
Y_TEST = (X_TEST[:, 0] + 0.5 * X_TEST[:, 1] > 0).astype(np.int64) + (X_TEST[:, 2] > 1).astype(np.int64)
DATA = {"X_train": X, "y_train": Y, "X_test": X_TEST, "y_test": Y_TEST}
EVAL = 64
SPEC = M.ModelSpec((4, 8, 3))
# log_every=1 logs every step; early = step round(0.1 * 20) = 2
CFG = T.TrainConfig(steps=20, batch_size=16, log_every=1, early_fraction=0.1, divergence_factor=1e3,
                    dtype="float64")
# 1e-3: tiny (never diverges); 3: converges; 10: diverges for one seed only, late; 1e6: diverges at once
LRS = [1e-3, 3.0, 8.0, 1e6]
SEEDS = [0, 1]
TARGET = 0.9


@pytest.fixture(scope="module")
def sweep():
    return T.train_sweep(SPEC, CFG, DATA, LRS, SEEDS, EVAL, TARGET, progress=lambda msg: None)


def run_params(result, tag, r):
    return jax.tree.map(lambda a: a[r], result["checkpoints"][tag])


_value_and_grad = jax.jit(jax.value_and_grad(lambda p, X_, y_: M.loss(SPEC, p, X_, y_)))


def reference_run(params, lr, seed):
    """Plain SGD, one step at a time, with the divergence rule written out: at step t the mini-batch
    loss (at the parameters after t updates) is non-finite or > factor x initial eval loss, or the
    gradient is non-finite -> diverged at t, parameters frozen from then on. Returns the eval loss
    after every step (index = number of updates), the mini-batch loss of every step (also at the frozen
    parameters), the eval gradient norms at step 0, the final parameters and the divergence step (-1 if
    none)."""
    X_eval, y_eval = jnp.asarray(X[:EVAL]), jnp.asarray(Y[:EVAL])
    init_loss, init_grads = _value_and_grad(params, X_eval, y_eval)
    grad0 = [float(np.linalg.norm(np.asarray(init_grads[f"layer{l}"]["W"]))) for l in (1, 2)]
    sched = T.batch_schedule(T.run_keys(seed)[1], CFG.steps, N, CFG.batch_size)
    eval_losses, batch_losses, div = [float(init_loss)], [], -1
    for t in range(CFG.steps):
        idx = sched[t]
        batch_loss, grads = _value_and_grad(params, jnp.asarray(X[idx]), jnp.asarray(Y[idx]))
        batch_losses.append(float(batch_loss))
        if div < 0:
            grads_ok = all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
            if not np.isfinite(float(batch_loss)) or float(batch_loss) > 1e3 * float(init_loss) or not grads_ok:
                div = t
            else:
                params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        eval_losses.append(float(_value_and_grad(params, X_eval, y_eval)[0]))
    return np.array(eval_losses), np.array(batch_losses), grad0, params, div


def test_runs_are_ordered_lr_major_seed_minor_and_paired(sweep):
    np.testing.assert_array_equal(sweep["lr"], np.repeat(LRS, 2))
    np.testing.assert_array_equal(sweep["seed"], np.tile(SEEDS, 4))
    np.testing.assert_array_equal(sweep["step"], np.arange(21))  # 21 steps < eval_points: every step
    np.testing.assert_array_equal(sweep["eval_step"], sweep["step"])
    assert sweep["train_loss"].shape == (8, 21) and sweep["grad_norm"].shape == (8, 21, 2)
    assert sweep["batch_loss"].shape == (8, 20) and int(sweep["batches_per_epoch"]) == N // 16
    assert sweep["weight_norm"].shape == sweep["effective_lr"].shape == (8, 21, 2)
    assert set(T.sweep_arrays(sweep)) == set(T.LOG_ARRAYS) >= {"weight_norm", "effective_lr"}
    init = sweep["checkpoints"]["init"]
    for r in range(8):  # same seed -> the same initial weights, whatever the LR
        same = r % 2
        for k in init:
            for n in init[k]:
                np.testing.assert_array_equal(init[k][n][r], init[k][n][same])
    assert not np.allclose(init["layer1"]["W"][0], init["layer1"]["W"][1])  # seeds differ
    np.testing.assert_array_equal(init["layer1"]["b"], 0.0)
    # every run with the same seed starts from the same evaluation loss
    np.testing.assert_array_equal(sweep["train_loss"][:, 0], np.tile(sweep["train_loss"][:2, 0], 4))


def test_sweep_matches_reference_loop_divergence_and_freezing(sweep):
    late = 0
    for r in range(8):
        lr, seed = float(sweep["lr"][r]), int(sweep["seed"][r])
        eval_losses, batch_losses, grad0, end_params, div = reference_run(run_params(sweep, "init", r), lr, seed)
        assert int(sweep["diverged_step"][r]) == div, (lr, seed)
        assert bool(sweep["diverged"][r]) == (div >= 0)
        np.testing.assert_allclose(sweep["train_loss"][r], eval_losses, rtol=1e-9)
        np.testing.assert_allclose(sweep["batch_loss"][r], batch_losses, rtol=1e-9)
        np.testing.assert_allclose(sweep["grad_norm"][r, 0], grad0, rtol=1e-9)
        w0 = [np.linalg.norm(run_params(sweep, "init", r)[f"layer{l}"]["W"]) for l in (1, 2)]
        np.testing.assert_allclose(sweep["relative_grad_norm"][r, 0], np.array(grad0) / w0, rtol=1e-9)
        np.testing.assert_allclose(sweep["weight_norm"][r, 0], w0, rtol=1e-12)  # no norm: ||W[l]||_F
        w_end = [np.linalg.norm(end_params[f"layer{l}"]["W"]) for l in (1, 2)]
        np.testing.assert_allclose(sweep["weight_norm"][r, -1], w_end, rtol=1e-9)
        end = run_params(sweep, "end", r)
        for k in end:
            for n in end[k]:
                np.testing.assert_allclose(end[k][n], end_params[k][n], rtol=1e-9, atol=1e-12)
                assert np.isfinite(end[k][n]).all()
        if div >= 0:
            # frozen: the logged loss never moves again after the divergence step
            assert np.all(sweep["train_loss"][r, div:] == sweep["train_loss"][r, div])
            assert np.isnan(sweep["test_accuracy"][r]) and np.isnan(sweep["test_loss"][r])
            early_step = CFG.early_interval * CFG.log_every
            early = run_params(sweep, "early", r)
            if div <= early_step:  # diverged before the early checkpoint: end params == early params
                for k in end:
                    for n in end[k]:
                        np.testing.assert_array_equal(end[k][n], early[k][n])
            else:
                late += 1
    assert late >= 1, "no run diverged after the early checkpoint; the test lost its power"


def test_huge_lr_diverges_tiny_lr_does_not(sweep):
    huge = sweep["lr"] == 1e6
    assert sweep["diverged"][huge].all()
    assert (sweep["diverged_step"][huge] >= 0).all()
    # on standardized data the first step is fine; the first update at lr=1e6 blows up the loss
    np.testing.assert_array_equal(sweep["diverged_step"][huge], 1)
    tiny = sweep["lr"] == 1e-3
    assert not sweep["diverged"][tiny].any()
    np.testing.assert_array_equal(sweep["diverged_step"][tiny], -1)
    assert (sweep["final_train_loss"][tiny] < sweep["train_loss"][tiny, 0]).all()  # it does learn, slowly
    # lr=8 is a mixed case in this set-up: one seed diverges (at step 12), the other does not
    mid = sweep["lr"] == 8.0
    assert sweep["diverged"][mid].tolist() == [True, False]
    # nothing silently dropped; every final value is finite or the run is flagged
    assert len(sweep["diverged"]) == len(LRS) * len(SEEDS)
    assert (np.isfinite(sweep["final_train_loss"]) | sweep["diverged"]).all()
    assert (np.isfinite(sweep["test_accuracy"]) == ~sweep["diverged"]).all()


def test_steps_to_target_and_test_accuracy(sweep):
    for r in range(8):
        loss, div = sweep["train_loss"][r], int(sweep["diverged_step"][r])
        ok = [s for s in range(21) if loss[s] <= TARGET and (div < 0 or s <= div)]
        expected = float(ok[0]) if ok else np.nan
        np.testing.assert_equal(sweep["steps_to_target"][r], expected)
        if div < 0:
            out = np.asarray(M.forward(SPEC, run_params(sweep, "end", r), jnp.asarray(X_TEST)))
            assert sweep["test_accuracy"][r] == pytest.approx(np.mean(out.argmax(axis=1) == Y_TEST), abs=1e-6)
    assert np.isfinite(sweep["steps_to_target"][sweep["lr"] == 3.0]).all()  # the target is reachable
    assert np.isnan(sweep["steps_to_target"][sweep["lr"] == 1e-3]).all()


def test_vmapped_run_equals_the_run_trained_alone_whatever_its_chunks_and_schedule(sweep):
    """The run (8.0, seed 1) trained alone, in chunks of 2 steps and evaluated on a sparse schedule, is the
    sweep's run: its evaluations are the sweep's at the schedule steps (also inside chunks), its mini-batch
    losses and checkpoints the same (early falls on step 2 in both)."""
    r = LRS.index(8.0) * len(SEEDS) + SEEDS.index(1)  # lr-major, seed-minor
    cfg = T.TrainConfig(steps=20, batch_size=16, log_every=2, eval_points=6, early_fraction=0.1, dtype="float64")
    assert cfg.eval_steps.tolist() == [0, 1, 2, 4, 9, 20] and cfg.early_interval * cfg.log_every == 2
    alone = T.train_sweep(SPEC, cfg, DATA, [8.0], [1], EVAL, TARGET, progress=lambda msg: None)
    assert alone["lr"].tolist() == [8.0] and alone["seed"].tolist() == [1]
    np.testing.assert_array_equal(alone["step"], cfg.eval_steps)
    cols = cfg.eval_steps
    for key in ("train_loss", "weight_norm"):
        np.testing.assert_allclose(alone[key][0], sweep[key][r][cols], rtol=1e-5, atol=1e-8, err_msg=key)
    # the gradient: the alone run measured it at all 6 of its evaluation steps, the sweep at 12 of its 21
    both = sweep["grad_step"][cols]
    assert alone["grad_step"].all() and 2 <= both.sum() < len(cols)
    for key in ("grad_norm", "relative_grad_norm"):
        np.testing.assert_allclose(alone[key][0][both], sweep[key][r][cols][both], rtol=1e-5, atol=1e-8, err_msg=key)
        assert np.isnan(sweep[key][r][cols][~both]).all()
    for key in ("batch_loss", "final_train_loss", "steps_to_target", "test_accuracy"):
        np.testing.assert_allclose(alone[key][0], sweep[key][r], rtol=1e-5, atol=1e-8, err_msg=key)
    assert alone["diverged"][0] == sweep["diverged"][r] and alone["diverged_step"][0] == sweep["diverged_step"][r]
    for tag in ("init", "early", "end"):
        a, b = run_params(alone, tag, 0), run_params(sweep, tag, r)
        for k in a:
            for n in a[k]:
                np.testing.assert_allclose(a[k][n], b[k][n], rtol=1e-5, atol=1e-8)
    # and it is not equal to its neighbours (other seed / other LR): the pairing test has power
    assert not np.allclose(sweep["train_loss"][r - 1][cols], alone["train_loss"][0])
    assert not np.allclose(sweep["train_loss"][r - 2][cols], alone["train_loss"][0])


def test_the_evaluation_runs_at_schedule_steps_only_as_a_real_branch_under_vmap():
    """The schedule flag is not batched, so the vmapped chunk keeps a ``cond`` (a batched flag would turn
    it into a select that evaluates at every step), and a step off the schedule is not evaluated."""
    sw = T.Sweep(SPEC, T.TrainConfig(steps=4, batch_size=16, log_every=2, dtype="float64"), X, Y, X[:EVAL], Y[:EVAL])
    state, _ = sw.init(jnp.asarray([0.1, 1.0]), jnp.asarray([0, 1]))
    block = jnp.zeros((2, 2, 16), jnp.int32)
    args = (state, jnp.asarray(0, jnp.int32), block, jnp.asarray([T.NO_EVAL, T.EVAL_GRADIENT], jnp.int32), sw.X,
            sw.y, sw.X_eval, sw.y_eval)
    assert "cond[" in str(jax.make_jaxpr(sw.interval_program)(*args))
    _, log = sw.interval_program(*args)
    assert np.isnan(log["train_loss"][:, 0]).all() and np.isnan(log["grad_norm"][:, 0]).all()
    assert np.isnan(log["weight_norm"][:, 0]).all()
    assert np.isfinite(log["train_loss"][:, 1]).all() and np.isfinite(log["batch_loss"]).all()
    assert np.isfinite(log["grad_norm"][:, 1]).all()
    assert np.isfinite(log["weight_norm"][:, 1]).all() and np.isnan(log["effective_lr"]).all()  # no norm: NaN
    # the loss alone: no gradient norms; a bool schedule (``interval``) reads True as the gradient too
    _, loss_only = sw.interval(state, jnp.asarray(0, jnp.int32), block, np.array([T.EVAL_LOSS, T.NO_EVAL]))
    assert np.isfinite(loss_only["train_loss"][:, 0]).all() and np.isnan(loss_only["grad_norm"][:, 0]).all()
    np.testing.assert_allclose(loss_only["weight_norm"][:, 0], sw.interval(state, jnp.asarray(0, jnp.int32), block,
                               np.array([True, False]))[1]["weight_norm"][:, 0], rtol=1e-12)
    assert np.isfinite(sw.interval(state, jnp.asarray(0, jnp.int32), block, np.array([True, False]))[1]["grad_norm"]
                       [:, 0]).all()


def test_a_loss_only_sweep_makes_the_same_updates_and_logs_each_steps_parameters():
    """``eval_gradients=False`` evaluates the loss alone (no gradient norms, NaN) and ``log_params`` logs the
    parameters after every update: the updates, losses and weight norms are those of the default sweep, and the
    chunk's last logged parameters are its final state's."""
    cfg = T.TrainConfig(steps=4, batch_size=16, log_every=4, dtype="float64")
    full = T.Sweep(SPEC, cfg, X, Y, X[:EVAL], Y[:EVAL])
    lean = T.Sweep(SPEC, cfg, X, Y, X[:EVAL], Y[:EVAL], eval_gradients=False, log_params=True)
    block = jnp.asarray(np.random.default_rng(0).integers(0, len(X), (2, 4, 16)), jnp.int32)
    out = []
    for sw in (full, lean):
        state, log0 = sw.init(jnp.asarray([0.1, 1.0]), jnp.asarray([0, 1]))
        state, log = sw.interval(state, jnp.asarray(0, jnp.int32), block, np.ones(4, bool))
        out.append((state, log0, log))
    (s_full, l0_full, l_full), (s_lean, l0_lean, l_lean) = out
    for a, b in zip(jax.tree.leaves(s_full["params"]), jax.tree.leaves(s_lean["params"]), strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(l_lean["train_loss"], l_full["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(l0_lean["train_loss"], l0_full["train_loss"], rtol=1e-12)
    np.testing.assert_allclose(l_lean["weight_norm"], l_full["weight_norm"], rtol=1e-12)
    assert np.isfinite(l_full["grad_norm"]).all() and np.isnan(l_lean["grad_norm"]).all()
    assert np.isnan(l_lean["relative_grad_norm"]).all() and "params" not in l_full
    for a, b in zip(jax.tree.leaves(l_lean["params"]), jax.tree.leaves(s_lean["params"]), strict=True):
        assert a.shape == (2, 4, *b.shape[1:])
        np.testing.assert_array_equal(a[:, -1], b)
    first = jax.tree.map(lambda a: a[:, 0], l_lean["params"])
    assert not np.array_equal(first["layer1"]["W"], s_lean["params"]["layer1"]["W"])  # one per update


def test_the_gradient_is_measured_at_about_grad_points_log_spaced_evaluation_steps():
    cfg = T.TrainConfig(steps=600, log_every=30)  # the default study's: 41 evaluation steps
    ev, gs = cfg.eval_steps, cfg.grad_steps
    assert set(gs) <= set(ev) and {0, 60, 600} <= set(gs)  # first, early, last
    assert 12 <= len(gs) <= 13 and len(ev) == 41
    assert (np.diff(gs) > 0).all() and gs.dtype == np.int64
    # evenly spaced in the log-spaced schedule: the gaps grow
    late = gs[gs >= 60]
    assert (late[1:] / late[:-1]).min() > 1.1
    assert T.TrainConfig(steps=20, log_every=1, grad_points=40).grad_steps.tolist() == list(range(21))
    assert T.TrainConfig(steps=600, log_every=30, grad_points=2).grad_steps.tolist() == [0, 60, 600]
    with pytest.raises(ValueError, match="grad_points"):
        T.TrainConfig(grad_points=1)
    # a sweep: the gradient at those steps only, the loss at every evaluation step
    sw = T.Sweep(SPEC, T.TrainConfig(steps=20, batch_size=16, log_every=5, grad_points=3, dtype="float64"), X, Y,
                 X[:EVAL], Y[:EVAL])
    assert sw.grad_steps.tolist() == [0, 5, 10, 20]  # 3 of 0..20 (0, 10, 20) and early (5)
    codes = sw.evaluate_after  # after update t + 1
    assert [t + 1 for t in np.flatnonzero(codes == T.EVAL_GRADIENT)] == [5, 10, 20]
    assert (codes[codes != T.EVAL_GRADIENT] == T.EVAL_LOSS).all()  # every step is an evaluation step here


def test_eval_schedule():
    s = T.eval_schedule(600, 40)
    assert s[0] == 0 and s[-1] == 600 and len(s) in (40, 41)
    assert (np.diff(s) > 0).all() and s.dtype == np.int64
    assert s[:8].tolist() == list(range(8))  # dense at the start ...
    assert np.diff(s)[-1] > 30  # ... log-spaced at the end
    ratios = s[-10:][1:] / s[-10:][:-1]
    assert ratios.max() / ratios.min() < 1.1
    np.testing.assert_array_equal(T.eval_schedule(20, 40), np.arange(21))
    np.testing.assert_array_equal(T.eval_schedule(1, 40), [0, 1])
    # the training's schedule adds the early checkpoint's step (60 = 2 chunks of 30: not on the log-spaced one)
    cfg = T.TrainConfig(steps=600, log_every=30)
    assert cfg.early_step == 60 and 60 not in s
    assert cfg.eval_steps.tolist() == sorted([*s.tolist(), 60])
    with pytest.raises(ValueError, match="eval_points"):
        T.TrainConfig(eval_points=1)


def test_every_seeds_checkpoints_saved_and_read_back(sweep, tmp_path, monkeypatch):
    """sweep_checkpoint_arrays: (n_seeds, n_lr, ...) for early/end, (n_seeds, ...) for init, seeds in the
    given order; checkpoint_from_arrays returns the run (seed i, LR j) from a dict and from the written
    .npz, for every run, reading only that run's bytes from the file (numpy's whole-array reader is
    disabled while it reads)."""
    arrays = T.sweep_checkpoint_arrays(sweep)
    assert arrays["end/layer1.W"].shape == (2, 4, 4, 8) and arrays["init/layer2.b"].shape == (2, 3)
    assert set(arrays) == {f"{t}/layer{l}.{n}" for t in ("init", "early", "end") for l in (1, 2) for n in "Wb"}
    lrs, seeds = T.grid_axes(sweep)
    assert lrs.tolist() == LRS and seeds.tolist() == SEEDS
    io.write_npz(tmp_path / "ck.npz", arrays)

    def whole_array_read(*args, **kwargs):
        raise AssertionError("checkpoint_from_arrays read a whole array")

    with np.load(tmp_path / "ck.npz") as opened:
        monkeypatch.setattr(np.lib.format, "read_array", whole_array_read)
        for source in (arrays, opened):
            for i in range(len(SEEDS)):
                for j in range(len(LRS)):
                    r = j * len(SEEDS) + i
                    for tag in ("init", "early", "end"):
                        got = T.checkpoint_from_arrays(source, tag, i, j)
                        want = run_params(sweep, tag, r)
                        for k in want:
                            for n in want[k]:
                                np.testing.assert_array_equal(np.asarray(got[k][n]), want[k][n])
    # the seeds' runs differ (a swapped axis would pair seed 0's checkpoint with seed 1's run)
    assert not np.allclose(T.checkpoint_from_arrays(arrays, "end", 0, 1)["layer1"]["W"],
                           T.checkpoint_from_arrays(arrays, "end", 1, 1)["layer1"]["W"])


def test_refinement_runs_of_the_grid_sweep(sweep):
    """Per seed, the LRs strictly inside (largest converged grid LR, next grid LR): seed 0 converges at 3
    and diverges at 8; seed 1 converges up to 8 (not at 1e6)."""
    conv = (~sweep["diverged"]) & (sweep["final_train_loss"] < sweep["train_loss"][:, 0])
    assert conv.reshape(4, 2).tolist() == [[True, True], [True, True], [False, True], [False, False]]
    lr_runs, seed_runs = T.refinement_runs(sweep)
    for seed, lo, hi in ((0, 3.0, 8.0), (1, 8.0, 1e6)):
        mine = np.sort(lr_runs[seed_runs == seed])
        assert mine.min() > lo and mine.max() < hi
        ladder = np.concatenate([[lo], mine, [hi]])
        assert (ladder[1:] / ladder[:-1]).max() <= S.REFINE_MAX_RATIO * 1.001


def test_tables_from_a_sweep(sweep):
    ids = {"dataset": "toy", "variant": "raw-none-d1", "input": "raw", "norm": "none", "depth": 1}
    runs = pd.DataFrame(tables.runs_table(ids, sweep))
    assert list(runs.columns[:5]) == tables.ID_COLUMNS
    assert list(runs.columns[5:8]) == ["lr", "seed", "grid"] and runs["grid"].all()
    assert not pd.DataFrame(tables.runs_table(ids, sweep, grid=False))["grid"].any()
    assert len(runs) == 8
    div = sweep["diverged"]
    assert runs["diverged_step"].isna().tolist() == (~div).tolist()
    np.testing.assert_array_equal(runs["diverged_step"][div], sweep["diverged_step"][div])
    np.testing.assert_array_equal(runs["initial_train_loss"], sweep["train_loss"][:, 0])
    # no batch statistics (no input BN, no hidden BN): no train / test mode to compare
    assert list(runs.columns[-2:]) == ["train_mode_loss", "test_mode_loss"]
    assert runs["train_mode_loss"].isna().all() and runs["test_mode_loss"].isna().all()
    assert np.isfinite(runs.loc[~runs["diverged"], "test_loss"]).all()
    training = pd.DataFrame(tables.training_table(ids, sweep))
    assert list(training.columns[5:]) == ["lr", "seed", "step", "train_loss", "eval_loss", "frozen"]
    assert len(training) == 8 * 21
    for r in range(8):
        rows = training.iloc[r * 21:(r + 1) * 21]
        assert (rows["lr"] == sweep["lr"][r]).all() and (rows["seed"] == sweep["seed"][r]).all()
        assert rows["step"].tolist() == list(range(21))
        np.testing.assert_array_equal(rows["train_loss"][:20], sweep["batch_loss"][r])  # mini-batch loss
        assert np.isnan(rows["train_loss"].iloc[20])  # no batch after the last update
        np.testing.assert_array_equal(rows["eval_loss"], sweep["train_loss"][r])  # every step is scheduled here
        d = int(sweep["diverged_step"][r])
        expected = rows["step"] > d if d >= 0 else pd.Series(False, index=rows.index)
        assert rows["frozen"].tolist() == expected.tolist(), (r, d)
    grads = pd.DataFrame(tables.gradients_table(ids, sweep, {"common": 0, "best": 2}))
    n_grad = int(sweep["grad_step"].sum())  # the gradient's norms at the steps where it was measured only
    assert 2 <= n_grad < 21
    assert len(grads) == 2 * (2 * n_grad + 2 * 21) * 2  # runs x (metrics x steps) x layers
    assert list(dict.fromkeys(grads["metric"])) == ["grad_norm", "relative_grad_norm", "weight_norm", "effective_lr"]
    for metric, steps in (("grad_norm", sweep["grad_step"]), ("weight_norm", np.ones(21, bool))):
        g = grads[(grads["run"] == "best") & (grads["metric"] == metric) & (grads["layer"] == 2)]
        np.testing.assert_array_equal(g["value"], sweep[metric][2, steps, 1])
        assert g["step"].tolist() == sweep["step"][steps].tolist()
    assert np.isfinite(grads.loc[grads["metric"].isin(["grad_norm", "relative_grad_norm"]), "value"]).all()
    assert grads.loc[grads["metric"] == "effective_lr", "value"].isna().all()  # no norm: no invariant group
    # one row per (run, seed): pairs instead of a mapping
    g = pd.DataFrame(tables.gradients_table(ids, sweep, [("best", 2), ("best", 3)]))
    assert g.groupby("seed").size().tolist() == [(2 * n_grad + 2 * 21) * 2] * 2
    # a sweep without grad_step flags (every evaluation step measured the gradient): every step
    every = {k: v for k, v in sweep.items() if k != "grad_step"}
    assert len(pd.DataFrame(tables.gradients_table(ids, every, {"best": 2}))) == 4 * 21 * 2


def test_training_table_on_a_sparse_schedule():
    """eval_loss sits at the schedule steps (NaN elsewhere), train_loss is the mini-batch loss of every step."""
    fake = {"lr": np.array([0.1, 0.2]), "seed": np.array([0, 0]), "batch_loss": np.arange(20.0).reshape(2, 10),
            "eval_step": np.array([0, 3, 10]), "train_loss": np.array([[9.0, 8.0, 7.0], [6.0, 5.0, 4.0]]),
            "diverged": np.array([False, True]), "diverged_step": np.array([-1, 4], np.int32)}
    t = pd.DataFrame(tables.training_table({k: "x" for k in tables.ID_COLUMNS}, fake))
    assert len(t) == 2 * 11
    second = t[t["lr"] == 0.2]
    assert second["train_loss"].tolist()[:10] == list(range(10, 20)) and np.isnan(second["train_loss"].iloc[10])
    assert second["eval_loss"].notna().tolist() == [s in (0, 3, 10) for s in range(11)]
    assert second.set_index("step").loc[[0, 3, 10], "eval_loss"].tolist() == [6.0, 5.0, 4.0]
    assert second["frozen"].tolist() == [s > 4 for s in range(11)]
    assert not t[t["lr"] == 0.1]["frozen"].any()


def test_batch_schedule_walks_permutations():
    key = T.run_keys(3)[1]
    sched = T.batch_schedule(key, 20, 50, 16)  # 3 full batches per epoch (2 rows dropped per epoch)
    assert sched.shape == (20, 16) and sched.dtype == np.int32
    for e in range(7):
        rows = sched[3 * e:3 * e + 3].ravel()
        assert len(set(rows.tolist())) == len(rows) and rows.min() >= 0 and rows.max() < 50
    assert not np.array_equal(sched[:3], sched[3:6])  # each epoch reshuffles
    np.testing.assert_array_equal(sched, T.batch_schedule(key, 20, 50, 16))
    assert not np.array_equal(sched, T.batch_schedule(T.run_keys(4)[1], 20, 50, 16))


def test_train_config_validation():
    with pytest.raises(ValueError):
        T.TrainConfig(steps=25, log_every=10)
    with pytest.raises(ValueError):
        T.TrainConfig(optimizer="lbfgs")
    assert T.TrainConfig(steps=600, log_every=30, early_fraction=0.1).early_interval == 2
    cfg = T.TrainConfig.from_sweep_config({"steps": 60, "log_every": 10, "dtype": "float64", "lr_min": 1e-4,
                                           "seeds": [0, 1], "target_loss": 0.1})
    assert (cfg.steps, cfg.log_every, cfg.dtype, cfg.batch_size) == (60, 10, "float64", 64)
    assert cfg.running_stats_momentum == 0.1  # absent from the sweep config: the default
    assert T.TrainConfig.from_sweep_config({"running_stats_momentum": 0.25}).running_stats_momentum == 0.25
    with pytest.raises(ValueError, match="running_stats_momentum"):
        T.TrainConfig(running_stats_momentum=0.0)
    assert T.TrainConfig(steps=60, log_every=10, early_fraction=0.01).early_interval == 1
    with pytest.raises(ValueError, match="batch_size"):
        T.Sweep(SPEC, T.TrainConfig(steps=10, batch_size=200, log_every=10), X, Y, X, Y)


def test_refinement_brackets_the_divergence_threshold_of_gradient_descent_on_a_quadratic():
    """Known answer: full-batch GD on mean squared error of a linear model (depth 0, bias included) is a
    quadratic with Hessian H = 2 A^T A / m (A = [X, 1]); it converges for lr < 2 / lambda_max(H) and
    diverges above. train_variant's grid + refinement must put 2 / lambda_max inside each seed's bracket
    (max_stable_lr, max_stable_lr_upper) with a ratio <= 1.15, whatever the seed (the initial weights),
    and the refinement runs appear in runs only, as grid=False rows."""
    rng = np.random.default_rng(1)
    m = 32
    Xq = rng.normal(size=(m, 2)) * np.array([1.0, 3.0])
    yq = Xq @ np.array([0.5, -0.2]) + 0.3 + 0.1 * rng.normal(size=m)
    A = np.hstack([Xq, np.ones((m, 1))])
    lr_star = 2.0 / np.linalg.eigvalsh(2.0 * A.T @ A / m).max()  # 0.1513
    data = {"X_train": Xq, "y_train": yq, "X_test": Xq[:8], "y_test": yq[:8], "task": np.array("regression"),
            "classes": np.array([])}
    sweep_config = {"lr_min": 1e-3, "lr_max": 1.0, "n_lr": 9, "seeds": [3, 0], "steps": 200, "batch_size": m,
                    "log_every": 50, "eval_examples": m, "early_fraction": 0.1, "divergence_factor": 1e3,
                    "target_loss": 0.1, "optimizer": "sgd", "dtype": "float64"}
    variants_config = {"width": 4, "activation": "relu", "eps": 1e-5}
    out = T.train_variant("quad", "raw-none-d0", data, variants_config, sweep_config, progress=lambda msg: None)
    assert M.ModelSpec.from_json(out["model"]).sizes == (2, 1)
    runs = pd.DataFrame(out["runs"])
    grid_lrs = sorted(runs.loc[runs["grid"], "lr"].unique())
    assert len(grid_lrs) == 9 and len(out["sweep"]["lr"]) == 18  # sweep.npz: the grid only
    assert set(out["sweep"]["lr"]) == set(grid_lrs) and len(out["training"]["lr"]) == 18 * 201
    refine = runs[~runs["grid"]]
    assert len(refine) == 2 * 7 and refine["steps_to_target"].isna().all()
    assert ((refine["lr"] > 0.07499) & (refine["lr"] < 0.1778)).all()  # inside the grid step holding lr_star
    # every tested LR is > 5% away from lr_star, so the rule "converged" is decided by the theory
    assert np.min(np.abs(np.log(runs["lr"] / lr_star))) > np.log(1.05)
    conv = S.converged(runs)
    assert (conv == (runs["lr"] < lr_star)).all()
    for s in S.seed_summaries(runs):
        lo, up = s["max_stable_lr"], s["max_stable_lr_upper"]
        assert lo < lr_star < up and up / lo <= 1.15, s
        assert s["stable_lr_found"]
    summary = S.variant_summary(runs)
    assert summary["max_stable_lr"] < lr_star < summary["max_stable_lr_upper"]
    assert summary["max_stable_lr_upper"] / summary["max_stable_lr"] <= 1.15
    assert summary["max_stable_grid_lr"] == 0.07499 and summary["best_lr"] in grid_lrs
    # the checkpoints of both seeds, in the config's order (3, then 0)
    assert out["checkpoints"]["end/layer1.W"].shape == (2, 9, 2, 1)
    assert out["sweep"]["seed"][:2].tolist() == [3, 0]


# ---------------------------------------------------------------------------------------------------------
# batch statistics: running input statistics, test mode vs training mode; weight norms and effective LRs

def np_running_stats(X_, schedule, m):
    """The running input statistics written as the loop: r = (0, 1); r <- (1 - m) r + m (batch mean, biased
    batch variance) for each batch in order."""
    mean, var = np.zeros(X_.shape[1]), np.ones(X_.shape[1])
    for idx in schedule:
        b = X_[idx]
        mean = (1 - m) * mean + m * b.mean(axis=0)
        var = (1 - m) * var + m * b.var(axis=0)
    return mean, var


def test_running_input_stats_is_the_moving_average_of_the_batch_statistics():
    rng_ = np.random.default_rng(5)
    Xr = rng_.normal(size=(30, 3)) * np.array([1000.0, 1.0, 0.01]) + np.array([50.0, -2.0, 3.0])
    cfg = T.TrainConfig(steps=7, batch_size=5, log_every=7)
    schedules = T.seed_batch_schedules([4, 9], cfg, 30)  # (2, 7, 5)
    mean, var = T.running_input_stats(Xr, schedules, 0.3)
    assert mean.shape == var.shape == (2, 3)
    for i in range(2):
        want_mean, want_var = np_running_stats(Xr, schedules[i], 0.3)
        np.testing.assert_allclose(mean[i], want_mean, rtol=1e-12)
        np.testing.assert_allclose(var[i], want_var, rtol=1e-12)
    # one seed's schedule (steps, batch_size) -> (n_features,); a prefix: the statistics after 3 updates
    one = T.running_input_stats(Xr, schedules[1], 0.3)
    np.testing.assert_allclose(one[1], var[1], rtol=1e-12)
    prefix = T.running_input_stats(Xr, schedules[:, :3], 0.3)
    np.testing.assert_allclose(prefix[0][0], np_running_stats(Xr, schedules[0, :3], 0.3)[0], rtol=1e-12)
    np.testing.assert_array_equal(T.running_input_stats(Xr, schedules[:, :0], 0.3)[1], np.ones((2, 3)))  # r0
    # the momentum matters: m = 0.7 (the weights of m = 0.3 swapped) gives other statistics
    assert not np.allclose(T.running_input_stats(Xr, schedules, 0.7)[1], var)


def np_forward(spec, params, X_, input_stats=None, norm_stats=None):
    """A depth <= 1 network written out in numpy: input BN (the given or the batch's statistics), layer 1,
    hidden BN (the given or the batch's statistics) and ReLU, the output layer. Returns (outputs, Z[1])."""
    P = {k: {n: np.asarray(v) for n, v in p.items()} for k, p in params.items()}
    a = X_
    if spec.input_norm == "batchnorm":
        mu, var = (X_.mean(axis=0), X_.var(axis=0)) if input_stats is None else input_stats
        a = (X_ - mu) / np.sqrt(var + spec.eps)
    if spec.depth == 0:
        return a @ P["layer1"]["W"] + P["layer1"]["b"], None
    p = P["layer1"]
    z = a @ p["W"] + p.get("b", 0.0)
    h = z
    if spec.norm == "batchnorm":
        mu, var = (z.mean(axis=0), z.var(axis=0)) if norm_stats is None else norm_stats
        h = (z - mu) / np.sqrt(var + spec.eps) * p["gamma"] + p["beta"]
    return np.maximum(h, 0.0) @ P["layer2"]["W"] + P["layer2"]["b"], z


def np_cross_entropy(out, y):
    logp = out - out.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    return -np.mean(logp[np.arange(len(y)), y])


def random_params(spec, seed):
    """Initial parameters with gamma and beta moved off 1 and 0 (so that a wrong statistic shows)."""
    r = np.random.default_rng(seed)
    params = M.init_params(spec, jax.random.PRNGKey(seed), jnp.float64)
    return {k: {n: jnp.asarray(np.asarray(v) + r.normal(scale=0.5, size=v.shape)) for n, v in p.items()}
            for k, p in params.items()}


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_final_metrics_use_running_input_statistics_in_test_mode_and_chunks_in_training_mode(norm):
    """Known answer on a 2-3-3 network with input BN (and hidden BN): train mode = the mean loss of the
    evaluation set's chunks of batch_size rows (the last partial chunk dropped), each with its own
    statistics; test mode and the test metrics = the running input statistics, and under hidden BN the
    evaluation set's population statistics of Z[1] computed on the inputs normalized by them."""
    spec = M.ModelSpec((2, 3, 3), norm=norm, input_norm="batchnorm")
    params = random_params(spec, 2)
    rng_ = np.random.default_rng(8)
    X_eval = rng_.normal(size=(10, 2)) * np.array([100.0, 0.1]) + np.array([20.0, 1.0])
    y_eval = rng_.integers(0, 3, 10)
    X_test = rng_.normal(size=(6, 2)) * np.array([100.0, 0.1]) + np.array([20.0, 1.0])
    y_test = rng_.integers(0, 3, 6)
    running = (np.array([5.0, 0.9]), np.array([4000.0, 0.02]))  # not the evaluation set's own statistics
    got = T.final_metrics(spec, params, tuple(jnp.asarray(a) for a in running), jnp.asarray(X_eval),
                          jnp.asarray(y_eval), jnp.asarray(X_test), jnp.asarray(y_test), batch_size=4)

    chunks = [np_cross_entropy(np_forward(spec, params, X_eval[i:i + 4])[0], y_eval[i:i + 4]) for i in (0, 4)]
    z_eval = np_forward(spec, params, X_eval, running)[1]
    pop = (z_eval.mean(axis=0), z_eval.var(axis=0)) if norm == "batchnorm" else None
    out_eval = np_forward(spec, params, X_eval, running, pop)[0]
    out_test = np_forward(spec, params, X_test, running, pop)[0]
    np.testing.assert_allclose(float(got["train_mode_loss"]), np.mean(chunks), rtol=1e-12)
    np.testing.assert_allclose(float(got["test_mode_loss"]), np_cross_entropy(out_eval, y_eval), rtol=1e-12)
    np.testing.assert_allclose(float(got["test_loss"]), np_cross_entropy(out_test, y_test), rtol=1e-12)
    assert float(got["test_accuracy"]) == pytest.approx(np.mean(out_test.argmax(axis=1) == y_test), abs=1e-7)
    # fewer rows than batch_size: one chunk of all of them (the whole set with its own statistics)
    small = T.final_metrics(spec, params, tuple(jnp.asarray(a) for a in running), jnp.asarray(X_eval),
                            jnp.asarray(y_eval), jnp.asarray(X_test), jnp.asarray(y_test), batch_size=64)
    np.testing.assert_allclose(float(small["train_mode_loss"]),
                               np_cross_entropy(np_forward(spec, params, X_eval)[0], y_eval), rtol=1e-12)


def test_has_batch_statistics():
    assert not T.has_batch_statistics(M.ModelSpec((2, 3, 2)))
    assert not T.has_batch_statistics(M.ModelSpec((2, 3, 2), norm="layernorm"))
    assert T.has_batch_statistics(M.ModelSpec((2, 3, 2), norm="batchnorm"))
    assert T.has_batch_statistics(M.ModelSpec((2, 2), input_norm="batchnorm"))


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_an_input_bn_sweep_tests_with_its_seeds_running_statistics(norm):
    """train_runs: each run's test metrics and test-mode loss use the running input statistics of its own
    seed's batches over all its steps at ``cfg.running_stats_momentum``; a diverged run's are NaN; the
    weight log is the RMS unit norm of a BN hidden layer (||W||_F otherwise) and lr / that^2 (NaN without
    an invariant group). Without hidden BN the running mean shows too (hidden BN's population statistics
    absorb a shift of the inputs)."""
    spec = M.ModelSpec((4, 3, 3), norm=norm, input_norm="batchnorm")
    cfg = T.TrainConfig(steps=6, batch_size=16, log_every=3, dtype="float64", running_stats_momentum=0.3)
    Xs = X * np.array([100.0, 1.0, 0.01, 1.0]) + 7.0
    data = {"X_train": Xs, "y_train": Y, "X_test": X_TEST * np.array([100.0, 1.0, 0.01, 1.0]) + 7.0, "y_test": Y_TEST}
    out = T.train_sweep(spec, cfg, data, [0.5, 1e9], [3, 1], EVAL, progress=lambda msg: None)
    X_eval, y_eval = Xs[:EVAL], Y[:EVAL]
    for r in range(4):
        lr, seed = float(out["lr"][r]), int(out["seed"][r])
        if out["diverged"][r]:
            assert np.isnan([out[k][r] for k in ("test_loss", "train_mode_loss", "test_mode_loss")]).all()
            continue
        params = run_params(out, "end", r)
        running = np_running_stats(Xs, T.batch_schedule(T.run_keys(seed)[1], cfg.steps, N, cfg.batch_size), 0.3)
        z_eval = np_forward(spec, params, X_eval, running)[1]
        pop = (z_eval.mean(axis=0), z_eval.var(axis=0)) if norm == "batchnorm" else None
        test_out = np_forward(spec, params, data["X_test"], running, pop)[0]
        np.testing.assert_allclose(out["test_loss"][r], np_cross_entropy(test_out, Y_TEST), rtol=1e-9)
        eval_out = np_forward(spec, params, X_eval, running, pop)[0]
        np.testing.assert_allclose(out["test_mode_loss"][r], np_cross_entropy(eval_out, y_eval), rtol=1e-9)
        chunks = [np_cross_entropy(np_forward(spec, params, X_eval[i:i + 16])[0], y_eval[i:i + 16])
                  for i in range(0, EVAL, 16)]
        np.testing.assert_allclose(out["train_mode_loss"][r], np.mean(chunks), rtol=1e-9)
        W = [np.asarray(params[f"layer{l}"]["W"]) for l in (1, 2)]
        unit_rms = np.sqrt(np.mean(np.sum(W[0] ** 2, axis=0)))
        want = [unit_rms if norm == "batchnorm" else np.linalg.norm(W[0]), np.linalg.norm(W[1])]
        np.testing.assert_allclose(out["weight_norm"][r, -1], want, rtol=1e-9)
        if norm == "batchnorm":
            np.testing.assert_allclose(out["effective_lr"][r, -1, 0], lr / want[0] ** 2, rtol=1e-9)
        else:
            assert np.isnan(out["effective_lr"][r, :, 0]).all()
        assert np.isnan(out["effective_lr"][r, :, 1]).all()  # the output layer has no invariant group
    assert out["diverged"].tolist() == [False, False, True, True]
    runs = pd.DataFrame(tables.runs_table({k: "x" for k in tables.ID_COLUMNS}, out))
    np.testing.assert_array_equal(runs["test_mode_loss"], out["test_mode_loss"])
    np.testing.assert_array_equal(runs["train_mode_loss"], out["train_mode_loss"])


def test_weight_log_of_batch_norm_layer_norm_and_no_norm_models():
    """weight_norm per layer: the RMS over a BN layer's units of ||W[:, j]||, sqrt(||W||^2 + ||b||^2) for an LN
    layer (one group), ||W||_F otherwise; effective_lr = lr / weight_norm^2 where there are groups, else NaN."""
    lr = 0.3
    for norm in ("batchnorm", "layernorm", "none"):
        spec = M.ModelSpec((3, 4, 5, 2), norm=norm)
        params = random_params(spec, 4)
        P = {k: {n: np.asarray(v) for n, v in p.items()} for k, p in params.items()}
        norm_w, eff = (np.asarray(a) for a in T.weight_log(spec, params, lr))
        if norm == "batchnorm":
            want = [np.sqrt(np.mean(np.sum(P[f"layer{l}"]["W"] ** 2, axis=0))) for l in (1, 2)]
        elif norm == "layernorm":
            want = [np.sqrt(np.sum(P[f"layer{l}"]["W"] ** 2) + np.sum(P[f"layer{l}"]["b"] ** 2)) for l in (1, 2)]
        else:
            want = [np.linalg.norm(P[f"layer{l}"]["W"]) for l in (1, 2)]
        want.append(np.linalg.norm(P["layer3"]["W"]))
        np.testing.assert_allclose(norm_w, want, rtol=1e-12, err_msg=norm)
        if norm == "none":
            assert np.isnan(eff).all()
        else:
            np.testing.assert_allclose(eff[:2], lr / np.square(want[:2]), rtol=1e-12, err_msg=norm)
            assert np.isnan(eff[2])
