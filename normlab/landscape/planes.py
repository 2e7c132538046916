"""Planes through a normlab MLP: J on the plane spanned by two direction pytrees, and its 2x2 GGN.

Every plane of ``direction_slices`` (eigenvector and random slices, and the lecture slices'
grids) runs through one of two compiled programs per model shape:

* ``_plane``: the whole model per grid point, whatever the directions touch (one program for every plane);
* ``_layer_plane``: a plane inside one layer's W and b. Z[l] = A[l-1] W + b is linear in (W, b), so per
  grid point Z[l] = Z0 + a P1 + b P2 and only the layers above l run (``model.outputs_from``); one program
  for every hidden layer (a traced layer index) and one for the output layer. Used when the hidden layers
  share one width and the model is big enough (``LAYER_PLANE_MIN_FLOPS``).

``model_grid`` is the same idea for any pair of directions, without the one-program constraint: the
layers below the first one the directions touch run once.

The grids run in the parameters' dtype; every 2x2 GGN (``model_ggn``) is computed in float64 (the
parameters, data and directions cast to it, which is exact for float32 ones): for the two forward-mode
products per plane this costs next to nothing against the n_points^2 grid points, and leaves the 2x2
accurate to ~1e-15 relative (``roundness.default_rel_tol`` of float64).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model
from normlab.landscape.directions import cast_like, embed_direction, normalize_direction, tree_dtype
from normlab.landscape.grids import auto_chunk_size, grid_axes, map_grid, shift
from normlab.landscape.roundness import jvp_outputs, loss_gram
from normlab.landscape.slices import ContourSlice
from normlab.landscape.symmetries import plane_geometry
from normlab.model import ModelSpec, Params

# A plane of hidden layer l runs through ``_layer_plane`` only when a whole-model plane costs at least this
# many floating-point operations (2 m n_points^2 x the weights): below it the grid's execution costs less
# than compiling one more program per model shape (the quick study's models are below it, the default
# study's depth-8 model above).
LAYER_PLANE_MIN_FLOPS = 1e9


def as_data(params: Params, X, y):
    """X as a JAX array in the parameters' dtype, y as a JAX array."""
    return jnp.asarray(X, tree_dtype(params)), jnp.asarray(y)


def _touched(d1, d2) -> set[tuple[str, str]]:
    """(layer, array name) of every array where d1 or d2 is nonzero (read on the host)."""
    return {(layer, name) for d in (d1, d2) for layer, p in d.items() for name, x in p.items()
            if np.any(np.asarray(x) != 0)}


def _first_touched_layer(d1, d2) -> int:
    """The first layer l (1-based) where d1 or d2 is nonzero, 0 if both are zero everywhere."""
    touched = sorted(int(layer[5:]) for layer, _ in _touched(d1, d2))
    return touched[0] if touched else 0


def _model_grid(spec: ModelSpec, params: Params, X, y, d1, d2, alphas, betas, chunk_size: int, l0: int):
    if l0 == 0:
        J = model.loss(spec, params, X, y)
        return jnp.broadcast_to(J, (alphas.shape[0], betas.shape[0]))
    _, inputs, pre = model.forward_with_inputs(spec, params, X)
    A, Z0 = inputs[l0 - 1], pre[l0 - 1]
    first = f"layer{l0}"
    P1, P2 = model.affine(d1[first], A), model.affine(d2[first], A)  # how Z[l0] moves along d1, d2
    upper = [f"layer{k}" for k in range(l0, spec.n_layers + 1)]

    def point(a, b):
        # Layers >= l0 get their shifted arrays (those below are never used); every array of them is
        # shifted, zero directions included: per-point weights make XLA use batched matmuls, which on
        # CPU in float64 run faster than one large matmul with shared weights.
        shifted = dict(params)
        for layer in upper:
            shifted[layer] = shift(params[layer], d1[layer], d2[layer], a, b)
        out = model.outputs_from(spec, shifted, l0, Z0 + a * P1 + b * P2)
        return model.loss_from_outputs(spec, out, y)

    return map_grid(point, alphas, betas, chunk_size)


@functools.partial(jax.jit, static_argnames=("spec", "chunk_size", "l0"))
def _model_grid_jit(spec, params, X, y, d1, d2, alphas, betas, chunk_size, l0):
    return _model_grid(spec, params, X, y, d1, d2, alphas, betas, chunk_size, l0)


def model_grid(spec: ModelSpec, params: Params, X, y, d1, d2, alphas, betas, *,
               chunk_size: int | None = None) -> jax.Array:
    """``evaluate_grid`` for the model's loss J(params) on (X, y), using the model's structure:
    (n_a, n_b), entry [i, k] = J(params + alphas[i] d1 + betas[k] d2).

    d1, d2: full pytrees shaped like params. The layers below the first layer l0 that the directions
    touch are computed once, and Z[l0] = A[l0-1] W + b is linear in (W, b), so per grid point
    Z[l0] = Z0 + a (A dW1 + db1) + b (A dW2 + db2) and only the rest of layers l0..L runs. For a direction
    restricted to layer l (eig / random per layer) that skips layers 1..l-1 and the matmul of layer l;
    for whole-model directions it skips the first layer's matmul. One program per model shape and l0.
    chunk_size: default ``auto_chunk_size``.
    """
    d1, d2 = cast_like(d1, params), cast_like(d2, params)
    dtype = tree_dtype(params)
    if chunk_size is None:
        chunk_size = auto_chunk_size(spec, X.shape[0], len(alphas) * len(betas))
    return _model_grid_jit(spec, params, X, y, d1, d2, jnp.asarray(alphas, dtype), jnp.asarray(betas, dtype),
                           int(chunk_size), _first_touched_layer(d1, d2))


def as_float64(tree):
    """Every leaf of a pytree as a JAX float64 array (exact for float32 leaves)."""
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), tree)


def model_ggn(spec: ModelSpec, params: Params, X, directions) -> jax.Array:
    """Projected Gauss-Newton matrix D^T G D (k, k) of the model's loss on the batch X (m, n_features),
    float64: params, X and the k directions (pytrees shaped like params) cast to float64, forward-mode
    products through the whole model, and the loss's Hessian on the outputs in closed form
    (``roundness.loss_gram``; it does not depend on the labels). Loss per (parameter unit)^2."""
    params64 = as_float64(params)
    X64 = jnp.asarray(X, jnp.float64)
    return loss_gram(spec.loss, *jvp_outputs(lambda p: model.forward(spec, p, X64), params64,
                                             [as_float64(d) for d in directions]))


model_ggn_jit = jax.jit(model_ggn, static_argnames=("spec",))


def _plane(spec: ModelSpec, params: Params, X, y, d1, d2, alphas, betas, chunk_size: int):
    # every slice's grid and 2x2 GGN with the same program: the whole model runs per grid point (l0 = 1;
    # the layers a direction does not touch are shifted by zero), so the program depends only on the shapes
    return (_model_grid(spec, params, X, y, d1, d2, alphas, betas, chunk_size, 1),
            model_ggn(spec, params, X, [d1, d2]), model.loss(spec, params, X, y))


# One compilation per model shape serves every slice of every checkpoint: a program per slice kind and
# layer (or all slices unrolled into one program) costs seconds of compilation per analyze job, most of the
# time of its first checkpoint.
_plane_jit = jax.jit(_plane, static_argnames=("spec", "chunk_size"))


def _layer_plane(spec: ModelSpec, params: Params, l, Z0, P1, P2, y, alphas, betas, chunk_size: int,
                 output: bool = False):
    # a plane of directions inside layer l's W and b: Z[l] = Z0 + a P1 + b P2 (linear in W, b), then only the
    # layers above l run per grid point (hidden l, traced: one program for every l); ``output``: l = L, whose
    # Z[L] are the outputs themselves. Z0, P1, P2 come in float64: the grid runs in params' dtype, the 2x2
    # GGN in float64.
    top = spec.n_layers if output else l
    dtype = tree_dtype(params)

    def g(p, z):
        return model.outputs_from(spec, p, top, z)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    z0, p1, p2 = (x.astype(dtype) for x in (Z0, P1, P2))
    grid = map_grid(lambda a, b: outer(g(params, z0 + a * p1 + b * p2)), alphas, betas, chunk_size)
    params64 = as_float64(params)
    out64 = g(params64, Z0)
    U = jnp.stack([jax.jvp(lambda z: g(params64, z), (Z0,), (P,))[1] for P in (P1, P2)])
    return grid, loss_gram(spec.loss, out64, U), outer(g(params, z0))


_layer_plane_jit = jax.jit(_layer_plane, static_argnames=("spec", "chunk_size", "output"))
_loss_jit = jax.jit(model.loss, static_argnames=("spec",))
_forward_with_inputs_jit = jax.jit(model.forward_with_inputs, static_argnames=("spec",))


def forward64(spec: ModelSpec, params: Params, X):
    """``model.forward_with_inputs`` in float64 (params and X cast), read back as numpy: (outputs,
    layer_inputs, pre_norm)."""
    return jax.device_get(_forward_with_inputs_jit(spec, as_float64(params), jnp.asarray(X, jnp.float64)))


def live_inputs_of(spec: ModelSpec, params: Params, X, dead_threshold: float) -> dict[int, np.ndarray]:
    """{l: (sizes[l-1],) bool}: the live units of every layer input A[l-1] (RMS over the batch X >
    dead_threshold, as ``lecture.live_mask``), from a float64 forward pass."""
    _, inputs, _ = forward64(spec, params, X)
    return {l: np.sqrt(np.mean(np.square(A), axis=0)) > dead_threshold for l, A in enumerate(inputs, start=1)}


def _layer_of(spec: ModelSpec, d1, d2) -> int:
    """l if both directions lie in the W and b of one layer l that ``_layer_plane`` serves: the output layer,
    or a hidden layer when the hidden layers share one width; else 0."""
    touched = _touched(d1, d2)
    layers = {layer for layer, _ in touched}
    if len(layers) != 1 or any(name not in ("W", "b") for _, name in touched):
        return 0
    l = int(next(iter(layers))[5:])
    return l if l == spec.n_layers or model.equal_hidden_widths(spec) else 0


def _plane_flops(spec: ModelSpec, m: int, n_points: int) -> float:
    """Floating-point operations of one whole-model plane: the forward matmuls at every grid point."""
    return n_points * n_points * model.matmul_flops(spec, m)


def run_planes(spec: ModelSpec, params: Params, X, y, planes: Sequence, n_points: int,
               chunk_size: int | None, grid: bool = True) -> list[tuple]:
    """planes: [(d1, d2, extent)] with full direction pytrees in params' dtype. Returns per plane
    (alphas, betas, loss (n, n), ggn (2, 2) float64, loss_center) as numpy, all planes dispatched before any
    is read back. ``grid`` False: no grid is evaluated (loss None), only each plane's 2x2 GGN (``model_ggn``, the
    same float64 products as a whole-model plane's) and the loss at the centre. A plane inside one layer's W and b
    goes through ``_layer_plane`` (one program for every hidden layer, one for the output layer; the layers below it
    are not rerun per grid point: for depth 8 its grid costs (L - l + 1) / L of a whole-model one, the output
    layer's almost nothing) when the model is big enough (``LAYER_PLANE_MIN_FLOPS``); any other plane through
    ``_plane`` (the whole model per point)."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    if not grid:
        center = _loss_jit(spec, params, X, y)
        pending = [(*grid_axes(n_points, float(extent), X.dtype), model_ggn_jit(spec, params, X, [d1, d2]))
                   for d1, d2, extent in planes]
        return [(a, b, None, np.asarray(ggn), float(center)) for a, b, ggn in pending]
    chunk = int(chunk_size or auto_chunk_size(spec, X.shape[0], n_points * n_points))
    big = _plane_flops(spec, X.shape[0], n_points) >= LAYER_PLANE_MIN_FLOPS
    layer_of = [_layer_of(spec, d1, d2) if big else 0 for d1, d2, _ in planes]
    if any(layer_of):
        _, inputs, pre = forward64(spec, params, X)
    pending = []
    for (d1, d2, extent), l in zip(planes, layer_of, strict=True):
        alphas, betas = grid_axes(n_points, float(extent), X.dtype)
        if l:
            A, name = inputs[l - 1], f"layer{l}"
            P1, P2 = (model.affine(d[name], A).astype(A.dtype) for d in (d1, d2))  # on the host
            res = _layer_plane_jit(spec, params, np.int32(l), pre[l - 1], P1, P2, y, alphas, betas, chunk,
                                   l == spec.n_layers)
        else:
            res = _plane_jit(spec, params, X, y, d1, d2, alphas, betas, chunk)
        pending.append((alphas, betas, res))
    return [(a, b, *(np.asarray(x) for x in res[:2]), float(res[2])) for a, b, res in pending]


def direction_slices(spec: ModelSpec, params: Params, X, y, planes: Sequence[Mapping], *, n_points: int = 41,
                     chunk_size: int | None = None, live_inputs: Mapping[int, np.ndarray] | None = None,
                     dead_threshold: float = 1e-6, grid: bool = True) -> list[ContourSlice]:
    """J on the planes spanned by pairs of given directions, with their 2x2 GGNs, by ``run_planes``.

    planes: mappings with keys d1, d2 (pytrees or flat vectors as ``embed_direction`` takes them; scope
    ``layer<l>`` zeroes them outside that layer), slice, scope (``model`` or ``layer<l>``), extent, and
    optionally normalize (default True: scale each direction to unit norm, so the coordinates are
    parameter-space distances, as for eigenvector slices; False keeps them as given, as for
    filter-normalized random directions, where 1 = the weights' own scale). Each slice says whether its
    plane is degenerate (d1, d2 do not span a plane) or holds a flat direction
    (``symmetries.plane_geometry``), which needs the live inputs of every layer: live_inputs ({l: (n,)
    bool}, as ``live_inputs_of``) or, if None, a float64 forward pass with ``dead_threshold``. ``grid`` False:
    the slices' roundness without their grids (``run_planes``; loss None)."""
    X, y = as_data(params, X, y)
    prepared = []
    for pl in planes:
        layer = None if pl["scope"] == "model" else pl["scope"]
        d1, d2 = embed_direction(pl["d1"], params, layer), embed_direction(pl["d2"], params, layer)
        if pl.get("normalize", True):
            d1, d2 = normalize_direction(d1), normalize_direction(d2)
        prepared.append((d1, d2, pl["extent"]))
    results = run_planes(spec, params, X, y, prepared, n_points, chunk_size, grid)
    if live_inputs is None and prepared:
        live_inputs = live_inputs_of(spec, params, X, dead_threshold)
    host = jax.device_get(params)
    out = []
    for pl, (d1, d2, _), (a, b, loss, ggn, center) in zip(planes, prepared, results, strict=True):
        geo = plane_geometry(spec, host, d1, d2, live_inputs)
        out.append(ContourSlice(slice=pl["slice"], scope=pl["scope"], alphas=a, betas=b, loss=loss,
                                origin=np.zeros(2), ggn=ggn, loss_center=center, flat_direction=geo.holds_flat,
                                degenerate=not geo.spans_plane))
    return out
