"""Known-answer tests of normlab.curvature (float64 unless stated).

Compilation dominates the run time on CPU, so the tests share models and use batch_size=1 (one
compiled product per model and matrix, one compiled Lanczos step per parameter count).
"""

import ast
import contextlib
import dataclasses
import functools
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from normlab import curvature as C
from normlab import model as M
from normlab.curvature import estimators, krylov

B1 = {"batch_size": 1}


def _perturbed_params(spec, seed, dtype=np.float64, bias_scale=0.3):
    """Parameters with every leaf generic (biases of standard deviation ``bias_scale``, gammas and betas not
    1 / 0), drawn with numpy (no compilation of random kernels)."""
    rng = np.random.default_rng(seed)
    params = {}
    for l in range(1, spec.n_layers + 1):
        n_in, n_out = spec.sizes[l - 1], spec.sizes[l]
        p = {"W": rng.normal(size=(n_in, n_out)) * np.sqrt(2.0 / n_in)}
        if M.has_bias(spec, l):
            p["b"] = bias_scale * rng.normal(size=n_out)
        if M.has_affine_norm(spec, l):
            p["gamma"] = 1.0 + 0.3 * rng.normal(size=n_out)
            p["beta"] = 0.3 * rng.normal(size=n_out)
        params[f"layer{l}"] = {k: jnp.asarray(v, dtype) for k, v in p.items()}
    return params


def _problem(norm):
    # both have N = 83 parameters, so they share the compiled Lanczos steps (and the quadratic tests too)
    sizes = (4, 6, 4, 3) if norm == "batchnorm" else (4, 6, 5, 3)
    spec = M.ModelSpec(sizes, activation="tanh", norm=norm, eps=1e-12)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(48, 4)) * np.array([1.0, 3.0, 0.5, 2.0]))
    y = jnp.asarray(rng.integers(0, 3, 48))
    return spec, _perturbed_params(spec, 3), X, y


@functools.cache
def _flat_grad(spec):
    """Jitted gradient of the loss in flat coordinates, x (N,) -> (N,), one per model."""
    _, _, X, y = _problem(spec.norm)
    unravel = ravel_pytree(_perturbed_params(spec, 3))[1]
    return jax.jit(lambda x: ravel_pytree(jax.grad(lambda p: M.loss(spec, p, X, y))(unravel(x)))[0])


@functools.cache
def _mlp(norm):
    """A depth-2 tanh MLP with its exact dense Hessian and Gauss-Newton matrix (from products)."""
    spec, params, X, y = _problem(norm)
    ops = {m: C.model_operator(spec, params, X, y, m) for m in C.MATRICES}
    dense = {m: C.dense_matrix(op, **B1) for m, op in ops.items()}
    return {"spec": spec, "params": params, "X": X, "y": y, "ops": ops, "dense": dense}


@pytest.fixture(scope="module", params=["none", "batchnorm"])
def mlp(request):
    """Both MLPs, for the core checks."""
    return _mlp(request.param)


@pytest.fixture(scope="module")
def bn_mlp():
    """The batchnorm MLP only, for the estimators (each check once, to keep compilation short)."""
    return _mlp("batchnorm")


def test_lanczos_quadratic_chosen_spectrum():
    n = 83  # the parameter count of the MLPs, so the compiled Lanczos step is shared
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.concatenate([[10.0, 9.0, 8.0, 7.5, 7.0], rng.uniform(-2.0, 5.0, n - 5)])
    A = jnp.asarray((U * lam) @ U.T)
    res = C.top_eigenpairs(lambda v: A @ v, 5, jax.random.PRNGKey(0), num_steps=60, n=n)
    np.testing.assert_allclose(np.asarray(res.values), lam[:5], rtol=0, atol=1e-8)
    overlaps = np.abs(np.sum(np.asarray(res.vectors) * U[:, :5].T, axis=1))
    np.testing.assert_allclose(overlaps, 1.0, atol=1e-8)
    assert np.all(np.asarray(res.residuals) < 1e-8)
    # deterministic given the key
    again = C.top_eigenpairs(lambda v: A @ v, 5, jax.random.PRNGKey(0), num_steps=60, n=n)
    np.testing.assert_array_equal(np.asarray(res.values), np.asarray(again.values))


def test_lanczos_batched_and_breakdown():
    """Rank-3 matrix: the Krylov space is exhausted after 4 steps; the restart keeps Q orthonormal and
    T's spectrum is the exact one plus zeros. Two start vectors run side by side match single runs."""
    n = 83
    rng = np.random.default_rng(2)
    U, _ = np.linalg.qr(rng.normal(size=(n, 3)))
    A = jnp.asarray((U * np.array([3.0, 2.0, 1.0])) @ U.T)
    V0 = jnp.asarray(rng.normal(size=(2, n)))
    both = C.lanczos(lambda v: A @ v, V0, 60)
    one = C.lanczos(lambda v: A @ v, V0[1], 60)
    np.testing.assert_allclose(np.asarray(both.alpha[1]), np.asarray(one.alpha), atol=1e-12)
    Q = np.asarray(both.Q[0, :60])
    np.testing.assert_allclose(Q @ Q.T, np.eye(60), atol=1e-10)
    assert abs(float(both.beta[0, 3])) == 0.0  # v0, A v0, A^2 v0, A^3 v0 span the Krylov space
    theta = np.sort(np.asarray(C.tridiag_eigh(both.alpha[0], both.beta[0])[0]))
    np.testing.assert_allclose(theta[-3:], [1.0, 2.0, 3.0], atol=1e-10)
    np.testing.assert_allclose(theta[:-3], 0.0, atol=1e-10)
    # after the breakdown T decouples: restarts (beta = 0) happen, and the top of T is unaffected
    assert int(np.sum(np.asarray(both.beta[0]) == 0)) >= 1


def test_linear_regression_hessian_is_2xtx_over_m():
    spec = M.ModelSpec((5, 1), norm="none", loss="mse")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + 2.0
    y = rng.normal(size=40)
    params = _perturbed_params(spec, 5)
    Xt = np.hstack([X, np.ones((40, 1))])  # flat order: layer1.W (5, 1) then layer1.b
    expected = 2 * Xt.T @ Xt / 40
    for matrix in C.MATRICES:  # for a linear model with MSE the Gauss-Newton matrix is the Hessian
        op = C.model_operator(spec, params, jnp.asarray(X), jnp.asarray(y), matrix)
        H = C.dense_matrix(op, **B1)
        np.testing.assert_allclose(H, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())
    # basis vectors 4 at a time (the last batch padded): the same matrix
    np.testing.assert_allclose(C.dense_matrix(op, batch_size=4), H, rtol=0, atol=1e-13 * np.abs(H).max())


def test_logistic_regression_hessian_closed_form():
    """Two-class softmax on z = x W + b. Per example the Hessian in the logits is p0 p1 u u^T with
    u = [1, -1], so over theta = (W, b) it is (1/m) sum_i p_i (1 - p_i) (x~_i x~_i^T) (x) (u u^T),
    x~ = [x; 1] and (x) the Kronecker product (flat order: feature-major, class-minor, as W (d, 2)
    then b (2,)). The sigmoid model p = sigmoid(x~ . (w1 - w0)) has the familiar X~^T diag(p(1-p)) X~ / m."""
    spec = M.ModelSpec((4, 2), norm="none", loss="softmax_cross_entropy")
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 4)) * np.array([1.0, 2.0, 0.5, 1.5])
    y = rng.integers(0, 2, 60)
    params = _perturbed_params(spec, 7)
    op = C.hessian_operator(C.SpecLoss(spec), params, args=(jnp.asarray(X), jnp.asarray(y)))
    H = C.dense_matrix(op, **B1)
    Xt = np.hstack([X, np.ones((60, 1))])
    W = np.vstack([np.asarray(params["layer1"]["W"]), np.asarray(params["layer1"]["b"])[None]])
    p = 1.0 / (1.0 + np.exp(-(Xt @ (W[:, 1] - W[:, 0]))))
    S = Xt.T @ (Xt * (p * (1 - p))[:, None]) / 60
    expected = np.kron(S, np.array([[1.0, -1.0], [-1.0, 1.0]]))
    np.testing.assert_allclose(H, expected, rtol=1e-11, atol=1e-13)


def test_mlp_lanczos_top5_matches_dense(mlp):
    for matrix, op in mlp["ops"].items():
        exact = np.linalg.eigvalsh(mlp["dense"][matrix])[::-1][:5]
        res = C.top_eigenpairs(op, 5, jax.random.PRNGKey(11), num_steps=60)
        np.testing.assert_allclose(np.asarray(res.values), exact, rtol=1e-6)
        # the eigenvectors are eigenvectors of the dense matrix
        V = np.asarray(res.vectors)
        np.testing.assert_allclose(V @ mlp["dense"][matrix], exact[:, None] * V, atol=1e-6 * exact[0])


def test_ggn_is_psd_and_hessian_symmetric(mlp):
    G = mlp["dense"]["ggn"]
    ev = np.linalg.eigvalsh(G)
    assert ev.min() >= -1e-10 * ev.max()
    H = mlp["dense"]["hessian"]
    assert np.linalg.eigvalsh(H).min() < 0  # a generic point: the Hessian is indefinite
    # products are symmetric before the (A + A^T) / 2 in dense_matrix: check u.Hv = v.Hu directly
    rng = np.random.default_rng(5)
    u, v = rng.normal(size=(2, mlp["ops"]["hessian"].n))
    op = mlp["ops"]["hessian"]
    assert abs(u @ np.asarray(op(v)) - v @ np.asarray(op(u))) < 1e-12 * np.abs(H).max() * op.n


def test_hvp_matches_finite_differences(mlp):
    spec, params, X, y = mlp["spec"], mlp["params"], mlp["X"], mlp["y"]
    flat, unravel = ravel_pytree(params)
    grad = _flat_grad(spec)
    v = jnp.asarray(np.random.default_rng(9).normal(size=flat.shape))
    h = 1e-4
    fd = (grad(flat + h * v) - grad(flat - h * v)) / (2 * h)
    hv = np.asarray(mlp["ops"]["hessian"](v))
    np.testing.assert_allclose(hv, np.asarray(fd), atol=1e-6 * np.abs(hv).max())
    np.testing.assert_allclose(hv, mlp["dense"]["hessian"] @ np.asarray(v), atol=1e-10 * np.abs(hv).max())
    # the pytree-level functions agree with the flat operators
    tree = C.hvp(C.SpecLoss(spec), params, unravel(v), args=(X, y))
    np.testing.assert_allclose(ravel_pytree(tree)[0], hv, atol=1e-12 * np.abs(hv).max())
    gv = C.ggn_vp(C.SpecForward(spec), C.SpecOuter(spec), params, unravel(v), (X,), (y,))
    np.testing.assert_allclose(ravel_pytree(gv)[0], mlp["dense"]["ggn"] @ np.asarray(v), atol=1e-10)


def test_layer_blocks_are_subblocks_of_full_matrix(bn_mlp):
    mlp = bn_mlp
    spec, params, X, y = mlp["spec"], mlp["params"], mlp["X"], mlp["y"]
    scopes = C.model_scopes(spec, include_norm=True)
    assert scopes[:4] == ["model", "layer1", "layer2", "layer3"]
    for matrix in C.MATRICES:
        full = mlp["dense"][matrix]
        for scope in scopes[1:]:
            op = C.model_operator(spec, params, X, y, matrix, scope)
            expected_names = {"layer": ("W", "b"), "norm": ("gamma", "beta")}[scope.rstrip("0123456789")]
            assert {name.split(".")[1] for name in op.names} <= set(expected_names)
            np.testing.assert_allclose(C.dense_matrix(op, **B1), full[np.ix_(op.indices, op.indices)],
                                       rtol=1e-13, atol=1e-13 * np.abs(full).max())
    # a predicate block and the pytree round trip
    op = C.model_operator(spec, params, X, y, "hessian", lambda name: name.endswith(".W"))
    v = np.arange(op.n, dtype=float)
    tree = op.to_tree(v)
    assert float(jnp.sum(jnp.abs(tree["layer3"]["b"]))) == 0.0
    np.testing.assert_array_equal(np.asarray(op.from_tree(tree)), v)
    with pytest.raises(ValueError):
        C.model_operator(spec, params, X, y, "hessian", "layer9")


def test_batchnorm_scale_invariance_known_answer():
    """Under BN the loss is invariant to scaling a hidden unit's incoming weights w (eps ~ 0), so
    G e = 0 exactly and H e = -g_w (the gradient on those coordinates, zero elsewhere), e = w embedded."""
    spec, params, X, y = _problem("batchnorm")
    flat, unravel = ravel_pytree(params)
    e_tree = jax.tree_util.tree_map(jnp.zeros_like, params)
    e_tree["layer2"]["W"] = e_tree["layer2"]["W"].at[:, 1].set(params["layer2"]["W"][:, 1])
    e = ravel_pytree(e_tree)[0]
    g = _flat_grad(spec)(flat)
    on = np.asarray(e) != 0
    H = C.model_operator(spec, params, X, y, "hessian")
    G = C.model_operator(spec, params, X, y, "ggn")
    He, Ge = np.asarray(H(e)), np.asarray(G(e))
    scale = np.abs(He).max()
    np.testing.assert_allclose(He[on], -np.asarray(g)[on], atol=1e-8 * scale)
    np.testing.assert_allclose(He[~on], 0.0, atol=1e-8 * scale)
    np.testing.assert_allclose(Ge, 0.0, atol=1e-8 * np.abs(np.asarray(G(g))).max())


def test_hutchinson_trace_within_its_standard_error(bn_mlp):
    mlp = bn_mlp
    for matrix, op in mlp["ops"].items():
        exact = np.trace(mlp["dense"][matrix])
        est = C.hutchinson_trace(op, jax.random.PRNGKey(21), 100, **B1)
        assert est.stderr > 0
        assert abs(est.trace - exact) <= 3 * est.stderr, (matrix, est.trace, exact, est.stderr)


def test_deflated_hutchinson_trace(bn_mlp):
    """Deflating with a Lanczos basis: the basis' trace is tr(T) exactly, the estimate stays within its
    standard error of the exact trace, and the standard error shrinks (same probes). A full eigenbasis
    leaves nothing to estimate: the trace is exact with zero spread."""
    mlp = bn_mlp
    for matrix, op in mlp["ops"].items():
        A = mlp["dense"][matrix]
        exact = np.trace(A)
        eig = C.top_eigenpairs(op, 3, jax.random.PRNGKey(5), num_steps=20)
        U = np.asarray(eig.basis)
        assert U.shape == (20, op.n)
        np.testing.assert_allclose(U @ U.T, np.eye(20), atol=1e-10)
        np.testing.assert_allclose(eig.basis_trace, np.trace(U @ A @ U.T), rtol=1e-10)
        plain = C.hutchinson_trace(op, jax.random.PRNGKey(21), 40, **B1)
        defl = C.hutchinson_trace(op, jax.random.PRNGKey(21), 40, basis=U, basis_trace=eig.basis_trace, **B1)
        assert abs(defl.trace - exact) <= 3 * defl.stderr, (matrix, defl.trace, exact, defl.stderr)
        assert defl.stderr < 0.7 * plain.stderr, (matrix, defl.stderr, plain.stderr)
        again = C.hutchinson_trace(op, jax.random.PRNGKey(21), 40, basis=U, **B1)  # basis_trace by products
        np.testing.assert_allclose(again.trace, defl.trace, rtol=1e-10)
        _, V = np.linalg.eigh(A)
        full = C.hutchinson_trace(op, jax.random.PRNGKey(21), 8, basis=V.T, basis_trace=exact, **B1)
        np.testing.assert_allclose(full.samples, exact, rtol=1e-9)
        rtol = 2 * defl.stderr / abs(defl.trace)
        loose = C.hutchinson_trace(op, jax.random.PRNGKey(21), 40, basis=U, basis_trace=eig.basis_trace, rtol=rtol,
                                   **B1)
        assert 2 <= len(loose.samples) < 40 and loose.stderr <= rtol * abs(loose.trace)
        np.testing.assert_array_equal(loose.samples, defl.samples[: len(loose.samples)])  # the same probes
    with pytest.raises(ValueError, match="basis must be"):
        C.hutchinson_trace(op, jax.random.PRNGKey(21), 8, basis=np.eye(3), **B1)


def test_lanczos_stops_once_the_top_values_converge():
    """With tol, Lanczos stops early, and the values it returns are within tol of the chosen spectrum."""
    n = 83
    rng = np.random.default_rng(1)
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.concatenate([[10.0, 9.0, 8.0, 7.5, 7.0], rng.uniform(-2.0, 5.0, n - 5)])
    A = jnp.asarray((U * lam) @ U.T)
    for k, tol in ((1, 1e-3), (1, 1e-10), (3, 1e-8)):
        res = C.top_eigenpairs(lambda v: A @ v, k, jax.random.PRNGKey(0), num_steps=60, n=n, tol=tol)
        steps = len(res.basis)
        assert k <= steps < 60, (k, tol, steps)
        assert np.all(np.abs(np.asarray(res.values) - lam[:k]) <= tol * lam[:k]), (k, tol, res.values)
        full = C.top_eigenpairs(lambda v: A @ v, k, jax.random.PRNGKey(0), num_steps=steps, n=n)
        np.testing.assert_allclose(np.asarray(res.values), np.asarray(full.values), rtol=1e-12)  # the same run, cut
    for m in (4, 6, 10, 14, 18):  # the residuals bound every Ritz value's distance to the spectrum
        run = C.lanczos(lambda v: A @ v, jnp.asarray(rng.normal(size=n)), m)
        theta, r, err = C.ritz_error_estimates(np.asarray(run.alpha), np.asarray(run.beta), 3)
        nearest = np.min(np.abs(theta[:, None] - lam[None, :]), axis=1)
        assert np.all(nearest <= r * (1 + 1e-6) + 1e-12), (m, nearest, r)
        assert np.all(err <= r)
    loose = C.top_eigenpairs(lambda v: A @ v, 1, jax.random.PRNGKey(0), num_steps=60, n=n, tol=1e-3)
    tight = C.top_eigenpairs(lambda v: A @ v, 1, jax.random.PRNGKey(0), num_steps=60, n=n, tol=1e-10)
    assert len(loose.basis) < len(tight.basis)


def test_slq_density_and_moments(bn_mlp):
    mlp = bn_mlp
    """The density integrates to 1 over default_grid: the grid reaches 6 sigma past every node (tail
    mass < 2e-9) with step <= sigma / 2 (trapezoid error ~ exp(-2 pi^2 (sigma / step)^2) < 1e-30),
    so 1e-6 is a loose bound. Moments: each probe's quadrature gives q^T A q and q^T A^2 q exactly
    (degree <= 2m - 1), i.e. Hutchinson samples of tr(A)/n and tr(A^2)/n: within 3 standard errors."""
    op = mlp["ops"]["hessian"]
    H = mlp["dense"]["hessian"]
    n = op.n
    res = C.slq(op, jax.random.PRNGKey(31), num_probes=20, num_steps=60, **B1)
    assert res.nodes.shape == (20, 60)
    np.testing.assert_allclose(res.weights.sum(axis=1), 1.0, atol=1e-12)
    grid, sigma = C.default_grid(res.nodes)
    dens = C.gaussian_density(res.nodes, res.weights, grid, sigma)
    assert abs(np.trapezoid(dens, grid) - 1.0) < 1e-6
    for order, exact in ((1, np.trace(H) / n), (2, np.sum(H * H) / n)):
        m = C.slq_moments(res.nodes, res.weights, order)
        se = m.std(ddof=1) / np.sqrt(m.size)
        assert abs(m.mean() - exact) <= 3 * se, (order, m.mean(), exact, se)
    # a fine-grained check of the quadrature itself: Ritz values lie inside the spectrum
    ev = np.linalg.eigvalsh(H)
    assert res.nodes.min() >= ev[0] - 1e-8 and res.nodes.max() <= ev[-1] + 1e-8


def test_analyze_curvature_rows_dense_vs_iterative(bn_mlp):
    mlp = bn_mlp
    spec, params, X, y = mlp["spec"], mlp["params"], mlp["X"], mlp["y"]
    kw = {"top_k": 5, "num_steps": 60, "slq_probes": 4, "trace_probes": 100, "batch_size": 1}
    dense = C.analyze_curvature(spec, params, X, y, dense_max_params=10_000, **kw)
    iters = C.analyze_curvature(spec, params, X, y, dense_max_params=0, scopes=["model"], **kw)
    n_layers = spec.n_layers
    assert {r["scope"] for r in dense.rows} == {"model"} | {f"layer{l}" for l in range(1, n_layers + 1)}
    assert all(set(r) == {"scope", "matrix", "metric", "value"} for r in dense.rows)
    loss = [r for r in dense.rows if r["matrix"] == "none"]
    assert loss == [{"scope": "model", "matrix": "none", "metric": "loss",
                     "value": pytest.approx(float(M.loss(spec, params, X, y)))}]

    def table(result):
        return {(r["scope"], r["matrix"], r["metric"]): r["value"] for r in result.rows}

    d, it = table(dense), table(iters)
    assert ("model", "ggn", "negative_mass") not in d
    for matrix in C.MATRICES:
        ev = np.linalg.eigvalsh(mlp["dense"][matrix])
        n = ev.size
        assert d[("model", matrix, "lambda_max")] == pytest.approx(ev[-1], rel=1e-10)
        assert d[("model", matrix, "trace")] == pytest.approx(ev.sum(), rel=1e-10)
        if ev.sum() > 0:
            assert d[("model", matrix, "eff_cond")] == pytest.approx(ev[-1] / (ev.sum() / n), rel=1e-10)
        else:  # at this generic point the Hessian's trace can be negative: eff_cond is then undefined
            assert np.isnan(d[("model", matrix, "eff_cond")])
        assert it[("model", matrix, "dense")] == 0.0 and d[("model", matrix, "dense")] == 1.0
        assert it[("model", matrix, "lambda_1")] == pytest.approx(ev[-1], rel=1e-6)
        assert abs(it[("model", matrix, "trace")] - ev.sum()) <= 3 * it[("model", matrix, "trace_stderr")]
    ev = np.linalg.eigvalsh(mlp["dense"]["hessian"])
    assert d[("model", "hessian", "negative_mass")] == pytest.approx(-ev[ev < 0].sum() / np.abs(ev).sum())
    assert 0 < it[("model", "hessian", "negative_mass")] < 1
    for dens in dense.densities + iters.densities:
        assert abs(np.trapezoid(dens["density"], dens["grid"]) - 1.0) < 1e-6


def test_float32_params_keep_float32():
    """float32 parameters give a float32 operator and results (linear regression's closed form)."""
    spec = M.ModelSpec((5, 1), norm="none", loss="mse")
    rng = np.random.default_rng(3)
    X = (rng.normal(size=(40, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0]) + 2.0).astype(np.float32)
    y = rng.normal(size=40).astype(np.float32)
    p32 = _perturbed_params(spec, 5, np.float32)
    op = C.model_operator(spec, p32, jnp.asarray(X), jnp.asarray(y), "hessian")
    assert op.dtype == jnp.float32 and op.x0.dtype == jnp.float32
    H = C.dense_matrix(op, **B1)
    assert H.dtype == np.float32
    Xt = np.hstack([X, np.ones((40, 1), np.float32)]).astype(np.float64)
    expected = 2 * Xt.T @ Xt / 40
    np.testing.assert_allclose(H, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


@pytest.mark.parametrize("norm", ["none", "batchnorm"])
def test_output_layer_block_in_closed_form_equals_both_matrices_blocks(norm):
    """The output layer's block without products (softmax cross-entropy): equal to the block of the dense
    Hessian and of the dense Gauss-Newton matrix built from products, in the block's own order."""
    d = _mlp(norm)
    spec = d["spec"]
    idx = C.model_operator(spec, d["params"], d["X"], d["y"], "hessian", f"layer{spec.n_layers}").indices
    block = C.output_layer_matrix(spec, d["params"], d["X"], d["y"])
    assert block.shape == (idx.size, idx.size)
    for matrix in C.MATRICES:
        np.testing.assert_allclose(block, d["dense"][matrix][np.ix_(idx, idx)], rtol=1e-9, atol=1e-12)


def test_output_layer_block_keeps_a_saturated_softmax_exact():
    """Known answer where the softmax saturates (logit gap 40: p = 1 - 4e-18, which is 1.0 in float64): two
    classes with logits (20, -20) for every example give the block q X~^T X~ / m (x) [[1, -1], [-1, 1]], with
    q = p (1 - p) = e^-40 / (1 + e^-40)^2. Computing p - p^2 from p = 1.0 gave 0 on the first class's
    diagonal: the block was then not even positive semidefinite."""
    spec = M.ModelSpec((3, 2), norm="none")
    rng = np.random.default_rng(3)
    X = rng.normal(size=(30, 3)) * np.array([1.0, 1000.0, 0.01])
    params = {"layer1": {"W": np.zeros((3, 2)), "b": np.array([20.0, -20.0])}}
    Xt = np.concatenate([X, np.ones((30, 1))], axis=1)
    q = np.exp(-40.0) / (1.0 + np.exp(-40.0)) ** 2
    expected = np.kron(q * Xt.T @ Xt / 30, np.array([[1.0, -1.0], [-1.0, 1.0]]))
    block = C.output_layer_matrix(spec, params, X, np.zeros(30, np.int64))
    np.testing.assert_allclose(block, expected, rtol=1e-12, atol=1e-12 * np.abs(expected).max())


def test_output_layer_goes_dense_up_to_its_own_limit(bn_mlp):
    """``output_dense_max_params`` sends the output block to the closed form even where ``dense_max_params``
    would use Lanczos: exact (the dense Hessian's block), marked dense; set to 0 it goes through Lanczos,
    which finds the same top eigenvalue."""
    mlp = bn_mlp
    spec, params, X, y = mlp["spec"], mlp["params"], mlp["X"], mlp["y"]
    scope = f"layer{spec.n_layers}"
    idx = C.model_operator(spec, params, X, y, "hessian", scope).indices
    ev = np.linalg.eigvalsh(mlp["dense"]["hessian"][np.ix_(idx, idx)])
    kw = {"top_k": 3, "num_steps": idx.size, "slq_probes": 1, "trace_probes": 4, "batch_size": 1,
          "dense_max_params": 0, "scopes": [scope]}

    def table(limit):
        rows = C.analyze_curvature(spec, params, X, y, output_dense_max_params=limit, **kw).rows
        return {(r["matrix"], r["metric"]): r["value"] for r in rows if r["scope"] == scope}

    closed, lanczos = table(idx.size), table(0)
    assert not C.layer_products_pay(spec, 10**9, [scope], 2, 0, 30, 16, 2, output_dense_max_params=idx.size)
    for matrix in C.MATRICES:
        assert closed[(matrix, "dense")] == 1.0 and lanczos[(matrix, "dense")] == 0.0
        assert closed[(matrix, "trace")] == pytest.approx(ev.sum(), rel=1e-10)
        np.testing.assert_allclose([closed[(matrix, f"lambda_{i}")] for i in (1, 2, 3)], ev[::-1][:3], rtol=1e-10)
        assert lanczos[(matrix, "lambda_max")] == pytest.approx(ev[-1], rel=1e-6)


@pytest.mark.parametrize("n_out", [1, 2])
def test_output_layer_block_of_a_linear_mse_model_is_2_xtx_over_m_per_output(n_out):
    """Known answer: MSE (mean over all m x C entries) of Z = X W + b has the block 2 X~^T X~ / (m C) for
    each output, X~ = [X, 1], coordinates (input a, output c) in W's row-major order, then b."""
    spec = M.ModelSpec((5, n_out), norm="none", loss="mse")
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5)) * np.array([1.0, 10.0, 0.1, 3.0, 1.0])
    params = {"layer1": {"W": rng.normal(size=(5, n_out)), "b": rng.normal(size=n_out)}}
    Xt = np.concatenate([X, np.ones((40, 1))], axis=1)
    expected = np.kron(2.0 * Xt.T @ Xt / (40 * n_out), np.eye(n_out))
    np.testing.assert_allclose(C.output_layer_matrix(spec, params, X, rng.normal(size=(40, n_out))), expected,
                               rtol=1e-12)


def _equal_width_problem(norm, loss):
    """A depth-3 MLP with one hidden width (what ``layer_operator`` serves), generic parameters."""
    spec = M.ModelSpec((3, 5, 5, 5, 4), activation="tanh", norm=norm, eps=1e-3, loss=loss)
    rng = np.random.default_rng(2)
    X = jnp.asarray(rng.normal(size=(24, 3)) * np.array([1.0, 4.0, 0.5]))
    y = jnp.asarray(rng.integers(0, 4, 24) if loss == "softmax_cross_entropy" else rng.normal(size=(24, 4)))
    return spec, _perturbed_params(spec, 4), X, y


@pytest.mark.parametrize(("norm", "loss"), [("none", "mse"), ("batchnorm", "softmax_cross_entropy")])
def test_layer_operator_equals_the_whole_model_products_block(norm, loss):
    """Products from the layer up (the layers below as constants) give the same layer blocks as the masked
    whole-model products, for every hidden layer l >= 2 (one program, l traced) and the output layer."""
    spec, params, X, y = _equal_width_problem(norm, loss)
    for matrix in C.MATRICES:
        for l in range(2, spec.n_layers + 1):
            full = C.model_operator(spec, params, X, y, matrix, f"layer{l}")
            op = C.layer_operator(spec, params, X, y, matrix, l)
            assert op.n == full.n and op.names == full.names
            np.testing.assert_array_equal(op.indices, full.indices)
            expected = C.dense_matrix(full, **B1)
            np.testing.assert_allclose(C.dense_matrix(op, **B1), expected, rtol=0, atol=1e-12 * np.abs(expected).max())


def test_layer_operator_refuses_what_it_cannot_serve():
    spec, params, X, y = _equal_width_problem("none", "mse")
    with pytest.raises(ValueError, match="layer 1"):
        C.layer_operator(spec, params, X, y, "hessian", 1)
    with pytest.raises(ValueError, match="matrix"):
        C.layer_operator(spec, params, X, y, "fisher", 2)
    spec2, params2, X2, y2 = _problem("none")  # hidden widths 6 and 5: only the output layer
    assert not C.layer_operator_applies(spec2, 2) and C.layer_operator_applies(spec2, 3)
    with pytest.raises(ValueError, match="one hidden width"):
        C.layer_operator(spec2, params2, X2, y2, "ggn", 2)


def test_analyze_curvature_layer_products_give_the_same_rows():
    """The layer products are an implementation choice: every row (Lanczos, Hutchinson, SLQ with the same
    probes) is the same as with whole-model products."""
    spec, params, X, y = _equal_width_problem("batchnorm", "softmax_cross_entropy")
    kw = {"top_k": 3, "num_steps": 10, "slq_probes": 1, "trace_probes": 4, "batch_size": 1, "dense_max_params": 0,
          "output_dense_max_params": 0}  # the output layer's products too (not its closed form)
    rows = [C.analyze_curvature(spec, params, X, y, layer_products=flag, **kw).rows for flag in (True, False)]
    assert [(r["scope"], r["matrix"], r["metric"]) for r in rows[0]] == [
        (r["scope"], r["matrix"], r["metric"]) for r in rows[1]]
    for a, b in zip(*rows, strict=True):
        assert a["value"] == pytest.approx(b["value"], rel=1e-8, abs=1e-12), (a, b)


def test_layer_products_pay_only_where_they_save_more_than_they_compile():
    """The default study's settings: whole-model products for the depth-2 models and the quick study's tiny
    ones, layer products from depth 4 up (where the products they save outweigh compiling them)."""
    cfg = {"dense_max_params": 600, "num_steps": 30, "trace_probes": 16, "slq_probes": 2}

    def pays(sizes, m=512, **kw):
        spec = M.ModelSpec(sizes, norm="batchnorm")
        return C.layer_products_pay(spec, m, C.model_scopes(spec), 2, **{**cfg, **kw})

    assert not pays((64, 64, 64, 10)) and not pays((2, 64, 64, 2))
    assert pays((2,) + (64,) * 4 + (2,)) and pays((64,) + (64,) * 8 + (10,))
    quick = {"dense_max_params": 100, "num_steps": 12, "trace_probes": 8, "slq_probes": 1}
    assert not pays((2, 16, 16, 16, 2), m=256, **quick)


def test_lanczos_in_block_coordinates_equals_lanczos_in_model_coordinates(monkeypatch):
    """A layer block's recurrence in its own coordinates (what big models use, ``LANCZOS_BLOCK_MIN_N``) gives
    the same tridiagonal, Ritz pairs and SLQ quadrature as the recurrence in the whole model's coordinates."""
    d = _mlp("batchnorm")
    op = C.model_operator(d["spec"], d["params"], d["X"], d["y"], "hessian", "layer1")
    assert op.n < op.N
    key = np.array([0, 7], np.uint32)
    v0 = np.random.default_rng(0).normal(size=op.n)

    def run():
        return (C.lanczos(op, v0, 12, key), C.top_eigenpairs(op, 3, key, num_steps=20),
                C.slq(op, key, num_probes=2, num_steps=10, batch_size=1, top_k=2))

    monkeypatch.setattr(krylov, "LANCZOS_BLOCK_MIN_N", 10**9)
    full = run()
    monkeypatch.setattr(krylov, "LANCZOS_BLOCK_MIN_N", 0)
    block = run()
    for a, b in zip(jax.tree_util.tree_leaves(full), jax.tree_util.tree_leaves(block), strict=True):
        assert np.shape(a) == np.shape(b)
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-10, atol=1e-12)
    assert np.shape(block[0].Q) == (13, op.n)


GENERIC_MODULES = ("operators", "krylov", "estimators")


def _imported_modules(path: Path) -> set[str]:
    """Every module that an import statement in ``path`` (a module of normlab.curvature) loads, at any nesting
    level, relative imports resolved: ``from x import name`` counts as x.name when that is a module of the
    source tree, else as x (for ``from normlab.curvature import host_rng``: the package's ``__init__``)."""
    root = path.parents[2]  # the folder holding normlab/

    def is_module(name: str) -> bool:
        base = root.joinpath(*name.split("."))
        return base.with_suffix(".py").exists() or (base / "__init__.py").exists()

    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = ["normlab", "curvature"][: 3 - node.level]
                base = ".".join(package + ([node.module] if node.module else []))
            found |= {f"{base}.{a.name}" if is_module(f"{base}.{a.name}") else base for a in node.names}
    return found


def test_generic_modules_import_nothing_of_normlab_but_each_other():
    """operators, krylov and estimators work on any JAX function of a flat vector: their imports (anywhere in
    the file, functions included) name no normlab module other than those three: not the model, the spec, the
    layer inputs, nor the package's ``__init__`` (which imports the MLP modules)."""
    package_dir = Path(C.__file__).parent
    allowed = {f"normlab.curvature.{name}" for name in GENERIC_MODULES}
    for name in GENERIC_MODULES:
        ours = {m for m in _imported_modules(package_dir / f"{name}.py") if m.split(".")[0] == "normlab"}
        assert ours <= allowed, (name, sorted(ours - allowed))
    # the walker sees what it must refuse: the MLP module's imports of the model, the spec and the layer inputs
    assert {"normlab.model", "normlab.spec", "normlab.layer_inputs"} <= _imported_modules(package_dir / "mlp.py")


# --------------------------------------------------------------------------------------------------
# Independent references: the Gauss-Newton matrix from jax.jacfwd of model.forward and the closed-form
# Hessian of the outer loss in the outputs (no code of normlab.curvature), and SLQ's negative_mass where
# the quadrature is exact.


def _outer_hessian_closed_form(spec, out, m):
    """The outer loss's Hessian in the outputs, (m, C, C) per example, from the loss's definition
    (``model.loss_from_outputs``): softmax cross-entropy averaged over m examples: (diag(p_i) - p_i p_i^T) / m;
    MSE, the mean of the m x C squared errors: 2 I / (m C). out (m, C) float64 numpy."""
    C_out = out.shape[1]
    if spec.loss == "softmax_cross_entropy":
        p = np.exp(out - out.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        return (p[:, :, None] * np.eye(C_out) - p[:, :, None] * p[:, None, :]) / m
    return np.broadcast_to(2.0 * np.eye(C_out) / (m * C_out), (m, C_out, C_out))


def _reference_ggn(spec, params, X, y):
    """(G, leaf) for the whole model: G (N, N) = sum_i J_i^T H_i J_i with J_i (C, N) example i's rows of
    ``jax.jacfwd`` of ``model.forward`` in the flat parameter vector (``ravel_pytree`` order), H_i from
    ``_outer_hessian_closed_form``; leaf (N,) the dotted leaf name of every flat coordinate. The closed form is
    checked here against the Hessian of ``model.loss_from_outputs`` itself."""
    flat, unravel = ravel_pytree(params)
    out = np.asarray(M.forward(spec, params, X))
    m = out.shape[0]
    J = np.asarray(jax.jit(jax.jacfwd(lambda th: M.forward(spec, unravel(th), X)))(flat))  # (m, C, N)
    H = _outer_hessian_closed_form(spec, out, m)
    H_loss = np.asarray(jax.jit(jax.hessian(lambda o: M.loss_from_outputs(spec, o, y)))(jnp.asarray(out)))  # (m,C,m,C)
    np.testing.assert_allclose(np.einsum("iaib->iab", H_loss), H, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.abs(H_loss).sum(), np.abs(H).sum(), rtol=1e-12)  # no cross-example terms
    names = {f"{layer}.{leaf}": leaf_id for leaf_id, (layer, leaf) in
             enumerate((layer, leaf) for layer in params for leaf in params[layer])}
    ids = ravel_pytree({layer: {leaf: np.full(np.shape(v), float(names[f"{layer}.{leaf}"])) for leaf, v in p.items()}
                        for layer, p in params.items()})[0]
    by_id = {i: name for name, i in names.items()}
    leaf = np.array([by_id[int(i)] for i in np.asarray(ids)])
    return np.einsum("iaN,iab,ibK->NK", J, H, J), leaf


def _scope_leaves(spec, scope):
    """The leaves of a scope, written out from the scope's meaning (not from the curvature code's helpers)."""
    if scope == "model":
        return None
    kind = scope.rstrip("0123456789")
    l = int(scope[len(kind):])
    names = {"layer": ("W", "b"), "norm": ("gamma", "beta")}[kind]
    return {f"layer{l}.{name}" for name in names}


@pytest.mark.parametrize(("norm", "loss"), [("none", "mse"), ("batchnorm", "softmax_cross_entropy"),
                                            ("layernorm", "softmax_cross_entropy")])
def test_ggn_blocks_equal_an_independent_jacobian_reference(norm, loss):
    """Every scope's Gauss-Newton block (the whole model, each layer's W and b, each hidden layer's gamma and
    beta), from the masked whole-model products, from the products of the layers above (``layer_operator``) and
    from the output layer's closed form, equals the sub-matrix of J^T H_out J built from ``jax.jacfwd`` of
    ``model.forward`` (``_reference_ggn``), entry by entry; the reported eigenvalues and traces
    (``analyze_curvature``, dense) are those of the reference blocks. Each norm once, each loss at least once
    (the first two problems are those of the layer-operator tests, so their products are compiled once)."""
    spec, params, X, y = _equal_width_problem(norm, loss)
    G, leaf = _reference_ggn(spec, params, X, y)
    scale = np.abs(G).max()
    scopes = C.model_scopes(spec, include_norm=True)
    assert scopes == ["model", "layer1", "layer2", "layer3", "layer4"] + (["norm1", "norm2", "norm3"]
                                                                        if norm != "none" else [])
    rows = C.analyze_curvature(spec, params, X, y, matrices=("ggn",), scopes=scopes, dense_max_params=10_000,
                               batch_size=1, layer_products=True).rows
    reported = {(r["scope"], r["metric"]): r["value"] for r in rows if r["matrix"] == "ggn"}
    for scope in scopes:
        leaves = _scope_leaves(spec, scope)
        idx = np.arange(leaf.size) if leaves is None else np.flatnonzero(np.isin(leaf, sorted(leaves)))
        assert idx.size > 0
        expected = G[np.ix_(idx, idx)]
        assert np.abs(expected).max() > 1e-3 * scale  # every block carries curvature
        op = C.model_operator(spec, params, X, y, "ggn", scope)
        np.testing.assert_array_equal(op.indices, idx)
        blocks = {"model_operator": C.dense_matrix(op, **B1)}
        l = int(scope[5:]) if scope.startswith("layer") else None
        if l is not None and C.layer_operator_applies(spec, l):
            blocks["layer_operator"] = C.dense_matrix(C.layer_operator(spec, params, X, y, "ggn", l), **B1)
        if l == spec.n_layers:
            blocks["output_layer_matrix"] = C.output_layer_matrix(spec, params, X, y)
        for how, block in blocks.items():
            np.testing.assert_allclose(block, expected, rtol=1e-8, atol=1e-10 * scale, err_msg=f"{scope} {how}")
        ev = np.linalg.eigvalsh(expected)[::-1]
        assert reported[(scope, "trace")] == pytest.approx(ev.sum(), rel=1e-8)
        assert reported[(scope, "lambda_max")] == pytest.approx(ev[0], rel=1e-8)
        for i in range(min(5, idx.size)):
            assert reported[(scope, f"lambda_{i + 1}")] == pytest.approx(ev[i], rel=1e-8, abs=1e-10 * ev[0])
    # the layer blocks are neither all of the matrix nor block-diagonal: the reference's cross-layer terms are real
    one, two = (np.flatnonzero(np.isin(leaf, sorted(_scope_leaves(spec, s)))) for s in ("layer1", "layer2"))
    assert np.abs(G[np.ix_(one, two)]).max() > 1e-3 * scale


def _negative_mass_exact(A, Q=None):
    """negative_mass from a dense eigh: sum |lambda| [lambda < 0] / sum |lambda| over A's eigenvalues, or, with
    unit vectors Q (p, n), the probe-weighted version sum_i q_i^T A_- q_i / sum_i q_i^T |A| q_i (A_- and |A|: A's
    eigenvectors with |lambda| [lambda < 0] and |lambda|), which an orthonormal basis of n probes turns into
    the first (sum_i q_i q_i^T = I)."""
    lam, U = np.linalg.eigh(A)
    if Q is None:
        return np.abs(lam[lam < 0]).sum() / np.abs(lam).sum()
    w = (Q @ U) ** 2  # (p, n): q_i's weight on eigenvector j
    return (w @ (np.abs(lam) * (lam < 0))).sum() / (w @ np.abs(lam)).sum()


def _use_probes(monkeypatch, probes):
    """The estimators' random probes (SLQ's and Hutchinson's, both Rademacher) replaced by the rows of ``probes``
    (p, n), repeated cyclically to the number asked for; the block must be the whole space (N = n)."""
    monkeypatch.setattr(estimators, "_random_rows",
                        lambda rng, mask, rows, kind: np.resize(np.asarray(probes, mask.dtype), (rows, mask.size)))


def _slq_with_probes(monkeypatch, matvec, probes, **kw):
    """``slq`` with the rows of ``probes`` (p, n) as its probes and n Lanczos steps: each probe's quadrature is
    then exact for every function of the spectrum."""
    _use_probes(monkeypatch, probes)
    n = probes.shape[1]
    res = C.slq(matvec, jax.random.PRNGKey(3), num_probes=probes.shape[0], num_steps=n, batch_size=1, **kw)
    monkeypatch.undo()
    return res


def test_slq_negative_mass_is_exact_with_n_steps_on_a_chosen_spectrum(monkeypatch):
    """A symmetric indefinite 12 x 12 matrix with a known spectrum (negative mass 0.25 exactly). With n Lanczos
    steps each probe's quadrature nodes are the eigenvalues and its weights (q . u_j)^2, so: with the real
    Rademacher probes on a diagonal matrix (weights 1/n for every probe) each probe's estimate and the pooled one
    are the exact 0.25; with the rows of a random orthonormal basis as probes on a rotated matrix, each probe's
    estimate is its own exact q^T A_- q / q^T |A| q and the pooled estimate (a ratio of sums, not a mean of
    ratios, which here differs by > 1e-3) is the exact 0.25."""
    lam = np.array([-3.0, -1.5, -0.5, -1e-3, 1e-3, 0.25, 0.5, 1.0, 2.0, 3.0, 3.752, 4.5])
    assert np.abs(lam[lam < 0]).sum() / np.abs(lam).sum() == pytest.approx(0.25, rel=1e-14)
    n = lam.size
    rng = np.random.default_rng(8)
    perm = rng.permutation(n)
    d = jnp.asarray(lam[perm])
    res = C.slq(lambda v: d * v, jax.random.PRNGKey(4), num_probes=3, num_steps=n, n=n, batch_size=1)
    np.testing.assert_allclose(np.sort(res.nodes, axis=1), np.tile(lam, (3, 1)), atol=1e-12)
    np.testing.assert_allclose(res.weights, 1.0 / n, atol=1e-12)
    assert [C.negative_mass(res.nodes[i], res.weights[i]) for i in range(3)] == pytest.approx([0.25] * 3, abs=1e-12)
    assert C.negative_mass(res.nodes, res.weights) == pytest.approx(0.25, abs=1e-12)

    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    A = (U * lam) @ U.T
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))  # rows: an orthonormal basis, unrelated to U
    res = _slq_with_probes(monkeypatch, lambda v: jnp.asarray(A) @ v, Q.T * 3.0, n=n)
    per_probe = [C.negative_mass(res.nodes[i], res.weights[i]) for i in range(n)]
    np.testing.assert_allclose(per_probe, [_negative_mass_exact(A, Q.T[i:i + 1]) for i in range(n)], atol=1e-10)
    assert np.ptp(per_probe) > 0.1  # the probes see different parts of the spectrum
    assert C.negative_mass(res.nodes, res.weights) == pytest.approx(0.25, abs=1e-10)
    assert abs(np.mean(per_probe) - 0.25) > 1e-3
    assert C.negative_mass(lam) == pytest.approx(0.25, rel=1e-14)
    assert C.negative_mass(-lam) == pytest.approx(0.75, rel=1e-14)
    assert C.negative_mass(np.zeros(3)) == 0.0 and C.negative_mass(np.abs(lam)) == 0.0


def test_slq_negative_mass_of_a_model_hessian_is_exact_with_n_steps(monkeypatch):
    """The Hessian of a tiny tanh MLP at a generic (non-minimum) point is indefinite; SLQ with n Lanczos steps
    and an orthonormal basis of n probes gives its negative mass exactly (dense eigh of the operator's matrix),
    each probe its own exact value; ``analyze_curvature``'s iterative path reports its probes' exact value, with
    the exact lambda_max and trace (n Lanczos vectors span the space)."""
    spec = M.ModelSpec((2, 3, 2), activation="tanh", norm="none", loss="softmax_cross_entropy")
    rng = np.random.default_rng(5)
    X = jnp.asarray(rng.normal(size=(10, 2)) * np.array([1.0, 2.0]))
    y = jnp.asarray(rng.integers(0, 2, 10))
    params = _perturbed_params(spec, 6)
    op = C.model_operator(spec, params, X, y, "hessian")
    n = op.n
    A = C.dense_matrix(op, **B1)
    exact = _negative_mass_exact(A)
    assert 0.02 < exact < 0.98  # indefinite, and not trivially so
    Q, _ = np.linalg.qr(rng.normal(size=(n, n)))
    res = _slq_with_probes(monkeypatch, op, Q.T)
    assert res.nodes.shape == (n, n)
    for i in range(n):
        assert C.negative_mass(res.nodes[i], res.weights[i]) == pytest.approx(
            _negative_mass_exact(A, Q.T[i:i + 1]), abs=1e-9)
    assert C.negative_mass(res.nodes, res.weights) == pytest.approx(exact, abs=1e-9)
    # the iterative summary (SLQ, then Hutchinson deflated by the first probe's n Lanczos vectors) reports the
    # estimate of its probes: here three of the basis, whose exact value is not the whole spectrum's (every probe's
    # n nodes are all the eigenvalues, so only the weights tell the probes apart)
    three = _negative_mass_exact(A, Q.T[:3])
    assert abs(three - exact) > 1e-3
    _use_probes(monkeypatch, Q.T[:3])
    rows = C.analyze_curvature(spec, params, X, y, matrices=("hessian",), scopes=["model"], dense_max_params=0,
                               num_steps=n, slq_probes=3, trace_probes=2, batch_size=1).rows
    monkeypatch.undo()
    reported = {r["metric"]: r["value"] for r in rows if r["matrix"] == "hessian"}
    ev = np.linalg.eigvalsh(A)
    assert reported["dense"] == 0.0
    assert reported["negative_mass"] == pytest.approx(three, abs=1e-9)
    assert reported["lambda_max"] == pytest.approx(ev[-1], rel=1e-9)
    assert reported["trace"] == pytest.approx(ev.sum(), rel=1e-9, abs=1e-12 * np.abs(ev).max())


def test_density_grid_ignores_non_finite_nodes():
    """A spectrum with a non-finite node (Lanczos on a product that under- or overflowed) still gets a grid
    around its finite nodes, and the node carries no mass."""
    grid, sigma = estimators.default_grid(np.array([np.nan, 1.0, 2.0]), num=64)
    assert np.isfinite(grid).all() and grid.min() < 1.0 < 2.0 < grid.max() and sigma > 0
    with_nan = estimators.gaussian_density(np.array([[np.nan, 1.0, 2.0]]), np.array([[0.2, 0.4, 0.4]]), grid, sigma)
    without = estimators.gaussian_density(np.array([[1.0, 2.0]]), np.array([[0.4, 0.4]]), grid, sigma)
    np.testing.assert_allclose(with_nan, without)
    assert np.isfinite(estimators.default_grid(np.array([np.nan, np.inf]))[0]).all()


# --------------------------------------------------------------------------------------------------
# Scaled operators (S A S) and the largest eigenvalue from runs side by side: what the scale-invariant
# sharpness of ``analyze_curvature`` runs on (its known answers on models are in tests/test_invariance.py).


@contextlib.contextmanager
def _compiled_programs():
    """Collects the names of the programs JAX compiles (traces and lowers) inside the block: a list of strings."""
    names = []

    class Handler(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if msg.startswith("Compiling jit("):
                names.append(msg[len("Compiling jit("):].split(")")[0])

    handler, logger = Handler(level=logging.DEBUG), logging.getLogger("jax")
    logger.addHandler(handler)
    try:
        with jax.log_compiles(True):
            yield names
    finally:
        logger.removeHandler(handler)


def test_scaled_operator_is_s_a_s_and_shares_the_compiled_product(bn_mlp):
    """``scaled_operator(op, s)`` is diag(s) A diag(s) over op's block (a layer block and the whole model),
    scaling twice composes, and its products reuse op's compiled product (no new program with the model)."""
    mlp = bn_mlp
    spec, params, X, y = mlp["spec"], mlp["params"], mlp["X"], mlp["y"]
    full = mlp["dense"]["hessian"]
    s = np.random.default_rng(1).uniform(0.2, 5.0, full.shape[0])
    for scope in ("model", "layer2"):
        op = C.model_operator(spec, params, X, y, "hessian", scope)
        idx = op.indices
        C.dense_matrix(op, **B1)  # the product of this batch width is compiled
        sop = C.scaled_operator(op, s)
        expected = s[idx, None] * full[np.ix_(idx, idx)] * s[None, idx]
        with _compiled_programs() as compiled:
            np.testing.assert_allclose(C.dense_matrix(sop, **B1), expected, rtol=1e-12,
                                       atol=1e-13 * np.abs(expected).max())
        assert "_matmat" not in compiled
        v = np.random.default_rng(2).normal(size=op.n)
        np.testing.assert_allclose(np.asarray(sop(v)), expected @ v, rtol=1e-10, atol=1e-12 * np.abs(expected).max())
        twice = C.dense_matrix(C.scaled_operator(sop, 1.0 / s), **B1)
        np.testing.assert_allclose(twice, full[np.ix_(idx, idx)], rtol=1e-10, atol=1e-12 * np.abs(full).max())
    with pytest.raises(ValueError, match="flat coordinates"):
        C.scaled_operator(op, s[:-1])


def test_lanczos_lambda_max_from_runs_side_by_side():
    """A chosen spectrum (top 7.0, a close second 6.9): exact once the runs' union spans the space (r runs of n / r
    steps: the union is the block Krylov space); with fewer steps the union's Ritz value is a lower bound at least
    as good as the best run's own; a longer allocation gives the same numbers; two identical runs (a singular Gram
    matrix) give no spurious value above lambda_max."""
    n = 24
    rng = np.random.default_rng(4)
    U, _ = np.linalg.qr(rng.normal(size=(n, n)))
    lam = np.concatenate([[7.0, 6.9], np.linspace(-2.0, 3.0, n - 2)])
    A = (U * lam) @ U.T
    key = np.array([0, 5], np.uint32)
    for runs in (1, 2, 3):  # the union drops the nearly shared directions of the runs (Gram cutoff): 1e-8, not 1e-15
        assert C.lanczos_lambda_max(lambda v: A @ v, key, n, runs=runs, n=n) == pytest.approx(7.0, rel=1e-8)
    few = C.lanczos_lambda_max(lambda v: A @ v, key, 6, runs=2, n=n)
    assert few == pytest.approx(C.lanczos_lambda_max(lambda v: A @ v, key, 6, runs=2, n=n, alloc_steps=20), rel=1e-13)
    sp = C.operators._space(lambda v: A @ v, n, None)
    rg = krylov.host_rng(key, 3)
    alpha, beta, Q = krylov._run_lanczos(sp, krylov._random_rows(rg, sp.mask_np, 2, "normal"), rg, 3)
    own = np.max(krylov.tridiag_eigh(alpha, beta)[0][:, -1])
    assert own - 1e-12 <= few <= 7.0 + 1e-12
    assert few == pytest.approx(krylov.union_ritz_max(alpha, beta, Q, 2.2e-16), rel=1e-14)
    v0 = rng.normal(size=(1, n))
    for twin in (v0, v0 + 1e-9 * rng.normal(size=(1, n))):  # the same start, and one 1e-9 away
        alpha, beta, Q = krylov._run_lanczos(sp, np.concatenate([v0, twin]), rg, 4)
        single = krylov.tridiag_eigh(alpha[:1], beta[:1])[0][0, -1]
        assert krylov.union_ritz_max(alpha, beta, Q, 2.2e-16) == pytest.approx(single, rel=1e-8)


def test_invariant_sharpness_compiles_no_product_and_no_lanczos_step():
    """The rows lambda_max(S A S) of ``analyze_curvature`` run the programs its spectra compiled: the same product
    (as many vectors at a time) and the same Lanczos step (the SLQ runs' state length), whole-model products and
    products from the layer up alike; only the two elementwise scalings are new."""
    spec, params, X, y = _equal_width_problem("batchnorm", "softmax_cross_entropy")
    kw = {"top_k": 2, "num_steps": 8, "slq_probes": 2, "trace_probes": 2, "batch_size": 2, "dense_max_params": 0,
          "layer_products": True}
    C.analyze_curvature(spec, params, X, y, **kw)
    with _compiled_programs() as compiled:
        rows = C.analyze_curvature(spec, _perturbed_params(spec, 9), X, y, invariant_steps=6, **kw).rows
    assert sum(r["matrix"].endswith("_invariant") for r in rows) == 2 * 4  # model, layers 1-3
    assert "_matmat" not in compiled and "_lanczos_step" not in compiled and "_lanczos_block_step" not in compiled


def test_invariant_rows_from_the_layer_up_equal_the_whole_model_products():
    """lambda_max(S A S) of the hidden layers' blocks: the same from ``layer_operator``'s products as from the masked
    whole-model products (same start vectors)."""
    spec, params, X, y = _equal_width_problem("batchnorm", "softmax_cross_entropy")
    kw = {"top_k": 1, "num_steps": 10, "slq_probes": 2, "trace_probes": 2, "batch_size": 2, "dense_max_params": 0,
          "invariant_steps": 8}
    results = [C.analyze_curvature(spec, params, X, y, layer_products=flag, **kw) for flag in (True, False)]
    rows = [{(r["scope"], r["matrix"]): r["value"] for r in res.rows if r["matrix"].endswith("invariant")}
            for res in results]
    assert sorted(rows[0]) == sorted(rows[1]) and len(rows[0]) == 8
    for k, v in rows[0].items():
        assert v == pytest.approx(rows[1][k], rel=1e-8), k


# --------------------------------------------------------------------------------------------------
# Batch norm on the inputs: layer 1's input is the standardized batch in every curvature path


def _input_bn_problem(sizes, norm="none"):
    """A tanh model that standardizes its raw inputs with the batch's statistics (``input_norm="batchnorm"``), on
    raw features with scales 1 : 100 : 0.01 and offsets, and the flat Hessian of ``model.loss`` (``jax.hessian``)."""
    spec = M.ModelSpec(sizes, activation="tanh", norm=norm, eps=1e-3, input_norm="batchnorm")
    rng = np.random.default_rng(6)
    X = jnp.asarray(rng.normal(size=(20, sizes[0])) * np.array([1.0, 100.0, 0.01]) + np.array([5.0, -300.0, 0.0]))
    y = jnp.asarray(rng.integers(0, sizes[-1], 20))
    params = _perturbed_params(spec, 8)
    flat, unravel = ravel_pytree(params)
    H = np.asarray(jax.jit(jax.hessian(lambda t: M.loss(spec, unravel(t), X, y)))(flat))
    raw = dataclasses.replace(spec, input_norm="none")
    H_raw = np.asarray(jax.jit(jax.hessian(lambda t: M.loss(raw, unravel(t), X, y)))(flat))
    return spec, params, X, y, H, H_raw


def test_input_batchnorm_blocks_equal_the_hessian_of_the_loss():
    """Input BN: layer 1's block (whole-model products), layer 2's (products from layer 2 up, A[1] from the normalized
    inputs), the output layer's closed form, and a depth-0 model's only block (the output layer on the normalized
    inputs) equal the blocks of ``jax.hessian`` of ``model.loss``, which differ from those of the same parameters
    on the raw inputs (so a path that fed X itself to layer 1 would fail)."""
    spec, params, X, y, H, H_raw = _input_bn_problem((3, 5, 5, 4), "batchnorm")
    for l in (1, 2, 3):
        full = C.model_operator(spec, params, X, y, "hessian", f"layer{l}")
        idx = full.indices
        blocks = {"model_operator": C.dense_matrix(full, **B1)}
        if C.layer_operator_applies(spec, l):
            blocks["layer_operator"] = C.dense_matrix(C.layer_operator(spec, params, X, y, "hessian", l), **B1)
        if l == spec.n_layers:
            blocks["output_layer_matrix"] = C.output_layer_matrix(spec, params, X, y)
        expected = H[np.ix_(idx, idx)]
        assert np.abs(H_raw[np.ix_(idx, idx)] - expected).max() > 1e-2 * np.abs(expected).max()
        for how, block in blocks.items():
            np.testing.assert_allclose(block, expected, rtol=1e-9, atol=1e-11 * np.abs(expected).max(),
                                       err_msg=f"layer{l} {how}")
    spec0, params0, X0, y0, H0, H0_raw = _input_bn_problem((3, 4))
    assert np.abs(H0_raw - H0).max() > 1e-2 * np.abs(H0).max()
    np.testing.assert_allclose(C.output_layer_matrix(spec0, params0, X0, y0), H0, rtol=1e-9,
                               atol=1e-12 * np.abs(H0).max())
    rows = C.analyze_curvature(spec0, params0, X0, y0, top_k=2, batch_size=1).rows
    lam = {(r["scope"], r["matrix"]): r["value"] for r in rows if r["metric"] == "lambda_max"}
    assert lam[("layer1", "hessian")] == pytest.approx(np.linalg.eigvalsh(H0)[-1], rel=1e-9)


def test_tridiag_eigh_gives_nan_for_a_non_finite_tridiagonal():
    """A tridiagonal with an overflowed entry (float32 products of a saturated softmax) gives NaN Ritz values
    and vectors, which the analysis remeasures in float64, instead of LAPACK's "did not converge"; the finite
    tridiagonals of the same batch are decomposed as usual."""
    alpha = np.array([[2.0, 1.0, 3.0], [2.0, np.inf, 3.0]])
    beta = np.array([[0.5, 0.25], [0.5, 0.25]])
    theta, S = krylov.tridiag_eigh(alpha, beta)
    T = np.diag(alpha[0]) + np.diag(beta[0], 1) + np.diag(beta[0], -1)
    np.testing.assert_allclose(theta[0], np.linalg.eigvalsh(T), rtol=1e-12)
    np.testing.assert_allclose(S[0] @ np.diag(theta[0]) @ S[0].T, T, atol=1e-12)
    assert np.isnan(theta[1]).all() and np.isnan(S[1]).all()
    theta, S = krylov.tridiag_eigh(np.array([1.0, np.nan]), np.array([0.5]))
    assert theta.shape == (2,) and S.shape == (2, 2) and np.isnan(theta).all()
