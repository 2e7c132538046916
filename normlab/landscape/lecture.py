"""The lecture's slice of a normlab MLP: J over two incoming weights of one unit.

For layer l the slice moves ``W[l][hi, j]`` and ``W[l][lo, j]``, where hi / lo are the live units of the
layer input A[l-1] with the largest / smallest RMS over the analysis batch (``pick_hi_lo``) and j is the
unit through which J is most sensitive to those two weights (``choose_unit``). The directions are unit
vectors on those two coordinates (``lecture_directions``), so the grid axes are the weights' own values
(``origin + alphas``).

``lecture_slices`` (every layer, what the analysis runs) evaluates the grids as planes of
``planes.run_planes``; ``lecture_slice`` (one layer, any unit) uses the fast path ``lecture_grid``, where
only one column of one layer's pre-activation moves.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model
from normlab.landscape.directions import lecture_directions
from normlab.landscape.grids import auto_chunk_size, grid_axes, map_grid
from normlab.landscape.planes import as_data, run_planes
from normlab.landscape.roundness import outer_hvp
from normlab.landscape.slices import ContourSlice
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


def lecture_ggn_blocks(spec: ModelSpec, params: Params, X, y, l: int, hi, lo) -> jax.Array:
    """2x2 GGN blocks on the weight pair (W[l][hi, j], W[l][lo, j]) for every unit j of layer l.

    Returns (sizes[l], 2, 2), loss per weight unit^2. Uses the linearity of Z[l] in W[l]: the direction
    e_hi e_j^T moves Z[l] by A[l-1][:, hi] e_j^T, so each block costs two forward-mode products through
    layers l..L only. ``l``: a Python int (static under jit); hi, lo may be traced.
    """
    _, inputs, pre = model.forward_with_inputs(spec, params, X)
    A, Z = inputs[l - 1], pre[l - 1]
    g = functools.partial(model.outputs_from, spec, params, l)
    out0 = g(Z)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    def block(j):
        def jvp_col(u):
            return jax.jvp(g, (Z,), (jnp.zeros_like(Z).at[:, j].set(u),))[1]

        U = jnp.stack([jvp_col(A[:, hi]), jvp_col(A[:, lo])])
        HU = jax.vmap(lambda u: outer_hvp(outer, out0, u))(U)
        M = jnp.einsum("imk,jmk->ij", U, HU)
        return 0.5 * (M + M.T)

    return jax.lax.map(block, jnp.arange(Z.shape[1]))


def choose_unit(blocks) -> jax.Array:
    """The unit j of the lecture slice: the one whose 2x2 GGN block on its two lecture weights has the
    largest trace, i.e. the unit through which J is most sensitive to those weights (ties: lowest j).
    This skips dead units (zero block) and does not select for roundness (the trace ignores how the
    curvature splits between the two axes). 0 if every block is zero. Works under jit."""
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


def _lecture_layer(spec: ModelSpec, params: Params, X, y, l: int, inputs, dead_threshold, unit=None) -> dict:
    # layer l's lecture weights (hi, lo), unit j (``choose_unit``, or ``unit`` where it is >= 0: a traced
    # integer), their 2x2 GGN block, and the RMS and live units of the layer input A[l-1] = inputs[l-1]
    rms = input_rms(inputs[l - 1])
    hi, lo = pick_hi_lo(rms, dead_threshold)
    blocks = lecture_ggn_blocks(spec, params, X, y, l, hi, lo)
    j = choose_unit(blocks) if unit is None else jnp.where(unit >= 0, unit, choose_unit(blocks))
    W = params[f"layer{l}"]["W"]
    return {"rms": rms, "live": live_mask(rms, dead_threshold), "hi": hi, "lo": lo, "j": j, "ggn": blocks[j],
            "origin": jnp.stack([W[hi, j], W[lo, j]])}


def _lecture_slice_body(spec: ModelSpec, params: Params, X, y, l: int, unit, dead_threshold, alphas, betas,
                        chunk_size: int):
    out, inputs, _ = model.forward_with_inputs(spec, params, X)
    r = _lecture_layer(spec, params, X, y, l, inputs, dead_threshold, unit)
    grid = _lecture_grid(spec, params, X, y, l, r["j"], r["hi"], r["lo"], alphas, betas, chunk_size)
    return {**r, "loss": grid, "loss_center": model.loss_from_outputs(spec, out, y)}


_lecture_slice_jit = jax.jit(_lecture_slice_body, static_argnames=("spec", "l", "chunk_size"))


def _lecture_setup(spec: ModelSpec, params: Params, X, y, dead_threshold):
    # every layer's ``_lecture_layer`` (unit by ``choose_unit``), and the loss at the centre
    out, inputs, _ = model.forward_with_inputs(spec, params, X)
    layers = [_lecture_layer(spec, params, X, y, l, inputs, dead_threshold) for l in range(1, spec.n_layers + 1)]
    return layers, model.loss_from_outputs(spec, out, y)


_lecture_setup_jit = jax.jit(_lecture_setup, static_argnames=("spec",))


def _lecture_contour(l: int, r: dict, alphas, betas) -> ContourSlice:
    r = jax.tree_util.tree_map(np.asarray, r)
    return ContourSlice(
        slice="lecture", scope=f"layer{l}", alphas=np.asarray(alphas), betas=np.asarray(betas),
        loss=r["loss"], origin=r["origin"], ggn=r["ggn"], loss_center=float(r["loss_center"]),
        info={"unit": int(r["j"]), "input_hi": int(r["hi"]), "input_lo": int(r["lo"]), "input_rms": r["rms"],
              "live": r["live"]},
    )


def lecture_slice(spec: ModelSpec, params: Params, X, y, l: int, *, n_points: int = 41, extent: float = 1.0,
                  dead_threshold: float = 1e-6, unit: int | None = None,
                  chunk_size: int | None = None) -> ContourSlice:
    """The lecture's picture for layer l (1..L): J over the two incoming weights W[l][hi, j],
    W[l][lo, j] of unit j, hi / lo = the live inputs of largest / smallest RMS (``pick_hi_lo``), j by
    ``choose_unit`` unless ``unit`` is given. Grid: ``grid_axes(n_points, extent)`` offsets from the
    current weights, in weight units. One compiled call (``lecture_grid`` fast path inside)."""
    X, y = as_data(params, X, y)
    alphas, betas = grid_axes(n_points, extent, X.dtype)
    chunk = chunk_size or auto_chunk_size(spec, X.shape[0], n_points * n_points)
    r = _lecture_slice_jit(spec, params, X, y, l, -1 if unit is None else int(unit), dead_threshold, alphas,
                           betas, int(chunk))
    return _lecture_contour(l, r, alphas, betas)


def lecture_slices(spec: ModelSpec, params: Params, X, y, *, n_points: int = 41, extent: float = 1.0,
                   dead_threshold: float = 1e-6, chunk_size: int | None = None) -> list[ContourSlice]:
    """``lecture_slice`` of every layer 1..L (unit by ``choose_unit``): one compiled call picks every
    layer's unit and weights, then each grid is a plane of ``run_planes`` (the program every slice of
    every kind shares: the whole model, or the layers from l up, per grid point, without
    ``lecture_grid``'s shortcut, so that one program serves all)."""
    X, y = as_data(params, X, y)
    layers, loss_center = jax.device_get(_lecture_setup_jit(spec, params, X, y, dead_threshold))
    planes = [(*lecture_directions(params, l, int(r["j"]), int(r["hi"]), int(r["lo"])), float(extent))
              for l, r in enumerate(layers, start=1)]
    out = []
    for l, (r, (alphas, betas, loss, _, _)) in enumerate(
            zip(layers, run_planes(spec, params, X, y, planes, n_points, chunk_size), strict=True), start=1):
        r = {**r, "loss": loss, "loss_center": loss_center}
        out.append(_lecture_contour(l, r, alphas, betas))
    return out
