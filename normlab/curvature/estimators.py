"""Estimators on a symmetric operator: Hutchinson traces, stochastic Lanczos quadrature (SLQ), spectral
densities, dense checks, and the scalar summaries eff_cond and negative_mass.

Generic (nothing of normlab's model); each function takes a ``CurvatureOperator``, or a plain symmetric
function (n,) -> (n,) together with n (and dtype). Units: eigenvalues and traces are in the operator's
units (for a loss's curvature: loss units per squared parameter unit); spectral densities are probability
densities over eigenvalue (units 1 / eigenvalue) that integrate to 1. Probes come from ``host_rng``, so
every estimate is a deterministic function of (operator, key).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np

from normlab.curvature.krylov import EigResult, _eig_result, _random_rows, _ritz, _run_lanczos, host_rng, tridiag_eigh
from normlab.curvature.operators import _pad_rows, _space


class TraceEstimate(NamedTuple):
    """Hutchinson estimate: trace, stderr (standard error of that mean), samples (p,) z^T A z."""

    trace: float
    stderr: float
    samples: np.ndarray


def hutchinson_trace(matvec, key: jax.Array, num_probes: int = 64, *, batch_size: int = 8,
                     n: int | None = None, dtype=None, basis=None, basis_trace: float | None = None,
                     rtol: float | None = None) -> TraceEstimate:
    """Hutchinson trace estimate tr(A) ~ mean_i z_i^T A z_i over Rademacher probes z_i (n,).

    Unbiased; variance 2 (||A||_F^2 - sum_i A_ii^2) / p. stderr = sample std (ddof 1) / sqrt(p) (NaN
    for one probe). Probes go through the operator ``batch_size`` at a time (vmapped; the last batch is
    filled with extra probes whose results are dropped); the probes depend on ``key`` only.

    Deflated (``basis``: (r, n) orthonormal rows spanning a subspace U, e.g. ``EigResult.basis``; drawn
    independently of the probes): tr(A) = tr(U^T A U) + tr(P A P) with P = I - U U^T, the first term exact
    (``basis_trace``, e.g. ``EigResult.basis_trace``; r more products when None), the second estimated
    with the projected probes P z_i: still unbiased, with variance ~2 ||P A P||_F^2 / p, much smaller when
    U holds the large eigenvalues (a Lanczos basis: the idea of Hutch++, Meyer et al. 2021). samples are then
    basis_trace + (P z_i)^T A (P z_i). stderr is the sampling error only: with most of the trace in the
    basis it can fall below the float rounding of basis_trace (~1e-6 relative in float32).

    ``rtol``: num_probes becomes a cap; probes go in batches until stderr <= rtol x |trace| (checked from
    the second batch on; ``len(samples)`` says how many were used). Stopping on the sample's own spread
    is a sequential rule: stderr is then slightly optimistic.
    """
    sp = _space(matvec, n, dtype)
    b = max(1, min(batch_size, num_probes))
    Z = _random_rows(host_rng(key, 1), sp.mask_np, _pad_rows(num_probes, b), "rademacher")
    offset = 0.0
    if basis is not None:
        U = np.asarray(basis, sp.mask_np.dtype)
        if U.ndim != 2 or U.shape[1] != sp.n:
            raise ValueError(f"basis must be (r, {sp.n}) rows in the block's coordinates, got {U.shape}")
        Zb = Z[:, sp.indices]
        Z[:, sp.indices] = Zb - (Zb @ U.T) @ U
        if basis_trace is None:
            E = np.zeros((U.shape[0], sp.mask_np.shape[0]), U.dtype)
            E[:, sp.indices] = U
            basis_trace = float(np.sum(E * np.asarray(sp.products(E))))
        offset = float(basis_trace)
    batches = [Z[i:i + b] for i in range(0, Z.shape[0], b)]
    # without rtol every product is dispatched before any is read back; with it, one batch at a time
    products = [sp.products(V) for V in batches] if rtol is None else None
    s = np.zeros(0, Z.dtype)
    for j, V in enumerate(batches):
        W = sp.products(V) if products is None else products[j]
        s = np.concatenate([s, np.sum(V * np.asarray(W), axis=1) + offset])[:num_probes]
        if rtol is not None and j > 0 and np.std(s, ddof=1) / np.sqrt(s.size) <= rtol * abs(np.mean(s)):
            break
    p = s.size
    se = float(np.std(s, ddof=1) / np.sqrt(p)) if p > 1 else float("nan")
    return TraceEstimate(float(np.mean(s)), se, s)


class SLQResult(NamedTuple):
    """Stochastic Lanczos quadrature: for probe i, the spectral measure (1/n) sum_j delta(lambda_j) is
    approximated by sum_j weights[i, j] delta(nodes[i, j]). nodes, weights: (p, m); each row of weights
    sums to 1 (Gauss quadrature, exact for polynomials of degree <= 2m - 1 per probe).
    top: the top-k Ritz pairs of the first probe's Lanczos run (an ``EigResult``; None if top_k = 0)."""

    nodes: np.ndarray
    weights: np.ndarray
    top: EigResult | None = None


def _gauss_quadrature(alpha, beta):
    """Nodes and weights (B, m) of the Lanczos quadrature rules for the start vectors (numpy)."""
    theta, S = tridiag_eigh(alpha, beta)
    return theta, S[:, 0, :] ** 2


def slq(matvec, key: jax.Array, num_probes: int = 8, num_steps: int = 60, *, batch_size: int = 8,
        top_k: int = 0, n: int | None = None, dtype=None) -> SLQResult:
    """Stochastic Lanczos quadrature with Rademacher probes, ``batch_size`` Lanczos runs side by side.

    num_steps (m, clipped to n) Lanczos steps per probe; cost num_probes x m products. With top_k > 0
    the first probe's run also yields top-k Ritz pairs (saving a separate Lanczos run).
    """
    sp = _space(matvec, n, dtype)
    m = int(min(num_steps, sp.n))
    b = max(1, min(batch_size, num_probes))
    rng = host_rng(key, 2)
    V = _random_rows(rng, sp.mask_np, _pad_rows(num_probes, b), "rademacher")
    nodes, weights, top = [], [], None
    for i in range(0, V.shape[0], b):
        alpha, beta, Q = _run_lanczos(sp, V[i:i + b], rng, m)
        th, w = _gauss_quadrature(alpha, beta)
        nodes.append(np.asarray(th))
        weights.append(np.asarray(w))
        if top is None and top_k > 0:
            top = _eig_result(*_ritz(alpha, beta, Q, k=int(min(top_k, m))), alpha, Q)
    return SLQResult(np.concatenate(nodes)[:num_probes], np.concatenate(weights)[:num_probes], top)


def slq_moments(nodes, weights, order: int) -> np.ndarray:
    """Per-probe estimate of the spectral moment tr(A^order) / n: sum_j w_ij theta_ij^order, (p,)."""
    return np.sum(np.asarray(weights) * np.asarray(nodes) ** order, axis=-1)


def gaussian_density(nodes, weights, grid, sigma: float) -> np.ndarray:
    """Spectral density on ``grid`` (g,): each node a Gaussian of std ``sigma`` (eigenvalue units)
    with its weight; probes averaged. nodes, weights: (p, m) or (m,). Returns (g,), 1 / eigenvalue.
    Computed in float64 numpy, chunked over the grid."""
    nodes = np.atleast_2d(np.asarray(nodes, np.float64)).reshape(-1)
    weights = np.atleast_2d(np.asarray(weights, np.float64))
    p = weights.shape[0]
    weights = weights.reshape(-1)
    weights = np.where(np.isfinite(nodes), weights, 0.0)  # a non-finite node carries no mass
    nodes = np.where(np.isfinite(nodes), nodes, 0.0)
    grid = np.asarray(grid, np.float64)
    out = np.empty_like(grid)
    for i in range(0, grid.size, 256):
        z = (grid[i:i + 256, None] - nodes[None]) / sigma
        out[i:i + 256] = np.exp(-0.5 * z * z) @ weights
    return out / (p * sigma * np.sqrt(2 * np.pi))


def default_grid(nodes, num: int = 512, sigma_rel: float = 0.01,
                 sigma: float | None = None) -> tuple[np.ndarray, float]:
    """A uniform grid covering all nodes with 6 sigma margins, and sigma (eigenvalue units).

    sigma defaults to ``sigma_rel`` x (max - min node) (a tiny positive value if that range is 0). Non-finite
    nodes are ignored (a grid around 0 if no node is finite).
    The grid has at least ``num`` points and a step <= sigma / 2, so the broadened density's tails
    outside it hold < 2e-9 of the mass and its trapezoid integral is 1 to ~1e-8.
    """
    finite = np.asarray(nodes, np.float64)[np.isfinite(nodes)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if sigma is None:
        sigma = sigma_rel * (hi - lo) if hi > lo else 1e-8 * max(1.0, abs(hi))
    num = max(num, int(np.ceil(2 * ((hi - lo) / sigma + 12))) + 1)
    return np.linspace(lo - 6 * sigma, hi + 6 * sigma, num), float(sigma)


def negative_mass(nodes, weights=None) -> float:
    """Fraction of absolute spectral mass on negative eigenvalues: sum |lambda| [lambda < 0] / sum
    |lambda|, over eigenvalues (weights None: an exact spectrum, each weight 1) or quadrature nodes
    with weights (SLQ: the ratio of the probe-averaged integrals of |t| 1[t<0] and |t|). 0 if all 0."""
    nodes = np.asarray(nodes, np.float64)
    w = np.ones_like(nodes) if weights is None else np.asarray(weights, np.float64)
    total = float(np.sum(w * np.abs(nodes)))
    neg = float(np.sum(w * np.abs(np.minimum(nodes, 0))))
    return neg / total if total > 0 else 0.0


def dense_matrix(matvec, *, batch_size: int = 8, n: int | None = None, dtype=None) -> np.ndarray:
    """The dense symmetric n x n matrix of the block (numpy), from products with its basis vectors
    ``batch_size`` at a time (vmapped; the same compiled product as the estimators), symmetrized
    (A + A^T) / 2. Only for small blocks: n products and n^2 memory."""
    sp = _space(matvec, n, dtype)
    N, b = sp.mask.shape[0], max(1, min(batch_size, sp.n))
    idx = np.resize(sp.indices, _pad_rows(sp.n, b))
    dtype = np.dtype(sp.dtype)
    products = []
    for i in range(0, idx.size, b):  # all products dispatched before any is read back
        E = np.zeros((b, N), dtype)
        E[np.arange(b), idx[i:i + b]] = 1
        products.append(sp.products(E))
    A = np.concatenate([np.asarray(P)[:, sp.indices] for P in products])[: sp.n]
    return 0.5 * (A + A.T)


def dense_eigh(matvec, *, batch_size: int = 8, n: int | None = None, dtype=None):
    """All eigenpairs from the dense matrix: (values (n,) ascending, vectors (n, n) as columns), numpy."""
    return np.linalg.eigh(dense_matrix(matvec, batch_size=batch_size, n=n, dtype=dtype))


def eff_cond(lambda_max: float, trace: float, n: int) -> float:
    """lambda_max / (trace / n), the effective condition number; NaN when trace <= 0 (never a
    division by ~0: with exact null directions the mean eigenvalue stays positive)."""
    return float(lambda_max) / (float(trace) / n) if trace > 0 and np.isfinite(trace) else float("nan")
