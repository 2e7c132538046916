"""Tests of normlab.train: divergence is detected at the right step and frozen, runs are ordered
lr-major / seed-minor, and a vmapped sweep computes exactly what each run computes alone.

The reference is a plain Python loop of SGD steps (params - lr * grad) written here, one step at a time,
with the divergence rule of the module docstring. Training runs in float64 so that the vmapped sweep,
the single-run sweep and the reference loop agree to ~1e-10. Compilation dominates the cost, so the
module trains only two sweeps (one fixture each) and the reference loop reuses one jitted gradient.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from normlab import model as M
from normlab import tables
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
    after every step (index = number of updates), the eval gradient norms at step 0, the final
    parameters and the divergence step (-1 if none)."""
    X_eval, y_eval = jnp.asarray(X[:EVAL]), jnp.asarray(Y[:EVAL])
    init_loss, init_grads = _value_and_grad(params, X_eval, y_eval)
    grad0 = [float(np.linalg.norm(np.asarray(init_grads[f"layer{l}"]["W"]))) for l in (1, 2)]
    sched = T.batch_schedule(T.run_keys(seed)[1], CFG.steps, N, CFG.batch_size)
    eval_losses, div = [float(init_loss)], -1
    for t in range(CFG.steps):
        if div < 0:
            idx = sched[t]
            batch_loss, grads = _value_and_grad(params, jnp.asarray(X[idx]), jnp.asarray(Y[idx]))
            grads_ok = all(np.isfinite(np.asarray(g)).all() for g in jax.tree.leaves(grads))
            if not np.isfinite(float(batch_loss)) or float(batch_loss) > 1e3 * float(init_loss) or not grads_ok:
                div = t
            else:
                params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
        eval_losses.append(float(_value_and_grad(params, X_eval, y_eval)[0]))
    return np.array(eval_losses), grad0, params, div


def test_runs_are_ordered_lr_major_seed_minor_and_paired(sweep):
    np.testing.assert_array_equal(sweep["lr"], np.repeat(LRS, 2))
    np.testing.assert_array_equal(sweep["seed"], np.tile(SEEDS, 4))
    np.testing.assert_array_equal(sweep["step"], np.arange(21))
    assert sweep["train_loss"].shape == (8, 21) and sweep["grad_norm"].shape == (8, 21, 2)
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
        eval_losses, grad0, end_params, div = reference_run(run_params(sweep, "init", r), lr, seed)
        assert int(sweep["diverged_step"][r]) == div, (lr, seed)
        assert bool(sweep["diverged"][r]) == (div >= 0)
        np.testing.assert_allclose(sweep["train_loss"][r], eval_losses, rtol=1e-9)
        np.testing.assert_allclose(sweep["grad_norm"][r, 0], grad0, rtol=1e-9)
        w0 = [np.linalg.norm(run_params(sweep, "init", r)[f"layer{l}"]["W"]) for l in (1, 2)]
        np.testing.assert_allclose(sweep["relative_grad_norm"][r, 0], np.array(grad0) / w0, rtol=1e-9)
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


def test_vmapped_run_equals_the_run_trained_alone(sweep):
    r = LRS.index(8.0) * len(SEEDS) + SEEDS.index(1)  # lr-major, seed-minor
    alone = T.train_sweep(SPEC, CFG, DATA, [8.0], [1], EVAL, TARGET, progress=lambda msg: None)
    assert alone["lr"].tolist() == [8.0] and alone["seed"].tolist() == [1]
    for key in ("train_loss", "grad_norm", "relative_grad_norm", "final_train_loss"):
        np.testing.assert_allclose(alone[key][0], sweep[key][r], rtol=1e-5, atol=1e-8, err_msg=key)
    assert alone["diverged"][0] == sweep["diverged"][r] and alone["diverged_step"][0] == sweep["diverged_step"][r]
    for tag in ("init", "early", "end"):
        a, b = run_params(alone, tag, 0), run_params(sweep, tag, r)
        for k in a:
            for n in a[k]:
                np.testing.assert_allclose(a[k][n], b[k][n], rtol=1e-5, atol=1e-8)
    # and it is not equal to its neighbours (other seed / other LR): the pairing test has power
    assert not np.allclose(sweep["train_loss"][r - 1], alone["train_loss"][0])
    assert not np.allclose(sweep["train_loss"][r - 2], alone["train_loss"][0])


def test_tables_from_a_sweep(sweep):
    ids = {"dataset": "toy", "variant": "raw-none-d1", "input": "raw", "norm": "none", "depth": 1}
    runs = pd.DataFrame(tables.runs_table(ids, sweep))
    assert list(runs.columns[:5]) == tables.ID_COLUMNS
    assert len(runs) == 8
    div = sweep["diverged"]
    assert runs["diverged_step"].isna().tolist() == (~div).tolist()
    np.testing.assert_array_equal(runs["diverged_step"][div], sweep["diverged_step"][div])
    training = pd.DataFrame(tables.training_table(ids, sweep))
    assert len(training) == 8 * 21
    for r in range(8):
        rows = training.iloc[r * 21:(r + 1) * 21]
        assert (rows["lr"] == sweep["lr"][r]).all() and (rows["seed"] == sweep["seed"][r]).all()
        np.testing.assert_array_equal(rows["train_loss"], sweep["train_loss"][r])
        d = int(sweep["diverged_step"][r])
        expected = rows["step"] > d if d >= 0 else pd.Series(False, index=rows.index)
        assert rows["frozen"].tolist() == expected.tolist(), (r, d)
    grads = pd.DataFrame(tables.gradients_table(ids, sweep, {"common": 0, "best": 2}))
    assert len(grads) == 2 * 2 * 21 * 2  # runs x metrics x steps x layers
    g = grads[(grads["run"] == "best") & (grads["metric"] == "grad_norm") & (grads["layer"] == 2)]
    np.testing.assert_array_equal(g["value"], sweep["grad_norm"][2, :, 1])


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
    assert T.TrainConfig(steps=60, log_every=10, early_fraction=0.01).early_interval == 1
    with pytest.raises(ValueError, match="batch_size"):
        T.Sweep(SPEC, T.TrainConfig(steps=10, batch_size=200, log_every=10), X, Y, X, Y)
