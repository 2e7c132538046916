"""2-D contour slices of the loss J around a point, and how round they are (DESIGN.md 1, item 4).

A slice is the loss on a grid ``J(center + alpha * d1 + beta * d2)`` for two direction pytrees
``d1, d2`` shaped like the parameters. Three kinds of directions are built here:

* ``lecture``: the lecture's picture for layer l. Two incoming weights ``W[l][hi, j]`` and
  ``W[l][lo, j]`` of one unit j, where hi / lo are the live units of the layer input A[l-1] with the
  largest / smallest RMS over the analysis batch. The directions are unit vectors on those two
  coordinates, so the grid axes are the weights' own values (``origin + alphas``).
* ``eig``: two given directions (the top-2 Hessian eigenvectors from ``normlab.curvature``), for the
  whole model or restricted to one layer (zero elsewhere).
* ``random``: filter-normalized Gaussian directions (Li et al. 2018).

Roundness of a slice is reported two ways:

* ``axis_ratio_ggn = sqrt(lambda_1 / lambda_2)`` of the projected 2x2 Gauss-Newton matrix
  ``D^T G D`` (D = [d1 d2]), computed with forward-mode products through the model outputs and the
  Hessian of the outer loss on the outputs. The contours of the local quadratic model are ellipses with
  exactly this axis ratio. A slice whose 2x2 GGN is singular (smallest eigenvalue <= rel_tol x largest,
  or largest <= 0: e.g. a dead unit, whose weights do not affect J) is flagged ``singular`` and its ratio
  is NaN.
* ``axis_ratio_levelset``: a quadratic ``c0 + c.(a, b) + 1/2 (a, b) H (a, b)^T`` fitted by least
  squares to the grid points inside the sub-level set ``J <= J0 + delta`` (J0 = the loss at the centre,
  delta = a fraction of the grid's loss range; see ``levelset_axis_ratio``). Its level curve
  ``J0 + delta`` is an ellipse with axis ratio ``sqrt(lambda_max(H) / lambda_min(H))``; NaN when the
  fitted H is not positive definite (the level set is not an ellipse: e.g. J is not convex on the slice,
  which the GGN, always PSD, cannot show), when the quadratic does not describe the grid (its misfit,
  reported as ``levelset_misfit``, is above a bound: ReLU kinks, or J nearly linear over the grid as at
  initialization), when the weak axis' curvature is not resolved (``levelset_rel_err``), or when there
  are too few points. It measures what the picture shows, the
  non-quadratic part of J over the plotted range included, where the GGN ratio is local.

Grids are evaluated vectorized (vmap over chunks of grid points, one compiled program): generically
by ``evaluate_grid`` for any loss_fn, and for the MLP by ``model_grid`` (layers below the first one the
directions touch run once) and ``lecture_grid`` (only one column of one layer's pre-activation moves).

Units: grid coordinates ``alphas``, ``betas`` are in parameter units (the directions of ``lecture``
and ``eig`` slices have unit norm, so a coordinate is a Euclidean distance in parameter space; for
``random`` slices a coordinate of 1 is a step as large as the weights themselves, filter by filter).
Losses are in the loss's own units (nats for softmax cross-entropy, squared target units for mse).

Every function computes in the dtype of the parameters it is given (float64 is recommended for the
analysis: a ratio r needs about r^2 of dynamic range in the 2x2 GGN).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab import model
from normlab.curvature import host_rng
from normlab.model import ModelSpec, Params

SLICES = ("lecture", "eig", "random")
ROW_KEYS = (
    "slice", "scope", "axis_ratio_ggn", "axis_ratio_levelset", "singular", "levelset_misfit",
    "levelset_rel_err",
    "lambda_max_ggn", "lambda_min_ggn", "loss_center", "extent", "unit", "input_hi", "input_lo",
    "rms_hi", "rms_lo",
)

# ----------------------------------------------------------------------------------------------------
# Generic core: grids of J along two directions
# ----------------------------------------------------------------------------------------------------


def grid_axes(n_points: int, extent: float, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric grid coordinates: ``alphas = betas = linspace(-extent, extent, n_points)``, each
    (n_points,) numpy, in parameter units. An odd ``n_points`` puts a grid point exactly on the centre."""
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    if not extent > 0:
        raise ValueError(f"extent must be > 0, got {extent}")
    axis = np.linspace(-extent, extent, n_points, dtype=np.dtype(dtype))
    return axis, axis


def _map_grid(point_fn: Callable, alphas: jax.Array, betas: jax.Array, chunk_size: int) -> jax.Array:
    """Evaluate ``point_fn(a, b) -> scalar`` on the grid alphas x betas, ``chunk_size`` points at a time
    (vmap inside a chunk, ``lax.map`` over chunks, so memory is bounded by one chunk). Returns
    (len(alphas), len(betas)); entry [i, k] is at (alphas[i], betas[k])."""
    A, B = jnp.meshgrid(alphas, betas, indexing="ij")
    a, b = A.ravel(), B.ravel()
    n = a.shape[0]
    chunk = max(1, min(int(chunk_size), n))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    a = jnp.pad(a, (0, pad)).reshape(n_chunks, chunk)
    b = jnp.pad(b, (0, pad)).reshape(n_chunks, chunk)
    vals = jax.lax.map(lambda ab: jax.vmap(point_fn)(ab[0], ab[1]), (a, b))
    return vals.reshape(-1)[:n].reshape(A.shape)


def _shift(center, d1, d2, a, b):
    return jax.tree_util.tree_map(lambda c, x, y: c + a * x + b * y, center, d1, d2)


@functools.partial(jax.jit, static_argnames=("loss_fn", "chunk_size"))
def _evaluate_grid_jit(loss_fn, center, d1, d2, alphas, betas, args, chunk_size):
    return _map_grid(lambda a, b: loss_fn(_shift(center, d1, d2, a, b), *args), alphas, betas, chunk_size)


def evaluate_grid(loss_fn: Callable, center, d1, d2, alphas, betas, *, args: tuple = (),
                  chunk_size: int | None = None) -> jax.Array:
    """Loss on a 2-D grid, vectorized and jit-compiled: ``out[i, k] = loss_fn(center + alphas[i] d1 +
    betas[k] d2, *args)``.

    loss_fn(params, *args) -> scalar; pass the data (X, y) through ``args`` (traced arrays) and reuse
    the same function object across calls so the compiled program is reused. center, d1, d2: pytrees
    of the same structure. alphas (n_a,), betas (n_b,): coordinates in units of d1, d2.
    chunk_size: grid points evaluated together (bounds memory at chunk_size forward passes); default
    16 on CPU (cache-sized chunks ran fastest there), 1024 on an accelerator.
    Returns (n_a, n_b) in the dtype of the loss.
    """
    if chunk_size is None:
        chunk_size = 16 if jax.default_backend() == "cpu" else 1024
    dtype = _tree_dtype(center)
    d1 = _cast_like(d1, center)
    d2 = _cast_like(d2, center)
    return _evaluate_grid_jit(loss_fn, center, d1, d2, jnp.asarray(alphas, dtype), jnp.asarray(betas, dtype),
                              tuple(args), int(chunk_size))


def evaluate_grid_loop(loss_fn: Callable, center, d1, d2, alphas, betas, *, args: tuple = ()) -> np.ndarray:
    """Reference implementation of ``evaluate_grid``: one (compiled) loss call per grid point from a
    Python loop. For tests and benchmarks only; returns a numpy (n_a, n_b) array."""
    dtype = _tree_dtype(center)
    d1 = _cast_like(d1, center)
    d2 = _cast_like(d2, center)
    point = jax.jit(lambda a, b, c, x, y, *rest: loss_fn(_shift(c, x, y, a, b), *rest))
    alphas = np.asarray(alphas, dtype)
    betas = np.asarray(betas, dtype)
    out = np.empty((alphas.size, betas.size), dtype)
    for i, a in enumerate(alphas):
        for k, b in enumerate(betas):
            out[i, k] = float(point(a, b, center, d1, d2, *args))
    return out


# ----------------------------------------------------------------------------------------------------
# Roundness: projected Gauss-Newton matrix and level-set fit
# ----------------------------------------------------------------------------------------------------


def _outer_hvp(outer: Callable, out: jax.Array, u: jax.Array) -> jax.Array:
    """Hessian of the outer loss at the outputs ``out`` applied to ``u`` (same shape as out)."""
    return jax.jvp(jax.grad(outer), (out,), (u,))[1]


def projected_ggn(f: Callable, outer: Callable, params, directions: Sequence) -> jax.Array:
    """Projected Gauss-Newton matrix ``D^T G D`` (k, k) for J = outer(f(params)).

    f(params) -> model outputs (m, n_out); outer(outputs) -> scalar loss (e.g. mean softmax
    cross-entropy or mse, as ``model.loss_from_outputs``). directions: k pytrees shaped like params.
    G = Jf^T H_outer Jf, so entry [i, k] = (Jf d_i)^T H_outer (Jf d_k): k forward-mode products through f
    and k Hessian-vector products of outer on the outputs. Units: loss per (parameter unit)^2.
    """
    dirs = [_cast_like(d, params) for d in directions]
    out0, U = None, []
    for d in dirs:
        out0, u = jax.jvp(f, (params,), (d,))
        U.append(u)
    U = jnp.stack(U)
    HU = jax.vmap(lambda u: _outer_hvp(outer, out0, u))(U)
    M = jnp.einsum("i...,j...->ij", U, HU)
    return 0.5 * (M + M.T)


def default_rel_tol(dtype) -> float:
    """Relative tolerance below which the smaller eigenvalue of a 2x2 GGN counts as zero:
    1e-12 in float64 (ratios up to 1e6 are measurable), 1e-7 in float32 (about 3000)."""
    return 1e-12 if jnp.dtype(dtype).itemsize >= 8 else 1e-7


def eig2x2(M) -> tuple[float, float]:
    """Eigenvalues (largest, smallest) of a symmetric 2x2 matrix, in closed form. The smaller one is
    taken as det / largest, which keeps its relative precision when it is tiny (no cancellation
    between two nearly equal numbers, unlike a generic eigensolver)."""
    M = np.asarray(M, np.float64)
    a, b, d = M[0, 0], 0.5 * (M[0, 1] + M[1, 0]), M[1, 1]
    lam_max = 0.5 * (a + d) + math.hypot(0.5 * (a - d), b)
    det = a * d - b * b
    lam_min = det / lam_max if lam_max > 0 else 0.5 * (a + d) - math.hypot(0.5 * (a - d), b)
    return float(lam_max), float(lam_min)


def axis_ratio_2x2(M, rel_tol: float | None = None) -> tuple[float, bool, float, float]:
    """Axis ratio ``sqrt(lambda_max / lambda_min)`` of the ellipses ``x^T M x = const`` for a symmetric
    PSD 2x2 matrix M. Returns (ratio, singular, lambda_max, lambda_min). ``singular`` when lambda_max
    is not > 0 or not finite, or lambda_min <= rel_tol * lambda_max; the ratio is then NaN.
    rel_tol defaults to ``default_rel_tol`` of M's dtype."""
    if rel_tol is None:
        rel_tol = default_rel_tol(np.asarray(M).dtype)
    lam_max, lam_min = eig2x2(M)
    singular = not (np.isfinite(lam_max) and np.isfinite(lam_min) and lam_max > 0
                    and lam_min > rel_tol * lam_max)
    ratio = float("nan") if singular else math.sqrt(lam_max / lam_min)
    return ratio, bool(singular), lam_max, lam_min


class QuadraticFit(NamedTuple):
    """Result of ``fit_quadratic``. coef (6,) = c0, c1, c2, h11, h12, h22; H (2, 2) in loss per
    coordinate^2; misfit = RMS residual / RMS of what the quadratic terms add beyond the best plane (0
    for an exactly quadratic J, about 1 or more where the grid's curvature is not a quadratic's: ReLU
    kinks, or too small to resolve); lam_min_se = standard error of H's smaller eigenvalue from the
    least-squares covariance (residual variance x (D^T D)^-1), first order in the perturbation."""

    coef: np.ndarray
    H: np.ndarray
    misfit: float
    lam_min_se: float


def fit_quadratic(alphas, betas, loss, mask=None) -> QuadraticFit:
    """Least-squares fit of ``q(a, b) = c0 + c1 a + c2 b + 1/2 [a b] H [a b]^T`` to the grid values
    ``loss[i, k]`` at (alphas[i], betas[k]), using only the entries where ``mask`` (n_a, n_b) is true
    (at least 7). Coordinates are rescaled to [-1, 1] for the solve, so the fit is well conditioned
    whatever the extent. See ``QuadraticFit``."""
    alphas = np.asarray(alphas, np.float64)
    betas = np.asarray(betas, np.float64)
    loss = np.asarray(loss, np.float64)
    A, B = np.meshgrid(alphas, betas, indexing="ij")
    if mask is None:
        mask = np.isfinite(loss)
    sa = max(float(np.max(np.abs(alphas))), np.finfo(float).tiny)
    sb = max(float(np.max(np.abs(betas))), np.finfo(float).tiny)
    a, b, y = A[mask] / sa, B[mask] / sb, loss[mask]
    design = np.stack([np.ones_like(a), a, b, 0.5 * a * a, a * b, 0.5 * b * b], axis=1)
    coef, *_ = np.linalg.lstsq(design, y, rcond=None)
    plane, *_ = np.linalg.lstsq(design[:, :3], y, rcond=None)
    resid = y - design @ coef
    ss_quad = float(np.mean(np.square(resid)))
    signal = float(np.mean(np.square(y - design[:, :3] @ plane))) - ss_quad
    misfit = math.sqrt(ss_quad / signal) if signal > 0 else float("inf")
    scale = np.array([1.0, sa, sb, sa * sa, sa * sb, sb * sb])
    c = coef / scale
    cov = float(resid @ resid) / max(y.size - 6, 1) * np.linalg.pinv(design.T @ design)
    cov = cov[3:, 3:] / np.outer(scale[3:], scale[3:])
    H = np.array([[c[3], c[4]], [c[4], c[5]]])
    _, V = np.linalg.eigh(H)
    v = V[:, 0]
    g = np.array([v[0] ** 2, 2 * v[0] * v[1], v[1] ** 2])  # d lambda_min / d (h11, h12, h22)
    return QuadraticFit(c, H, misfit, math.sqrt(max(float(g @ cov @ g), 0.0)))


class LevelsetFit(NamedTuple):
    """Result of ``levelset_axis_ratio``: ratio (NaN if not resolved), H (2, 2), misfit, rel_err =
    standard error / value of H's smaller eigenvalue, n_points used."""

    ratio: float
    H: np.ndarray
    misfit: float
    rel_err: float
    n_points: int


def levelset_axis_ratio(alphas, betas, loss, delta: float = 0.05, *, min_points: int = 12,
                        reference: str = "centre", max_misfit: float = 0.2,
                        max_rel_err: float = 0.2) -> LevelsetFit:
    """Axis ratio of the level curve ``J0 + delta_abs`` of the grid, by a quadratic fit.

    J0 = the loss at the grid point nearest the centre (alpha, beta) = (0, 0) (``reference="centre"``,
    the default) or the grid minimum (``"min"``); delta_abs = delta x (max - min of the finite grid
    values), raised if needed so that at least ``min_points`` grid points lie at or below the level.
    The quadratic ``fit_quadratic`` is fitted by least squares to the grid points with
    J <= J0 + delta_abs, the region enclosed by that level curve on the grid: around the centre when the
    centre is a minimum of the slice, and the centre plus the downhill side when it is not (so the fit
    never rests on a thin sliver of the grid). Its level curves are ellipses with axis ratio
    sqrt(lambda_max / lambda_min) of the fitted H.

    The ratio is NaN (not resolved on this grid) when the points do not determine a quadratic
    (rank < 6); when H is not positive definite (the level set is not an ellipse: J is not convex on the
    slice over that region, which the GGN, always PSD, cannot show); when misfit > max_misfit (the grid
    is not described by a quadratic: ReLU kinks, or J nearly linear over the grid as at initialization;
    measured: <= 0.06 on smooth slices, >= 0.35 on such ones); or when rel_err > max_rel_err (the weak
    axis' curvature is below what the fit resolves, e.g. a nearly flat direction: the true ratio is then
    larger than the grid can show). For an exactly quadratic J the fit is exact up to rounding,
    whatever delta.
    """
    if reference not in ("centre", "min"):
        raise ValueError(f"reference must be 'centre' or 'min', got {reference!r}")
    alphas = np.asarray(alphas, np.float64)
    betas = np.asarray(betas, np.float64)
    loss = np.asarray(loss, np.float64)
    finite = np.isfinite(loss)
    nan = float("nan")
    failed = LevelsetFit(nan, np.full((2, 2), np.nan), nan, nan, 0)
    k = max(min_points, 7)
    if finite.sum() < k:
        return failed
    vals = np.sort(loss[finite])
    if reference == "centre":
        j0 = loss[int(np.argmin(np.abs(alphas))), int(np.argmin(np.abs(betas)))]
        if not np.isfinite(j0):
            return failed
    else:
        j0 = vals[0]
    level = max(float(j0) + delta * float(vals[-1] - vals[0]), float(vals[k - 1]))
    mask = finite & (loss <= level)
    A, B = np.meshgrid(alphas, betas, indexing="ij")
    a, b = A[mask], B[mask]
    design = np.stack([np.ones_like(a), a, b, a * a, a * b, b * b], axis=1)
    design = design / np.maximum(np.abs(design).max(axis=0), np.finfo(float).tiny)
    if np.linalg.matrix_rank(design) < 6:
        return failed._replace(n_points=int(mask.sum()))
    fit = fit_quadratic(alphas, betas, loss, mask)
    lam_max, lam_min = eig2x2(fit.H)
    rel_err = fit.lam_min_se / lam_min if lam_min > 0 else float("inf")
    ok = fit.misfit <= max_misfit and rel_err <= max_rel_err and lam_max > 0 and lam_min > 1e-12 * lam_max
    ratio = math.sqrt(lam_max / lam_min) if ok else nan
    return LevelsetFit(ratio, fit.H, fit.misfit, rel_err, int(mask.sum()))


# ----------------------------------------------------------------------------------------------------
# Directions
# ----------------------------------------------------------------------------------------------------


def _tree_dtype(tree):
    return jax.tree_util.tree_leaves(tree)[0].dtype


def _cast_like(tree, like):
    return jax.tree_util.tree_map(lambda x, r: jnp.asarray(x, r.dtype), tree, like)


def tree_norm(tree) -> jax.Array:
    """Euclidean norm of a pytree seen as one flat vector."""
    return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree_util.tree_leaves(tree)))


def embed_direction(direction, params: Params, layer: str | None = None) -> Params:
    """A direction as a full pytree shaped like ``params``, zero wherever it is not given.

    ``direction`` may be a pytree holding any subset of params' layers and arrays (missing entries are
    zero), or a flat vector in ``jax.flatten_util.ravel_pytree`` order of ``params`` (layer None) or of
    ``params[layer]`` (a direction restricted to that layer). With ``layer`` given, entries outside that
    layer are set to zero whatever the input holds; with ``layer`` given, a mapping of that layer's array
    names (``{"W": ..., "b": ...}``) is accepted too. Cast to the params' dtype. Built on the host (numpy
    arrays): no device program per call.
    """
    if layer is not None and isinstance(direction, Mapping) and layer not in direction \
            and set(direction) <= set(params[layer]):
        direction = {layer: direction}
    if not isinstance(direction, Mapping):
        vec = np.asarray(direction).ravel()
        target = params if layer is None else params[layer]
        leaves, treedef = jax.tree_util.tree_flatten(target)  # ravel_pytree's order
        total = sum(int(np.size(x)) for x in leaves)
        if vec.size != total:
            raise ValueError(f"flat direction has {vec.size} entries, expected {total}")
        parts, offset = [], 0
        for x in leaves:
            parts.append(vec[offset:offset + np.size(x)].reshape(np.shape(x)))
            offset += int(np.size(x))
        direction = jax.tree_util.tree_unflatten(treedef, parts)
        if layer is not None:
            direction = {layer: direction}
    out: Params = {}
    for name, p in params.items():
        given = direction.get(name, {}) if (layer is None or name == layer) else {}
        out[name] = {k: (np.asarray(given[k], np.dtype(v.dtype)).reshape(np.shape(v)) if k in given
                         else np.zeros(np.shape(v), np.dtype(v.dtype)))
                     for k, v in p.items()}
    return out


def normalize_direction(direction):
    """The direction divided by its Euclidean norm (unchanged if the norm is zero); numpy arrays in the
    direction's dtype, the norm accumulated in float64 on the host."""
    leaves = jax.tree_util.tree_leaves(direction)
    n = math.sqrt(sum(float(np.sum(np.square(np.asarray(x, np.float64)))) for x in leaves))
    scale = 1.0 / n if n > 0 else 1.0
    return jax.tree_util.tree_map(lambda x: (np.asarray(x, np.float64) * scale).astype(np.asarray(x).dtype),
                                  direction)


def lecture_directions(params: Params, l: int, j: int, hi: int, lo: int) -> tuple[Params, Params]:
    """Unit directions on the weights ``W[l][hi, j]`` (d1) and ``W[l][lo, j]`` (d2), zero elsewhere
    (numpy arrays in the params' dtypes)."""
    def unit(row):
        d = {name: {k: np.zeros(np.shape(v), np.dtype(v.dtype)) for k, v in p.items()} for name, p in params.items()}
        d[f"layer{l}"]["W"][row, j] = 1
        return d

    return unit(hi), unit(lo)


def _layer_order(params: Params) -> list[str]:
    return sorted(params, key=lambda name: (len(name), name))  # layer1, layer2, ..., layer10


def filter_normalized_direction(params: Params, key: jax.Array,
                                layers: Sequence[str] | None = None) -> Params:
    """Filter-normalized Gaussian direction (Li et al. 2018), deterministic from ``key``.

    For every weight matrix W (n_in, n_out) a Gaussian matrix is drawn and each column ("filter": the
    incoming weights of one output unit) is rescaled to the norm of the same column of W. Bias, gamma
    and beta directions are zero (Li et al.'s ``ignore='biasbn'``): they are few, and their scales have
    no filter to normalize against. ``layers``: restrict to those layer names (zero elsewhere). The
    Gaussian entries are one draw of (total W entries,) standard normals laid out layer by layer, so the
    direction of a layer does not depend on ``layers``.
    """
    return random_directions(params, key, layers, count=1)[0]


def random_directions(params: Params, key: jax.Array, layers: Sequence[str] | None = None,
                      count: int = 2) -> tuple[Params, ...]:
    """``count`` (default 2) independent filter-normalized directions from one ``key``, as
    ``filter_normalized_direction`` (row c of a single (count, total) Gaussian draw gives direction c).
    Numpy arrays in the params' dtype. The Gaussians come from ``curvature.host_rng(key)`` (numpy, on the
    host; key: a JAX PRNG key or any integer array), so no random-number kernel is compiled per shape."""
    layers = tuple(params) if layers is None else tuple(layers)
    order = _layer_order(params)
    shapes = [np.shape(params[name]["W"]) for name in order]
    sizes = [math.prod(shape) for shape in shapes]
    dtype = np.dtype(params[order[0]]["W"].dtype)
    g_all = host_rng(key).standard_normal((int(count), sum(sizes))).astype(dtype)
    outs = []
    for c in range(int(count)):
        out: Params = {}
        offset = 0
        for name, shape, size in zip(order, shapes, sizes, strict=True):
            p = params[name]
            out[name] = {n: np.zeros(np.shape(v), dtype) for n, v in p.items()}
            if name in layers:
                W = np.asarray(p["W"])
                g = g_all[c, offset:offset + size].reshape(shape)
                gn = np.linalg.norm(g, axis=0, keepdims=True)
                out[name]["W"] = (g / np.where(gn > 0, gn, 1.0) * np.linalg.norm(W, axis=0, keepdims=True)
                                  ).astype(dtype)
            offset += size
        outs.append(out)
    return tuple(outs)


# ----------------------------------------------------------------------------------------------------
# The lecture slice of a normlab MLP
# ----------------------------------------------------------------------------------------------------


def forward_from_prenorm(spec: ModelSpec, params: Params, l: int, z: jax.Array) -> jax.Array:
    """Model outputs (m, n_out) given the pre-normalization Z[l] (m, sizes[l]) of layer l: applies
    layer l's normalization and activation (if hidden) and then layers l+1..L. Equals
    ``model.forward`` when z = A[l-1] W[l] + b[l] (training-mode BN on this batch)."""
    for k in range(l, spec.n_layers):
        p = params[f"layer{k}"]
        a = model.norm_activation(spec, z, p.get("gamma"), p.get("beta"))
        p = params[f"layer{k + 1}"]
        z = a @ p["W"] + p["b"] if "b" in p else a @ p["W"]
    return z


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


def _lecture_ggn_blocks(spec: ModelSpec, params: Params, X, y, l: int, hi, lo) -> jax.Array:
    _, inputs, pre = model.forward_with_inputs(spec, params, X)
    A, Z = inputs[l - 1], pre[l - 1]
    g = functools.partial(forward_from_prenorm, spec, params, l)
    out0 = g(Z)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    def block(j):
        def jvp_col(u):
            return jax.jvp(g, (Z,), (jnp.zeros_like(Z).at[:, j].set(u),))[1]

        U = jnp.stack([jvp_col(A[:, hi]), jvp_col(A[:, lo])])
        HU = jax.vmap(lambda u: _outer_hvp(outer, out0, u))(U)
        M = jnp.einsum("imk,jmk->ij", U, HU)
        return 0.5 * (M + M.T)

    return jax.lax.map(block, jnp.arange(Z.shape[1]))


@functools.partial(jax.jit, static_argnames=("spec", "l"))
def lecture_ggn_blocks(spec: ModelSpec, params: Params, X, y, l: int, hi, lo) -> jax.Array:
    """2x2 GGN blocks on the weight pair (W[l][hi, j], W[l][lo, j]) for every unit j of layer l.

    Returns (sizes[l], 2, 2), loss per weight unit^2. Uses the linearity of Z[l] in W[l]: the direction
    e_hi e_j^T moves Z[l] by A[l-1][:, hi] e_j^T, so each block costs two forward-mode products through
    layers l..L only.
    """
    return _lecture_ggn_blocks(spec, params, X, y, l, hi, lo)


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
            return outer(forward_from_prenorm(spec, params, l, Z.at[:, j].add(a * u + b * v)))
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
            return outer(forward_from_prenorm(spec, params, l + 1, Z_next + da[:, None] * w_row[None, :]))

    return _map_grid(point, alphas, betas, chunk_size)


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


# ----------------------------------------------------------------------------------------------------
# Slices of a model, and their roundness
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ContourSlice:
    """One 2-D slice. alphas (n_a,), betas (n_b,): offsets along d1, d2 (parameter units); loss (n_a,
    n_b): J at (alphas[i], betas[k]); origin (2,): the coordinates of the centre on the plotted axes
    (the two weights' values for ``lecture``, zeros otherwise), so axis 1 = origin[0] + alphas;
    ggn (2, 2): D^T G D at the centre; info: slice-specific extras (lecture: unit, input_hi, input_lo,
    input_rms (n_in,), live (n_in,))."""

    slice: str
    scope: str
    alphas: np.ndarray
    betas: np.ndarray
    loss: np.ndarray
    origin: np.ndarray
    ggn: np.ndarray
    loss_center: float
    info: dict = dataclasses.field(default_factory=dict)


@functools.cache
def model_loss_fn(spec: ModelSpec) -> Callable:
    """``fn(params, X, y) -> J`` for ``evaluate_grid(..., args=(X, y))``; one function object per spec,
    so compiled grids are reused across slices and checkpoints of the same shapes."""
    def fn(params, X, y):
        return model.loss(spec, params, X, y)
    return fn


def _model_ggn(spec: ModelSpec, params: Params, X, y, directions):
    def f(p):
        return model.forward(spec, p, X)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    return projected_ggn(f, outer, params, directions)


_model_ggn_jit = jax.jit(_model_ggn, static_argnames=("spec",))


def model_ggn(spec: ModelSpec, params: Params, X, y, directions: Sequence) -> np.ndarray:
    """Projected GGN ``D^T G D`` (k, k) of the model's loss on (X, y) for k direction pytrees
    (``projected_ggn`` with f = the network outputs, outer = ``model.loss_from_outputs``), compiled."""
    directions = [_cast_like(d, params) for d in directions]
    return np.asarray(_model_ggn_jit(spec, params, X, y, directions))


def auto_chunk_size(spec: ModelSpec, m: int, n_grid: int, budget: int | None = None) -> int:
    """Grid points per chunk so that one chunk's widest activation (chunk x m x max width) stays within
    ``budget`` array entries. Default budget: 2^19 entries (4 MiB in float64) on CPU, where chunks that
    stay in cache are fastest (measured: 8-16 points of a width-64 MLP on 512 examples run about twice
    as fast as 256), and 2^25 on an accelerator, where large batches are fastest."""
    if budget is None:
        budget = 2**19 if jax.default_backend() == "cpu" else 2**25
    return max(1, min(n_grid, budget // max(1, m * max(spec.sizes))))


def _as_data(params: Params, X, y):
    dtype = _tree_dtype(params)
    return jnp.asarray(X, dtype), jnp.asarray(y)


def _lecture_slice_body(spec: ModelSpec, params: Params, X, y, l: int, unit, dead_threshold, alphas, betas,
                        chunk_size: int):
    out, inputs, _ = model.forward_with_inputs(spec, params, X)
    rms = input_rms(inputs[l - 1])
    hi, lo = pick_hi_lo(rms, dead_threshold)
    blocks = _lecture_ggn_blocks(spec, params, X, y, l, hi, lo)
    j = jnp.where(unit >= 0, unit, choose_unit(blocks))
    grid = _lecture_grid(spec, params, X, y, l, j, hi, lo, alphas, betas, chunk_size)
    W = params[f"layer{l}"]["W"]
    return {"rms": rms, "live": live_mask(rms, dead_threshold), "hi": hi, "lo": lo, "j": j, "ggn": blocks[j],
            "loss": grid, "loss_center": model.loss_from_outputs(spec, out, y),
            "origin": jnp.stack([W[hi, j], W[lo, j]])}


_lecture_slice_jit = jax.jit(_lecture_slice_body, static_argnames=("spec", "l", "chunk_size"))


def _lecture_setup(spec: ModelSpec, params: Params, X, y, dead_threshold):
    # per layer: the lecture unit and weights (hi, lo, j), their 2x2 GGN block, and the layer input's RMS
    out, inputs, _ = model.forward_with_inputs(spec, params, X)
    layers = []
    for l in range(1, spec.n_layers + 1):
        rms = input_rms(inputs[l - 1])
        hi, lo = pick_hi_lo(rms, dead_threshold)
        blocks = _lecture_ggn_blocks(spec, params, X, y, l, hi, lo)
        j = choose_unit(blocks)
        W = params[f"layer{l}"]["W"]
        layers.append({"rms": rms, "live": live_mask(rms, dead_threshold), "hi": hi, "lo": lo, "j": j,
                       "ggn": blocks[j], "origin": jnp.stack([W[hi, j], W[lo, j]])})
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
    X, y = _as_data(params, X, y)
    alphas, betas = grid_axes(n_points, extent, X.dtype)
    chunk = chunk_size or auto_chunk_size(spec, X.shape[0], n_points * n_points)
    r = _lecture_slice_jit(spec, params, X, y, l, -1 if unit is None else int(unit), dead_threshold, alphas,
                           betas, int(chunk))
    return _lecture_contour(l, r, alphas, betas)


def lecture_slices(spec: ModelSpec, params: Params, X, y, *, n_points: int = 41, extent: float = 1.0,
                   dead_threshold: float = 1e-6, chunk_size: int | None = None) -> list[ContourSlice]:
    """``lecture_slice`` of every layer 1..L (unit by ``choose_unit``): one compiled call picks every
    layer's unit and weights, then each grid is a plane of ``direction_slices``' program (the same compiled
    program for every slice of every kind; the whole model runs per grid point, without
    ``lecture_grid``'s shortcut, so that one program serves all)."""
    X, y = _as_data(params, X, y)
    layers, loss_center = jax.device_get(_lecture_setup_jit(spec, params, X, y, dead_threshold))
    planes = [(*lecture_directions(params, l, int(r["j"]), int(r["hi"]), int(r["lo"])), float(extent))
              for l, r in enumerate(layers, start=1)]
    out = []
    for l, (r, (alphas, betas, loss, _, _)) in enumerate(
            zip(layers, _run_planes(spec, params, X, y, planes, n_points, chunk_size), strict=True), start=1):
        r = {**r, "loss": loss, "loss_center": loss_center}
        out.append(_lecture_contour(l, r, alphas, betas))
    return out


def _touched(d1, d2) -> set[tuple[str, str]]:
    """(layer, array name) of every array where d1 or d2 is nonzero (read on the host)."""
    return {(layer, name) for d in (d1, d2) for layer, p in d.items() for name, x in p.items()
            if np.any(np.asarray(x) != 0)}


def first_touched_layer(d1, d2) -> int:
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

    def lin(d):  # how Z[l0] moves along d: A dW (+ db)
        p = A @ d[first]["W"]
        return p + d[first]["b"] if "b" in d[first] else p

    P1, P2 = lin(d1), lin(d2)
    upper = [f"layer{k}" for k in range(l0, spec.n_layers + 1)]

    def point(a, b):
        # Layers >= l0 get their shifted arrays (those below are never used); every array of them is
        # shifted, zero directions included: per-point weights make XLA use batched matmuls, which on
        # CPU in float64 ran faster than one large matmul with shared weights (measured, jax 0.10).
        shifted = dict(params)
        for layer in upper:
            shifted[layer] = _shift(params[layer], d1[layer], d2[layer], a, b)
        out = forward_from_prenorm(spec, shifted, l0, Z0 + a * P1 + b * P2)
        return model.loss_from_outputs(spec, out, y)

    return _map_grid(point, alphas, betas, chunk_size)


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
    for whole-model directions it skips the first layer's matmul. chunk_size: default
    ``auto_chunk_size``.
    """
    d1, d2 = _cast_like(d1, params), _cast_like(d2, params)
    dtype = _tree_dtype(params)
    if chunk_size is None:
        chunk_size = auto_chunk_size(spec, X.shape[0], len(alphas) * len(betas))
    return _model_grid_jit(spec, params, X, y, d1, d2, jnp.asarray(alphas, dtype), jnp.asarray(betas, dtype),
                           int(chunk_size), first_touched_layer(d1, d2))


def _plane(spec: ModelSpec, params: Params, X, y, d1, d2, alphas, betas, chunk_size: int):
    # every slice's grid and 2x2 GGN with the same program: the whole model runs per grid point (l0 = 1;
    # the layers a direction does not touch are shifted by zero), so the program depends only on the shapes
    return (_model_grid(spec, params, X, y, d1, d2, alphas, betas, chunk_size, 1),
            _model_ggn(spec, params, X, y, [d1, d2]), model.loss(spec, params, X, y))


# One compilation per model shape serves every slice of every checkpoint: one program per slice kind and
# layer (or all slices unrolled into one program) took 3-10 s to compile per analyze job (measured: 3.0 +
# 2.9 s for depth 3, 9.9 + 8.0 s for depth 8 with batch norm), most of its first checkpoint.
_plane_jit = jax.jit(_plane, static_argnames=("spec", "chunk_size"))


def _layer_plane(spec: ModelSpec, tail: dict, l, Z0, P1, P2, y, alphas, betas, chunk_size: int,
                 output: bool = False):
    # a plane of directions inside layer l's W and b: Z[l] = Z0 + a P1 + b P2 (linear in W, b), then only the
    # layers above l run per grid point (hidden l, traced: one program for every l); ``output``: l = L, whose
    # Z[L] are the outputs themselves (tail unused)
    def g(z):
        return z if output else model.outputs_from_prenorm(spec, tail, l, z)

    def outer(o):
        return model.loss_from_outputs(spec, o, y)

    grid = _map_grid(lambda a, b: outer(g(Z0 + a * P1 + b * P2)), alphas, betas, chunk_size)
    out0 = g(Z0)
    U = jnp.stack([jax.jvp(g, (Z0,), (P,))[1] for P in (P1, P2)])
    HU = jax.vmap(lambda u: _outer_hvp(outer, out0, u))(U)
    M = jnp.einsum("i...,j...->ij", U, HU)
    return grid, 0.5 * (M + M.T), outer(out0)


_layer_plane_jit = jax.jit(_layer_plane, static_argnames=("spec", "chunk_size", "output"))
_forward_with_inputs_jit = jax.jit(model.forward_with_inputs, static_argnames=("spec",))


def _layer_of(spec: ModelSpec, d1, d2) -> int:
    """l if both directions lie in the W and b of one layer l that ``_layer_plane`` serves: the output layer,
    or a hidden layer when the hidden layers share one width; else 0."""
    touched = _touched(d1, d2)
    layers = {layer for layer, _ in touched}
    if len(layers) != 1 or any(name not in ("W", "b") for _, name in touched):
        return 0
    l = int(next(iter(layers))[5:])
    return l if l == spec.n_layers or model.equal_hidden_widths(spec) else 0


# A plane of hidden layer l runs through ``_layer_plane`` only when a whole-model plane costs at least this
# many floating-point operations (2 m n_points^2 x the weights): below it the grid's execution is negligible
# next to compiling one more program (about 1 s per model shape), e.g. the quick study's models.
LAYER_PLANE_MIN_FLOPS = 1e9


def _plane_flops(spec: ModelSpec, m: int, n_points: int) -> float:
    """Floating-point operations of one whole-model plane: the forward matmuls at every grid point."""
    return n_points * n_points * model.matmul_flops(spec, m)


def _run_planes(spec: ModelSpec, params: Params, X, y, planes: Sequence, n_points: int,
                chunk_size: int | None) -> list[tuple]:
    """planes: [(d1, d2, extent)] with full direction pytrees in params' dtype. Returns per plane
    (alphas, betas, loss (n, n), ggn (2, 2), loss_center) as numpy, all planes dispatched before any is
    read back. A plane inside one layer's W and b goes through ``_layer_plane`` (one program for every hidden
    layer, one for the output layer; the layers below it are not rerun per grid point: for depth 8 its grid
    costs (L - l + 1) / L of a whole-model one, the output layer's almost nothing) when the model is big
    enough (``LAYER_PLANE_MIN_FLOPS``); any other plane through ``_plane`` (the whole model per point).
    Measured on the depth-8 batch-norm digits model (512 examples, 21 x 21 points, float32, 1 CPU thread):
    the contour slices of a checkpoint 7.5-8 -> 3.8-4.3 s (hidden layers); 4.0-5.1 -> 3.2-3.7 s (the output
    layer too, runs alternated)."""
    params = jax.tree_util.tree_map(jnp.asarray, params)
    chunk = int(chunk_size or auto_chunk_size(spec, X.shape[0], n_points * n_points))
    big = _plane_flops(spec, X.shape[0], n_points) >= LAYER_PLANE_MIN_FLOPS
    layer_of = [_layer_of(spec, d1, d2) if big else 0 for d1, d2, _ in planes]
    if any(layer_of):
        _, inputs, pre = jax.device_get(_forward_with_inputs_jit(spec, params, X))
    if any(0 < l < spec.n_layers for l in layer_of):
        tail = model.stack_layers(spec, jax.device_get(params))
    pending = []
    for (d1, d2, extent), l in zip(planes, layer_of, strict=True):
        alphas, betas = grid_axes(n_points, float(extent), X.dtype)
        if l:
            A, name = inputs[l - 1], f"layer{l}"
            P1, P2 = (A @ d[name]["W"] + (d[name]["b"] if "b" in d[name] else 0) for d in (d1, d2))
            output = l == spec.n_layers
            res = _layer_plane_jit(spec, None if output else tail, np.int32(l), pre[l - 1], P1.astype(A.dtype),
                                   P2.astype(A.dtype), y, alphas, betas, chunk, output)
        else:
            res = _plane_jit(spec, params, X, y, d1, d2, alphas, betas, chunk)
        pending.append((alphas, betas, res))
    return [(a, b, *(np.asarray(x) for x in res[:2]), float(res[2])) for a, b, res in pending]


def direction_slices(spec: ModelSpec, params: Params, X, y, planes: Sequence[Mapping], *, n_points: int = 41,
                     chunk_size: int | None = None) -> list[ContourSlice]:
    """Several ``direction_slice``s, all by one compiled program (one call per slice). planes: mappings
    with keys d1, d2 (as ``direction_slice`` takes them), slice, scope, extent, and optionally normalize
    (default True)."""
    X, y = _as_data(params, X, y)
    prepared = []
    for pl in planes:
        layer = None if pl["scope"] == "model" else pl["scope"]
        d1, d2 = embed_direction(pl["d1"], params, layer), embed_direction(pl["d2"], params, layer)
        if pl.get("normalize", True):
            d1, d2 = normalize_direction(d1), normalize_direction(d2)
        prepared.append((d1, d2, pl["extent"]))
    results = _run_planes(spec, params, X, y, prepared, n_points, chunk_size)
    return [ContourSlice(slice=pl["slice"], scope=pl["scope"], alphas=a, betas=b, loss=loss, origin=np.zeros(2),
                         ggn=ggn, loss_center=center)
            for pl, (a, b, loss, ggn, center) in zip(planes, results, strict=True)]


def direction_slice(spec: ModelSpec, params: Params, X, y, d1, d2, *, slice: str, scope: str,
                    n_points: int = 41, extent: float = 1.0, normalize: bool = True,
                    chunk_size: int | None = None) -> ContourSlice:
    """J on the plane spanned by two given directions (pytrees as in ``embed_direction``; scope
    ``layer<l>`` zeroes them outside that layer). ``normalize``: scale each to unit norm, so the
    coordinates are parameter-space distances (eigenvector slices); False keeps them as given
    (filter-normalized random directions, where 1 = the weights' own scale). One compiled call (the
    program every slice shares: the whole model runs per grid point)."""
    return direction_slices(spec, params, X, y, [{"d1": d1, "d2": d2, "slice": slice, "scope": scope,
                                                  "extent": extent, "normalize": normalize}],
                            n_points=n_points, chunk_size=chunk_size)[0]


def slice_row(s: ContourSlice, *, delta: float = 0.05, rel_tol: float | None = None,
              max_misfit: float = 0.2, max_rel_err: float = 0.2) -> dict[str, Any]:
    """Tidy row (keys ``ROW_KEYS``) with both roundness measures of a slice. ``delta``, ``max_misfit``,
    ``max_rel_err``: as ``levelset_axis_ratio``; ``rel_tol``: as ``axis_ratio_2x2``. Beyond the contract
    columns (slice, scope, axis_ratio_ggn, axis_ratio_levelset, singular): levelset_misfit,
    levelset_rel_err, the 2x2 GGN eigenvalues (loss per parameter unit^2), loss_center, extent, and for
    lecture slices unit, input_hi, input_lo and their RMS (-1 / NaN for other slices)."""
    if rel_tol is None:
        rel_tol = default_rel_tol(s.loss.dtype)
    ratio, singular, lam_max, lam_min = axis_ratio_2x2(s.ggn, rel_tol)
    fit = levelset_axis_ratio(s.alphas, s.betas, s.loss, delta, max_misfit=max_misfit,
                              max_rel_err=max_rel_err)
    info = s.info
    rms = info.get("input_rms")
    nan = float("nan")
    return {
        "slice": s.slice, "scope": s.scope, "axis_ratio_ggn": ratio, "axis_ratio_levelset": fit.ratio,
        "singular": singular, "levelset_misfit": fit.misfit, "levelset_rel_err": fit.rel_err,
        "lambda_max_ggn": lam_max, "lambda_min_ggn": lam_min,
        "loss_center": s.loss_center, "extent": float(np.max(np.abs(s.alphas))),
        "unit": int(info.get("unit", -1)), "input_hi": int(info.get("input_hi", -1)),
        "input_lo": int(info.get("input_lo", -1)),
        "rms_hi": float(rms[info["input_hi"]]) if rms is not None else nan,
        "rms_lo": float(rms[info["input_lo"]]) if rms is not None else nan,
    }


def slice_arrays(s: ContourSlice) -> dict[str, np.ndarray]:
    """Arrays of a slice for an .npz file, keyed ``<slice>.<scope>.<name>``: alphas, betas, loss,
    origin, ggn, and for lecture slices ``indices`` = [unit, input_hi, input_lo] and input_rms."""
    p = f"{s.slice}.{s.scope}."
    out = {p + "alphas": s.alphas, p + "betas": s.betas, p + "loss": s.loss, p + "origin": s.origin,
           p + "ggn": np.asarray(s.ggn)}
    if s.slice == "lecture":
        out[p + "indices"] = np.array([s.info["unit"], s.info["input_hi"], s.info["input_lo"]], np.int64)
        out[p + "input_rms"] = np.asarray(s.info["input_rms"])
    return out


# ----------------------------------------------------------------------------------------------------
# Pipeline entry
# ----------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ContourConfig:
    """Settings of the contour analysis (e.g. config ``analysis.contours``).

    grid_points: points per axis (odd puts one on the centre). extent: half-width of the grid, a number
    for every slice or a mapping {lecture, eig, random} -> number; units as in the module docstring.
    delta: level-set level as a fraction of the grid's loss range. max_misfit, max_rel_err: the largest
    quadratic-fit misfit and relative error at which a level-set ratio is reported
    (``levelset_axis_ratio``). seed: PRNG seed of the random
    directions. random_per_layer: also a random slice per layer. dead_threshold: a layer-input unit is
    live if its RMS over the batch exceeds it (pass ``analysis.dead_threshold``). rel_tol: singular-GGN
    threshold (None: ``default_rel_tol`` of the dtype). chunk_size: grid points per vectorized chunk
    (None: ``auto_chunk_size``).
    """

    grid_points: int = 41
    extent: float | Mapping[str, float] = 1.0
    delta: float = 0.05
    max_misfit: float = 0.2
    max_rel_err: float = 0.2
    seed: int = 0
    random_per_layer: bool = False
    dead_threshold: float = 1e-6
    rel_tol: float | None = None
    chunk_size: int | None = None

    @classmethod
    def from_mapping(cls, d: Mapping | None) -> ContourConfig:
        d = dict(d or {})
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown contour settings: {sorted(unknown)}")
        return cls(**d)

    def extent_for(self, slice: str) -> float:
        if isinstance(self.extent, Mapping):
            return float(self.extent[slice])
        return float(self.extent)


def contour_slices(spec: ModelSpec, params: Params, X, y, config: ContourConfig | Mapping | None = None, *,
                   eig_model: tuple | None = None, eig_layers: Mapping[str, tuple] | None = None,
                   ) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """All contour slices of one checkpoint on the analysis batch (X (m, n_features), y).

    Slices: ``lecture`` for every layer; ``eig`` for the whole model from ``eig_model`` = (d1, d2) and
    per layer from ``eig_layers`` = {"layer<l>": (d1, d2)} (directions as ``embed_direction`` accepts,
    normalized to unit norm); ``random``: filter-normalized, scope model (and per layer if configured).
    Returns (rows, grids): rows are dicts with ``ROW_KEYS`` (slice, scope, axis_ratio_ggn,
    axis_ratio_levelset, singular, ...), one per slice; grids maps ``<slice>.<scope>.<name>`` to numpy
    arrays (``slice_arrays``), ready for ``np.savez``.
    """
    cfg = config if isinstance(config, ContourConfig) else ContourConfig.from_mapping(config)
    n = cfg.grid_points
    slices = lecture_slices(spec, params, X, y, n_points=n, extent=cfg.extent_for("lecture"),
                            dead_threshold=cfg.dead_threshold, chunk_size=cfg.chunk_size)
    planes = []
    if eig_model is not None:
        planes.append({"d1": eig_model[0], "d2": eig_model[1], "slice": "eig", "scope": "model",
                       "extent": cfg.extent_for("eig")})
    for scope, (d1, d2) in sorted((eig_layers or {}).items(), key=lambda kv: int(kv[0][5:])):
        planes.append({"d1": d1, "d2": d2, "slice": "eig", "scope": scope, "extent": cfg.extent_for("eig")})
    for scope in ["model"] + (model.layer_names(spec) if cfg.random_per_layer else []):
        layers = None if scope == "model" else [scope]
        d1, d2 = random_directions(params, np.array([cfg.seed, 0 if layers is None else int(scope[5:])]), layers)
        planes.append({"d1": d1, "d2": d2, "slice": "random", "scope": scope, "extent": cfg.extent_for("random"),
                       "normalize": False})
    slices += direction_slices(spec, params, X, y, planes, n_points=n, chunk_size=cfg.chunk_size)
    rows = [slice_row(s, delta=cfg.delta, rel_tol=cfg.rel_tol, max_misfit=cfg.max_misfit,
                      max_rel_err=cfg.max_rel_err) for s in slices]
    grids: dict[str, np.ndarray] = {}
    for s in slices:
        grids.update(slice_arrays(s))
    return rows, grids


# ----------------------------------------------------------------------------------------------------
# Plotting helpers (no plotting here)
# ----------------------------------------------------------------------------------------------------


def log_excess(loss, floor: float | None = None) -> np.ndarray:
    """log10(J - min J) of one panel, (n_a, n_b). Excesses below ``floor`` (the minimum itself, 0,
    included) are clamped to it; default: the smallest positive excess of the panel, but at least 1e-6 x
    its largest (so rounding-level differences on a flat panel do not stretch the colour scale).
    Non-finite entries stay NaN."""
    loss = np.asarray(loss, np.float64)
    finite = np.isfinite(loss)
    if not finite.any():
        return np.full(loss.shape, np.nan)
    ex = np.where(finite, loss - loss[finite].min(), np.nan)
    pos = ex[finite & (ex > 0)]
    if floor is None:
        floor = max(float(pos.min()), 1e-6 * float(pos.max())) if pos.size else 1.0
    with np.errstate(invalid="ignore"):
        return np.log10(np.where(finite, np.maximum(ex, floor), np.nan))


def shared_log_scale(losses: Sequence) -> tuple[float, float]:
    """One colour scale for a row of panels: (vmin, vmax) of ``log_excess`` over all panels' finite
    values (each panel minus its own minimum, so panels at different loss levels compare by shape)."""
    vals = [v[np.isfinite(v)] for v in (log_excess(x) for x in losses)]
    vals = [v for v in vals if v.size]
    if not vals:
        return 0.0, 1.0
    allv = np.concatenate(vals)
    return float(allv.min()), float(allv.max())
