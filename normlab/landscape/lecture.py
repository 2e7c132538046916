"""The lecture's slice of a normlab MLP: J over two incoming weights of one unit.

For layer l the slice starts from the two coordinate directions e_hi, e_lo of the weights ``W[l][hi, j]``
and ``W[l][lo, j]``, where hi / lo are the live units of the layer input A[l-1] (A[0] =
``model.network_input``: the normalized inputs under input batch norm) with the largest / smallest RMS over
the analysis batch (``pick_hi_lo``) and j is the unit through which J is most sensitive to those two
weights (``choose_unit``, on e_hi and e_lo).

Which plane is sliced (``lecture_plane``):

* A unit without a scale-invariant group (no normalization, the output layer, a model of depth 0): the
  plane of e_hi, e_lo themselves, so the grid axes are the weights' own values (``origin + alphas``, origin
  = (W[hi, j], W[lo, j])).
* A scale-invariant unit (batch norm, hidden layer l: the group is unit j's incoming weights W[l][:, j];
  layer norm, hidden layer l: the group is the layer's (W[l], b[l]) together): J does not change along the
  group's radial direction r (the group's own weights, over the live inputs of A[l-1]), so a plane that
  holds it shows the symmetry, not the inputs' scales. e_hi and e_lo are projected onto the orthogonal
  complement of r within the group's coordinates and orthonormalized (Gram-Schmidt, e_hi's first):
  d1, d2 (unit norm, orthogonal to each other and to r). The grid axes are then distances along d1 and d2
  (parameter units), not the weights' own values; the centre's coordinates along them, <w, d1> and
  <w, d2>, are zero, so origin = (0, 0). The row says ``projected``.
* Where that projected plane is not two-dimensional (r lies in the plane of e_hi, e_lo up to
  ``symmetries.PLANE_TOL``: sin^2 of the angle between r and the plane <= PLANE_TOL, e.g. a batch-normalized
  unit with exactly two live inputs, as layer 1 on two input features), no 2-D slice of those weights avoids
  the flat direction: the slice keeps e_hi, e_lo and is flagged ``flat_direction`` (left out of roundness
  claims).

Layer norm's shift directions (every unit of an example moved alike) are flat too; they are not projected
out (only the group's radial direction is), and ``symmetries.plane_geometry`` flags any plane that holds
one. Since the GGN maps r to zero, projecting changes the 2x2 GGN only through the change of basis: with M
= [d1 d2]^T [e_hi e_lo] (2x2), the projected block is M^-T B M^-1, B the block on e_hi, e_lo.

``lecture_slices`` (every layer, what the analysis runs) evaluates the grids as planes of
``planes.run_planes``; ``lecture_slice`` (one layer, any unit) uses the fast path of ``lecture_grid``,
where only layer l's pre-activation Z[l] moves (only its column j unless the layer is layer-normalized or
the output layer).

The slice's 2x2 GGN is computed in float64 as every slice's (``planes.model_ggn``); the blocks of all units
that ``choose_unit`` compares use forward-mode products in the parameters' dtype (their traces need no
more) and the loss's Hessian in closed form in float64 (``roundness.loss_gram``). A slice is ``degenerate``
when hi == lo (fewer than two live inputs) or its unit is dead, and holds a ``flat_direction`` when its
plane holds one (``symmetries.plane_geometry``) or its projection is not two-dimensional.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model
from normlab.landscape.directions import embed_direction
from normlab.landscape.grids import auto_chunk_size, grid_axes, map_grid
from normlab.landscape.planes import as_data, model_ggn_jit, run_planes
from normlab.landscape.roundness import loss_gram
from normlab.landscape.slices import ContourSlice
from normlab.landscape.symmetries import PLANE_TOL, plane_geometry
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


def group_radial(xp, spec: ModelSpec, layer_params, l: int, j, live) -> dict:
    """The radial direction r of the scale-invariant group that holds unit j's incoming weights W[l][:, j],
    as layer l's arrays ({"W": (n_in, n_out)} and "b": (n_out,) where the layer has a bias), float64, over
    the live inputs of A[l-1] (``live``: (n_in,) bool; a dead input's weight does not move Z[l] on the
    batch): batch norm, hidden l: W[l][:, j] in column j, zero elsewhere; layer norm, hidden l: the whole
    (W[l], b[l]); zero for every other unit (no normalization, the output layer). ``xp``: numpy (on the
    host, j an int) or jax.numpy (under jit, j may be traced)."""
    W = xp.asarray(layer_params["W"], xp.float64)
    live_rows = xp.asarray(live, bool)[:, None]
    out = {"W": xp.zeros_like(W)}
    if "b" in layer_params:
        out["b"] = xp.zeros(W.shape[1], xp.float64)
    if l < spec.n_layers and spec.norm == "batchnorm":
        out["W"] = xp.where(live_rows & (xp.arange(W.shape[1])[None, :] == j), W, 0.0)
    elif l < spec.n_layers and spec.norm == "layernorm":
        out["W"] = xp.where(live_rows, W, 0.0)
        out["b"] = xp.asarray(layer_params["b"], xp.float64)
    return out


def _dot(xp, u: dict, v: dict):
    return sum(xp.sum(u[k] * v[k]) for k in u)


def _lecture_plane(xp, spec: ModelSpec, layer_params, l: int, j, hi, lo, live, tol: float = PLANE_TOL) -> dict:
    # ``lecture_plane`` on layer l's arrays: {"d1", "d2": layer l's direction arrays (float64), "projected",
    # "in_plane": booleans}; numpy or jax.numpy (``xp``), so that the host and a compiled call share the math
    r = group_radial(xp, spec, layer_params, l, j, live)
    rows = xp.arange(r["W"].shape[0])[:, None]
    cols = xp.arange(r["W"].shape[1])[None, :]

    def unit(row):
        d = {k: xp.zeros_like(x) for k, x in r.items()}
        d["W"] = xp.where((rows == row) & (cols == j), 1.0, 0.0)
        return d

    e1, e2 = unit(hi), unit(lo)
    rr = _dot(xp, r, r)
    safe = xp.where(rr > 0, rr, 1.0)
    # sin^2 of the angle between r and the plane of e1, e2: r's squared norm off the two coordinates over
    # its squared norm (no cancellation, whatever the angle)
    off = _dot(xp, {k: r[k] * r[k] for k in r}, {k: 1.0 - xp.maximum(e1[k], e2[k]) for k in r})
    sin2 = off / safe
    plane = xp.logical_and(hi != lo, rr > 0)
    projected = xp.logical_and(plane, sin2 > tol)
    q1 = {k: e1[k] - _dot(xp, e1, r) / safe * r[k] for k in r}
    n1 = xp.sqrt(_dot(xp, q1, q1))
    p1 = {k: q1[k] / xp.where(n1 > 0, n1, 1.0) for k in r}
    q2 = {k: e2[k] - _dot(xp, e2, r) / safe * r[k] for k in r}
    c = _dot(xp, q2, p1)
    q2 = {k: q2[k] - c * p1[k] for k in r}
    n2 = xp.sqrt(_dot(xp, q2, q2))
    p2 = {k: q2[k] / xp.where(n2 > 0, n2, 1.0) for k in r}
    return {"d1": {k: xp.where(projected, p1[k], e1[k]) for k in r},
            "d2": {k: xp.where(projected, p2[k], e2[k]) for k in r},
            "projected": projected, "in_plane": xp.logical_and(plane, xp.logical_not(projected))}


def lecture_plane(spec: ModelSpec, params: Params, l: int, j: int, hi: int, lo: int, live=None, *,
                  tol: float = PLANE_TOL) -> tuple[Params, Params, bool, bool]:
    """The plane of layer l's lecture slice of unit j (module docstring), on the host: (d1, d2, projected,
    in_plane).

    d1, d2: full direction pytrees shaped like params (numpy, in the params' dtypes), unit norm. Without a
    scale-invariant group, or where the group's radial direction r (``group_radial``; ``live``: (n_in,)
    bool, the live inputs of A[l-1], default all) lies in the plane of e_hi, e_lo (sin^2 of their angle <=
    tol) or hi == lo: e_hi and e_lo on W[l][hi, j], W[l][lo, j] (projected False). Otherwise the projections
    of e_hi, e_lo onto the orthogonal complement of r within the group's coordinates (layer l's W and b),
    orthonormalized with e_hi's first (projected True): grid coordinates along them are distances in
    parameter units. in_plane: the layer has a group with r != 0 lying in the plane of e_hi, e_lo (the slice
    holds the flat direction: ``flat_direction``). Projection and test in float64."""
    name = f"layer{l}"
    layer = {k: np.asarray(params[name][k]) for k in ("W", "b") if k in params[name]}
    live = np.ones(layer["W"].shape[0], bool) if live is None else np.asarray(live, bool)
    pl = _lecture_plane(np, spec, layer, l, int(j), int(hi), int(lo), live, tol)
    d1, d2 = (embed_direction({name: pl[k]}, params) for k in ("d1", "d2"))
    return d1, d2, bool(pl["projected"]), bool(pl["in_plane"])


def _plane_grid(spec: ModelSpec, params: Params, inputs, pre, y, l: int, j, D1: dict, D2: dict, alphas, betas,
                chunk_size):
    # J on the plane of two directions D1, D2 inside layer l's W and b (layer l's arrays) from the forward pass's
    # layer inputs and pre-activations; the directions must lie in column j of W[l] (no bias) unless l is the
    # output layer or layer-normalized
    A, Z = inputs[l - 1], pre[l - 1]
    P1, P2 = model.affine(D1, A), model.affine(D2, A)  # how Z[l] moves along D1, D2: (m, sizes[l])
    L = spec.n_layers
    dtype = Z.dtype
    alphas = jnp.asarray(alphas, dtype)
    betas = jnp.asarray(betas, dtype)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    if l == L or spec.norm == "layernorm":
        def point(a, b):
            return outer(model.outputs_from(spec, params, l, Z + a * P1 + b * P2))
    else:
        u, v = P1[:, j], P2[:, j]
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


def _layer_dirs(layer_params, j, hi, lo):
    # e_hi, e_lo as layer l's arrays (W, and b if present), in the layer's dtype
    def unit(row):
        d = {k: jnp.zeros_like(layer_params[k]) for k in ("W", "b") if k in layer_params}
        d["W"] = d["W"].at[row, j].set(1)
        return d

    return unit(hi), unit(lo)


@functools.partial(jax.jit, static_argnames=("spec", "l", "chunk_size"))
def lecture_grid(spec: ModelSpec, params: Params, X, y, l: int, j, hi, lo, alphas, betas,
                 chunk_size: int = 256) -> jax.Array:
    """Fast path for the unprojected lecture slice: ``out[i, k] = J(W[l][hi, j] += alphas[i], W[l][lo, j] +=
    betas[k])``, (n_a, n_b), equal to ``evaluate_grid`` along ``lecture_directions``.

    Z[l] = A[l-1] W[l] + b is linear in W[l] and only its column j moves, by ``a A[:, hi] + b A[:, lo]``,
    so A[l-1] is computed once and layers below l never rerun. Without a normalization that mixes units
    (none, batchnorm) the activation of layer l also changes only in column j, so Z[l+1] moves by a
    rank-one term and the first full matmul per grid point is at layer l+2. Layer norm mixes the units of
    layer l, so there layers l..L run in full. (A projected plane of a batch-normalized unit also lies in
    column j and takes the same path; a layer-normalized layer's runs layers l..L: ``lecture_slice``.)
    """
    _, inputs, pre = model.forward_with_inputs(spec, params, X)
    D1, D2 = _layer_dirs(params[f"layer{l}"], j, hi, lo)
    return _plane_grid(spec, params, inputs, pre, y, l, j, D1, D2, alphas, betas, chunk_size)


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
    layer = params[f"layer{l}"]
    pl = _lecture_plane(jnp, spec, layer, l, r["j"], r["hi"], r["lo"], r["live"])
    D1, D2 = ({k: x.astype(layer[k].dtype) for k, x in pl[d].items()} for d in ("d1", "d2"))
    grid = _plane_grid(spec, params, inputs, pre, y, l, r["j"], D1, D2, alphas, betas, chunk_size)
    return {**r, "d1": D1, "d2": D2, "projected": pl["projected"], "in_plane": pl["in_plane"], "loss": grid,
            "loss_center": model.loss_from_outputs(spec, out, y)}


_lecture_slice_jit = jax.jit(_lecture_slice_body, static_argnames=("spec", "l", "chunk_size"))


def _lecture_setup(spec: ModelSpec, params: Params, X, y, dead_threshold):
    # every layer's ``_lecture_layer`` (unit by ``choose_unit``), and the loss at the centre
    out, inputs, pre = model.forward_with_inputs(spec, params, X)
    layers = [_lecture_layer(spec, params, inputs, pre, l, dead_threshold) for l in range(1, spec.n_layers + 1)]
    return layers, model.loss_from_outputs(spec, out, y)


_lecture_setup_jit = jax.jit(_lecture_setup, static_argnames=("spec",))


def _lecture_contour(l: int, r: dict, alphas, betas, ggn, geo, projected: bool, in_plane: bool) -> ContourSlice:
    # the slice of layer l from ``_lecture_layer``'s r with its grid, its 2x2 GGN (float64), its plane's
    # geometry (``symmetries.plane_geometry``) and its projection (``lecture_plane``)
    r = jax.tree_util.tree_map(np.asarray, r)
    j, hi, lo = int(r["j"]), int(r["hi"]), int(r["lo"])
    return ContourSlice(
        slice="lecture", scope=f"layer{l}", alphas=np.asarray(alphas), betas=np.asarray(betas),
        loss=r["loss"], origin=np.zeros(2, r["origin"].dtype) if projected else r["origin"], ggn=np.asarray(ggn),
        loss_center=float(r["loss_center"]),
        info={"unit": j, "input_hi": hi, "input_lo": lo, "input_rms": r["rms"], "live": r["live"]},
        flat_direction=bool(geo.holds_flat or in_plane),
        degenerate=(not geo.spans_plane) or not bool(r["unit_live"]), projected=bool(projected),
    )


def lecture_slice(spec: ModelSpec, params: Params, X, y, l: int, *, n_points: int = 41, extent: float = 1.0,
                  dead_threshold: float = 1e-6, unit: int | None = None,
                  chunk_size: int | None = None) -> ContourSlice:
    """The lecture's picture for layer l (1..L): J on the plane of unit j's two incoming weights W[l][hi, j],
    W[l][lo, j], projected orthogonally to the unit's scale-invariant group where it has one
    (``lecture_plane``; module docstring), hi / lo = the live inputs of largest / smallest RMS
    (``pick_hi_lo``), j by ``choose_unit`` unless ``unit`` is given. Grid: ``grid_axes(n_points, extent)``
    offsets from the current parameters along the plane's two unit directions, in parameter units (the
    weights' own values are ``origin + alphas``, ``origin + betas`` when not projected). One compiled call for
    the unit, plane and grid (only Z[l] moves, then layers l..L run: ``lecture_grid``'s fast path), one for
    the 2x2 GGN (``planes.model_ggn``, float64)."""
    X, y = as_data(params, X, y)
    alphas, betas = grid_axes(n_points, extent, X.dtype)
    chunk = chunk_size or auto_chunk_size(spec, X.shape[0], n_points * n_points)
    r = jax.device_get(_lecture_slice_jit(spec, params, X, y, l, None if unit is None else np.int32(unit),
                                          dead_threshold, alphas, betas, int(chunk)))
    host = jax.device_get(params)
    d1, d2 = (embed_direction({f"layer{l}": r[k]}, host) for k in ("d1", "d2"))
    ggn = model_ggn_jit(spec, params, X, [d1, d2])
    geo = plane_geometry(spec, host, d1, d2, {l: r["live"]})
    return _lecture_contour(l, r, alphas, betas, ggn, geo, bool(r["projected"]), bool(r["in_plane"]))


def lecture_slices(spec: ModelSpec, params: Params, X, y, *, n_points: int = 41, extent: float = 1.0,
                   dead_threshold: float = 1e-6, chunk_size: int | None = None,
                   grid: bool = True) -> list[ContourSlice]:
    """``lecture_slice`` of every layer 1..L (unit by ``choose_unit``, plane by ``lecture_plane``): one
    compiled call picks every layer's unit and weights, the planes are built on the host, then each grid
    and 2x2 GGN is a plane of ``run_planes`` (the program every slice of every kind shares: the whole model,
    or the layers from l up, per grid point, without ``lecture_grid``'s shortcut, so that one program serves
    all). ``grid`` False: every slice's unit, plane and 2x2 GGN without its grid (loss None)."""
    X, y = as_data(params, X, y)
    layers, loss_center = jax.device_get(_lecture_setup_jit(spec, params, X, y, dead_threshold))
    host = jax.device_get(params)
    made = [lecture_plane(spec, host, l, int(r["j"]), int(r["hi"]), int(r["lo"]), r["live"])
            for l, r in enumerate(layers, start=1)]
    grids = run_planes(spec, params, X, y, [(d1, d2, float(extent)) for d1, d2, _, _ in made], n_points, chunk_size,
                       grid)
    live_inputs = {l: np.asarray(r["live"]) for l, r in enumerate(layers, start=1)}
    out = []
    for l, (r, (d1, d2, projected, in_plane), (alphas, betas, loss, ggn, _)) in enumerate(
            zip(layers, made, grids, strict=True), start=1):
        geo = plane_geometry(spec, host, d1, d2, live_inputs)
        out.append(_lecture_contour(l, {**r, "loss": loss, "loss_center": loss_center}, alphas, betas, ggn, geo,
                                    projected, in_plane))
    return out
