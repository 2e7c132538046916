"""Known-answer tests of normlab.landscape: contour slices and their roundness."""

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
    ratio, singular, _, _ = ls.axis_ratio_2x2(G)
    assert not singular
    assert ratio == pytest.approx(true, rel=1e-10)

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
        blocks = ls.lecture_ggn_blocks(spec, params, X, y, 1, 0, 2)
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


def test_dead_unit_is_singular():
    # Unit 0 of layer 1 is dead on the whole batch (positive inputs, negative weights and bias), so its
    # incoming weights do not affect J: its 2x2 GGN is zero.
    spec = model.ModelSpec(sizes=(3, 4, 1), loss="mse", activation="relu")
    params = _init(spec, 10)
    params["layer1"]["W"] = params["layer1"]["W"].at[:, 0].set(-1.0)
    params["layer1"]["b"] = params["layer1"]["b"].at[0].set(-1.0)
    X = jnp.asarray(np.random.default_rng(11).random((32, 3)) * np.array([5.0, 1.0, 0.1]))
    y = jnp.asarray(np.random.default_rng(12).normal(size=32))
    row = ls.slice_row(ls.lecture_slice(spec, params, X, y, 1, n_points=5, extent=0.01, unit=0))
    assert row["singular"] is True
    assert math.isnan(row["axis_ratio_ggn"])
    # the default unit choice skips the dead unit; the layer-2 slice never uses the dead input
    sl2 = ls.lecture_slice(spec, params, X, y, 2, n_points=5, extent=0.01)
    assert not sl2.info["live"][0]
    assert 0 not in (sl2.info["input_hi"], sl2.info["input_lo"])
    assert not ls.slice_row(sl2)["singular"]
    # degenerate 2x2 matrices
    for M in (np.zeros((2, 2)), np.ones((2, 2)), np.array([[1.0, 0.0], [0.0, 1e-15]])):
        ratio, singular, _, _ = ls.axis_ratio_2x2(M)
        assert singular and math.isnan(ratio)
    assert ls.axis_ratio_2x2(np.diag([1e6, 1.0]))[0] == pytest.approx(1e3, rel=1e-12)


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
    assert grids["lecture.layer1.loss"].shape == (7, 7)
    assert grids["random.model.alphas"][-1] == pytest.approx(0.5)
    assert grids["eig.layer2.loss"][3, 3] == pytest.approx(rows[0]["loss_center"], rel=1e-12)
    assert grids["lecture.layer2.indices"].tolist()[0] == rows[1]["unit"]
    with pytest.raises(ValueError):
        ls.ContourConfig.from_mapping({"grid_pts": 3})


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
