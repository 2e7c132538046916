"""Lanczos on a symmetric operator: the recurrence, top eigenpairs and their error estimates, and the host
random numbers every estimator draws from.

Generic (nothing of normlab's model). Each function takes a ``CurvatureOperator``, or a plain symmetric
function / ``Partial`` (n,) -> (n,) together with n (and dtype). The only compiled program that contains
the model is ``operators._matmat`` (b vectors at a time); the recurrence is a Python loop over jitted
steps that update Q in place (donated buffers). So one model and one batch width compile the product
once, for every block, estimator and checkpoint. Probes and start vectors are drawn on the host by numpy,
seeded by the bits of a JAX PRNG key (``host_rng``): every result is a deterministic function of (operator,
key), and no random-number kernel is compiled per shape.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab.curvature.operators import CurvatureOperator, _embed, _Space, _space

# A block's recurrence runs in its own coordinates (R^n) when the model has at least this many parameters,
# else in the model's (R^N). The full reorthogonalization reads Q four times a step, so for a large model a
# layer block's steps cost a fraction in R^n; but each block size then compiles its own step program, which
# near this size (the default study's depth-4 models, N about 17,500) costs about what it saves.
LANCZOS_BLOCK_MIN_N = 20_000


def host_rng(key, salt: int = 0) -> np.random.Generator:
    """A numpy Generator seeded by the bits of a JAX PRNG key (raw uint32 or typed; any integer array
    works too) and ``salt``.

    All probes and start vectors are drawn from it on the host: deterministic given the key, and no
    compilation of random-number kernels per shape.
    """
    return np.random.default_rng([int(x) for x in _key_bits(key)] + [int(salt)])


def _key_bits(key) -> np.ndarray:
    key = jnp.asarray(key) if not isinstance(key, np.ndarray) else key
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        key = jax.random.key_data(key)
    return np.asarray(key).ravel().astype(np.uint64)


def _child_key(key, i: int) -> np.ndarray:
    """An independent key (integer array) for sub-task i, without compiling jax.random.fold_in."""
    return np.concatenate([_key_bits(key), [i]]).astype(np.uint64)


def _random_rows(rng: np.random.Generator, mask: np.ndarray, rows: int, kind: str) -> np.ndarray:
    """(rows, N) Rademacher (+-1) or standard Gaussian vectors, zero outside the block (numpy)."""
    shape = (rows, mask.shape[0])
    V = rng.integers(0, 2, shape) * 2.0 - 1.0 if kind == "rademacher" else rng.standard_normal(shape)
    return (V * mask).astype(mask.dtype)


def _reorth(Q, w):
    """Remove from each w[i] (B, N) its components along the rows of Q[i] (B, r, N); Gram-Schmidt twice."""
    for _ in range(2):
        w = w - jnp.einsum("brn,br->bn", Q, jnp.einsum("brn,bn->br", Q, w))
    return w


class LanczosResult(NamedTuple):
    """m Lanczos steps from each of B start vectors: T = tridiag(beta[:m-1], alpha, beta[:m-1]) equals
    Q[:m] A Q[:m]^T. alpha (B, m), beta (B, m) (beta[:, m-1] is the residual norm after the last step;
    a 0 marks an invariant subspace found and a restart with a fresh random vector), Q (B, m + 1, n)
    orthonormal rows. (B is dropped when ``lanczos`` got a single start vector.)"""

    alpha: jax.Array
    beta: jax.Array
    Q: jax.Array


def _lanczos_init(V0, mask, num_steps: int):
    """State for B runs (numpy, built on the host): Q (B, m + 1, N) with the normalized masked starts in
    row 0, alpha, beta (B, m), ||A|| estimates (B,) and the current vectors (B, N)."""
    V0 = np.asarray(V0)
    B, N = V0.shape
    q = V0 * np.asarray(mask, V0.dtype)
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    Q = np.zeros((B, num_steps + 1, N), V0.dtype)
    Q[:, 0] = q
    return Q, np.zeros((B, num_steps), V0.dtype), np.zeros((B, num_steps), V0.dtype), np.zeros(B, V0.dtype), q


@functools.partial(jax.jit, donate_argnums=(0, 1, 2))
def _lanczos_step(Q, alpha, beta, anorm, W, j, R):
    """Step j for B runs at once, given W = A Q[:, j] (B, N); Q, alpha, beta are updated in place.
    Returns (Q, alpha, beta, anorm, next vectors (B, N)). Breakdown (||w|| <= sqrt(eps) ||A||, an
    invariant subspace): restart from R (B, N) (random, masked) rolled by j + 1 (and masked again),
    orthogonalized against Q, and store beta = 0."""
    q = Q[:, j]
    anorm = jnp.maximum(anorm, jnp.linalg.norm(W, axis=1))
    a = jnp.sum(q * W, axis=1)
    b_prev = jnp.where(j > 0, beta[:, j - 1], 0)
    w = _reorth(Q, W - a[:, None] * q - b_prev[:, None] * Q[:, j - 1])
    b = jnp.linalg.norm(w, axis=1)
    broke = b <= jnp.sqrt(jnp.finfo(Q.dtype).eps) * anorm
    r = _reorth(Q, jnp.roll(R, j + 1, axis=1) * (R != 0))
    rn = jnp.linalg.norm(r, axis=1, keepdims=True)
    r = jnp.where(rn > 0, r / jnp.where(rn > 0, rn, 1), 0)
    q_next = jnp.where(broke[:, None], r, w / jnp.where(broke, 1, b)[:, None])
    Q = Q.at[:, j + 1].set(q_next)
    return Q, alpha.at[:, j].set(a), beta.at[:, j].set(jnp.where(broke, 0, b)), anorm, q_next


@functools.partial(jax.jit, donate_argnums=(0, 1, 2))
def _lanczos_block_step(Q, alpha, beta, anorm, W, j, R, indices):
    """``_lanczos_step`` for a block: Q (B, m + 1, n) and R (B, n) in block coordinates, W (B, N) the
    products in R^N; returns the next vectors both ways, (B, n) and embedded (B, N)."""
    Q, alpha, beta, anorm, q = _lanczos_step.__wrapped__(Q, alpha, beta, anorm, W[:, indices], j, R)
    return Q, alpha, beta, anorm, q, jnp.zeros_like(W).at[:, indices].set(q)


def _stopped(stop, alpha, beta, j: int, num_steps: int) -> bool:
    """Whether ``stop`` ends a run after step j (0-based): asked with copies of alpha, beta[:, :j + 1]."""
    return stop is not None and j + 1 < num_steps and bool(stop(np.array(alpha)[:, :j + 1], np.array(beta)[:, :j + 1]))


def _run_lanczos(sp: _Space, V0, rng: np.random.Generator, num_steps: int, stop=None, alloc_steps: int | None = None):
    """Lanczos from the rows of V0 (B, N) (masked and normalized here); Q (B, m + 1, n) in block
    coordinates. rng draws the restart material. The products are in R^N; the recurrence in R^n
    (``LANCZOS_BLOCK_MIN_N``) or in R^N. ``stop(alpha, beta)`` (numpy (B, j)), if given, is asked after
    every step and ends the run early (m = j) when it returns True. ``alloc_steps`` (>= num_steps): the
    state is allocated for that many steps and num_steps of them run, so that a shorter run reuses the
    step program compiled for a longer one (the shapes of the state are the program's)."""
    R = _random_rows(rng, sp.mask_np, V0.shape[0], "normal")
    alloc = num_steps if alloc_steps is None else max(int(alloc_steps), num_steps)
    m = num_steps
    if sp.n == sp.mask_np.shape[0] or sp.mask_np.shape[0] < LANCZOS_BLOCK_MIN_N:
        Q, alpha, beta, anorm, q = _lanczos_init(V0, sp.mask_np, num_steps=alloc)
        for j in range(num_steps):
            Q, alpha, beta, anorm, q = _lanczos_step(Q, alpha, beta, anorm, sp.products(q), j, R)
            if _stopped(stop, alpha, beta, j, num_steps):
                m = j + 1
                break
        return np.asarray(alpha)[:, :m], np.asarray(beta)[:, :m], np.asarray(Q)[:, : m + 1, sp.indices]
    idx = sp.indices
    Q, alpha, beta, anorm, q = _lanczos_init(np.asarray(V0)[:, idx], sp.mask_np[idx], num_steps=alloc)
    q_full = np.zeros((q.shape[0], sp.mask_np.shape[0]), q.dtype)
    q_full[:, idx] = q
    indices, R = jnp.asarray(idx), jnp.asarray(R[:, idx])
    for j in range(num_steps):
        Q, alpha, beta, anorm, q, q_full = _lanczos_block_step(Q, alpha, beta, anorm, sp.products(q_full), j,
                                                               R, indices)
        if _stopped(stop, alpha, beta, j, num_steps):
            m = j + 1
            break
    return np.asarray(alpha)[:, :m], np.asarray(beta)[:, :m], Q if m == alloc else Q[:, : m + 1]


def lanczos(matvec, v0: jax.Array, num_steps: int, key: jax.Array | None = None) -> LanczosResult:
    """Lanczos tridiagonalization with full reorthogonalization (twice, every step).

    matvec: a ``CurvatureOperator`` or a symmetric function (n,) -> (n,) (then run in v0's dtype).
    v0: (n,) or (B, n) start vectors in block coordinates (normalized here; B runs side by side).
    num_steps: m, clipped to n. key: for restart vectors after an exact breakdown (default PRNGKey(0)).
    Cost: m products of B vectors + O(B m^2 n). Q is returned in block coordinates.
    """
    key = np.zeros(2, np.uint32) if key is None else key
    v0 = jnp.asarray(v0)
    V0 = jnp.atleast_2d(v0)
    sp = _space(matvec, V0.shape[1], v0.dtype if not isinstance(matvec, CurvatureOperator) else None)
    V0 = _embed(sp.mask, sp.indices, V0)
    alpha, beta, Q = _run_lanczos(sp, V0, host_rng(key), int(min(num_steps, sp.n)))
    res = LanczosResult(jnp.asarray(alpha), jnp.asarray(beta), jnp.asarray(Q))
    return res if v0.ndim == 2 else LanczosResult(*(x[0] for x in res))


def tridiag_eigh(alpha, beta) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of the Lanczos tridiagonal T (m x m) from alpha (..., m), beta (..., >= m-1),
    on the host (numpy; leading axes are a batch of independent tridiagonals).

    Returns (theta (..., m) ascending Ritz values, S (..., m, m) orthonormal eigenvectors as columns). A
    tridiagonal with a non-finite entry (products that over- or underflowed, e.g. float32 curvature of a
    saturated softmax) has NaN Ritz values and vectors, so that the caller sees a non-finite result rather
    than LAPACK's failure to converge.
    """
    alpha, beta = np.asarray(alpha), np.asarray(beta)
    m = alpha.shape[-1]
    T = np.zeros(alpha.shape + (m,), alpha.dtype)
    i = np.arange(m)
    T[..., i, i] = alpha
    T[..., i[:-1], i[1:]] = beta[..., : m - 1]
    T[..., i[1:], i[:-1]] = beta[..., : m - 1]
    finite = np.isfinite(T).all(axis=(-2, -1))
    if finite.all():
        return np.linalg.eigh(T)
    theta, S = np.full(alpha.shape, np.nan, T.dtype), np.full(T.shape, np.nan, T.dtype)
    if finite.any():
        theta[finite], S[finite] = np.linalg.eigh(T[finite])
    return theta, S


class EigResult(NamedTuple):
    """Top eigenpairs, largest (algebraic) first: values (k,), vectors (k, n) orthonormal rows (block
    coordinates; ``CurvatureOperator.to_tree`` turns one into a pytree), residuals (k,): the Lanczos
    estimates |beta_m s_m| of ||A v - lambda v|| (exactly 0 when below what the tridiagonal
    eigensolver resolves, ~eps ||A||; 0 for a dense decomposition).
    From Lanczos also: basis (m, n), the m Lanczos vectors (orthonormal rows spanning the Krylov subspace
    the pairs come from; m = the steps taken), and basis_trace = tr(basis A basis^T) = tr(T) (A's units),
    which ``hutchinson_trace`` can deflate with. None / NaN for a dense decomposition."""

    values: jax.Array
    vectors: jax.Array
    residuals: jax.Array
    basis: np.ndarray | None = None
    basis_trace: float = float("nan")


def _ritz(alpha, beta, Q, k: int):
    """Top-k Ritz pairs of the first of B Lanczos runs: alpha, beta (B, m), Q (B, m + 1, n) (numpy, on
    the host: an m x m problem and a (k, m) x (m, n) product)."""
    alpha, beta, Q = np.asarray(alpha[0]), np.asarray(beta[0]), np.asarray(Q[0])
    m = alpha.shape[0]
    theta, S = tridiag_eigh(alpha, beta)
    order = np.argsort(-theta, kind="stable")[:k]
    vecs = (Q[:m].T @ S[:, order]).T
    vecs = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    return theta[order], vecs, np.abs(beta[m - 1] * S[m - 1, order])


def _eig_result(vals, vecs, resid, alpha=None, Q=None) -> EigResult:
    """An EigResult; with alpha (B, m) and Q (B, m + 1, n) of the Lanczos runs, the first run's basis too."""
    if Q is None:
        return EigResult(vals, jnp.asarray(vecs), resid)
    alpha = np.asarray(alpha[0])
    return EigResult(vals, jnp.asarray(vecs), resid, np.asarray(Q[0])[: alpha.shape[0]], float(np.sum(alpha)))


def ritz_error_estimates(alpha, beta, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, r, err), each (k,): the top-k Ritz values of one Lanczos run (alpha, beta (m,)), their residual
    norms r = |beta_m s_m| (a bound: an eigenvalue of A lies within r of theta), and the sharper estimate of
    the distance to it, min(r, r^2 / gap), gap the distance to the nearest other Ritz value (Parlett, The
    Symmetric Eigenvalue Problem, 11.7: a bound when gap is the true gap; from the Ritz values it can
    underestimate while eigenvalues near the top are still missing, e.g. after 4 steps)."""
    theta, S = tridiag_eigh(alpha, beta)
    m = theta.shape[0]
    order = np.argsort(-theta, kind="stable")[:k]
    r = np.abs(np.asarray(beta)[m - 1] * S[m - 1, order])
    if m == 1:
        return theta[order], r, r
    others = np.abs(theta[order, None] - theta[None, :])
    others[np.arange(order.size), order] = np.inf
    gap = np.min(others, axis=1)
    return theta[order], r, np.minimum(r, np.where(gap > 0, r * r / np.where(gap > 0, gap, 1), r))


def default_lanczos_steps(k: int, n: int) -> int:
    """Steps used when none are given: max(4k, 40), capped at n."""
    return int(min(n, max(4 * k, 40)))


def top_eigenpairs(matvec, k: int, key: jax.Array, *, num_steps: int | None = None, n: int | None = None,
                   dtype=None, tol: float | None = None) -> EigResult:
    """Top-k (algebraically largest) eigenpairs of a symmetric operator by Lanczos from one start vector.

    The start vector is Gaussian from ``key`` (deterministic). num_steps defaults to
    ``default_lanczos_steps(k, n)``; check ``residuals`` for convergence (eigenvalue error <=
    residual, and ~residual^2 / gap once separated). With ``tol``, num_steps is a cap: the run stops
    after the first step at which every top-k Ritz value's error estimate (``ritz_error_estimates``:
    residual^2 / gap) is <= tol x |value| (``len(basis)`` says how many steps it took). n, dtype: only
    for a plain function.
    """
    sp = _space(matvec, n, dtype)
    m = default_lanczos_steps(k, sp.n) if num_steps is None else int(min(num_steps, sp.n))
    k = int(min(k, m))
    stop = None
    if tol is not None:
        def stop(alpha, beta):
            if alpha.shape[1] < k:
                return False
            theta, _, err = ritz_error_estimates(alpha[0], beta[0], k)
            return bool(np.all(err <= tol * np.abs(theta)))
    rng = host_rng(key)
    alpha, beta, Q = _run_lanczos(sp, _random_rows(rng, sp.mask_np, 1, "normal"), rng, m, stop)
    return _eig_result(*_ritz(alpha, beta, Q, k=k), alpha, Q)  # stop waits for k steps: alpha has >= k


def _extended_tridiagonal(alpha, beta) -> np.ndarray:
    """The (m + 1, m) matrix T~ of one Lanczos run (alpha, beta (m,)): A Q[:m]^T = Q[:m + 1]^T T~, the
    tridiagonal T with the row beta[m - 1] e_m^T below it (numpy, float64)."""
    m = alpha.shape[0]
    T = np.zeros((m + 1, m))
    i = np.arange(m)
    T[i, i] = alpha
    T[i[1:], i[:-1]] = beta[: m - 1]
    T[i[:-1], i[1:]] = beta[: m - 1]
    T[m, m - 1] = beta[m - 1]
    return T


def union_ritz_max(alpha, beta, Q, eps: float) -> float:
    """The largest Ritz value of A on the union of B Lanczos runs' subspaces, with no product: alpha, beta
    (B, m) and Q (B, m + 1, n) of ``_run_lanczos``. Each run satisfies A Q_b[:m]^T = Q_b[:m + 1]^T T~_b
    (``_extended_tridiagonal``; full reorthogonalization, a breakdown's residual <= sqrt(eps) ||A|| dropped),
    so on V = [Q_1[:m]; ...; Q_B[:m]] (B m rows, not mutually orthogonal across runs) the projected matrix
    V A V^T and the Gram matrix V V^T come from the stored vectors. The Rayleigh-Ritz problem keeps the Gram
    eigendirections above sqrt(eps) times the largest (nearly shared directions of two runs would amplify the
    rounding of A's products, eps ||A||, by the inverse of their Gram eigenvalue). The union of the Krylov
    spaces of the B start vectors is the block Krylov space: B runs of m steps give a subspace of B m
    dimensions, whose top Ritz value is >= each run's own (float64, on the host)."""
    alpha, beta, Q = (np.asarray(x, np.float64) for x in (alpha, beta, Q))
    B, m = alpha.shape
    V = Q[:, :m].reshape(B * m, -1)
    AV = np.concatenate([Q[b].T @ _extended_tridiagonal(alpha[b], beta[b]) for b in range(B)], axis=1)  # (n, B m)
    P = V @ AV
    P = 0.5 * (P + P.T)
    g, U = np.linalg.eigh(V @ V.T)
    keep = g > np.sqrt(eps) * g[-1]
    W = U[:, keep] / np.sqrt(g[keep])
    return float(np.linalg.eigvalsh(W.T @ P @ W)[-1])


def lanczos_lambda_max(matvec, key: jax.Array, num_steps: int, *, runs: int = 1, alloc_steps: int | None = None,
                       n: int | None = None, dtype=None) -> float:
    """The largest eigenvalue of a symmetric operator from a Krylov subspace of ``num_steps`` dimensions
    (clipped to n), built by ``runs`` Lanczos runs side by side from Gaussian start vectors drawn from
    ``key``, each of ceil(num_steps / runs) steps: ``runs`` vectors go through the operator at a time (the
    width of a compiled product, e.g. SLQ's), so the subspace costs num_steps products in num_steps / runs
    calls. The Ritz value on the union of the runs' subspaces (``union_ritz_max``): a lower bound of
    lambda_max up to rounding, exact once the subspace holds A's top eigenvector. ``alloc_steps``: allocate
    the recurrence's state for that many steps (clipped to n) and run fewer, so that the step program compiled
    for a longer run of the same width (e.g. SLQ's) serves. NaN when the recurrence is not finite. n, dtype:
    only for a plain function."""
    sp = _space(matvec, n, dtype)
    runs = max(1, int(runs))
    m = int(min(-(-int(num_steps) // runs), sp.n))
    alloc = m if alloc_steps is None else int(min(max(int(alloc_steps), m), sp.n))
    rng = host_rng(key, 3)
    alpha, beta, Q = _run_lanczos(sp, _random_rows(rng, sp.mask_np, runs, "normal"), rng, m, alloc_steps=alloc)
    alpha, beta = np.asarray(alpha), np.asarray(beta)
    if not (np.all(np.isfinite(alpha)) and np.all(np.isfinite(beta))):
        return float("nan")
    if runs == 1:
        return float(tridiag_eigh(alpha, beta)[0][0, -1])
    return union_ritz_max(alpha, beta, Q, float(jnp.finfo(sp.dtype).eps))
