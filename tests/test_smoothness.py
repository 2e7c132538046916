"""Known-answer tests of normlab.smoothness (loss and gradient change along the gradient), float64 unless
stated.

Reference values are closed forms computed with numpy: a linear model with MSE loss is a quadratic, J(theta)
= J0 - t ||g||^2 + t^2 / 2 <g, A g> along theta - t g, with Hessian A = 2 Xa^T Xa / (m n_out) (Xa = [X, 1]),
so beta = ||A g|| / ||g|| for every step. Compilation dominates the run time, so each test's stack of
checkpoints is measured in one call (one compiled program per model shape), shared through functools.cache.
"""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model as M
from normlab import smoothness as S

MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)
LINEAR = M.ModelSpec((3, 2), loss="mse")


# ---------------------------------------------------------------- a linear model: the quadratic case

@functools.cache
def _linear_problem():
    """Raw inputs on scales 1 : 30 : 1000 (integers, so the targets of the exact solution are exact), targets
    of an integer solution (W*, b*), and four checkpoints: two generic ones, the solution itself (g = 0
    exactly) and a generic one with a learning rate that overflows the loss (lr 1e200)."""
    rng = np.random.default_rng(0)
    X = np.round(rng.normal(size=(16, 3)) * np.array([1.0, 30.0, 1000.0]))
    W_star, b_star = rng.integers(-3, 4, (3, 2)).astype(float), rng.integers(-3, 4, 2).astype(float)
    Y = X @ W_star + b_star
    thetas = [np.vstack([W_star, b_star]) + rng.normal(size=(4, 2)) for _ in range(2)]
    thetas += [np.vstack([W_star, b_star]), np.vstack([W_star, b_star]) + rng.normal(size=(4, 2))]
    lrs = np.array([1e-7, 3e-7, 1e-7, 1e200])  # the Hessian's largest eigenvalue is ~1e6 (inputs ~1000)
    params = [{"layer1": {"W": t[:3], "b": t[3]}} for t in thetas]
    result = S.measure(LINEAR, S.stack(params), X, Y, lrs, np.array(MULTIPLIERS))
    return X, Y, thetas, lrs, jax.tree.map(np.asarray, result)


def _closed_form(X, Y, theta, lr, c):
    """(J0, ||g||, J(theta - c lr g), c lr ||g||, c lr ||A g||, ||A g|| / ||g||) of the linear MSE model."""
    Xa = np.hstack([X, np.ones((X.shape[0], 1))])
    mn = Y.size
    r = Xa @ theta - Y
    J0 = np.sum(r * r) / mn
    g = 2 / mn * Xa.T @ r
    Ag = 2 / mn * Xa.T @ (Xa @ g)
    t = c * lr
    gn, Agn = np.linalg.norm(g), np.linalg.norm(Ag)
    return J0, gn, J0 - t * gn**2 + t**2 / 2 * np.sum(g * Ag), t * gn, t * Agn, Agn / gn


def test_quadratic_beta_and_loss_equal_the_closed_form():
    X, Y, thetas, lrs, r = _linear_problem()
    for i in (0, 1):
        for k, c in enumerate(MULTIPLIERS):
            J0, gn, J, step, change, beta = _closed_form(X, Y, thetas[i], lrs[i], c)
            np.testing.assert_allclose(r.loss0[i], J0, rtol=1e-12)
            np.testing.assert_allclose(r.grad_norm[i], gn, rtol=1e-12)
            np.testing.assert_allclose(r.loss[i, k], J, rtol=1e-9)
            np.testing.assert_allclose(r.step_norm[i, k], step, rtol=1e-12)
            np.testing.assert_allclose(r.grad_change[i, k], change, rtol=1e-9)
            np.testing.assert_allclose(r.beta[i, k], beta, rtol=1e-9)
    assert r.beta_invariant is None
    assert np.all(r.loss[:2] < r.loss0[:2, None])  # c lr lambda_max < 2: every step lowers the loss


def test_overflowing_step_is_recorded_and_counted_not_raised():
    X, Y, thetas, lrs, r = _linear_problem()
    assert np.all(np.isposinf(r.loss[3]))  # (X lr g)^2 ~ 1e418: the loss overflows at every step size
    # the gradient change ~1e212 is finite: its norm must not square-overflow; beta is the quadratic's
    np.testing.assert_allclose(r.beta[3], _closed_form(X, Y, thetas[3], 1.0, 1.0)[5], rtol=1e-9)
    rows = S.rows_from_result(S.Smoothness(*r), MULTIPLIERS)
    steps = {(row["index"], row["metric"], row["step_size"]): row["value"] for row in rows}
    assert all(np.isposinf(steps[(3, "loss", c)]) for c in MULTIPLIERS)
    agg = {(row["index"], row["metric"]): row["value"] for row in rows if math.isnan(row["step_size"])}
    assert [agg[(i, "nonfinite_steps")] for i in range(4)] == [0.0, 0.0, 0.0, 4.0]
    assert agg[(3, "loss_range")] == 0.0  # only J(theta) is finite


def test_overflow_in_float32_on_raw_inputs():
    X, Y, thetas, _, _ = _linear_problem()
    params = {"layer1": {"W": thetas[0][None, :3].astype(np.float32), "b": thetas[0][None, 3].astype(np.float32)}}
    r = S.measure(LINEAR, params, X, Y, np.array([1e30]), np.array(MULTIPLIERS))
    assert r.loss.dtype == r.beta.dtype == jnp.float32  # the params' dtype, though X and lr are float64
    rows = S.rows_from_result(r, MULTIPLIERS)
    assert not any(math.isfinite(row["value"]) for row in rows if row["metric"] == "loss")
    assert [row["value"] for row in rows if row["metric"] == "nonfinite_steps"] == [4.0]


def test_zero_gradient_gives_nan_beta():
    _, _, _, _, r = _linear_problem()
    assert r.grad_norm[2] == 0.0 and np.all(r.step_norm[2] == 0.0) and np.all(r.grad_change[2] == 0.0)
    assert np.all(np.isnan(r.beta[2])) and np.all(r.loss[2] == 0.0)
    rows = S.rows_from_result(S.Smoothness(*r), MULTIPLIERS)
    agg = {row["metric"]: row["value"] for row in rows if row["index"] == 2 and math.isnan(row["step_size"])}
    assert agg["loss_range"] == 0.0 and math.isnan(agg["beta_max"]) and agg["nonfinite_steps"] == 0.0


# ---------------------------------------------------------------- scale invariance

@dataclasses.dataclass(frozen=True)
class _SphereLoss:
    """J(u) = 1/2 v^T A v with v = u / ||u|| (A = X): one scale-invariant group, all of u."""

    def __call__(self, params, X, y):
        v = params["u"] / jnp.sqrt(jnp.sum(jnp.square(params["u"])))
        return 0.5 * v @ X @ v


def test_beta_invariant_is_r2_beta_and_invariant_under_rescaling():
    rng = np.random.default_rng(1)
    Q = rng.normal(size=(4, 4))
    A = Q @ Q.T + np.diag([1.0, 2.0, 5.0, 9.0])
    u = rng.normal(size=4)
    a, lr = 7.0, 0.3
    us = np.stack([u, a * u])
    r_norms = np.linalg.norm(us, axis=1)
    scales = {"u": np.repeat(r_norms[:, None], 4, axis=1)}  # S = r on every entry of the group
    r = S.along_gradient(_SphereLoss(), {"u": us}, A, np.zeros(4), np.array([lr, a**2 * lr]), np.array(MULTIPLIERS),
                         scales)
    r = jax.tree.map(np.asarray, r)
    np.testing.assert_allclose(r.beta_invariant, r_norms[:, None] ** 2 * r.beta, rtol=1e-12)
    # u -> a u with lr -> a^2 lr is the same walk on the sphere: loss and beta_invariant unchanged
    np.testing.assert_allclose(r.loss[1], r.loss[0], rtol=1e-12)
    np.testing.assert_allclose(r.beta_invariant[1], r.beta_invariant[0], rtol=1e-10)
    np.testing.assert_allclose(r.beta[1], r.beta[0] / a**2, rtol=1e-10)
    assert np.all(r.beta[0] > 0)


# ---------------------------------------------------------------- a BN model: vmapped call vs a loop

def _bn_problem():
    spec = M.ModelSpec((3, 5, 3), activation="tanh", norm="batchnorm")
    rng = np.random.default_rng(2)
    X = rng.normal(size=(24, 3)) * np.array([1.0, 5.0, 0.2])
    y = rng.integers(0, 3, 24)
    params_list = []
    for _ in range(3):
        p = {}
        for l in range(1, spec.n_layers + 1):
            n_in, n_out = spec.sizes[l - 1], spec.sizes[l]
            p[f"layer{l}"] = {"W": rng.normal(size=(n_in, n_out)) * rng.uniform(0.5, 3.0)}
            if M.has_bias(spec, l):
                p[f"layer{l}"]["b"] = 0.3 * rng.normal(size=n_out)
            if M.has_affine_norm(spec, l):
                p[f"layer{l}"]["gamma"] = 1 + 0.3 * rng.normal(size=n_out)
                p[f"layer{l}"]["beta"] = 0.3 * rng.normal(size=n_out)
        params_list.append(p)
    return spec, X, y, params_list


def _scale_tree(spec, params):
    """S of a BN model by the contract's definition: ||W[l][:, j]|| down column j of each hidden W, 1 elsewhere."""
    s = jax.tree.map(np.ones_like, params)
    for l in range(1, spec.n_layers):
        W = params[f"layer{l}"]["W"]
        s[f"layer{l}"]["W"] = np.broadcast_to(np.linalg.norm(W, axis=0), W.shape).copy()
    return s


def test_vmapped_rows_equal_a_loop_over_checkpoints_and_steps():
    spec, X, y, params_list = _bn_problem()
    lrs = [0.05, 0.5, 2.0]
    scales = [_scale_tree(spec, p) for p in params_list]
    rows = S.smoothness_rows(spec, params_list, X, y, lrs, MULTIPLIERS, scales)
    value_and_grad = jax.jit(jax.value_and_grad(lambda p: M.loss(spec, p, X, y)))
    flat = lambda tree: np.concatenate([np.ravel(a) for a in jax.tree.leaves(tree)])  # noqa: E731
    assert len(rows) == len(params_list)
    for i, (p, lr, s) in enumerate(zip(params_list, lrs, scales, strict=True)):
        J0, g = value_and_grad(p)
        expected = {}
        for c in MULTIPLIERS:
            p2 = jax.tree.map(lambda a, b, c=c, lr=lr: a - c * lr * b, p, g)
            J1, g1 = value_and_grad(p2)
            dg, dth = flat(g1) - flat(g), flat(p2) - flat(p)
            expected.update({("loss", c): float(J1), ("grad_change", c): np.linalg.norm(dg),
                             ("beta", c): np.linalg.norm(dg) / np.linalg.norm(dth),
                             ("beta_invariant", c): np.linalg.norm(flat(s) * dg) / np.linalg.norm(dth / flat(s))})
        got = {(r["metric"], r["step_size"]): r["value"] for r in rows[i] if math.isfinite(r["step_size"])}
        assert got.keys() == expected.keys()
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value, rtol=1e-9, err_msg=f"checkpoint {i}, {key}")
        agg = {r["metric"]: r["value"] for r in rows[i] if math.isnan(r["step_size"])}
        losses = [float(J0)] + [expected["loss", c] for c in MULTIPLIERS]
        np.testing.assert_allclose(agg["loss_range"], max(losses) - min(losses), rtol=1e-9)
        np.testing.assert_allclose(agg["beta_max"], max(expected["beta", c] for c in MULTIPLIERS), rtol=1e-9)
        np.testing.assert_allclose(agg["beta_invariant_max"], max(expected["beta_invariant", c] for c in MULTIPLIERS),
                                   rtol=1e-9)


# ---------------------------------------------------------------- the rows

def test_rows_metric_names_aggregates_and_nonfinite_handling():
    nan, inf = float("nan"), float("inf")
    result = S.Smoothness(
        loss0=np.array([1.0, 2.0]), grad_norm=np.array([1.0, 1.0]),
        loss=np.array([[0.5, 0.2, 3.0], [nan, 2.5, 1.5]]),
        grad_change=np.array([[1.0, 2.0, inf], [1.0, 1.0, 1.0]]),
        step_norm=np.ones((2, 3)),
        beta=np.array([[1.0, 2.0, inf], [nan, 5.0, 4.0]]),
        beta_invariant=np.array([[7.0, nan, 6.0], [nan, nan, nan]]))
    rows = S.rows_from_result(result, [0.5, 1, 2])
    per_step = ["loss", "grad_change", "beta", "beta_invariant"]
    aggregates = ["loss_range", "beta_max", "beta_invariant_max", "nonfinite_steps"]
    assert [r["metric"] for r in rows if r["index"] == 0] == per_step * 3 + aggregates
    assert [r["step_size"] for r in rows if r["index"] == 0][:12] == [0.5] * 4 + [1.0] * 4 + [2.0] * 4
    assert all(math.isnan(r["step_size"]) for r in rows if r["metric"] in aggregates)
    assert set(S.METRICS) == set(per_step + aggregates)
    agg = {(r["index"], r["metric"]): r["value"] for r in rows if r["metric"] in aggregates}
    assert agg[(0, "loss_range")] == 3.0 - 0.2 and agg[(1, "loss_range")] == 2.5 - 1.5  # J(theta) counts: 2 in 1.5..2.5
    assert agg[(0, "beta_max")] == 2.0 and agg[(1, "beta_max")] == 5.0  # finite values only
    assert agg[(0, "beta_invariant_max")] == 7.0 and math.isnan(agg[(1, "beta_invariant_max")])
    # a step counts when its loss (checkpoint 1, step 0.5) or its gradient change (checkpoint 0, step 2) is not finite
    assert agg[(0, "nonfinite_steps")] == 1.0 and agg[(1, "nonfinite_steps")] == 1.0
    values = {(r["index"], r["metric"], r["step_size"]): r["value"] for r in rows}
    assert math.isnan(values[(1, "loss", 0.5)]) and values[(0, "grad_change", 2.0)] == inf  # recorded as they are
    # without a scale tree: no invariant rows
    plain = S.rows_from_result(result._replace(beta_invariant=None), [0.5, 1, 2])
    assert [r["metric"] for r in plain if r["index"] == 1] == ["loss", "grad_change", "beta"] * 3 + [
        "loss_range", "beta_max", "nonfinite_steps"]


def test_smoothness_rows_edge_cases():
    assert S.smoothness_rows(LINEAR, [], np.zeros((2, 3)), np.zeros((2, 2)), [], MULTIPLIERS) == []
    p = {"layer1": {"W": np.zeros((3, 2)), "b": np.zeros(2)}}
    try:
        S.smoothness_rows(LINEAR, [p, p], np.zeros((2, 3)), np.zeros((2, 2)), [0.1], MULTIPLIERS)
    except ValueError as exc:
        assert "2 checkpoints but 1 learning rates" in str(exc)
    else:
        raise AssertionError("a learning rate per checkpoint is required")
