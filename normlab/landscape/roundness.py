"""How round a 2-D slice is: the projected Gauss-Newton matrix and a quadratic fit to the grid's level set.

Roundness of a slice is reported two ways:

* ``axis_ratio_ggn = sqrt(lambda_1 / lambda_2)`` of the projected 2x2 Gauss-Newton matrix
  ``D^T G D`` (D = [d1 d2]), computed with forward-mode products through the model outputs and the
  Hessian of the outer loss on the outputs (``projected_ggn``). The contours of the local quadratic model
  are ellipses with exactly this axis ratio (``axis_ratio_2x2``). A slice whose 2x2 GGN is singular
  (smallest eigenvalue <= rel_tol x largest, or largest <= 0: e.g. a dead unit, whose weights do not
  affect J) is flagged ``singular`` and its ratio is NaN.
* ``axis_ratio_levelset``: a quadratic ``c0 + c.(a, b) + 1/2 (a, b) H (a, b)^T`` fitted by least
  squares to the grid points inside the sub-level set ``J <= J0 + delta`` (J0 = the loss at the centre,
  delta = a fraction of the grid's loss range; see ``levelset_axis_ratio``). Its level curve
  ``J0 + delta`` is an ellipse with axis ratio ``sqrt(lambda_max(H) / lambda_min(H))``; NaN when the
  fitted H is not positive definite (the level set is not an ellipse: e.g. J is not convex on the slice,
  which the GGN, always PSD, cannot show), when the quadratic does not describe the grid (its misfit,
  reported as ``levelset_misfit``, is above a bound: ReLU kinks, or J nearly linear over the grid as at
  initialization), when the weak axis' curvature is not resolved (``levelset_rel_err``), or when there
  are too few points. It measures what the picture shows, the non-quadratic part of J over the plotted
  range included, where the GGN ratio is local.

The level-set fit runs on the host in float64 (numpy); the GGN in the dtype of the parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab.landscape.directions import cast_like


def outer_hvp(outer: Callable, out: jax.Array, u: jax.Array) -> jax.Array:
    """Hessian of the outer loss at the outputs ``out`` applied to ``u`` (same shape as out)."""
    return jax.jvp(jax.grad(outer), (out,), (u,))[1]


def projected_ggn(f: Callable, outer: Callable, params, directions: Sequence) -> jax.Array:
    """Projected Gauss-Newton matrix ``D^T G D`` (k, k) for J = outer(f(params)).

    f(params) -> model outputs (m, n_out); outer(outputs) -> scalar loss (e.g. mean softmax
    cross-entropy or mse, as ``model.loss_from_outputs``). directions: k pytrees shaped like params.
    G = Jf^T H_outer Jf, so entry [i, k] = (Jf d_i)^T H_outer (Jf d_k): k forward-mode products through f
    and k Hessian-vector products of outer on the outputs. Units: loss per (parameter unit)^2.
    """
    dirs = [cast_like(d, params) for d in directions]
    out0, U = None, []
    for d in dirs:
        out0, u = jax.jvp(f, (params,), (d,))
        U.append(u)
    U = jnp.stack(U)
    HU = jax.vmap(lambda u: outer_hvp(outer, out0, u))(U)
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
    the misfit is typically <= 0.06 on smooth slices and >= 0.35 on such ones); or when rel_err >
    max_rel_err (the weak axis' curvature is below what the fit resolves, e.g. a nearly flat direction:
    the true ratio is then larger than the grid can show). For an exactly quadratic J the fit is exact up to rounding,
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
