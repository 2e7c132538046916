"""Known-answer tests of normlab.invariance and of the scale-invariant sharpness lambda_max(S A S) that
``curvature.analyze_curvature`` reports (float64, eps = 0 so that the invariance is exact).

Batch norm: a hidden unit's incoming weights W[l][:, j] form a group; layer norm: a hidden layer's (W[l], b[l])
together. Tiny tanh models (a smooth loss); the dense references come from ``jax.hessian`` / ``jax.jacfwd`` of
``model.loss`` / ``model.forward`` in the flat parameter vector, with S built here from numpy.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree
from test_curvature import _perturbed_params

from normlab import curvature as C
from normlab import invariance
from normlab import model as M

SIZES = (3, 4, 4, 3)
NORMALIZED = ("batchnorm", "layernorm")


def _params(spec, seed=3, dtype=np.float64):
    """Generic parameters (biases, gammas, betas away from 0 / 1), drawn with numpy."""
    return _perturbed_params(spec, seed, dtype, bias_scale=0.5)


@functools.cache
def _problem(norm, loss="softmax_cross_entropy"):
    """(spec, params, X, y): a depth-2 tanh model with eps = 0, 24 examples, features on different scales."""
    spec = M.ModelSpec(SIZES, activation="tanh", norm=norm, eps=0.0, loss=loss)
    rng = np.random.default_rng(0)
    X = jnp.asarray(rng.normal(size=(24, 3)) * np.array([1.0, 4.0, 0.3]) + np.array([0.5, -1.0, 0.0]))
    y = jnp.asarray(rng.integers(0, 3, 24) if loss == "softmax_cross_entropy" else rng.normal(size=(24, 3)))
    return spec, _params(spec), X, y


def _scaled(params, direction, c):
    """params + (c - 1) direction: the group of a radial direction scaled by c, the rest unchanged."""
    return jax.tree_util.tree_map(lambda p, d: p + (c - 1.0) * d, params, direction)


def _flat(tree) -> np.ndarray:
    return np.asarray(ravel_pytree(tree)[0])


def _leaf_of_flat(params) -> np.ndarray:
    """The dotted leaf name ("layer1.W") of every coordinate of ``ravel_pytree(params)``."""
    names = [f"{layer}.{leaf}" for layer in params for leaf in params[layer]]
    ids = _flat({layer: {leaf: np.full(np.shape(v), float(names.index(f"{layer}.{leaf}"))) for leaf, v in p.items()}
                 for layer, p in params.items()})
    return np.array([names[int(i)] for i in ids])


def _numpy_scale(spec, params) -> dict[str, np.ndarray]:
    """S per leaf, from its definition: BN hidden W: column norms down each column; LN hidden W and b: the
    layer's norm over both; 1 elsewhere."""
    out = {}
    for layer, p in params.items():
        l = int(layer[5:])
        for leaf, v in p.items():
            s = np.ones(np.shape(v))
            if l < spec.n_layers and spec.norm == "batchnorm" and leaf == "W":
                s = np.broadcast_to(np.linalg.norm(np.asarray(v), axis=0)[None, :], np.shape(v))
            elif l < spec.n_layers and spec.norm == "layernorm" and leaf in ("W", "b"):
                s = s * np.sqrt(np.sum(np.asarray(p["W"]) ** 2) + np.sum(np.asarray(p["b"]) ** 2))
            out[f"{layer}.{leaf}"] = s
    return out


@functools.cache
def _dense_reference(norm):
    """(H, G, S, leaf) of the softmax problem: the Hessian of ``model.loss`` and J^T H_out J (J from
    ``jax.jacfwd`` of ``model.forward``, H_out the Hessian of ``model.loss_from_outputs`` in the outputs), both
    (N, N) in the flat order, S (N,) from ``_numpy_scale``, leaf (N,) the leaf name of each coordinate."""
    spec, params, X, y = _problem(norm)
    flat, unravel = ravel_pytree(params)
    H = np.asarray(jax.jit(jax.hessian(lambda t: M.loss(spec, unravel(t), X, y)))(flat))
    out = M.forward(spec, params, X)
    J = np.asarray(jax.jit(jax.jacfwd(lambda t: M.forward(spec, unravel(t), X)))(flat)).reshape(-1, flat.size)
    H_out = np.asarray(jax.hessian(lambda o: M.loss_from_outputs(spec, o, y))(out)).reshape(J.shape[0], J.shape[0])
    leaf = _leaf_of_flat(params)
    scale = _numpy_scale(spec, params)
    S = np.concatenate([scale[name].ravel() for name in dict.fromkeys(leaf)])
    return 0.5 * (H + H.T), J.T @ H_out @ J, S, leaf


def _invariant_rows(result) -> dict[tuple[str, str], float]:
    return {(r["scope"], r["matrix"]): r["value"] for r in result.rows if r["matrix"].endswith("_invariant")}


def _rows(result) -> dict[tuple[str, str, str], float]:
    return {(r["scope"], r["matrix"], r["metric"]): r["value"] for r in result.rows}


DENSE = {"dense_max_params": 10_000, "top_k": 2, "batch_size": 1, "invariant_steps": 1}


# --------------------------------------------------------------------------------------------------
# group_norms, scale_tree, layer_weight_norm against numpy


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_groups_scale_tree_and_layer_weight_norm_against_numpy(norm):
    spec, params, _, _ = _problem(norm)
    W = {l: np.asarray(params[f"layer{l}"]["W"]) for l in (1, 2, 3)}
    if norm == "batchnorm":
        expected = {l: np.linalg.norm(W[l], axis=0) for l in (1, 2)}  # one group per unit: a column
    elif norm == "layernorm":
        expected = {l: np.array([np.sqrt(np.sum(W[l] ** 2) + np.sum(np.asarray(params[f"layer{l}"]["b"]) ** 2))])
                    for l in (1, 2)}
    else:
        expected = {}
    assert invariance.invariant_layers(spec) == sorted(expected)
    got = invariance.group_norms(spec, params)
    assert sorted(got) == sorted(expected)
    for l, norms in expected.items():
        assert got[l].shape == norms.shape
        np.testing.assert_allclose(got[l], norms, rtol=1e-14)
    # S: the group's norm on each of its entries, 1 elsewhere (gamma, beta, the output layer, no-norm layers)
    tree = invariance.scale_tree(spec, params)
    assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
    for name, s in _numpy_scale(spec, params).items():
        layer, leaf = name.split(".")
        np.testing.assert_allclose(np.asarray(tree[layer][leaf]), s, rtol=1e-14, err_msg=name)
    # per layer: RMS over the groups, ||W||_F without groups
    rms = [np.sqrt(np.mean(expected[l] ** 2)) if l in expected else np.linalg.norm(W[l]) for l in (1, 2, 3)]
    np.testing.assert_allclose(np.asarray(invariance.layer_weight_norm(spec, params)), rms, rtol=1e-14)


@pytest.mark.parametrize("norm", NORMALIZED)
def test_scale_tree_and_layer_weight_norm_run_under_jit_and_vmap(norm):
    """A leading seed axis through ``jax.vmap`` (what training's log does), compiled: each copy gets its own norms;
    float32 parameters give float32 results."""
    spec, params, _, _ = _problem(norm)
    other = _params(spec, seed=7)
    stacked = jax.tree_util.tree_map(lambda a, b: jnp.stack([a, b]), params, other)
    norms = jax.jit(jax.vmap(lambda p: invariance.layer_weight_norm(spec, p)))(stacked)
    trees = jax.jit(jax.vmap(lambda p: invariance.scale_tree(spec, p)))(stacked)
    for i, p in enumerate((params, other)):
        np.testing.assert_allclose(np.asarray(norms[i]), np.asarray(invariance.layer_weight_norm(spec, p)), rtol=1e-14)
        for a, b in zip(jax.tree_util.tree_leaves(trees), jax.tree_util.tree_leaves(invariance.scale_tree(spec, p)),
                        strict=True):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=1e-14)
    p32 = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params)
    assert invariance.layer_weight_norm(spec, p32).dtype == jnp.float32
    assert {a.dtype for a in jax.tree_util.tree_leaves(invariance.scale_tree(spec, p32))} == {jnp.dtype(jnp.float32)}


def test_models_without_invariant_groups():
    """No normalization, a depth-0 model (its one layer is the output layer) and BN on the inputs alone: no group;
    the weight norm is ||W||_F per layer."""
    for spec in (M.ModelSpec((3, 2), norm="batchnorm"), M.ModelSpec(SIZES, input_norm="batchnorm"),
                 M.ModelSpec((3, 2), norm="layernorm", input_norm="batchnorm")):
        params = _params(spec)
        assert invariance.invariant_layers(spec) == [] and invariance.group_norms(spec, params) == {}
        W = [np.asarray(params[f"layer{l}"]["W"]) for l in range(1, spec.n_layers + 1)]
        np.testing.assert_allclose(np.asarray(invariance.layer_weight_norm(spec, params)),
                                   [np.linalg.norm(w) for w in W], rtol=1e-14)
        assert all(np.all(np.asarray(s) == 1) for s in jax.tree_util.tree_leaves(invariance.scale_tree(spec, params)))
        with pytest.raises(ValueError, match="no invariant group"):
            invariance.radial_direction(spec, params, 1)


# --------------------------------------------------------------------------------------------------
# The invariance itself: J, G, H along a group's radial direction


GROUPS = [("batchnorm", 1, 2), ("batchnorm", 2, 0), ("layernorm", 1, 0), ("layernorm", 2, 0)]


@pytest.mark.parametrize(("norm", "l", "j"), GROUPS)
def test_loss_is_unchanged_when_a_group_is_scaled(norm, l, j):
    """J(c w) = J(w) for c in (0.5, 3), w a BN unit's column or an LN layer's (W, b). Scaling a BN unit's
    incoming row instead, or an LN layer's W without its b, changes J: the groups are exactly these."""
    spec, params, X, y = _problem(norm)
    J0 = float(M.loss(spec, params, X, y))
    direction = invariance.radial_direction(spec, params, l, j)
    on = _flat(direction) != 0
    assert on.sum() == (SIZES[l - 1] if norm == "batchnorm" else SIZES[l - 1] * SIZES[l] + SIZES[l])
    for c in (0.5, 3.0):
        assert float(M.loss(spec, _scaled(params, direction, c), X, y)) == pytest.approx(J0, rel=1e-12, abs=0)
    wrong = jax.tree_util.tree_map(jnp.zeros_like, params)
    W = params[f"layer{l}"]["W"]
    wrong[f"layer{l}"]["W"] = (wrong[f"layer{l}"]["W"].at[0, :].set(W[0, :]) if norm == "batchnorm" else W)
    assert abs(float(M.loss(spec, _scaled(params, wrong, 3.0), X, y)) - J0) > 1e-4 * J0


@pytest.mark.parametrize(("norm", "l", "j"), GROUPS)
def test_gauss_newton_maps_the_radial_direction_to_zero(norm, l, j):
    """G w = 0 (the outputs do not move along w), w the group's radial direction; and at a generic point
    H w = -g_w (the gradient on the group's coordinates, zero elsewhere: the derivative of w . dJ/dw = 0)."""
    spec, params, X, y = _problem(norm)
    e = _flat(invariance.radial_direction(spec, params, l, j))
    on = e != 0
    G = C.model_operator(spec, params, X, y, "ggn")
    H = C.model_operator(spec, params, X, y, "hessian")
    Ge, He = np.asarray(G(e)), np.asarray(H(e))
    G_scale = np.abs(np.asarray(G(np.ones_like(e)))).max()
    assert G_scale > 1e-3
    np.testing.assert_allclose(Ge, 0.0, atol=1e-12 * G_scale * np.abs(e).max())
    g = _flat(jax.grad(lambda p: M.loss(spec, p, X, y))(params))
    assert np.abs(g[on]).max() > 1e-4  # a generic point: the identity is not 0 = 0
    np.testing.assert_allclose(He[on], -g[on], atol=1e-10 * np.abs(He).max())
    np.testing.assert_allclose(He[~on], 0.0, atol=1e-10 * np.abs(He).max())


@pytest.mark.parametrize(("norm", "l", "j"), GROUPS)
def test_hessian_maps_the_radial_direction_to_zero_at_a_stationary_point(norm, l, j):
    """H w = 0 at a stationary point. The stationary point is exact by construction, not by training: MSE with
    targets set to the network's own outputs at these parameters (a realizable problem), so the residual, the
    loss and every gradient are 0 up to the forward pass's rounding (a global minimum). Since H w = -g_w
    everywhere, H w = 0 there, while H itself is not small."""
    spec, params, X, _ = _problem(norm, "mse")
    y = M.forward(spec, params, X)
    g = _flat(jax.grad(lambda p: M.loss(spec, p, X, y))(params))
    assert np.abs(g).max() < 1e-14
    H = C.model_operator(spec, params, X, y, "hessian")
    e = _flat(invariance.radial_direction(spec, params, l, j))
    H_scale = np.abs(np.asarray(H(np.ones_like(e)))).max()
    assert H_scale > 1e-3
    np.testing.assert_allclose(np.asarray(H(e)), 0.0, atol=1e-12 * H_scale * np.abs(e).max())


# --------------------------------------------------------------------------------------------------
# lambda_max(c w) = lambda_max(w) / c^2, and lambda_max(S A S) unchanged


@pytest.mark.parametrize(("norm", "l"), [("batchnorm", 2), ("layernorm", 1)])
def test_block_curvature_scales_as_one_over_c_squared_when_all_its_groups_scale(norm, l):
    """Every group of layer l scaled by c (BN: all of W[l]'s columns; LN: (W[l], b[l])): the layer's block of H and
    of G scales by 1 / c^2, every eigenvalue (lambda_max, the trace), while lambda_max(S A S) is unchanged."""
    spec, params, X, y = _problem(norm)
    scopes = [f"layer{l}"]
    before = C.analyze_curvature(spec, params, X, y, scopes=scopes, **DENSE)
    direction = jax.tree_util.tree_map(jnp.zeros_like, params)
    direction[f"layer{l}"] = {k: (v if k in ("W", "b") else jnp.zeros_like(v)) for k, v in params[f"layer{l}"].items()}
    for c in (0.5, 3.0):
        after = C.analyze_curvature(spec, _scaled(params, direction, c), X, y, scopes=scopes, **DENSE)
        b, a = _rows(before), _rows(after)
        for matrix in C.MATRICES:
            for metric in ("lambda_max", "trace", "lambda_2"):
                key = (scopes[0], matrix, metric)
                assert a[key] == pytest.approx(b[key] / c**2, rel=1e-9), (key, c)
            key = (scopes[0], f"{matrix}_invariant", "lambda_max")
            assert a[key] == pytest.approx(b[key], rel=1e-9), (key, c)


ROUTES = {
    "dense": DENSE,
    # Lanczos on S A S for every invariant block (two runs side by side, their union spanning the block), and
    # for the LN layers c^2 lambda_max of the block (one group: S = c there); num_steps spans every block
    "lanczos": {"dense_max_params": 0, "num_steps": 80, "slq_probes": 2, "batch_size": 2, "trace_probes": 2,
                "top_k": 1, "invariant_steps": 80},
}


@pytest.mark.parametrize("route", sorted(ROUTES))
@pytest.mark.parametrize(("norm", "l", "j", "c"), [("batchnorm", 1, 1, 3.0), ("layernorm", 2, 0, 0.5)])
def test_invariant_sharpness_equals_the_reference_and_ignores_a_group_rescaling(route, norm, l, j, c):
    """lambda_max(S H S) and lambda_max(S G S) of every invariant scope equal those of the dense references
    (``jax.hessian`` / ``jax.jacfwd``, S from numpy), and are unchanged when one group is rescaled by c, where the
    scopes' plain curvature changes (the group's block scales by 1 / c^2)."""
    spec, params, X, y = _problem(norm)
    H, G, S, leaf = _dense_reference(norm)
    result = C.analyze_curvature(spec, params, X, y, **ROUTES[route])
    got = _invariant_rows(result)
    assert sorted(got) == sorted((sc, f"{m}_invariant") for sc in ("model", "layer1", "layer2") for m in C.MATRICES)
    for scope in ("model", "layer1", "layer2"):
        idx = np.arange(leaf.size) if scope == "model" else np.flatnonzero(np.isin(leaf, [f"{scope}.W", f"{scope}.b"]))
        s = S[idx]
        for matrix, A in (("hessian", H), ("ggn", G)):
            SAS = s[:, None] * A[np.ix_(idx, idx)] * s[None, :]
            assert got[(scope, f"{matrix}_invariant")] == pytest.approx(np.linalg.eigvalsh(SAS)[-1], rel=1e-8), (
                scope, matrix)
            if route == "dense" and scope != "model":  # the operator itself, entry by entry
                op = C.invariant_operator(spec, params, C.model_operator(spec, params, X, y, matrix, scope))
                np.testing.assert_allclose(C.dense_matrix(op, batch_size=1), SAS, rtol=1e-9,
                                           atol=1e-11 * np.abs(SAS).max())
    rescaled = _scaled(params, invariance.radial_direction(spec, params, l, j), c)
    again = C.analyze_curvature(spec, rescaled, X, y, **ROUTES[route])
    for key, value in _invariant_rows(again).items():
        assert value == pytest.approx(got[key], rel=1e-8), key
    plain, plain_again = _rows(result), _rows(again)
    assert plain_again[(f"layer{l}", "hessian", "trace")] != pytest.approx(plain[(f"layer{l}", "hessian", "trace")],
                                                                           rel=1e-2)


@pytest.mark.parametrize("norm", ["none", "batchnorm", "layernorm"])
def test_invariant_rows_only_for_normalized_models_and_their_hidden_scopes(norm):
    """Rows (scope, <matrix>_invariant, lambda_max) for ``model`` and the hidden layers of a BN / LN model, for the
    scopes and matrices asked for; none without normalization, none with invariant_steps = 0, never for the output
    layer or a norm<l> scope."""
    spec, params, X, y = _problem(norm)
    scopes = C.model_scopes(spec, include_norm=True)
    rows = C.analyze_curvature(spec, params, X, y, scopes=scopes, **DENSE).rows
    inv = [(r["scope"], r["matrix"], r["metric"]) for r in rows if r["matrix"].endswith("_invariant")]
    expected = [] if norm == "none" else [(sc, f"{m}_invariant", "lambda_max") for sc in ("model", "layer1", "layer2")
                                          for m in C.MATRICES]
    assert inv == expected
    off = C.analyze_curvature(spec, params, X, y, scopes=scopes, **{**DENSE, "invariant_steps": 0})
    assert not any(r["matrix"].endswith("_invariant") for r in off.rows)
    subset = C.analyze_curvature(spec, params, X, y, scopes=["layer3", "layer2"], matrices=("ggn",), **DENSE).rows
    assert [(r["scope"], r["matrix"]) for r in subset if r["matrix"].endswith("_invariant")] == (
        [] if norm == "none" else [("layer2", "ggn_invariant")])
    assert C.invariant_scopes(spec, scopes) == ([] if norm == "none" else ["model", "layer1", "layer2"])
