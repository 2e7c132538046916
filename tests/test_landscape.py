"""Known-answer tests of normlab.landscape: contour slices and their roundness."""

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from normlab import landscape as ls
from normlab import model
from normlab.landscape import planes as ls_planes

F64 = jnp.float64


def _init(spec, seed):
    """Random float64 parameters shaped as ``model.init_params`` (He / LeCun-normal weights, small random
    biases and betas, gammas near 1), drawn with numpy: no JAX random kernels to compile."""
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda: model.init_params(spec, jax.random.PRNGKey(0), F64))
    fill = {"W": lambda s: rng.normal(size=s) / math.sqrt(s[0]), "b": lambda s: 0.1 * rng.normal(size=s),
            "gamma": lambda s: 1 + 0.1 * rng.normal(size=s), "beta": lambda s: 0.1 * rng.normal(size=s)}
    return {layer: {k: jnp.asarray(fill[k](v.shape)) for k, v in p.items()} for layer, p in shapes.items()}


def _normal(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale)


def _labels(seed, m, k):
    return jnp.asarray(np.random.default_rng(seed).integers(0, k, size=m))


@functools.cache
def _loss_fn(spec):
    """``fn(params, X, y) -> J`` for ``ls.evaluate_grid(..., args=(X, y))``; one function object per spec,
    so the compiled grid is reused."""
    def fn(params, X, y):
        return model.loss(spec, params, X, y)
    return fn


def _grid_loop(loss_fn, center, d1, d2, alphas, betas, *, args=()):
    """Reference for the vectorized grids: one compiled loss call per grid point from a Python loop;
    numpy (n_a, n_b) in the dtype of center."""
    dtype = jax.tree_util.tree_leaves(center)[0].dtype
    d1, d2 = (jax.tree_util.tree_map(lambda x, r: jnp.asarray(x, r.dtype), d, center) for d in (d1, d2))
    point = jax.jit(lambda a, b, c, x, z, *rest: loss_fn(
        jax.tree_util.tree_map(lambda c_, x_, z_: c_ + a * x_ + b * z_, c, x, z), *rest))
    alphas, betas = np.asarray(alphas, dtype), np.asarray(betas, dtype)
    out = np.empty((alphas.size, betas.size), dtype)
    for i, a in enumerate(alphas):
        for k, b in enumerate(betas):
            out[i, k] = float(point(a, b, center, d1, d2, *args))
    return out


@functools.partial(jax.jit, static_argnames=("spec",))
def _model_ggn(spec, params, X, y, directions):
    """Reference 2x2 GGN: ``ls.projected_ggn`` with f = the whole network's outputs."""
    return ls.projected_ggn(lambda p: model.forward(spec, p, X), lambda o: model.loss_from_outputs(spec, o, y),
                            params, directions)


def _quadratic_problem():
    """J(w) = 1/2 w^T A w on R^4 with eigenvalues (50, 8, 2, 0.5) in a rotated basis."""
    rng = np.random.default_rng(0)
    Q, _ = np.linalg.qr(rng.normal(size=(4, 4)))
    A = Q @ np.diag([50.0, 8.0, 2.0, 0.5]) @ Q.T
    d1 = {"w": jnp.asarray(rng.normal(size=4))}
    d2 = {"w": jnp.asarray(rng.normal(size=4))}
    center = {"w": jnp.asarray(rng.normal(size=4))}  # not the minimum: the slice has a gradient
    return jnp.asarray(A), center, d1, d2


def _true_ratio(M):
    lam = np.linalg.eigvalsh(np.asarray(M))
    return math.sqrt(lam[-1] / lam[0])


def test_quadratic_generic_ggn_levelset_and_loop():
    A, center, d1, d2 = _quadratic_problem()

    def loss_fn(p):
        return 0.5 * p["w"] @ A @ p["w"]

    D = np.stack([d1["w"], d2["w"]], axis=1)
    true = _true_ratio(D.T @ np.asarray(A) @ D)

    # GGN of J = outer(f(w)) with f = identity, outer = 1/2 o^T A o: G = A exactly.
    G = ls.projected_ggn(lambda p: p["w"], lambda o: 0.5 * o @ A @ o, center, [d1, d2])
    np.testing.assert_allclose(G, D.T @ np.asarray(A) @ D, rtol=1e-12)
    g = ls.axis_ratio_2x2(G)
    assert not (g.censored or g.no_curvature)
    assert g.ratio == pytest.approx(true, rel=1e-10)

    alphas, betas = ls.grid_axes(21, 2.0)
    grid = ls.evaluate_grid(loss_fn, center, d1, d2, alphas, betas, chunk_size=50)  # 441 = 8 chunks + pad
    loop = _grid_loop(loss_fn, center, d1, d2, alphas, betas)
    assert grid.shape == (21, 21) and grid.dtype == F64
    np.testing.assert_allclose(np.asarray(grid), loop, rtol=0, atol=1e-10)
    # The quadratic fit is exact on a quadratic J (only rounding), whatever the level and the gradient:
    # a 1e-6 tolerance leaves room for rounding in the least-squares solve, nothing else.
    for delta in (0.05, 0.3):
        fit = ls.levelset_axis_ratio(alphas, betas, grid, delta)
        assert fit.ratio == pytest.approx(true, rel=1e-6)
        assert fit.misfit < 1e-6 and fit.rel_err < 1e-6
        np.testing.assert_allclose(fit.H, D.T @ np.asarray(A) @ D, rtol=1e-6)


def _linear_mse(X, w_scale=0.1, seed=0):
    """A linear model (n -> 1), mse loss: J = mean((X w + b - y)^2), Hessian in w = 2 X^T X / m."""
    m, n = X.shape
    spec = model.ModelSpec(sizes=(n, 1), loss="mse", activation="relu")
    params = _init(spec, seed)
    params["layer1"]["W"] = params["layer1"]["W"] * w_scale
    y = jnp.asarray(np.random.default_rng(seed).normal(size=m))
    return spec, params, y


def test_lecture_slice_on_exact_quadratic_model():
    # X^T X / m = diag(s^2) exactly, so the Hessian in W is 2 diag(s^2) and the lecture slice (largest,
    # smallest RMS inputs) has axis ratio s_max / s_min = 12.
    m, s = 64, np.array([0.5, 3.0, 6.0, 1.5])
    Q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(m, 4)))
    X = jnp.asarray(math.sqrt(m) * Q * s)
    spec, params, y = _linear_mse(X)
    sl = ls.lecture_slice(spec, params, X, y, 1, n_points=21, extent=0.5)
    assert (sl.info["unit"], sl.info["input_hi"], sl.info["input_lo"]) == (0, 2, 0)
    np.testing.assert_allclose(sl.info["input_rms"], s, rtol=1e-12)
    np.testing.assert_allclose(sl.ggn, np.diag([2 * 36.0, 2 * 0.25]), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sl.origin, np.asarray(params["layer1"]["W"])[[2, 0], 0])
    row = ls.slice_row(sl)
    assert not row["singular"]
    assert row["axis_ratio_ggn"] == pytest.approx(12.0, rel=1e-10)
    assert row["axis_ratio_levelset"] == pytest.approx(12.0, rel=1e-6)
    # The same two weights given as flat "eigenvectors" restricted to layer 1 (ravel order W, b).
    e = np.zeros((2, 5))
    e[0, 2], e[1, 0] = 1.0, 1.0
    eig, = ls.direction_slices(spec, params, X, y, [{"d1": e[0], "d2": e[1], "slice": "eig", "scope": "layer1",
                                                     "extent": 0.5}], n_points=21)
    np.testing.assert_allclose(eig.loss, sl.loss, rtol=0, atol=1e-10)
    np.testing.assert_allclose(eig.ggn, sl.ggn, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm,activation", [("none", "relu"), ("batchnorm", "tanh"), ("layernorm", "relu")])
def test_lecture_fast_path_equals_generic(norm, activation):
    spec = model.ModelSpec(sizes=(3, 5, 2), norm=norm, activation=activation)
    params = _init(spec, 3)
    X = _normal(4, (24, 3), np.array([4.0, 1.0, 0.2]))
    y = _labels(5, 24, 2)
    alphas, betas = ls.grid_axes(7, 1.5)
    loss_fn = _loss_fn(spec)
    for l, (j, hi, lo) in ((1, (2, 0, 2)), (2, (1, 3, 0))):  # a hidden layer, then the output layer
        fast = ls.lecture_grid(spec, params, X, y, l, j, hi, lo, alphas, betas, 16)
        d1, d2 = ls.lecture_directions(params, l, j, hi, lo)
        generic = ls.evaluate_grid(loss_fn, params, d1, d2, alphas, betas, args=(X, y))
        np.testing.assert_allclose(np.asarray(fast), np.asarray(generic), rtol=0, atol=1e-10)
    # model_grid (first touched layer linear) on directions restricted to layer 1, every array moving
    # (W, b, gamma, beta), and on whole-model directions
    rng = np.random.default_rng(20)
    noise = [jax.tree_util.tree_map(lambda x: jnp.asarray(0.3 * rng.normal(size=x.shape)), params)
             for _ in range(2)]
    for layer in ("layer1", None):
        d1, d2 = (ls.embed_direction(d, params, layer) for d in noise)
        generic = ls.evaluate_grid(loss_fn, params, d1, d2, alphas, betas, args=(X, y))
        aware = ls.model_grid(spec, params, X, y, d1, d2, alphas, betas, chunk_size=8)
        np.testing.assert_allclose(np.asarray(aware), np.asarray(generic), rtol=0, atol=1e-10)
    if norm == "batchnorm":
        # the per-unit GGN blocks of the fast path equal the generic projected GGN
        blocks = ls.lecture_ggn_blocks(spec, params, X, 1, 0, 2)
        for j in (0, 3):
            d1, d2 = ls.lecture_directions(params, 1, j, 0, 2)
            np.testing.assert_allclose(blocks[j], _model_ggn(spec, params, X, y, [d1, d2]),
                                       rtol=1e-10, atol=1e-14)
    if norm == "none":
        # vectorized grid == plain per-point loop over the same grid
        d1, d2 = ls.random_directions(params, jax.random.PRNGKey(6))
        grid = ls.evaluate_grid(_loss_fn(spec), params, d1, d2, alphas, betas, args=(X, y), chunk_size=10)
        loop = _grid_loop(_loss_fn(spec), params, d1, d2, alphas, betas, args=(X, y))
        np.testing.assert_allclose(np.asarray(grid), loop, rtol=0, atol=1e-10)


def test_lecture_raw_1000_to_1_vs_standardized():
    # The lecture's slide: two features whose scales differ 1000:1 make the contours in (w_1, w_2)
    # ellipses with axis ratio ~1000; standardizing the features makes them ~round.
    rng = np.random.default_rng(7)
    X_raw = rng.normal(size=(200, 2)) * np.array([1000.0, 1.0]) + np.array([3000.0, 2.0])
    X_std = (X_raw - X_raw.mean(0)) / X_raw.std(0)
    X_raw = X_raw - X_raw.mean(0)  # centred, so the bias does not couple in; scales unchanged
    ratios = {}
    for name, X in (("raw", X_raw), ("std", X_std)):
        spec, params, y = _linear_mse(jnp.asarray(X), w_scale=1e-3)
        row = ls.slice_row(ls.lecture_slice(spec, params, X, y, 1, n_points=21, extent=1.0))
        ratios[name] = (row["axis_ratio_ggn"], row["axis_ratio_levelset"])
        exact = _true_ratio(X.T @ X)  # the slice is all of W: its Hessian is 2 X^T X / m
        assert row["axis_ratio_ggn"] == pytest.approx(exact, rel=1e-9)
        assert row["axis_ratio_levelset"] == pytest.approx(exact, rel=1e-4)
    assert 900 < ratios["raw"][0] < 1100
    assert 1.0 <= ratios["std"][0] < 1.2  # sample correlation of 200 independent draws is ~0.07


def test_levelset_tracks_ggn_on_logistic_regression():
    # Logistic regression: J is convex and its Hessian equals the GGN (f is linear), but J is not
    # quadratic and the centre is not a minimum. The fit then also sees third-order terms, whose share
    # of the fitted curvature grows in proportion to the grid's half-width r: so the level-set ratio
    # must approach the GGN ratio linearly as r shrinks (error at r = 0.02 about a fifth of r = 0.1),
    # and be within 1% at r = 0.02 (0.4% on this problem), 5% at r = 0.1 (1.2% on this problem).
    rng = np.random.default_rng(8)
    X = jnp.asarray(rng.normal(size=(300, 2)) * np.array([3.0, 0.5]))
    y = jnp.asarray((rng.random(300) < 0.5).astype(np.int32))
    spec = model.ModelSpec(sizes=(2, 2), loss="softmax_cross_entropy")
    params = _init(spec, 9)
    err = {}
    for r in (0.1, 0.02):
        row = ls.slice_row(ls.lecture_slice(spec, params, X, y, 1, n_points=21, extent=r), delta=0.3)
        assert row["axis_ratio_ggn"] > 3
        err[r] = abs(row["axis_ratio_levelset"] / row["axis_ratio_ggn"] - 1)
    assert err[0.1] < 0.05 and err[0.02] < 0.01
    assert err[0.02] < 0.4 * err[0.1]


def _flags(row):
    return {k for k in ("censored", "flat_direction", "degenerate") if row[k]}


def _assert_row_consistent(row):
    """The flags are exclusive, singular is their union, and the ratio is finite unless the row is
    flat_direction or degenerate (the bound itself on a censored row)."""
    flags = _flags(row)
    assert len(flags) <= 1 and row["singular"] is bool(flags)
    assert all(type(row[k]) is bool for k in ("singular", "censored", "flat_direction", "degenerate"))
    assert np.isfinite(row["axis_ratio_ggn"]) is not bool(flags & {"flat_direction", "degenerate"})


def test_ggn_coupling_known_answers_and_the_rows_column():
    # |M12| / sqrt(M11 M22): the cosine of the two directions' angle in the metric M, whatever the scales
    assert ls.ggn_coupling(np.array([[4.0, -1.0], [-1.0, 1.0]])) == pytest.approx(0.5, rel=1e-15)
    assert ls.ggn_coupling(np.array([[1e6, 0.3e3], [0.3e3, 1.0]])) == pytest.approx(0.3, rel=1e-12)
    assert ls.ggn_coupling(np.diag([7.0, 1e-9])) == 0.0
    assert ls.ggn_coupling(np.array([[4.0, 2.0], [2.0, 1.0]])) == pytest.approx(1.0)  # rank one
    # the inputs' uncentred correlation for a second-moment matrix (the depth-0 slide at W = 0)
    x = np.random.default_rng(0).normal(size=(200, 2)) * [3.0, 0.1] + [1.0, 0.0]
    M = x.T @ x / len(x)
    expected = abs(np.mean(x[:, 0] * x[:, 1])) / math.sqrt(np.mean(x[:, 0] ** 2) * np.mean(x[:, 1] ** 2))
    assert ls.ggn_coupling(M) == pytest.approx(expected, rel=1e-12)
    for M in (np.diag([0.0, 1.0]), np.diag([1.0, -1.0]), np.full((2, 2), np.nan)):
        assert math.isnan(ls.ggn_coupling(M))
    # the row's column: the GGN's coupling; NaN on flat and degenerate rows (their ratio is NaN too)
    sl = ls.ContourSlice("eig", "model", np.zeros(3), np.zeros(3), np.zeros((3, 3)), np.zeros(2),
                         np.array([[4.0, 1.8], [1.8, 1.0]]), 0.0)
    assert ls.slice_row(sl)["ggn_coupling"] == pytest.approx(0.9, rel=1e-12)
    for field in ("flat_direction", "degenerate"):
        assert math.isnan(ls.slice_row(dataclasses.replace(sl, **{field: True}))["ggn_coupling"])


def test_axis_ratio_censoring_at_the_bound():
    # float64's rel_tol is 1e-12: lambda_min / lambda_max at (diag(1, 1e-12) exactly) or below it is censored,
    # the ratio then the bound 1e6; just above it the ratio is measured
    assert ls.default_rel_tol(np.float64) == 1e-12
    for lam_min, censored in ((0.0, True), (-1e-9, True), (0.5e-12, True), (1e-12, True), (1.1e-12, False)):
        g = ls.axis_ratio_2x2(np.diag([1.0, lam_min]))
        assert (g.censored, g.no_curvature) == (censored, False), lam_min
        assert g.ratio == (1e6 if censored else pytest.approx(1 / math.sqrt(lam_min), rel=1e-12))
    # a given rel_tol moves the bound; a matrix without curvature is never censored
    assert ls.axis_ratio_2x2(np.diag([1.0, 0.9e-6]), rel_tol=1e-6).ratio == 1e3
    assert ls.axis_ratio_2x2(np.diag([1.0, 1.1e-6]), rel_tol=1e-6).ratio == pytest.approx(1 / math.sqrt(1.1e-6))
    for M in (np.zeros((2, 2)), -np.eye(2), np.full((2, 2), np.nan)):
        g = ls.axis_ratio_2x2(M)
        assert g.no_curvature and not g.censored and math.isnan(g.ratio)
    assert ls.axis_ratio_2x2(np.diag([1e6, 1.0])).ratio == pytest.approx(1e3, rel=1e-12)
    assert ls.axis_ratio_2x2(np.ones((2, 2))).censored  # rank one, with curvature: censored
    # the row: a censored ratio is kept (counts as elongated), a flat or degenerate plane's is not
    sl = ls.ContourSlice("eig", "model", np.zeros(3), np.zeros(3), np.zeros((3, 3)), np.zeros(2),
                         np.diag([2.0, 1e-13]), 0.0)
    assert _flags(ls.slice_row(sl)) == {"censored"} and ls.slice_row(sl)["axis_ratio_ggn"] == 1e6
    for field in ("flat_direction", "degenerate"):
        row = ls.slice_row(dataclasses.replace(sl, **{field: True}))
        assert _flags(row) == {field} and math.isnan(row["axis_ratio_ggn"])
        _assert_row_consistent(row)
    both = ls.slice_row(dataclasses.replace(sl, flat_direction=True, degenerate=True))
    assert _flags(both) == {"degenerate"}
    zero = ls.slice_row(dataclasses.replace(sl, ggn=np.zeros((2, 2)), flat_direction=True))
    assert _flags(zero) == {"degenerate"}  # no curvature at all: nothing to measure
    normal = ls.slice_row(dataclasses.replace(sl, ggn=np.diag([4.0, 1.0])))
    assert not _flags(normal) and normal["axis_ratio_ggn"] == pytest.approx(2.0) and not normal["singular"]


@pytest.mark.parametrize("scale", [1.0, 2.0])
def test_exactly_rank_one_slice_is_censored_and_counted(scale):
    # Two input features with x2 = scale * x1 exactly: the lecture slice's two weights move the logits along
    # one direction, so its 2x2 GGN has rank one (det exactly zero): censored at the bound, not dropped.
    spec = model.ModelSpec(sizes=(2, 3), loss="softmax_cross_entropy")
    params = _init(spec, 40)
    x = np.random.default_rng(41).normal(size=64)
    X = np.stack([x, scale * x], axis=1)
    y = _labels(42, 64, 3)
    sl = ls.lecture_slice(spec, params, X, y, 1, n_points=5, extent=0.5)
    row = ls.slice_row(sl)
    assert {sl.info["input_hi"], sl.info["input_lo"]} == {0, 1}
    assert _flags(row) == {"censored"} and row["singular"]
    assert row["axis_ratio_ggn"] == 1e6 and np.isfinite(row["axis_ratio_ggn"])
    assert row["lambda_max_ggn"] > 0 and row["lambda_min_ggn"] <= 1e-12 * row["lambda_max_ggn"]
    _assert_row_consistent(row)
    if scale == 1.0:
        # two parallel eigenvector directions are no plane: degenerate, although the 2x2 is as rank-one
        d = ls.random_directions(params, np.array([0, 1]))[0]
        for d2, flags in ((jax.tree_util.tree_map(lambda x: -3.0 * x, d), {"degenerate"}),
                          (ls.random_directions(params, np.array([0, 2]))[0], set())):
            eig, = ls.direction_slices(spec, params, X, y, [{"d1": d, "d2": d2, "slice": "eig", "scope": "model",
                                                             "extent": 0.5}], n_points=3)
            assert _flags(ls.slice_row(eig)) == flags


def test_dead_unit_and_single_input_slices_are_degenerate():
    # Unit 0 of layer 1 is dead on the whole batch (positive inputs, negative weights and bias): its incoming
    # weights do not affect J, its 2x2 GGN is zero.
    spec = model.ModelSpec(sizes=(3, 4, 1), loss="mse", activation="relu")
    params = _init(spec, 10)
    params["layer1"]["W"] = params["layer1"]["W"].at[:, 0].set(-1.0)
    params["layer1"]["b"] = params["layer1"]["b"].at[0].set(-1.0)
    X = jnp.asarray(np.random.default_rng(11).random((32, 3)) * np.array([5.0, 1.0, 0.1]))
    y = jnp.asarray(np.random.default_rng(12).normal(size=32))
    dead = ls.slice_row(ls.lecture_slice(spec, params, X, y, 1, n_points=3, extent=0.01, unit=0))
    assert _flags(dead) == {"degenerate"} and math.isnan(dead["axis_ratio_ggn"]) and dead["lambda_max_ggn"] == 0
    # Unit 1 is dead by the threshold (output RMS ~1e-8 < 1e-6: active on one example by 1e-7) although its
    # weights still move J there: degenerate too, as layer_inputs counts it dead
    z = np.asarray(X @ params["layer1"]["W"][:, 1])
    nearly = params["layer1"]["b"].at[1].set(1e-7 - z.max())
    p2 = {**params, "layer1": {**params["layer1"], "b": nearly}}
    sl = ls.lecture_slice(spec, p2, X, y, 1, n_points=3, extent=0.01, unit=1)
    row = ls.slice_row(sl)
    assert row["lambda_max_ggn"] > 0 and _flags(row) == {"degenerate"}
    live = ls.slice_row(ls.lecture_slice(spec, p2, X, y, 1, n_points=3, extent=0.01, unit=2))
    assert not _flags(live) and np.isfinite(live["axis_ratio_ggn"])
    # the default unit choice skips the dead unit; the layer-2 slice never uses the dead input
    sl2 = ls.lecture_slice(spec, params, X, y, 2, n_points=3, extent=0.01)
    assert not sl2.info["live"][0]
    assert 0 not in (sl2.info["input_hi"], sl2.info["input_lo"])
    assert not _flags(ls.slice_row(sl2))
    # one live input (features 1 and 2 zero): hi == lo, no plane
    X1 = X.at[:, 1:].set(0.0)
    one = ls.lecture_slice(spec, params, X1, y, 1, n_points=3, extent=0.01)
    assert one.info["input_hi"] == one.info["input_lo"] == 0
    assert _flags(ls.slice_row(one)) == {"degenerate"}


def test_choose_unit_hand_computed_gauss_newton_traces():
    # J = mean((sum_j relu(x W[:, j] + b_j) w2_j + b2 - y)^2) with positive inputs: units 1..3 are linear on
    # the batch, unit 0 dead (negative weights and bias). The GGN block of unit j on (W[hi, j], W[lo, j]) is
    # 2 w2_j^2 X_[hi,lo]^T X_[hi,lo] / m (the output Hessian is 2/m), zero for the dead unit: traces
    # proportional to w2_j^2 = (25 dead, 1, 9, 4), so unit 2 has the largest and unit 0 the smallest.
    spec = model.ModelSpec(sizes=(2, 4, 1), loss="mse", activation="relu")
    rng = np.random.default_rng(43)
    X = jnp.asarray(rng.random((16, 2)) * np.array([3.0, 0.5]) + 0.1)
    W1 = jnp.asarray(np.abs(rng.normal(size=(2, 4))) + 0.1).at[:, 0].set(-1.0)
    params = {"layer1": {"W": W1, "b": jnp.asarray([-1.0, 0.1, 0.2, 0.3])},
              "layer2": {"W": jnp.asarray([[5.0], [1.0], [3.0], [2.0]]), "b": jnp.asarray([0.1])}}
    hi, lo = ls.pick_hi_lo(ls.input_rms(X))
    assert (int(hi), int(lo)) == (0, 1)
    blocks = np.asarray(ls.lecture_ggn_blocks(spec, params, X, 1, hi, lo))
    XtX = np.asarray(X.T @ X) / 16
    expected = np.stack([2 * w ** 2 * XtX for w in (0.0, 1.0, 3.0, 2.0)])
    np.testing.assert_allclose(blocks, expected, rtol=1e-12, atol=1e-15)
    assert int(ls.choose_unit(blocks)) == 2
    y = jnp.asarray(rng.normal(size=16))
    assert ls.lecture_slice(spec, params, X, y, 1, n_points=3, extent=0.1).info["unit"] == 2
    # the trace decides, not the first weight's curvature nor roundness; a non-finite block never wins
    synthetic = np.array([np.diag([3.6, 0.0]), np.diag([3.5, 0.6]), np.diag([2.0, 2.0]), np.full((2, 2), np.nan)])
    assert int(ls.choose_unit(synthetic)) == 1


def test_ggn_keeps_precision_on_a_saturated_softmax():
    # Logistic regression on two classes whose logits differ by at least 80 on every example: p_1 <= e^-80 ~
    # 2e-35, and per example u^T H v = p_0 p_1 (u_0 - u_1)(v_0 - v_1) / m (u = the logits' change along a
    # direction), a number that diag(p) - p p^T, even in float64, loses to cancellation (p_0 u_0 ~ 1).
    spec = model.ModelSpec(sizes=(2, 2), loss="softmax_cross_entropy")
    rng = np.random.default_rng(45)
    m = 8
    X = (np.abs(rng.normal(size=(m, 2))) + 1.0).astype(np.float32)
    W = np.array([[20.0, -20.0], [20.0, -20.0]])
    params = {"layer1": {"W": jnp.asarray(W, jnp.float32), "b": jnp.zeros(2, jnp.float32)}}
    out = np.asarray(X, np.float64) @ W
    dirs = [{"layer1": {"W": rng.normal(size=(2, 2)), "b": rng.normal(size=2)}} for _ in range(2)]
    U = [np.asarray(X, np.float64) @ d["layer1"]["W"] + d["layer1"]["b"] for d in dirs]
    gap = out[:, 0] - out[:, 1]
    p0p1 = np.exp(-np.abs(gap)) / (1 + np.exp(-np.abs(gap))) ** 2
    dU = np.stack([u[:, 0] - u[:, 1] for u in U])
    exact = (dU * p0p1) @ dU.T / m
    assert exact.max() < 1e-30
    np.testing.assert_allclose(ls.model_ggn(spec, params, X, dirs), exact, rtol=1e-10)
    generic = ls.projected_ggn(lambda p: model.forward(spec, p, jnp.asarray(X, F64)),
                               lambda o: model.loss_from_outputs(spec, o, jnp.zeros(m, int)),
                               jax.tree_util.tree_map(lambda x: jnp.asarray(x, F64), params), dirs)
    assert not np.allclose(generic, exact, rtol=0.1, atol=0)  # the Hessian-vector products lose it
    # shift-invariance: moving every logit of an example by the same C (the softmax's flat direction) changes
    # nothing, exactly, even for C = 2^40 on changes of order 1 (representable: multiples of 2^-10), since the
    # logits' changes enter only as differences to the most probable class
    delta = jnp.asarray(rng.integers(-1000, 1000, size=(2, m, 2)) / 1024.0)
    moderate = jnp.asarray(rng.normal(size=(m, 2)))
    np.testing.assert_allclose(ls.loss_gram("softmax_cross_entropy", moderate, delta + 2.0 ** 40),
                               ls.loss_gram("softmax_cross_entropy", moderate, delta), rtol=1e-13)
    # mse: the mean over all m n_out entries, so H = 2 / (m n_out) I
    Uj = jnp.asarray(np.stack(U))
    np.testing.assert_allclose(ls.loss_gram("mse", out, Uj), 2 / (2 * m) * np.einsum("imk,jmk->ij", Uj, Uj),
                               rtol=1e-14)


def _host(params):
    return jax.tree_util.tree_map(np.asarray, params)


def _radial(params, l, j, live=None):
    """Unit j's own incoming weight vector W[l][:, j] (live rows only if given) as a direction pytree."""
    col = np.asarray(params[f"layer{l}"]["W"])[:, j] * (1.0 if live is None else live)
    W = np.zeros_like(np.asarray(params[f"layer{l}"]["W"]))
    W[:, j] = col
    return ls.embed_direction({f"layer{l}": {"W": W}}, params)


def test_plane_geometry_finds_the_exact_flat_directions():
    """plane_geometry on the host: a plane holds a flat direction when some direction in it lies within
    sin^2 <= 1e-8 of F (BN units' own weight vectors over live inputs, LN's layer scale and shifts, the
    softmax's logit shift); d1 parallel to d2 is no plane."""
    rng = np.random.default_rng(50)

    def noise(params, layer=None):
        return ls.embed_direction(jax.tree_util.tree_map(lambda x: rng.normal(size=np.shape(x)), params), params,
                                  layer)

    def flat(spec, params, d1, d2, live=None):
        g = ls.plane_geometry(spec, _host(params), d1, d2, live)
        assert g.spans_plane
        return g.holds_flat

    bn = model.ModelSpec(sizes=(3, 4, 4, 2), norm="batchnorm")
    params = _host(_init(bn, 51))
    r, e = _radial(params, 1, 2), noise(params, "layer1")
    assert flat(bn, params, r, e) and flat(bn, params, e, r)
    mixed = jax.tree_util.tree_map(lambda a, b: 0.6 * a + 0.8 * b, r, e)
    assert flat(bn, params, mixed, e)  # the plane, not either direction, holds it
    assert not flat(bn, params, noise(params), noise(params))
    # either side of the tolerance: the plane of g (a gain direction, orthogonal to F) and r/|r| + s q, q a unit
    # vector in unit 2's column orthogonal to its weights, holds directions at sin^2 = s^2 / (1 + s^2) from F
    g = ls.embed_direction({"layer1": {"gamma": np.ones(4)}}, params)
    col = np.asarray(params["layer1"]["W"])[:, 2]
    q = np.linalg.svd(col[None, :])[2][1]  # orthogonal to col
    for s2, holds in ((0.5e-8, True), (2e-8, False)):
        bent = np.zeros((3, 4))
        bent[:, 2] = col / np.linalg.norm(col) + math.sqrt(s2) * q
        assert flat(bn, params, ls.embed_direction({"layer1": {"W": bent}}, params), g) is holds, s2
    # a dead input's weight is not part of the flat direction: with input 0 dead the radial direction over the
    # live inputs is flat, the full column is not
    live = {1: np.array([False, True, True])}
    assert flat(bn, params, _radial(params, 1, 2, live[1]), e, live)
    assert not flat(bn, params, _radial(params, 1, 2), e, live)
    assert not flat(bn, params, _radial(params, 1, 2, live[1]), e)
    # the same column under no normalization, or in BN's output layer, is no symmetry
    none = model.ModelSpec(sizes=(3, 4, 4, 2), loss="mse")
    p_none = _host(_init(none, 52))
    assert not flat(none, p_none, _radial(p_none, 1, 2), noise(p_none, "layer1"))
    assert not flat(bn, params, _radial(params, 3, 1), noise(params, "layer3"))
    # softmax cross-entropy: shifting every logit of an example by the same amount (W[L] += u 1^T, b[L] += c)
    shift = ls.embed_direction({"layer3": {"W": np.outer(rng.normal(size=4), np.ones(2)), "b": np.ones(2)}}, params)
    assert flat(bn, params, shift, noise(params, "layer3"))
    mse = model.ModelSpec(sizes=(3, 4, 4, 2), norm="batchnorm", loss="mse")
    assert not flat(mse, params, shift, noise(params, "layer3"))
    # layer norm: the layer's whole (W, b) and the shifts of all its units, not one unit's column
    ln = model.ModelSpec(sizes=(3, 4, 4, 2), norm="layernorm")
    p_ln = _host(_init(ln, 53))
    whole = ls.embed_direction({"layer2": {"W": p_ln["layer2"]["W"], "b": p_ln["layer2"]["b"]}}, p_ln)
    ln_shift = ls.embed_direction({"layer2": {"W": np.outer(rng.normal(size=4), np.ones(4))}}, p_ln)
    assert flat(ln, p_ln, whole, noise(p_ln, "layer2")) and flat(ln, p_ln, ln_shift, noise(p_ln, "layer2"))
    assert not flat(ln, p_ln, _radial(p_ln, 2, 1), noise(p_ln, "layer2"))
    # parallel or zero directions span no plane
    for d2 in (jax.tree_util.tree_map(lambda x: -2.0 * x, e), jax.tree_util.tree_map(np.zeros_like, e)):
        g = ls.plane_geometry(bn, params, e, d2)
        assert not g.spans_plane and not g.holds_flat


@functools.partial(jax.jit, static_argnames=("spec",))
def _dense_ggn(spec, params, X, d1, d2):
    """Reference 2x2 GGN in float64, independent of normlab.landscape: the Jacobian of the outputs with
    respect to the plane's coordinates (a, b) by jax.jacfwd, and the mean softmax cross-entropy's Hessian on
    the outputs in closed form, (diag(p_n) - p_n p_n^T) / m per example."""
    p64, d1, d2 = (jax.tree_util.tree_map(lambda x: jnp.asarray(x, F64), t) for t in (params, d1, d2))
    X64 = jnp.asarray(X, F64)

    def f(c):
        return model.forward(spec, jax.tree_util.tree_map(lambda w, a, b: w + c[0] * a + c[1] * b, p64, d1, d2), X64)

    J = jax.jacfwd(f)(jnp.zeros(2, F64))  # (m, K, 2)
    p = jax.nn.softmax(f(jnp.zeros(2, F64)), axis=-1)
    H = (jax.vmap(jnp.diag)(p) - p[:, :, None] * p[:, None, :]) / p.shape[0]
    return jnp.einsum("nka,nkl,nlb->ab", J, H, J)


def test_contour_rows_flags_and_float64_ggn_on_a_float32_bn_model():
    """A float32 BN model on two input features: every unit of layer 1 has exactly two live inputs, so the
    layer-1 lecture plane is the unit's own weight plane (flat_direction, not projected); layer 2's is
    projected orthogonally to its unit's weights; the other slices are normal, and
    their 2x2 GGNs (float64 from float32 parameters) equal a dense float64 J^T H J to 1e-9 on a confident
    model (loss 0.034; products of float32 forward-mode outputs miss by ~1e-6 relative)."""
    spec = model.ModelSpec(sizes=(2, 4, 4, 3), norm="batchnorm", activation="tanh")
    params = _init(spec, 60)
    X = np.random.default_rng(61).normal(size=(48, 2)) * np.array([3.0, 0.3])
    out = model.forward(spec, params, jnp.asarray(X))
    params["layer3"]["W"] = params["layer3"]["W"] * (12.0 / float(jnp.std(out)))
    y = np.asarray(jnp.argmax(model.forward(spec, params, jnp.asarray(X)), axis=-1))
    p32 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float32), params)
    X32 = X.astype(np.float32)
    d = ls.random_directions(p32, np.array([7, 0]))
    rows, grids = ls.contour_slices(spec, p32, X32, y, {"grid_points": 3, "extent": 0.1, "seed": 7},
                                    eig_model=d, eig_layers={"layer2": ls.random_directions(p32, np.array([8, 2]),
                                                                                            ["layer2"])})
    assert float(model.loss(spec, p32, X32, y)) < 0.05
    by = {(r["slice"], r["scope"]): r for r in rows}
    for r in rows:
        _assert_row_consistent(r)
        assert set(r) == set(ls.ROW_KEYS)
    assert _flags(by["lecture", "layer1"]) == {"flat_direction"}
    assert math.isnan(by["lecture", "layer1"]["axis_ratio_ggn"])
    normal = [k for k in by if k != ("lecture", "layer1")]
    assert all(not _flags(by[k]) for k in normal)
    # every 2x2 against the dense float64 reference, along the slice's own directions
    planes = {("eig", "model"): [ls.normalize_direction(x) for x in d],
              ("eig", "layer2"): [ls.normalize_direction(ls.embed_direction(x, p32, "layer2"))
                                  for x in ls.random_directions(p32, np.array([8, 2]), ["layer2"])],
              ("random", "model"): ls.random_directions(p32, np.array([7, 0]))}
    for l in (1, 2, 3):
        r = by["lecture", f"layer{l}"]
        live = grids[f"lecture.layer{l}.input_rms"] > 1e-6
        d1, d2, projected, in_plane = ls.lecture_plane(spec, p32, l, r["unit"], r["input_hi"], r["input_lo"], live)
        # layer 1: a BN unit with two inputs holds its own weight vector; layer 2: a BN unit with four inputs,
        # sliced orthogonally to its weights; layer 3: the output layer, no group
        assert (projected, in_plane, r["projected"]) == ((False, True, False), (True, False, True),
                                                         (False, False, False))[l - 1]
        planes["lecture", f"layer{l}"] = (d1, d2)
    for key, (d1, d2) in planes.items():
        ref = np.asarray(_dense_ggn(spec, p32, X32, d1, d2))
        got = grids[f"{key[0]}.{key[1]}.ggn"]
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max(), err_msg=str(key))
        lam = np.linalg.eigvalsh(ref)
        assert by[key]["lambda_min_ggn"] == pytest.approx(lam[0], rel=1e-8, abs=1e-12 * lam[1]), key
        if key != ("lecture", "layer1"):
            assert by[key]["axis_ratio_ggn"] == pytest.approx(math.sqrt(lam[1] / lam[0]), rel=1e-7), key
            coupling = abs(ref[0, 1]) / math.sqrt(ref[0, 0] * ref[1, 1])
            assert by[key]["ggn_coupling"] == pytest.approx(coupling, rel=1e-7, abs=1e-9), key


def test_filter_normalized_directions():
    spec = model.ModelSpec(sizes=(6, 5, 4, 3), norm="batchnorm")
    params = _init(spec, 13)
    d1, d2 = ls.random_directions(params, jax.random.PRNGKey(14))
    for name, p in params.items():
        for d in (d1, d2):
            np.testing.assert_allclose(np.linalg.norm(d[name]["W"], axis=0), np.linalg.norm(p["W"], axis=0),
                                       rtol=1e-12)
            assert d[name]["W"].dtype == F64
            for k in p:
                if k != "W":
                    assert not np.any(np.asarray(d[name][k]))
    assert not np.allclose(d1["layer1"]["W"], d2["layer1"]["W"])
    again = ls.random_directions(params, jax.random.PRNGKey(14))
    np.testing.assert_array_equal(again[1]["layer2"]["W"], d2["layer2"]["W"])
    only2 = ls.random_directions(params, jax.random.PRNGKey(14), layers=["layer2"])
    assert not np.any(np.asarray(only2[0]["layer1"]["W"]))
    np.testing.assert_array_equal(only2[0]["layer2"]["W"], d1["layer2"]["W"])  # independent of `layers`


def test_contour_slices_rows_and_grids():
    spec = model.ModelSpec(sizes=(3, 4, 2), norm="batchnorm", activation="relu")
    params = _init(spec, 16)
    X = _normal(17, (20, 3))
    y = _labels(18, 20, 2)
    d1, d2 = ls.random_directions(params, jax.random.PRNGKey(19))
    layer2 = {"W": params["layer2"]["W"], "b": params["layer2"]["b"]}
    rows, grids = ls.contour_slices(spec, params, X, y, {"grid_points": 7, "extent": {"lecture": 0.5,
                                    "eig": 1.0, "random": 0.5}},
                                    eig_model=(d1, d2), eig_layers={"layer2": (layer2, d1["layer2"])})
    expected = [("lecture", "layer1"), ("lecture", "layer2"), ("eig", "model"), ("eig", "layer2"),
                ("random", "model")]
    assert [(r["slice"], r["scope"]) for r in rows] == expected
    for r in rows:
        assert set(r) == set(ls.ROW_KEYS)
        assert r["singular"] or r["axis_ratio_ggn"] >= 1
        _assert_row_consistent(r)
    assert grids["lecture.layer1.loss"].shape == (7, 7)
    assert grids["random.model.alphas"][-1] == pytest.approx(0.5)
    assert grids["eig.layer2.loss"][3, 3] == pytest.approx(rows[0]["loss_center"], rel=1e-12)
    assert grids["lecture.layer2.indices"].tolist()[0] == rows[1]["unit"]
    with pytest.raises(ValueError):
        ls.ContourConfig.from_mapping({"grid_pts": 3})


def test_contour_slices_without_grids_give_the_same_rows_but_the_level_set_fit():
    """grid=False (the seeds whose pictures the report does not draw): every slice's row, its GGN roundness and
    flags as with the grid, the level-set fit not measured, and no grid of J among the arrays."""
    spec = model.ModelSpec(sizes=(3, 4, 2), norm="batchnorm", activation="relu")
    params = _init(spec, 16)
    X, y = _normal(17, (20, 3)), _labels(18, 20, 2)
    d1, d2 = ls.random_directions(params, jax.random.PRNGKey(19))
    cfg = {"grid_points": 7, "extent": {"lecture": 0.5, "eig": 1.0, "random": 0.5}}
    with_grid, grids = ls.contour_slices(spec, params, X, y, cfg, eig_model=(d1, d2))
    rows, arrays = ls.contour_slices(spec, params, X, y, cfg, eig_model=(d1, d2), grid=False)
    fit = {"axis_ratio_levelset", "levelset_misfit", "levelset_rel_err"}
    assert len(rows) == len(with_grid) == 4
    assert any(np.isfinite(r["axis_ratio_levelset"]) for r in with_grid)  # the fit that grid=False leaves out
    for r, ref in zip(rows, with_grid, strict=True):
        assert all(math.isnan(r[k]) for k in fit)
        for k in set(ls.ROW_KEYS) - fit:
            if isinstance(ref[k], float) and math.isnan(ref[k]):
                assert math.isnan(r[k]), k
            elif isinstance(ref[k], float):
                assert r[k] == pytest.approx(ref[k], rel=1e-12), k
            else:
                assert r[k] == ref[k], k
    assert not [k for k in arrays if k.endswith(".loss")] and [k for k in grids if k.endswith(".loss")]
    assert set(arrays) == {k for k in grids if not k.endswith(".loss")}
    np.testing.assert_array_equal(arrays["eig.model.ggn"], grids["eig.model.ggn"])


def test_shared_log_scale():
    a = np.array([[1.0, 2.0], [11.0, 1001.0]])
    b = a + 5.0
    vmin, vmax = ls.shared_log_scale([a, b * 10])
    assert vmin == pytest.approx(0.0) and vmax == pytest.approx(4.0)
    ex = ls.log_excess(a)
    assert ex[0, 0] == pytest.approx(0.0) and ex[1, 1] == pytest.approx(3.0)


def test_levelset_reports_nan_when_not_resolved():
    axis = np.linspace(-1.0, 1.0, 21)
    A, B = np.meshgrid(axis, axis, indexing="ij")
    ok = ls.levelset_axis_ratio(axis, axis, 4 * A**2 + B**2 + 0.3 * A)
    assert ok.ratio == pytest.approx(2.0, rel=1e-9)
    kink = ls.levelset_axis_ratio(axis, axis, np.abs(A) + 0.5 * np.abs(B))  # no quadratic to speak of
    assert math.isnan(kink.ratio) and kink.misfit > 0.2
    noise = 1e-9 * np.random.default_rng(0).normal(size=A.shape)
    flat = ls.levelset_axis_ratio(axis, axis, A**2 + 1e-12 * B**2 + noise)  # weak axis below the noise
    assert math.isnan(flat.ratio) and flat.rel_err > 0.2
    saddle = ls.levelset_axis_ratio(axis, axis, A**2 - 0.5 * B**2)
    assert math.isnan(saddle.ratio)


def test_batched_slices_equal_one_slice_at_a_time():
    """lecture_slices / direction_slices (one compiled program for all slices) give the same grids, 2x2
    GGNs and unit choices as lecture_slice / model_grid + the whole model's projected GGN per slice."""
    spec = model.ModelSpec(sizes=(3, 5, 4, 2), norm="batchnorm", activation="relu")
    params = _init(spec, 21)
    X, y = _normal(22, (24, 3), 2.0), _labels(23, 24, 2)
    batched = ls.lecture_slices(spec, params, X, y, n_points=5, extent=0.3)
    assert [s.scope for s in batched] == ["layer1", "layer2", "layer3"]
    for l, s in enumerate(batched, start=1):
        one = ls.lecture_slice(spec, params, X, y, l, n_points=5, extent=0.3)
        assert s.info["unit"] == one.info["unit"]
        np.testing.assert_allclose(s.loss, one.loss, rtol=1e-12)
        np.testing.assert_allclose(s.ggn, one.ggn, rtol=1e-12, atol=1e-15)
    d = ls.random_directions(params, jax.random.PRNGKey(24))
    e = ls.random_directions(params, jax.random.PRNGKey(25), layers=["layer2"])
    planes = [{"d1": d[0], "d2": d[1], "slice": "random", "scope": "model", "extent": 0.5, "normalize": False},
              {"d1": e[0], "d2": e[1], "slice": "eig", "scope": "layer2", "extent": 1.0}]
    slices = ls.direction_slices(spec, params, X, y, planes, n_points=5)
    for pl, s in zip(planes, slices, strict=True):
        d1 = ls.embed_direction(pl["d1"], params, None if pl["scope"] == "model" else pl["scope"])
        d2 = ls.embed_direction(pl["d2"], params, None if pl["scope"] == "model" else pl["scope"])
        if pl.get("normalize", True):
            d1, d2 = ls.normalize_direction(d1), ls.normalize_direction(d2)
        a, b = ls.grid_axes(5, pl["extent"])
        np.testing.assert_allclose(s.loss, ls.model_grid(spec, params, X, y, d1, d2, a, b), rtol=1e-12)
        np.testing.assert_allclose(s.ggn, _model_ggn(spec, params, X, y, [d1, d2]), rtol=1e-10, atol=1e-14)
        assert (s.slice, s.scope) == (pl["slice"], pl["scope"])


@pytest.mark.parametrize("norm,sizes", [("batchnorm", (3, 5, 5, 5, 2)), ("none", (3, 6, 6, 3)), ("none", (3, 5, 2))])
def test_layer_planes_equal_whole_model_planes(norm, sizes, monkeypatch):
    """With equal hidden widths, planes inside one hidden layer's W and b skip the layers below it
    (``ls_planes._layer_plane``, one program for every layer), and so do the output layer's (whatever the
    widths); grids, 2x2 GGNs and centre losses equal the whole-model evaluation (model_grid, projected GGN)
    for every layer."""
    # the default study's depth-8 model takes the layer path, the quick study's depth-3 one does not
    flops, threshold = ls_planes._plane_flops, ls_planes.LAYER_PLANE_MIN_FLOPS
    assert flops(model.ModelSpec(sizes=(64,) + (64,) * 8 + (10,)), 512, 21) >= threshold
    assert flops(model.ModelSpec(sizes=(2, 16, 16, 16, 2)), 256, 15) < threshold
    monkeypatch.setattr(ls_planes, "LAYER_PLANE_MIN_FLOPS", 0)  # these models are tiny: force the layer path
    spec = model.ModelSpec(sizes=sizes, norm=norm, activation="relu")
    params = _init(spec, 31)
    X, y = _normal(32, (24, 3), 2.0), _labels(33, 24, sizes[-1])
    planes = []
    for l in range(1, spec.n_layers + 1):
        p = params[f"layer{l}"]
        rng = np.random.default_rng(l)
        d = [{f"layer{l}": {k: rng.standard_normal(np.shape(v)) for k, v in p.items() if k in ("W", "b")}}
             for _ in range(2)]
        planes.append({"d1": d[0], "d2": d[1], "slice": "eig", "scope": f"layer{l}", "extent": 0.7})
        assert ls_planes._layer_of(spec, *(ls.embed_direction(x, params, f"layer{l}") for x in d)) == l
    slices = ls.direction_slices(spec, params, X, y, planes, n_points=5)
    for pl, s in zip(planes, slices, strict=True):
        d1, d2 = (ls.normalize_direction(ls.embed_direction(pl[k], params, pl["scope"])) for k in ("d1", "d2"))
        a, b = ls.grid_axes(5, pl["extent"])
        np.testing.assert_allclose(s.loss, ls.model_grid(spec, params, X, y, d1, d2, a, b), rtol=1e-11)
        np.testing.assert_allclose(s.ggn, _model_ggn(spec, params, X, y, [d1, d2]), rtol=1e-9, atol=1e-13)
        np.testing.assert_allclose(s.loss_center, float(model.loss(spec, params, X, y)), rtol=1e-12)
    # a plane touching two layers, or a normalization gain, runs the whole model
    two = ls.embed_direction({"layer1": {"W": np.ones((3, sizes[1]))}, "layer2": {"W": np.ones(sizes[1:3])}}, params)
    assert ls_planes._layer_of(spec, two, two) == 0
    if norm == "batchnorm":
        gain = ls.embed_direction({"layer1": {"gamma": np.ones(sizes[1])}}, params)
        assert ls_planes._layer_of(spec, gain, gain) == 0
    # unequal hidden widths: only the output layer's planes skip the layers below
    uneven = model.ModelSpec(sizes=(3, 5, 4, 2), norm=norm)
    p_uneven = _init(uneven, 34)
    for l in (1, 2, 3):
        d = ls.embed_direction({f"layer{l}": {"W": np.ones(uneven.sizes[l - 1:l + 1])}}, p_uneven)
        assert ls_planes._layer_of(uneven, d, d) == (3 if l == 3 else 0)


def _layer_vec(d, l):
    """Layer l's arrays of a direction pytree as one flat float64 vector (W, then b if present)."""
    p = d[f"layer{l}"]
    return np.concatenate([np.ravel(np.asarray(p[k], np.float64)) for k in ("W", "b") if k in p])


def _change_of_basis_ggn(spec, params, X, l, j, hi, lo, d1, d2):
    """The projected slice's 2x2 GGN from the block B on (e_hi, e_lo) (``lecture_ggn_blocks``): e_hi, e_lo lie
    in span{d1, d2, r} with G r = 0, so E = P M + r c^T, M = P^T E, and P^T G P = M^-T B M^-1."""
    B = np.asarray(ls.lecture_ggn_blocks(spec, params, X, l, hi, lo))[j]
    e1, e2 = ls.lecture_directions(params, l, j, hi, lo)
    P = np.stack([_layer_vec(d1, l), _layer_vec(d2, l)], axis=1)
    E = np.stack([_layer_vec(e1, l), _layer_vec(e2, l)], axis=1)
    Mi = np.linalg.inv(P.T @ E)
    return Mi.T @ B @ Mi


def _scaled(params, l, scale_fn):
    """params with layer l's arrays replaced by scale_fn(name, array)."""
    return {**params, f"layer{l}": {k: scale_fn(k, v) for k, v in params[f"layer{l}"].items()}}


def test_bn_unit_slice_is_projected_orthogonally_to_its_weights():
    """A batch-normalized unit with three live inputs (and a dead one): its lecture slice lies in the plane of
    e_hi, e_lo projected orthogonally to its incoming weights, orthonormalized (Gram-Schmidt, e_hi's first).
    Known answers: the directions; the grid is J along them; the GGN is the coordinate block in the new basis
    (the radial direction has none); scaling the unit's weights by c leaves the grid of extent c E equal to
    the grid of extent E and divides the GGN by c^2 (eps = 1e-12: J(c w) = J(w) to ~1e-12)."""
    spec = model.ModelSpec(sizes=(4, 5, 3), norm="batchnorm", activation="tanh", eps=1e-12)
    params = _init(spec, 70)
    X = _normal(71, (32, 4), np.array([3.0, 1.0, 0.3, 1.0])).at[:, 3].set(0.0)  # input 3 dead
    y = _labels(72, 32, 3)
    sl = ls.lecture_slice(spec, params, X, y, 1, n_points=5, extent=0.4)
    j, hi, lo = sl.info["unit"], sl.info["input_hi"], sl.info["input_lo"]
    assert (hi, lo) == (0, 2) and sl.info["live"].tolist() == [True, True, True, False]
    row = ls.slice_row(sl)
    assert sl.projected and row["projected"] is True and not _flags(row)
    np.testing.assert_array_equal(sl.origin, [0.0, 0.0])  # <w, d1> = <w, d2> = 0
    d1, d2, projected, in_plane = ls.lecture_plane(spec, params, 1, j, hi, lo, sl.info["live"])
    assert projected and not in_plane
    # the directions by hand: q1 = e_hi - (w_hi / |w|^2) w over the live inputs, q2 the same for e_lo, then
    # Gram-Schmidt; zero outside column j and on the dead input
    w = np.asarray(params["layer1"]["W"])[:, j] * [1, 1, 1, 0]
    q1 = np.eye(4)[hi] - w[hi] / (w @ w) * w
    p1 = q1 / np.linalg.norm(q1)
    q2 = np.eye(4)[lo] - w[lo] / (w @ w) * w
    q2 = q2 - (q2 @ p1) * p1
    for d, ref in ((d1, p1), (d2, q2 / np.linalg.norm(q2))):
        W = np.asarray(d["layer1"]["W"])
        np.testing.assert_allclose(W[:, j], ref, rtol=0, atol=1e-14)
        assert not np.any(np.delete(W, j, axis=1)) and W[3, j] == 0
        assert all(not np.any(np.asarray(x)) for k, x in d["layer1"].items() if k != "W")
        assert all(not np.any(np.asarray(x)) for name, p in d.items() if name != "layer1" for x in p.values())
    P = np.stack([_layer_vec(d1, 1), _layer_vec(d2, 1)])
    np.testing.assert_allclose(P @ P.T, np.eye(2), rtol=0, atol=1e-14)
    full_w = np.asarray(params["layer1"]["W"])[:, j]  # the dead input's weight included: still orthogonal
    np.testing.assert_allclose(P[:, :].reshape(2, 4, 5)[:, :, j] @ full_w, 0.0, atol=1e-14 * np.linalg.norm(full_w))
    # the fast-path grid is J along (d1, d2); the GGN is the coordinate block in the new basis
    alphas, betas = ls.grid_axes(5, 0.4)
    generic = ls.evaluate_grid(_loss_fn(spec), params, d1, d2, alphas, betas, args=(X, y))
    np.testing.assert_allclose(sl.loss, np.asarray(generic), rtol=1e-12)
    np.testing.assert_allclose(sl.ggn, _model_ggn(spec, params, X, y, [d1, d2]), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(sl.ggn, _change_of_basis_ggn(spec, params, X, 1, j, hi, lo, d1, d2), rtol=1e-8)
    # scale invariance: the unit's weights x c, the grid's extent x c
    c = 3.0
    scaled = _scaled(params, 1, lambda k, v: v.at[:, j].multiply(c) if k == "W" else v)
    big = ls.lecture_slice(spec, scaled, X, y, 1, n_points=5, extent=0.4 * c, unit=j)
    assert big.projected and (big.info["input_hi"], big.info["input_lo"]) == (hi, lo)
    np.testing.assert_allclose(big.loss, sl.loss, rtol=1e-9)
    np.testing.assert_allclose(big.ggn, sl.ggn / c**2, rtol=1e-8)
    # the batched path (the analysis') gives the same slice
    every = ls.lecture_slices(spec, params, X, y, n_points=5, extent=0.4)
    assert every[0].projected and not every[1].projected  # the output layer has no group
    np.testing.assert_allclose(every[0].loss, sl.loss, rtol=1e-12)
    np.testing.assert_allclose(every[0].ggn, sl.ggn, rtol=1e-12, atol=1e-15)


def test_ln_layer_slice_is_projected_orthogonally_to_the_layers_weights():
    """Under layer norm the group is the layer's (W, b) together: the slice's directions are orthonormal,
    orthogonal to (W[1], b[1]) as one vector (not to column j alone), and move W and b of every unit; the
    grid of extent c E after (W, b) x c equals the grid of extent E, the GGN divides by c^2."""
    spec = model.ModelSpec(sizes=(4, 5, 3), norm="layernorm", eps=1e-12)
    params = _init(spec, 73)
    X = _normal(74, (32, 4), np.array([3.0, 1.0, 0.3, 2.0]))
    y = _labels(75, 32, 3)
    sl = ls.lecture_slice(spec, params, X, y, 1, n_points=5, extent=0.4)
    j, hi, lo = sl.info["unit"], sl.info["input_hi"], sl.info["input_lo"]
    assert sl.projected and not sl.flat_direction and not sl.degenerate
    d1, d2, projected, _ = ls.lecture_plane(spec, params, 1, j, hi, lo)
    assert projected
    P = np.stack([_layer_vec(d1, 1), _layer_vec(d2, 1)])
    r = _layer_vec(params, 1)
    np.testing.assert_allclose(P @ P.T, np.eye(2), rtol=0, atol=1e-14)
    np.testing.assert_allclose(P @ r, 0.0, atol=1e-14 * np.linalg.norm(r))
    col = np.asarray(params["layer1"]["W"])[:, j]
    assert abs(P[0].reshape(-1)[:20].reshape(4, 5)[:, j] @ col) > 1e-3  # not orthogonal to the column alone
    assert np.any(np.asarray(d1["layer1"]["b"])) and np.count_nonzero(np.asarray(d1["layer1"]["W"])) == 20
    alphas, betas = ls.grid_axes(5, 0.4)
    generic = ls.evaluate_grid(_loss_fn(spec), params, d1, d2, alphas, betas, args=(X, y))
    np.testing.assert_allclose(sl.loss, np.asarray(generic), rtol=1e-12)
    np.testing.assert_allclose(sl.ggn, _change_of_basis_ggn(spec, params, X, 1, j, hi, lo, d1, d2), rtol=1e-8)
    c = 0.5
    scaled = _scaled(params, 1, lambda k, v: v * c if k in ("W", "b") else v)
    small = ls.lecture_slice(spec, scaled, X, y, 1, n_points=5, extent=0.4 * c, unit=j)
    np.testing.assert_allclose(small.loss, sl.loss, rtol=1e-9)
    np.testing.assert_allclose(small.ggn, sl.ggn / c**2, rtol=1e-8)
    every = ls.lecture_slices(spec, params, X, y, n_points=5, extent=0.4)
    assert every[0].info["unit"] == j and every[0].projected and not every[1].projected
    np.testing.assert_allclose(every[0].loss, sl.loss, rtol=1e-12)
    np.testing.assert_allclose(every[0].ggn, sl.ggn, rtol=1e-12, atol=1e-15)


def test_which_lecture_planes_are_projected():
    """On the host (``lecture_plane``): a BN unit whose weights lie in the plane of e_hi, e_lo (two inputs, or
    a third weight within sin^2 <= PLANE_TOL of it) keeps e_hi, e_lo and holds its flat direction (in_plane);
    just beyond the tolerance it is projected; no normalization, the output layer, a dead unit's zero weights
    and hi == lo are never projected."""
    bn = model.ModelSpec(sizes=(3, 2, 2), norm="batchnorm")
    params = _host(_init(bn, 76))
    for third, projected in ((0.0, False), (math.sqrt(2 * 0.5e-8), False), (math.sqrt(2 * 2e-8), True)):
        # sin^2 of the angle between w = (1, 1, t) and the plane of e_0, e_1 is t^2 / (2 + t^2)
        W = np.array(params["layer1"]["W"])
        W[:, 1] = [1.0, 1.0, third]
        p = {**params, "layer1": {**params["layer1"], "W": W}}
        d1, d2, got, in_plane = ls.lecture_plane(bn, p, 1, 1, 0, 1)
        assert (got, in_plane) == (projected, not projected), third
        if not projected:
            e1, e2 = ls.lecture_directions(p, 1, 1, 0, 1)
            for a, b in ((d1, e1), (d2, e2)):
                np.testing.assert_array_equal(a["layer1"]["W"], b["layer1"]["W"])
            # ... and the slice holds the flat direction: flat_direction, left out of roundness claims
            assert ls.plane_geometry(bn, p, d1, d2).holds_flat
        # a dead input 2 makes the unit's live weights (1, 1, 0): in the plane whatever the third weight
        assert ls.lecture_plane(bn, p, 1, 1, 0, 1, np.array([True, True, False]))[2:] == (False, True)
    assert ls.lecture_plane(bn, params, 2, 0, 0, 1)[2:] == (False, False)  # the output layer
    assert ls.lecture_plane(bn, params, 1, 0, 1, 1)[2:] == (False, False)  # hi == lo
    zero = {**params, "layer1": {**params["layer1"], "W": np.zeros((3, 2))}}
    assert ls.lecture_plane(bn, zero, 1, 0, 0, 1)[2:] == (False, False)  # no radial direction
    none = model.ModelSpec(sizes=(3, 2, 2))
    p_none = _host(_init(none, 77))
    d1, _, projected, in_plane = ls.lecture_plane(none, p_none, 1, 0, 2, 1)
    assert (projected, in_plane) == (False, False)
    np.testing.assert_array_equal(d1["layer1"]["W"], ls.lecture_directions(p_none, 1, 0, 2, 1)[0]["layer1"]["W"])


def _rows_equal(a, b, rtol):
    assert [(r["slice"], r["scope"]) for r in a] == [(r["slice"], r["scope"]) for r in b]
    for ra, rb in zip(a, b, strict=True):
        for k in ls.ROW_KEYS:
            if isinstance(ra[k], float):
                assert ra[k] == pytest.approx(rb[k], rel=rtol, abs=1e-300, nan_ok=True), (ra["slice"], ra["scope"], k)
            else:
                assert ra[k] == rb[k], (ra["slice"], ra["scope"], k)


def test_input_batchnorm_slices_equal_a_plain_model_on_prestandardized_inputs():
    """Under input batch norm A[0] is the batch standardized with its own statistics
    (``model.network_input``), so every slice (lecture, eigenvector, random; unit and input choice, grids, 2x2
    GGNs) equals that of the same weights without input norm fed the pre-standardized batch. At depth 0 and
    W = 0 the lecture slice of raw 1000:1 features is then round, as after standardization."""
    rng = np.random.default_rng(80)
    X = rng.normal(size=(200, 3)) * np.array([1000.0, 1.0, 0.1]) + np.array([3000.0, 2.0, -0.5])
    y = _labels(81, 200, 2)
    cfg = {"grid_points": 5, "extent": 0.3, "seed": 3}
    for sizes in ((3, 2), (3, 5, 2)):
        plain = model.ModelSpec(sizes=sizes)
        spec = model.ModelSpec(sizes=sizes, input_norm="batchnorm")
        X_std = (X - X.mean(axis=0)) / np.sqrt(X.var(axis=0) + spec.eps)
        params = _init(plain, 82)
        if len(sizes) == 2:
            zero = model.init_params(spec, jax.random.PRNGKey(0), F64)
            a, b = (ls.lecture_slices(s, zero, x, y, n_points=5, extent=0.3) for s, x in ((spec, X), (plain, X_std)))
            np.testing.assert_allclose(a[0].ggn, b[0].ggn, rtol=1e-9)
            np.testing.assert_allclose(a[0].info["input_rms"], b[0].info["input_rms"], rtol=1e-12)
            assert ls.slice_row(a[0])["axis_ratio_ggn"] < 1.3
            raw = ls.slice_row(ls.lecture_slices(plain, zero, X, y, n_points=5, extent=0.3)[0])
            assert raw["axis_ratio_ggn"] > 1000
        d = ls.random_directions(params, np.array([9, 0]))
        got, g_got = ls.contour_slices(spec, params, X, y, cfg, eig_model=d)
        ref, g_ref = ls.contour_slices(plain, params, X_std, y, cfg, eig_model=d)
        _rows_equal(got, ref, 1e-9)
        assert set(g_got) == set(g_ref)
        for k in g_ref:
            np.testing.assert_allclose(g_got[k], g_ref[k], rtol=1e-9, atol=1e-12, err_msg=k)
        if len(sizes) == 3:  # the fast path of one slice (the hidden layer's)
            one = ls.lecture_slice(spec, params, X, y, 1, n_points=5, extent=0.3)
            np.testing.assert_allclose(one.loss, g_ref["lecture.layer1.loss"], rtol=1e-9)
            np.testing.assert_allclose(one.ggn, g_ref["lecture.layer1.ggn"], rtol=1e-9)
