"""The lecture's slice of a normlab MLP: J over two incoming weights of one unit.

For layer l the slice moves ``W[l][hi, j]`` and ``W[l][lo, j]``, where hi / lo are the live units of the
layer input A[l-1] with the largest / smallest RMS over the analysis batch (``pick_hi_lo``) and j is the
unit through which J is most sensitive to those two weights (``choose_unit``). The directions are unit
vectors on those two coordinates (``lecture_directions``), so the grid axes are the weights' own values
(``origin + alphas``).

``lecture_slices`` (every layer, what the analysis runs) evaluates the grids as planes of
``planes.run_planes``; ``lecture_slice`` (one layer, any unit) uses the fast path ``lecture_grid``, where
only one column of one layer's pre-activation moves.

The slice's 2x2 GGN is computed in float64 as every slice's (``planes.model_ggn``); the blocks of all units
that ``choose_unit`` compares use forward-mode products in the parameters' dtype (their traces need no
more) and the loss's Hessian in closed form in float64 (``roundness.loss_gram``). A slice is ``degenerate`` when
hi == lo (fewer than two live inputs) or its unit is dead, and holds a ``flat_direction`` when its plane
holds one (``symmetries.plane_geometry``): for a batch-normalized unit that is when the unit's live incoming
weights other than W[hi, j] and W[lo, j] are zero (e.g. layer 1 on two input features), and then no 2-D
slice of those two weights avoids the flat direction. When the plane does not hold it, the radial part of
the two directions changes nothing in the GGN (its product with the radial direction is zero), so the
slice is kept as it is rather than projected orthogonally to the weight vector.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model
from normlab.landscape.directions import lecture_directions
from normlab.landscape.grids import auto_chunk_size, grid_axes, map_grid
from normlab.landscape.planes import as_data, model_ggn_jit, run_planes
from normlab.landscape.roundness import loss_gram
from normlab.landscape.slices import ContourSlice
from normlab.landscape.symmetries import plane_geometry
from normlab.model import ModelSpec, Params


def input_rms(A: jax.Array) -> jax.Array:
    """RMS over the batch of each unit of a layer input A (m, n): sqrt(mean_i A[i, u]^2), shape (n,)."""
    return jnp.sqrt(jnp.mean(jnp.square(A), axis=0))


def live_mask(rms, dead_threshold: float = 1e-6) -> jax.Array:
    """Live units: RMS > dead_threshold (config ``analysis.dead_threshold``, the same rule as
    ``normlab.layer_inputs.live_units``), so a ReLU unit that is zero on the whole batch, or a
    constant-zero feature, is dead. Boolean (n,); works under jit."""
    return jnp.asarray(rms) > dead_threshold


def pick_hi_lo(rms, dead_threshold: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """Indices (integer scalars) of the live units with the largest (hi) and smallest (lo) RMS: hi = the
    largest RMS (ties: lowest index), lo = the smallest RMS among the other live units (ties: lowest
    index), so hi != lo whenever two units are live, even if all RMS are equal. With one live unit,
    lo = hi (a degenerate slice, reported singular); with none, hi = lo = the unit of largest RMS.
    Works under jit."""
    rms = jnp.asarray(rms)
    live = live_mask(rms, dead_threshold)
    hi = jnp.where(live.any(), jnp.argmax(jnp.where(live, rms, -jnp.inf)), jnp.argmax(rms))
    rest = live & (jnp.arange(rms.shape[0]) != hi)
    lo = jnp.where(rest.any(), jnp.argmin(jnp.where(rest, rms, jnp.inf)), hi)
    return hi, lo


def _unit_blocks(spec: ModelSpec, params: Params, A, Z, l: int, hi, lo, units) -> jax.Array:
    # 2x2 GGN blocks (len(units), 2, 2), float64, on (W[l][hi, j], W[l][lo, j]) for j in units, from layer l's
    # input A = A[l-1] and pre-activation Z = Z[l] (forward-mode products in their dtype)
    g = functools.partial(model.outputs_from, spec, params, l)
    out0 = g(Z)

    def block(j):
        def jvp_col(u):
            return jax.jvp(g, (Z,), (jnp.zeros_like(Z).at[:, j].set(u),))[1]

        return loss_gram(spec.loss, out0, jnp.stack([jvp_col(A[:, hi]), jvp_col(A[:, lo])]))

    return jax.lax.map(block, jnp.asarray(units))


def lecture_ggn_blocks(spec: ModelSpec, params: Params, X, l: int, hi, lo) -> jax.Array:
    """2x2 GGN blocks on the weight pair (W[l][hi, j], W[l][lo, j]) for every unit j of layer l.

    Returns (sizes[l], 2, 2) float64, loss per weight unit^2. Uses the linearity of Z[l] in W[l]: the
    direction e_hi e_j^T moves Z[l] by A[l-1][:, hi] e_j^T, so each block costs two forward-mode products
    through layers l..L only (in params' dtype), and the loss's Hessian enters in closed form
    (``roundness.loss_gram``, float64; the labels do not enter). ``l``: a Python int (static under jit); hi,
    lo may be traced.
    """
    _, inputs, pre = model.forward_with_inputs(spec, params, X)
    return _unit_blocks(spec, params, inputs[l - 1], pre[l - 1], l, hi, lo, jnp.arange(pre[l - 1].shape[1]))


def choose_unit(blocks) -> jax.Array:
    """The unit j of the lecture slice: the one whose 2x2 GGN block on its two lecture weights has the
    largest trace, i.e. the unit through which J is most sensitive to those weights (ties: lowest j;
    non-finite traces never win). This skips dead units (zero block) and does not select for roundness
    (the trace ignores how the curvature splits between the two axes). 0 if every block is zero. Works
    under jit."""
    blocks = jnp.asarray(blocks)
    tr = blocks[:, 0, 0] + blocks[:, 1, 1]
    return jnp.argmax(jnp.where(jnp.isfinite(tr), tr, -jnp.inf))


def _lecture_grid(spec: ModelSpec, params: Params, X, y, l: int, j, hi, lo, alphas, betas, chunk_size):
    _, inputs, pre = model.forward_with_inputs(spec, params, X)
    A, Z = inputs[l - 1], pre[l - 1]
    u, v = A[:, hi], A[:, lo]
    L = spec.n_layers
    dtype = Z.dtype
    alphas = jnp.asarray(alphas, dtype)
    betas = jnp.asarray(betas, dtype)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    if l == L:
        def point(a, b):
            return outer(Z.at[:, j].add(a * u + b * v))
    elif spec.norm == "layernorm":
        def point(a, b):
            return outer(model.outputs_from(spec, params, l, Z.at[:, j].add(a * u + b * v)))
    else:
        p = params[f"layer{l}"]
        a_col0 = inputs[l][:, j]
        Z_next = pre[l]
        w_row = params[f"layer{l + 1}"]["W"][j]

        def point(a, b):
            zj = Z[:, j] + a * u + b * v
            if spec.norm == "batchnorm":
                zj = model.batch_norm(zj[:, None], p["gamma"][j][None], p["beta"][j][None], spec.eps)[:, 0]
            da = model.activation(spec, zj) - a_col0
            return outer(model.outputs_from(spec, params, l + 1, Z_next + da[:, None] * w_row[None, :]))

    return map_grid(point, alphas, betas, chunk_size)


@functools.partial(jax.jit, static_argnames=("spec", "l", "chunk_size"))
def lecture_grid(spec: ModelSpec, params: Params, X, y, l: int, j, hi, lo, alphas, betas,
                 chunk_size: int = 256) -> jax.Array:
    """Fast path for the lecture slice: ``out[i, k] = J(W[l][hi, j] += alphas[i], W[l][lo, j] += betas[k])``,
    (n_a, n_b), equal to ``evaluate_grid`` along ``lecture_directions``.

    Z[l] = A[l-1] W[l] + b is linear in W[l] and only its column j moves, by
    ``a A[:, hi] + b A[:, lo]``, so A[l-1] is computed once and layers below l never rerun. Without a
    normalization that mixes units (none, batchnorm) the activation of layer l also changes only in
    column j, so Z[l+1] moves by a rank-one term and the first full matmul per grid point is at layer
    l+2. Layer norm mixes the units of layer l, so there layers l..L run in full.
    """
    return _lecture_grid(spec, params, X, y, l, j, hi, lo, alphas, betas, chunk_size)


def _lecture_layer(spec: ModelSpec, params: Params, inputs, pre, l: int, dead_threshold, unit=None) -> dict:
    # layer l's lecture weights (hi, lo), unit j (``choose_unit``, or ``unit``: a traced integer), the RMS and
    # live units of the layer input A[l-1] = inputs[l-1], and whether unit j's output is live (always for the
    # output layer)
    rms = input_rms(inputs[l - 1])
    hi, lo = pick_hi_lo(rms, dead_threshold)
    A, Z = inputs[l - 1], pre[l - 1]
    j = choose_unit(_unit_blocks(spec, params, A, Z, l, hi, lo, jnp.arange(Z.shape[1]))) if unit is None \
        else jnp.asarray(unit)
    unit_live = True if l == spec.n_layers else input_rms(inputs[l])[j] > dead_threshold
    W = params[f"layer{l}"]["W"]
    return {"rms": rms, "live": live_mask(rms, dead_threshold), "hi": hi, "lo": lo, "j": j,
            "origin": jnp.stack([W[hi, j], W[lo, j]]), "unit_live": jnp.asarray(unit_live)}


def _lecture_slice_body(spec: ModelSpec, params: Params, X, y, l: int, unit, dead_threshold, alphas, betas,
                        chunk_size: int):
    out, inputs, pre = model.forward_with_inputs(spec, params, X)
    r = _lecture_layer(spec, params, inputs, pre, l, dead_threshold, unit)
    grid = _lecture_grid(spec, params, X, y, l, r["j"], r["hi"], r["lo"], alphas, betas, chunk_size)
    return {**r, "loss": grid, "loss_center": model.loss_from_outputs(spec, out, y)}


_lecture_slice_jit = jax.jit(_lecture_slice_body, static_argnames=("spec", "l", "chunk_size"))


def _lecture_setup(spec: ModelSpec, params: Params, X, y, dead_threshold):
    # every layer's ``_lecture_layer`` (unit by ``choose_unit``), and the loss at the centre
    out, inputs, pre = model.forward_with_inputs(spec, params, X)
    layers = [_lecture_layer(spec, params, inputs, pre, l, dead_threshold) for l in range(1, spec.n_layers + 1)]
    return layers, model.loss_from_outputs(spec, out, y)


_lecture_setup_jit = jax.jit(_lecture_setup, static_argnames=("spec",))


def _lecture_contour(l: int, r: dict, alphas, betas, ggn, geo) -> ContourSlice:
    # the slice of layer l from ``_lecture_layer``'s r with its grid, its 2x2 GGN (float64) and its plane's
    # geometry (``symmetries.plane_geometry``)
    r = jax.tree_util.tree_map(np.asarray, r)
    j, hi, lo = int(r["j"]), int(r["hi"]), int(r["lo"])
    return ContourSlice(
        slice="lecture", scope=f"layer{l}", alphas=np.asarray(alphas), betas=np.asarray(betas),
        loss=r["loss"], origin=r["origin"], ggn=np.asarray(ggn), loss_center=float(r["loss_center"]),
        info={"unit": j, "input_hi": hi, "input_lo": lo, "input_rms": r["rms"], "live": r["live"]},
        flat_direction=geo.holds_flat, degenerate=(not geo.spans_plane) or not bool(r["unit_live"]),
    )


def lecture_slice(spec: ModelSpec, params: Params, X, y, l: int, *, n_points: int = 41, extent: float = 1.0,
                  dead_threshold: float = 1e-6, unit: int | None = None,
                  chunk_size: int | None = None) -> ContourSlice:
    """The lecture's picture for layer l (1..L): J over the two incoming weights W[l][hi, j],
    W[l][lo, j] of unit j, hi / lo = the live inputs of largest / smallest RMS (``pick_hi_lo``), j by
    ``choose_unit`` unless ``unit`` is given. Grid: ``grid_axes(n_points, extent)`` offsets from the
    current weights, in weight units. One compiled call for the unit and grid (``lecture_grid`` fast path
    inside), one for the 2x2 GGN (``planes.model_ggn``, float64)."""
    X, y = as_data(params, X, y)
    alphas, betas = grid_axes(n_points, extent, X.dtype)
    chunk = chunk_size or auto_chunk_size(spec, X.shape[0], n_points * n_points)
    r = jax.device_get(_lecture_slice_jit(spec, params, X, y, l, None if unit is None else np.int32(unit),
                                          dead_threshold, alphas, betas, int(chunk)))
    host = jax.device_get(params)
    d1, d2 = lecture_directions(host, l, int(r["j"]), int(r["hi"]), int(r["lo"]))
    ggn = model_ggn_jit(spec, params, X, [d1, d2])
    return _lecture_contour(l, r, alphas, betas, ggn, plane_geometry(spec, host, d1, d2, {l: r["live"]}))


def lecture_slices(spec: ModelSpec, params: Params, X, y, *, n_points: int = 41, extent: float = 1.0,
                   dead_threshold: float = 1e-6, chunk_size: int | None = None) -> list[ContourSlice]:
    """``lecture_slice`` of every layer 1..L (unit by ``choose_unit``): one compiled call picks every
    layer's unit and weights, then each grid and 2x2 GGN is a plane of ``run_planes`` (the program every
    slice of every kind shares: the whole model, or the layers from l up, per grid point, without
    ``lecture_grid``'s shortcut, so that one program serves all)."""
    X, y = as_data(params, X, y)
    layers, loss_center = jax.device_get(_lecture_setup_jit(spec, params, X, y, dead_threshold))
    host = jax.device_get(params)
    planes = [(*lecture_directions(host, l, int(r["j"]), int(r["hi"]), int(r["lo"])), float(extent))
              for l, r in enumerate(layers, start=1)]
    grids = run_planes(spec, params, X, y, planes, n_points, chunk_size)
    live_inputs = {l: np.asarray(r["live"]) for l, r in enumerate(layers, start=1)}
    out = []
    for l, (r, (d1, d2, _), (alphas, betas, loss, ggn, _)) in enumerate(zip(layers, planes, grids, strict=True),
                                                                         start=1):
        geo = plane_geometry(spec, host, d1, d2, live_inputs)
        out.append(_lecture_contour(l, {**r, "loss": loss, "loss_center": loss_center}, alphas, betas, ggn, geo))
    return out
