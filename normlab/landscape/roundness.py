"""How round a 2-D slice is: the projected Gauss-Newton matrix and a quadratic fit to the grid's level set.

Roundness of a slice is reported two ways:

* ``axis_ratio_ggn = sqrt(lambda_1 / lambda_2)`` of the projected 2x2 Gauss-Newton matrix
  ``D^T G D = U^T H U`` (D = [d1 d2], U = [Jf d1, Jf d2] the forward-mode products through the model
  outputs, H the Hessian of the outer loss on the outputs). The contours of the local quadratic model are
  ellipses with exactly this axis ratio (``axis_ratio_2x2``). U^T H U is accumulated in float64 from a
  form that is positive semi-definite by construction (``loss_gram``); float32 products lose it to
  cancellation wherever the softmax is saturated (a lambda_min of -3e-3 next to a lambda_max of 2.3e-5).
  A ratio beyond numerical resolution (lambda_min <= rel_tol x lambda_max) is *censored*: reported as
  the bound 1 / sqrt(rel_tol), a lower bound on the true ratio.
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

The level-set fit runs on the host in float64 (numpy); the 2x2 GGNs are float64 (see ``loss_gram``).
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


def jvp_outputs(f: Callable, params, directions: Sequence) -> tuple[jax.Array, jax.Array]:
    """(f(params), U) with U[i] = Jf d_i, the forward-mode product of f along direction i: (k, *out.shape),
    in params' dtype (directions are cast to it)."""
    out0, U = None, []
    for d in (cast_like(d, params) for d in directions):
        out0, u = jax.jvp(f, (params,), (d,))
        U.append(u)
    return out0, jnp.stack(U)


def hvp_gram(outer: Callable, out: jax.Array, U: jax.Array) -> jax.Array:
    """U^T H U (k, k), float64, for any twice-differentiable outer loss (H = its Hessian at the outputs
    out): k Hessian-vector products of outer evaluated in float64, symmetrized. Not PSD by construction
    (it subtracts nearly equal numbers where H is nearly singular); ``loss_gram`` is, for the model's
    losses."""
    out = jnp.asarray(out, jnp.float64)
    U = jnp.asarray(U, jnp.float64)
    HU = jax.vmap(lambda u: outer_hvp(outer, out, u))(U)
    M = jnp.einsum("i...,j...->ij", U, HU)
    return 0.5 * (M + M.T)


def loss_gram(loss: str, out: jax.Array, U: jax.Array) -> jax.Array:
    """U^T H U (k, k) in float64, H = the Hessian of the model's loss (``model.loss_from_outputs``) at the
    outputs out (m, n_out), U (k, m, n_out), as a Gram matrix V V^T (PSD by construction, each term a
    product of accurately computed factors):

    * ``softmax_cross_entropy`` (mean over the m examples): per example H = (diag(p) - p p^T) / m and
      u^T H v = sum_k p_k (u_k - ubar)(v_k - vbar) / m with ubar = p.u, computed from the differences
      u_k - u_c to the most probable class c (shift-invariant, so u_c = ubar to first order and nothing
      cancels) and p from the log-softmax in float64, so a saturated softmax (p(1-p) ~ 1e-30) keeps its
      relative precision. The labels do not enter.
    * ``mse`` (mean over the m n_out entries): H = 2 / (m n_out) I.
    """
    out = jnp.asarray(out, jnp.float64)
    U = jnp.asarray(U, jnp.float64)
    m = out.shape[0]
    if loss == "softmax_cross_entropy":
        logp = jax.nn.log_softmax(out, axis=-1)
        p = jnp.exp(logp)
        c = jnp.argmax(logp, axis=-1)
        delta = U - jnp.take_along_axis(U, c[None, :, None], axis=-1)  # u_k - u_c, (k, m, n_out)
        centred = delta - jnp.sum(p * delta, axis=-1, keepdims=True)
        V = (jnp.sqrt(p / m) * centred).reshape(U.shape[0], -1)
    elif loss == "mse":
        V = jnp.sqrt(2.0 / out.size) * U.reshape(U.shape[0], -1)
    else:
        raise ValueError(f"no closed-form Hessian for loss {loss!r}")
    return V @ V.T


def projected_ggn(f: Callable, outer: Callable, params, directions: Sequence) -> jax.Array:
    """Projected Gauss-Newton matrix ``D^T G D`` (k, k), float64, for J = outer(f(params)).

    f(params) -> outputs; outer(outputs) -> scalar loss. directions: k pytrees shaped like params.
    G = Jf^T H_outer Jf, so entry [i, k] = (Jf d_i)^T H_outer (Jf d_k): k forward-mode products through f
    (in params' dtype) and k Hessian-vector products of outer in float64 (``hvp_gram``). For the model's
    own losses ``loss_gram`` is the accurate form (``planes.model_ggn`` uses it). Units: loss per
    (parameter unit)^2.
    """
    return hvp_gram(outer, *jvp_outputs(f, params, directions))


def default_rel_tol(dtype) -> float:
    """Relative tolerance below which the smaller eigenvalue of a 2x2 GGN computed in ``dtype`` counts as
    zero: 1e-12 in float64 (ratios up to 1e6 are measurable; the Gram entries carry relative errors
    ~1e-15, so lambda_min at the threshold is accurate to ~0.1%), 1e-7 in float32 (about 3000)."""
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


class AxisRatio(NamedTuple):
    """Result of ``axis_ratio_2x2``. ratio: sqrt(lambda_max / lambda_min), the bound 1 / sqrt(rel_tol)
    when censored, NaN when no_curvature; censored: lambda_min <= rel_tol x lambda_max on a matrix with
    curvature (the ratio is at least the bound); no_curvature: lambda_max not > 0, or an eigenvalue not
    finite; lam_max, lam_min: the eigenvalues (loss per parameter unit^2)."""

    ratio: float
    censored: bool
    no_curvature: bool
    lam_max: float
    lam_min: float


def axis_ratio_2x2(M, rel_tol: float | None = None) -> AxisRatio:
    """Axis ratio ``sqrt(lambda_max / lambda_min)`` of the ellipses ``x^T M x = const`` for a symmetric
    PSD 2x2 matrix M (see ``AxisRatio``). A ratio beyond resolution (lambda_min <= rel_tol x
    lambda_max, lambda_min <= 0 included) is censored at 1 / sqrt(rel_tol). rel_tol defaults to
    ``default_rel_tol`` of M's dtype."""
    if rel_tol is None:
        rel_tol = default_rel_tol(np.asarray(M).dtype)
    lam_max, lam_min = eig2x2(M)
    no_curvature = not (np.isfinite(lam_max) and np.isfinite(lam_min) and lam_max > 0)
    censored = not no_curvature and lam_min <= rel_tol * lam_max
    if no_curvature:
        ratio = float("nan")
    elif censored:
        ratio = 1.0 / math.sqrt(rel_tol)
    else:
        ratio = math.sqrt(lam_max / lam_min)
    return AxisRatio(ratio, bool(censored), bool(no_curvature), lam_max, lam_min)


def ggn_coupling(M) -> float:
    """Coupling ``|M12| / sqrt(M11 M22)`` of a symmetric PSD 2x2 matrix, in [0, 1]: the cosine of the angle
    between the slice's two directions in the metric M (for the depth-0 model at W = 0, whose GGN block is
    the inputs' second moment up to a constant, the uncentred correlation of the two inputs). NaN when a
    diagonal entry is not positive and finite (no curvature along a direction)."""
    M = np.asarray(M, np.float64)
    a, b, d = M[0, 0], 0.5 * (M[0, 1] + M[1, 0]), M[1, 1]
    if not (np.isfinite(a) and np.isfinite(d) and np.isfinite(b) and a > 0 and d > 0):
        return float("nan")
    return float(min(abs(b) / math.sqrt(a * d), 1.0))


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
