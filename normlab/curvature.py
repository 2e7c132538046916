"""Matrix-free curvature of a scalar loss: Hessian and Gauss-Newton products, Lanczos, Hutchinson, SLQ.

Everything here takes a scalar loss function and a parameter pytree, so it works on any JAX model,
not only normlab's MLP. Conventions:

* A **block** is a subset of the parameter leaves. Leaves are named by their pytree path joined with
  dots (``layer1.W`` for normlab's ``{"layer1": {"W": ...}}``). ``block`` may be ``None`` or
  ``"model"`` (all leaves), ``"layer<l>"`` (that layer's ``W`` and ``b``), ``"norm<l>"`` (its ``gamma``
  and ``beta``), an iterable of leaf names, or a predicate ``name -> bool``. The curvature of a block is
  the sub-matrix of the full matrix over the block's coordinates, the other leaves held fixed.
* Internally a block is one **flat vector** of length n (``jax.flatten_util.ravel_pytree`` of the
  block's leaves in pytree order). ``CurvatureOperator.indices`` gives each flat coordinate's position
  in ``ravel_pytree(params)``, so block matrices are literally sub-blocks of the full matrix.
* Units: eigenvalues and traces are in units of the loss per squared parameter unit. Spectral
  densities are probability densities over eigenvalue (units 1 / eigenvalue) that integrate to 1.
* dtype: everything runs in the dtype of the parameters given (float32 or float64; ``import normlab``
  enables float64). Probes and start vectors are drawn on the host by numpy, seeded by the bits of a
  JAX PRNG key (``host_rng``), so every estimate is a deterministic function of (loss, params, key).
* Compilation: a block is a 0/1 mask over the full flat parameter vector (N,), passed as data, and an
  operator is a ``jax.tree_util.Partial`` whose static part is (kind, loss function, tree structure).
  The only compiled program that contains the model is the batched product ``_matmat``; it is compiled
  once per (loss object, shapes, dtype, batch width) and reused for every block, estimator and new
  parameter value. Reuse happens when the same loss *object* (or one equal by value) is passed: pass
  data through ``args`` rather than closing over it. The normlab losses (``SpecLoss`` ...) used by
  ``analyze_curvature`` are hashable by value, so all checkpoints of one model share one compilation.
  (A block's product is the full model's product, masked: per-layer scopes cost as much per product as
  the whole model.)
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial

from normlab import layer_inputs
from normlab import model as nlmodel

BlockSpec = None | str | Iterable[str] | Callable[[str], bool]
MATRICES = ("hessian", "ggn")

# --------------------------------------------------------------------------------------------------
# Blocks: naming leaves, selecting a subset, splitting and merging.


def _key_name(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def leaf_names(params) -> list[str]:
    """Dotted path name of every leaf of ``params``, in pytree (= ``ravel_pytree``) order."""
    paths, _ = jax.tree_util.tree_flatten_with_path(params)
    return [".".join(_key_name(k) for k in path) for path, _ in paths]


def layer_block(l: int) -> tuple[str, str]:
    """Leaf names of layer l's weights and bias (the ``layer<l>`` scope); an absent bias is skipped."""
    return (f"layer{l}.W", f"layer{l}.b")


def norm_block(l: int) -> tuple[str, str]:
    """Leaf names of layer l's normalization gain and shift (the ``norm<l>`` scope)."""
    return (f"layer{l}.gamma", f"layer{l}.beta")


def _block_predicate(block: BlockSpec) -> Callable[[str], bool]:
    if block is None or block == "model":
        return lambda name: True
    if callable(block):
        return block
    if isinstance(block, str):
        if block.startswith("layer") and block[5:].isdigit():
            return set(layer_block(int(block[5:]))).__contains__
        if block.startswith("norm") and block[4:].isdigit():
            return set(norm_block(int(block[4:]))).__contains__
        return {block}.__contains__
    return set(block).__contains__


def block_mask(params, block: BlockSpec = None) -> tuple[bool, ...]:
    """One bool per leaf of ``params`` (pytree order): is the leaf in ``block``? Raises if none is."""
    names = leaf_names(params)
    pred = _block_predicate(block)
    mask = tuple(bool(pred(name)) for name in names)
    if not any(mask):
        raise ValueError(f"block {block!r} selects no parameter; leaves are {names}")
    return mask


def split_block(params, block: BlockSpec = None) -> tuple[list, list]:
    """``(block_leaves, rest_leaves)``: the leaves of ``params`` inside / outside ``block``, in order."""
    mask = block_mask(params, block)
    leaves = jax.tree_util.tree_leaves(params)
    pairs = list(zip(leaves, mask, strict=True))
    return [x for x, m in pairs if m], [x for x, m in pairs if not m]


def merge_block(treedef, mask: Sequence[bool], block_leaves: Sequence, rest_leaves: Sequence):
    """Inverse of ``split_block``: the full pytree from its block and rest leaves."""
    it_b, it_r = iter(block_leaves), iter(rest_leaves)
    return jax.tree_util.tree_unflatten(treedef, [next(it_b) if m else next(it_r) for m in mask])


def restrict(loss_fn: Callable, params, block: BlockSpec = None):
    """Close ``loss_fn(params, *args)`` over the leaves outside ``block``.

    Returns ``(fn_flat, x0, unravel)``: ``fn_flat(x, *args)`` evaluates the loss with the block set
    from the flat vector x (n,); ``x0`` (n,) is the block's current value; ``unravel(x)`` gives the
    block's leaves as a list. The rest leaves become constants of ``fn_flat``.
    """
    treedef = jax.tree_util.tree_structure(params)
    mask = block_mask(params, block)
    blk, rest = split_block(params, block)
    x0, unravel = ravel_pytree(blk)

    def fn_flat(x, *args):
        return loss_fn(merge_block(treedef, mask, unravel(x), rest), *args)

    return fn_flat, x0, unravel


# --------------------------------------------------------------------------------------------------
# Products. Kernels act on the full flat parameter vector (N,); a block is a 0/1 mask (N,) applied on
# both sides (M K M), a *dynamic* argument, so every block of one model shares one compilation. Kernels
# are frozen dataclasses (hashable by value) so jit caches on them.


def _unflatten(treedef, shapes: tuple[tuple[int, ...], ...], x):
    """Flat vector x (N,) in ``ravel_pytree`` order -> the pytree (static treedef and leaf shapes); works
    on a traced array inside a compiled product and on a numpy array on the host."""
    leaves, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        leaves.append(x[start:start + size].reshape(shape))
        start += size
    return jax.tree_util.tree_unflatten(treedef, leaves)


# The kernels take the flat parameter vector x0 (N,), built on the host, rather than the leaves: flattening
# the leaves inside the compiled product (a concatenate that the forward-over-reverse then differentiates
# through) made the Hessian product 1.6x slower (measured: depth-8 batch-norm MLP, 512 examples, float32,
# 2 vectors per call: 22.8 -> 13.7 ms).


@dataclasses.dataclass(frozen=True)
class _HessianKernel:
    """(x0, args, outer_args, v) -> H v, x0, v and H v (N,); H the Hessian of loss_fn(params, *args)."""

    loss_fn: Callable
    treedef: Any
    shapes: tuple[tuple[int, ...], ...]

    def __call__(self, x0, args, outer_args, v):
        def f(x):
            return self.loss_fn(_unflatten(self.treedef, self.shapes, x), *args)

        return jax.jvp(jax.grad(f), (x0,), (v,))[1]


@dataclasses.dataclass(frozen=True)
class _GGNKernel:
    """(x0, args, outer_args, v) -> J^T H_out J v for loss = outer_loss(f(params, *args), *outer_args)."""

    f: Callable
    outer_loss: Callable
    treedef: Any
    shapes: tuple[tuple[int, ...], ...]

    def __call__(self, x0, args, outer_args, v):
        def g(x):
            return self.f(_unflatten(self.treedef, self.shapes, x), *args)

        out, jvp_fn = jax.linearize(g, x0)
        grad_out = jax.grad(lambda o: self.outer_loss(o, *outer_args))
        hjv = jax.jvp(grad_out, (out,), (jvp_fn(v),))[1]
        (jt_hjv,) = jax.linear_transpose(jvp_fn, x0)(hjv)
        return jt_hjv


@dataclasses.dataclass(frozen=True)
class _Masked:
    """(mask, x0, args, outer_args, v) -> mask * K (mask * v): the block's matrix embedded in R^N."""

    kernel: Callable

    def __call__(self, mask, x0, args, outer_args, v):
        return mask * self.kernel(x0, args, outer_args, mask * v)


@jax.jit
def _embed(mask, indices, V):
    """Block vectors V (b, n) -> full flat vectors (b, N), zeros outside the block."""
    return jnp.zeros((V.shape[0], mask.shape[0]), mask.dtype).at[:, indices].set(V.astype(mask.dtype))


@dataclasses.dataclass(frozen=True)
class CurvatureOperator:
    """A symmetric n x n curvature matrix of one parameter block, available only through products.

    matvec: ``jax.tree_util.Partial``, (N,) -> (N,), the block's matrix embedded in the full flat
    parameter space (zero outside the block), jit-compatible. mask: (N,) 1 on the block, 0 elsewhere.
    x0: (n,) the block's parameters, flat (numpy). names: the block's leaf names. indices: (n,) int, position of
    each block coordinate in ``ravel_pytree(params)`` (N,). Calling the operator works in block
    coordinates: v (n,) -> (n,).
    """

    matvec: Partial
    mask: jax.Array
    x0: np.ndarray
    names: tuple[str, ...]
    indices: np.ndarray
    treedef: Any
    leaf_shapes: tuple[tuple[int, ...], ...]

    @property
    def n(self) -> int:
        """Number of parameters in the block."""
        return int(self.indices.shape[0])

    @property
    def N(self) -> int:
        """Number of parameters in the whole model."""
        return int(self.mask.shape[0])

    @property
    def dtype(self):
        return self.x0.dtype

    def __call__(self, v: jax.Array) -> jax.Array:
        """Matrix-vector product in block coordinates, v (n,) -> (n,); jit-compiled."""
        return self.matmat(jnp.asarray(v)[None])[0]

    def matmat(self, V: jax.Array) -> jax.Array:
        """Products with a batch of block vectors, V (b, n) -> (b, n) (rows are vectors); vmapped."""
        return _matmat(self.matvec, _embed(self.mask, self.indices, jnp.asarray(V)))[:, self.indices]

    def embed(self, v: jax.Array) -> np.ndarray:
        """Block vector (n,) -> full flat vector (N,), zeros outside the block (numpy, on the host)."""
        w = np.zeros(self.N, self.dtype)
        w[self.indices] = np.asarray(v)
        return w

    def to_tree(self, v: jax.Array):
        """Block vector (n,) -> pytree shaped like params, zeros outside the block (a direction in the
        full parameter space, e.g. an eigenvector for a contour slice)."""
        return jax.tree_util.tree_map(jnp.asarray, _unflatten(self.treedef, self.leaf_shapes, self.embed(v)))

    def from_tree(self, tree) -> jax.Array:
        """Pytree shaped like params -> its block coordinates as a flat vector (n,)."""
        return ravel_pytree(jax.tree_util.tree_leaves(tree))[0][self.indices]


def _check_dtype(leaves):
    dtypes = {jnp.result_type(x) for x in leaves}
    if len(dtypes) != 1 or not jnp.issubdtype(next(iter(dtypes)), jnp.floating):
        raise ValueError(f"parameter leaves must share one floating dtype, got {sorted(map(str, dtypes))}")


def _operator(kernel, params, block, args, outer_args) -> CurvatureOperator:
    leaves = jax.tree_util.tree_leaves(params)
    _check_dtype(leaves)
    mask_leaves = block_mask(params, block)
    dtype = np.dtype(jnp.result_type(*leaves))
    # the flat vector and the mask are built on the host: as device operations they were a dozen small
    # programs per block size (gather, select, concatenate ...) to compile or load in every analyze job
    flat = np.concatenate([np.asarray(x, dtype).ravel() for x in leaves])
    mask_np = np.concatenate(
        [np.full(np.size(x), float(m)) for x, m in zip(leaves, mask_leaves, strict=True)]).astype(dtype)
    mask = jnp.asarray(mask_np)
    indices = np.flatnonzero(mask_np)
    names = tuple(n for n, m in zip(leaf_names(params), mask_leaves, strict=True) if m)
    return CurvatureOperator(
        matvec=Partial(_Masked(kernel), mask, jnp.asarray(flat), tuple(args), tuple(outer_args)), mask=mask,
        x0=flat[indices], names=names, indices=indices, treedef=jax.tree_util.tree_structure(params),
        leaf_shapes=tuple(tuple(np.shape(x)) for x in leaves))


def _structure(params) -> tuple[Any, tuple[tuple[int, ...], ...]]:
    """(treedef, leaf shapes) of params: what a kernel needs to rebuild the pytree from the flat vector."""
    return jax.tree_util.tree_structure(params), tuple(tuple(np.shape(x)) for x in jax.tree_util.tree_leaves(params))


def hessian_operator(loss_fn: Callable, params, block: BlockSpec = None,
                     args: tuple = ()) -> CurvatureOperator:
    """Hessian of ``loss_fn(params, *args)`` (a scalar) over ``block``, as an n x n operator.

    Products are forward-over-reverse (``jax.jvp`` of ``jax.grad``), about the cost of 2-3 gradients.
    All parameters must share one floating dtype, which the operator keeps.
    """
    return _operator(_HessianKernel(loss_fn, *_structure(params)), params, block, args, ())


def ggn_operator(f: Callable, outer_loss: Callable, params, block: BlockSpec = None, args: tuple = (),
                 outer_args: tuple = ()) -> CurvatureOperator:
    """Generalized Gauss-Newton matrix G = J^T H_out J over ``block`` (PSD when the outer loss is convex).

    The loss is ``outer_loss(f(params, *args), *outer_args)``; J = d f / d block (outputs x n) and
    H_out is the Hessian of ``outer_loss`` in the outputs. Product: jvp of the linearized f, a
    Hessian-vector product of the outer loss on the outputs, then the transpose (one shared forward).
    """
    return _operator(_GGNKernel(f, outer_loss, *_structure(params)), params, block, args, outer_args)


def hvp(loss_fn: Callable, params, v, args: tuple = ()):
    """Hessian-vector product as pytrees: H v for ``loss_fn(params, *args)``, v shaped like params.
    Runs through ``hessian_operator`` (so it shares that operator's compiled product)."""
    op = hessian_operator(loss_fn, params, None, args)
    return op.to_tree(op(op.from_tree(v)))


def ggn_vp(f: Callable, outer_loss: Callable, params, v, args: tuple = (), outer_args: tuple = ()):
    """Gauss-Newton-vector product J^T H_out J v as pytrees (v shaped like params), through
    ``ggn_operator``."""
    op = ggn_operator(f, outer_loss, params, None, args, outer_args)
    return op.to_tree(op(op.from_tree(v)))


# --------------------------------------------------------------------------------------------------
# Linear algebra on a symmetric operator: Lanczos, top eigenpairs, Hutchinson, SLQ, dense. Each takes
# a CurvatureOperator, or a plain function / Partial (n,) -> (n,) together with n (and dtype).
# The only compiled program that contains the model is ``_matmat`` (b vectors at a time); the Lanczos
# recurrence is a Python loop over jitted steps that update Q in place (donated buffers). So one model
# and one batch width compile the product once, for every block, estimator and checkpoint.


class _Space(NamedTuple):
    """Where an algorithm runs: matvec on R^N, mask (N,) of the block, indices (n,) of the block."""

    matvec: Partial
    mask: jax.Array
    indices: np.ndarray
    mask_np: np.ndarray

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    @property
    def dtype(self):
        return self.mask.dtype


def _space(matvec, n: int | None, dtype) -> _Space:
    if isinstance(matvec, CurvatureOperator):
        if dtype is not None and jnp.dtype(dtype) != matvec.dtype:
            raise ValueError(f"operator dtype is {matvec.dtype}, got dtype={dtype}")
        return _Space(matvec.matvec, matvec.mask, matvec.indices, np.asarray(matvec.mask))
    if n is None:
        raise ValueError("n is required unless matvec is a CurvatureOperator")
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    mv = matvec if isinstance(matvec, Partial) else Partial(matvec)
    mask = np.ones(int(n), jnp.dtype(dtype))
    return _Space(mv, jnp.asarray(mask), np.arange(int(n)), mask)


def _pad_rows(n_rows: int, b: int) -> int:
    return n_rows + (-n_rows) % b


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


@jax.jit
def _matmat(matvec, V):
    """The one compiled program containing the model: V (b, N) -> (b, N), vmapped products."""
    return jax.vmap(matvec)(V)


# A block's Lanczos recurrence runs in its own coordinates when the model has at least this many parameters:
# the full reorthogonalization reads Q four times a step, which for a depth-8 model's hidden layer (n = 4160
# of N = 34442) took 2.2 ms a step in R^N, 0.3 ms in R^n. Each block size compiles its own step program
# (about 0.7 s), which for the default study's depth-4 models (N = 17,500) costs about what it saves.
LANCZOS_BLOCK_MIN_N = 20_000


def _stopped(stop, alpha, beta, j: int, num_steps: int) -> bool:
    """Whether ``stop`` ends a run after step j (0-based): asked with copies of alpha, beta[:, :j + 1]."""
    return stop is not None and j + 1 < num_steps and bool(stop(np.array(alpha)[:, :j + 1], np.array(beta)[:, :j + 1]))


def _run_lanczos(sp: _Space, V0, rng: np.random.Generator, num_steps: int, stop=None):
    """Lanczos from the rows of V0 (B, N) (masked and normalized here); Q (B, m + 1, n) in block
    coordinates. rng draws the restart material. The products are in R^N; the recurrence in R^n
    (``LANCZOS_BLOCK_MIN_N``) or in R^N. ``stop(alpha, beta)`` (numpy (B, j)), if given, is asked after
    every step and ends the run early (m = j) when it returns True."""
    R = _random_rows(rng, sp.mask_np, V0.shape[0], "normal")
    m = num_steps
    if sp.n == sp.mask_np.shape[0] or sp.mask_np.shape[0] < LANCZOS_BLOCK_MIN_N:
        Q, alpha, beta, anorm, q = _lanczos_init(V0, sp.mask_np, num_steps=num_steps)
        for j in range(num_steps):
            Q, alpha, beta, anorm, q = _lanczos_step(Q, alpha, beta, anorm, _matmat(sp.matvec, q), j, R)
            if _stopped(stop, alpha, beta, j, num_steps):
                m = j + 1
                break
        return np.asarray(alpha)[:, :m], np.asarray(beta)[:, :m], np.asarray(Q)[:, : m + 1, sp.indices]
    idx = sp.indices
    Q, alpha, beta, anorm, q = _lanczos_init(np.asarray(V0)[:, idx], sp.mask_np[idx], num_steps=num_steps)
    q_full = np.zeros((q.shape[0], sp.mask_np.shape[0]), q.dtype)
    q_full[:, idx] = q
    indices, R = jnp.asarray(idx), jnp.asarray(R[:, idx])
    for j in range(num_steps):
        Q, alpha, beta, anorm, q, q_full = _lanczos_block_step(Q, alpha, beta, anorm, _matmat(sp.matvec, q_full), j,
                                                               R, indices)
        if _stopped(stop, alpha, beta, j, num_steps):
            m = j + 1
            break
    return np.asarray(alpha)[:, :m], np.asarray(beta)[:, :m], Q if m == num_steps else Q[:, : m + 1]


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

    Returns (theta (..., m) ascending Ritz values, S (..., m, m) orthonormal eigenvectors as columns).
    """
    alpha, beta = np.asarray(alpha), np.asarray(beta)
    m = alpha.shape[-1]
    T = np.zeros(alpha.shape + (m,), alpha.dtype)
    i = np.arange(m)
    T[..., i, i] = alpha
    T[..., i[:-1], i[1:]] = beta[..., : m - 1]
    T[..., i[1:], i[:-1]] = beta[..., : m - 1]
    return np.linalg.eigh(T)


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
            basis_trace = float(np.sum(E * np.asarray(_matmat(sp.matvec, E))))
        offset = float(basis_trace)
    batches = [Z[i:i + b] for i in range(0, Z.shape[0], b)]
    # without rtol every product is dispatched before any is read back; with it, one batch at a time
    products = [_matmat(sp.matvec, V) for V in batches] if rtol is None else None
    s = np.zeros(0, Z.dtype)
    for j, V in enumerate(batches):
        W = _matmat(sp.matvec, V) if products is None else products[j]
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
    grid = np.asarray(grid, np.float64)
    out = np.empty_like(grid)
    for i in range(0, grid.size, 256):
        z = (grid[i:i + 256, None] - nodes[None]) / sigma
        out[i:i + 256] = np.exp(-0.5 * z * z) @ weights
    return out / (p * sigma * np.sqrt(2 * np.pi))


def default_grid(nodes, num: int = 512, sigma_rel: float = 0.01,
                 sigma: float | None = None) -> tuple[np.ndarray, float]:
    """A uniform grid covering all nodes with 6 sigma margins, and sigma (eigenvalue units).

    sigma defaults to ``sigma_rel`` x (max - min node) (a tiny positive value if that range is 0).
    The grid has at least ``num`` points and a step <= sigma / 2, so the broadened density's tails
    outside it hold < 2e-9 of the mass and its trapezoid integral is 1 to ~1e-8.
    """
    lo, hi = float(np.min(nodes)), float(np.max(nodes))
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
        products.append(_matmat(sp.matvec, E))
    A = np.concatenate([np.asarray(P)[:, sp.indices] for P in products])[: sp.n]
    return 0.5 * (A + A.T)


def dense_eigh(matvec, *, batch_size: int = 8, n: int | None = None, dtype=None):
    """All eigenpairs from the dense matrix: (values (n,) ascending, vectors (n, n) as columns), numpy."""
    return np.linalg.eigh(dense_matrix(matvec, batch_size=batch_size, n=n, dtype=dtype))


def eff_cond(lambda_max: float, trace: float, n: int) -> float:
    """lambda_max / (trace / n), the effective condition number; NaN when trace <= 0 (never a
    division by ~0: with exact null directions the mean eigenvalue stays positive)."""
    return float(lambda_max) / (float(trace) / n) if trace > 0 and np.isfinite(trace) else float("nan")


# --------------------------------------------------------------------------------------------------
# normlab models: losses hashable by value (compiled code reused across checkpoints), the pipeline's
# per-scope summary, and the layer-input factor.


@dataclasses.dataclass(frozen=True)
class SpecLoss:
    """``J(params, X, y)`` of a normlab model (BN in training mode on X)."""

    spec: nlmodel.ModelSpec

    def __call__(self, params, X, y):
        return nlmodel.loss(self.spec, params, X, y)


@dataclasses.dataclass(frozen=True)
class SpecForward:
    """``f(params, X)``: the network outputs (m, n_outputs)."""

    spec: nlmodel.ModelSpec

    def __call__(self, params, X):
        return nlmodel.forward(self.spec, params, X)


@dataclasses.dataclass(frozen=True)
class SpecOuter:
    """``outer_loss(outputs, y)`` of a normlab model (softmax cross-entropy or MSE, a mean)."""

    spec: nlmodel.ModelSpec

    def __call__(self, out, y):
        return nlmodel.loss_from_outputs(self.spec, out, y)


@functools.partial(jax.jit, static_argnums=0)
def _loss_value(loss_fn, params, X, y):
    return loss_fn(params, X, y)


def model_operator(spec: nlmodel.ModelSpec, params, X, y, matrix: str, block: BlockSpec = None):
    """The Hessian (``matrix="hessian"``) or Gauss-Newton (``"ggn"``) operator of a normlab model's loss
    on the batch (X, y) over ``block`` (e.g. ``"model"``, ``"layer2"``, ``"norm1"``)."""
    if matrix == "hessian":
        return hessian_operator(SpecLoss(spec), params, block, (X, y))
    if matrix == "ggn":
        return ggn_operator(SpecForward(spec), SpecOuter(spec), params, block, (X,), (y,))
    raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")


@dataclasses.dataclass(frozen=True)
class _LayerKernel:
    """(x0, args, outer_args, v) -> the product of one layer's (W, b) block of a normlab model, computed from
    that layer up: args = (A, stacked, start, l), outer_args = (y,).

    A (m, w_in): the layer's input A[l-1] on the batch, a constant of the block (the layers below do not
    depend on it); stacked: ``model.stack_layers``; start: where the block (W row-major, then b: contiguous in
    ``ravel_pytree`` order) begins in x0 (N,); l: the layer. ``output``: the block is the output layer's
    (logits = A W + b); else hidden layer l's, and ``model.outputs_from_prenorm`` runs the layers above it
    with l traced, so one program serves every hidden layer. Returns (N,), zero outside the block.
    """

    spec: nlmodel.ModelSpec
    matrix: str
    output: bool

    def __call__(self, x0, args, outer_args, v):
        A, stacked, start, l = args
        spec = self.spec
        n_in, n_out = A.shape[1], spec.sizes[-1] if self.output else spec.sizes[1]
        bias = self.output or nlmodel.has_bias(spec, 2)
        size = n_in * n_out + (n_out if bias else 0)
        theta, t = (jax.lax.dynamic_slice(x, (start,), (size,)) for x in (x0, v))

        def outputs(th):
            z = A @ th[:n_in * n_out].reshape(n_in, n_out)
            if bias:
                z = z + th[n_in * n_out:]
            return z if self.output else nlmodel.outputs_from_prenorm(spec, stacked, l, z)

        def outer(o):
            return nlmodel.loss_from_outputs(spec, o, *outer_args)

        if self.matrix == "hessian":
            r = jax.jvp(jax.grad(lambda th: outer(outputs(th))), (theta,), (t,))[1]
        else:  # J^T H_out J t by a jvp and a vjp: the linearize-and-transpose of _GGNKernel ran the skipped
            # layers' steps of the transposed scan too (depth 8, layer 8: 4.8 -> 2.4 ms)
            out, jt = jax.jvp(outputs, (theta,), (t,))
            hjv = jax.jvp(jax.grad(outer), (out,), (jt,))[1]
            (r,) = jax.vjp(outputs, theta)[1](hjv)
        return jax.lax.dynamic_update_slice(jnp.zeros_like(x0), r, (start,))


def layer_operator_applies(spec: nlmodel.ModelSpec, l: int) -> bool:
    """Whether ``layer_operator`` can serve layer l: the output layer always; a hidden layer l >= 2 when the
    hidden layers share one width (layer 1 runs the whole network anyway: ``model_operator``)."""
    return l == spec.n_layers or (2 <= l < spec.n_layers and nlmodel.equal_hidden_widths(spec))


def layer_operator(spec: nlmodel.ModelSpec, params, X, y, matrix: str, l: int) -> CurvatureOperator:
    """The same operator as ``model_operator(..., matrix, f"layer{l}")`` (layer l's W and b block of the
    Hessian or Gauss-Newton matrix), with products that run only layers l..L.

    The layers below l are constants of the block, so their output A[l-1] is computed once (a float64
    forward, cast to params' dtype) and each product differentiates the loss of the layers from l up in the
    block alone: no gradients of the other layers' parameters, no pass through the layers below. One
    compiled program per matrix serves every hidden layer (and one the output layer). Measured against the
    masked whole-model product, depth-8 batch-norm MLP, 512 examples, float32, 2 vectors, 1 thread: Hessian
    25 -> 11 ms (layer 2), 20 -> 5 ms (layer 8), 22 -> 1 ms (output layer); Gauss-Newton 14 -> 12, 15 -> 4,
    15 -> 2 ms. Needs ``layer_operator_applies(spec, l)``.
    """
    if not layer_operator_applies(spec, l):
        raise ValueError(f"layer_operator serves layers 2..{spec.n_layers} of a model with one hidden width "
                         f"(sizes {spec.sizes}), not layer {l}: use model_operator")
    if matrix not in MATRICES:
        raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")
    op = model_operator(spec, params, X, y, matrix, f"layer{l}")
    start = int(op.indices[0])
    if op.indices[-1] - start + 1 != op.n:  # never for a normlab pytree (W, then b, inside one layer's dict)
        raise AssertionError(f"layer{l}'s block is not contiguous in the flat parameter vector")
    dtype = op.dtype
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    A = layer_inputs.network_layer_inputs(spec, p64, np.asarray(X, np.float64))[l - 1].astype(dtype)
    output = l == spec.n_layers
    stacked = None if output else jax.tree_util.tree_map(
        jnp.asarray, nlmodel.stack_layers(spec, jax.tree_util.tree_map(lambda a: np.asarray(a, dtype), params)))
    mask, x0 = op.matvec.args[:2]
    args = (jnp.asarray(A), stacked, np.int32(start), np.int32(l))
    return dataclasses.replace(op, matvec=Partial(_Masked(_LayerKernel(spec, matrix, output)), mask, x0, args,
                                                  (jnp.asarray(y),)))


def model_scopes(spec: nlmodel.ModelSpec, include_norm: bool = False) -> list[str]:
    """``["model", "layer1", ..., "layerL"]`` (+ ``"norm<l>"`` for layers with gamma/beta)."""
    scopes = ["model"] + nlmodel.layer_names(spec)
    if include_norm:
        scopes += [f"norm{l}" for l in range(1, spec.n_layers + 1) if nlmodel.has_affine_norm(spec, l)]
    return scopes


@dataclasses.dataclass
class Spectrum:
    """Curvature summary of one (scope, matrix). dense: exact eigendecomposition was used.
    lambda_max, trace, trace_stderr (0 when dense): loss units per squared parameter unit.
    top (k,) descending, vectors (k, n) flat block eigenvectors, negative_mass (see ``negative_mass``),
    nodes/weights (p, m) quadrature (dense: (1, n) eigenvalues with weights 1/n)."""

    n: int
    dense: bool
    lambda_max: float
    trace: float
    trace_stderr: float
    top: np.ndarray
    vectors: np.ndarray
    negative_mass: float
    nodes: np.ndarray
    weights: np.ndarray

    @property
    def eff_cond(self) -> float:
        return eff_cond(self.lambda_max, self.trace, self.n)


def dense_spectrum(vals, vecs, top_k: int = 5) -> Spectrum:
    """The exact ``Spectrum`` of a block from all its eigenpairs: vals (n,) ascending, vecs (n, n) as columns
    (``np.linalg.eigh``'s output)."""
    vals_np, n = np.asarray(vals), len(vals)
    k = min(top_k, n)
    vecs_np = np.asarray(vecs)[:, ::-1][:, :k].T.copy()
    return Spectrum(n, True, float(vals_np[-1]), float(vals_np.sum()), 0.0, vals_np[::-1][:k].copy(),
                    vecs_np, negative_mass(vals_np), vals_np[None, :], np.full((1, n), 1.0 / n, vals_np.dtype))


def output_layer_matrix(spec: nlmodel.ModelSpec, params, X, y) -> np.ndarray:
    """The output layer's curvature block, exactly and without products: n x n with n = (h + 1) C (h the
    last hidden width, C the outputs), in the block's flat order (W row-major, then b), float64 numpy.

    The logits Z = A W + b are linear in (W, b) and the loss is a mean of per-example losses of Z, so the
    block's Hessian and Gauss-Newton matrix are the same matrix, sum_i kron-like(a~_i a~_i^T, H_i):
    M[(a, c), (b, d)] = sum_i a~_ia a~_ib H_i[c, d] with a~_i = [A_i; 1] and H_i the loss's Hessian in
    example i's logits: (diag(p_i) - p_i p_i^T) / m for softmax cross-entropy, 2 I / (m C) for MSE. A is the
    last hidden layer's output on the analysis batch (BN in training mode), in float64.
    """
    p64 = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), params)
    A = layer_inputs.network_layer_inputs(spec, p64, np.asarray(X, np.float64))[-1]
    m = A.shape[0]
    out = p64[f"layer{spec.n_layers}"]
    At = np.concatenate([A, np.ones((m, 1))], axis=1)  # (m, a), a = h + 1
    W = np.concatenate([out["W"], out["b"][None, :]], axis=0)  # (a, C); the output layer has a bias
    a, C = W.shape
    if spec.loss != "softmax_cross_entropy":  # H_i = 2 I / (m C) for every example
        return np.kron(At.T @ At, np.eye(C)) * (2.0 / (m * C))
    Z = At @ W
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    # H_i = (diag(p_i) - p_i p_i^T) / m: the blocks c != d are -sum_i a~_i a~_i^T p_ic p_id / m, i.e. those of
    # -U^T U / m with U[i, (a, c)] = a~_ia p_ic; the diagonal blocks sum_i a~_i a~_i^T p_ic (1 - p_ic) / m, with
    # 1 - p_ic summed from the other classes' probabilities, so that a saturated example (p_ic = 1 to rounding)
    # adds exactly 0, as in exact arithmetic, instead of the difference of two large sums. Memory O(m n + n^2)
    # (building sum_i kron(a~_i a~_i^T, H_i) term by term took m n C).
    U = (At[:, :, None] * P[:, None, :]).reshape(m, a * C)
    M = -(U.T @ U)
    curv = P * (P @ (1.0 - np.eye(C)))  # (m, C): p_ic (1 - p_ic)
    idx = np.arange(C)
    M.reshape(a, C, a, C)[:, idx, :, idx] = np.matmul(At.T[None] * curv.T[:, None, :], At)  # (C, a, a)
    M /= m
    return 0.5 * (M + M.T)


def spectrum(op: CurvatureOperator, key: jax.Array, top_k: int = 5, dense_max_params: int = 1024,
             num_steps: int = 60, trace_probes: int = 64, slq_probes: int = 8,
             batch_size: int = 8) -> Spectrum:
    """Summarize one operator.

    Dense eigh when ``op.n <= dense_max_params``. Otherwise SLQ with ``slq_probes`` Rademacher probes of
    ``num_steps`` Lanczos steps each (top-k eigenpairs and lambda_max from the first probe's run) and
    a Hutchinson trace with ``trace_probes`` probes, deflated by the first probe's Lanczos basis (its
    trace exact, the probes estimate the rest: same products, a smaller standard error). All products go
    ``min(batch_size, slq_probes)`` vectors at a time, so the model's product is compiled once.
    """
    n = op.n
    b = max(1, min(batch_size, slq_probes))
    if n <= dense_max_params:
        return dense_spectrum(*dense_eigh(op, batch_size=b), top_k)
    q = slq(op, key, slq_probes, num_steps, batch_size=b, top_k=top_k)
    tr = hutchinson_trace(op, key, trace_probes, batch_size=b, basis=q.top.basis, basis_trace=q.top.basis_trace)
    top = np.asarray(q.top.values)
    return Spectrum(n, False, float(top[0]), float(tr.trace), float(tr.stderr),
                    top, np.asarray(q.top.vectors), negative_mass(q.nodes, q.weights),
                    np.asarray(q.nodes), np.asarray(q.weights))


@dataclasses.dataclass
class CurvatureResult:
    """Output of ``analyze_curvature``.

    rows: tidy dicts with keys scope, matrix, metric, value (``curvature.csv`` without run/checkpoint).
    densities: one dict per (scope, matrix) with scope, matrix, grid (g,), density (g,), sigma, nodes
    (p, m), weights (p, m). spectra: the full ``Spectrum`` per (scope, matrix), eigenvectors included.
    """

    rows: list[dict]
    densities: list[dict]
    spectra: dict[tuple[str, str], Spectrum]


def spectrum_rows(scope: str, matrix: str, s: Spectrum) -> list[dict]:
    """Tidy rows for one spectrum: lambda_max, trace, eff_cond, lambda_1..k, negative_mass (Hessian
    only), and the extras trace_stderr, n_params, dense (1 if exact eigh, 0 if Lanczos/Hutchinson/SLQ)."""
    vals = [("lambda_max", s.lambda_max), ("trace", s.trace), ("eff_cond", s.eff_cond)]
    vals += [(f"lambda_{i + 1}", float(v)) for i, v in enumerate(s.top)]
    if matrix == "hessian":
        vals.append(("negative_mass", s.negative_mass))
    vals += [("trace_stderr", s.trace_stderr), ("n_params", float(s.n)), ("dense", float(s.dense))]
    return [{"scope": scope, "matrix": matrix, "metric": m, "value": float(v)} for m, v in vals]


# ``analyze_curvature`` builds the output layer's block in closed form (``output_layer_matrix``) and takes its
# dense eigendecomposition when it has at most this many parameters (or at most ``dense_max_params``): exact, and
# no products to compile. Measured (float64, 512 examples): 650 parameters (digits, width 64) 0.01 s to build +
# 0.05 s eigh, where Lanczos + Hutchinson + SLQ took 0.03-0.04 s per matrix but compiled three programs (~1.2 s)
# per model shape; about 2,000 parameters 0.1-0.3 s + 0.8-1.0 s, more than the products' compilation once the
# block is measured at several checkpoints.
OUTPUT_DENSE_MAX_PARAMS = 1024


def output_block_in_closed_form(spec: nlmodel.ModelSpec, dense_max_params: int,
                                output_dense_max_params: int = OUTPUT_DENSE_MAX_PARAMS) -> bool:
    """Whether ``analyze_curvature`` takes the output layer's block from ``output_layer_matrix`` (dense, exact, no
    products): when it has at most ``max(dense_max_params, output_dense_max_params)`` parameters."""
    return nlmodel.layer_param_count(spec, spec.n_layers) <= max(dense_max_params, output_dense_max_params)

# ``analyze_curvature`` uses ``layer_operator`` for a checkpoint's layer blocks when their products, made
# with whole-model products, would cost at least this many floating-point operations (forward matmuls x
# products x matrices): below it the time saved is less than compiling the extra programs (2-5 s per model
# shape). Measured on the default study's models (512 examples, float32, 1 thread): digits depth 2 (2.7e9)
# would save 0.4 s per checkpoint, depth 4 (6e9-1e10) about 3 s, depth 8 (2-4e10) 6-7 s.
LAYER_OPERATOR_MIN_FLOPS = 4e9


def _layered_scopes(spec: nlmodel.ModelSpec, scopes: Sequence[str]) -> dict[str, int]:
    """{scope: l} for the scopes ``layer_operator`` can serve."""
    layers = {sc: int(sc[5:]) for sc in scopes if sc.startswith("layer") and sc[5:].isdigit()}
    return {sc: l for sc, l in layers.items() if layer_operator_applies(spec, l)}


def layer_products_pay(spec: nlmodel.ModelSpec, m: int, scopes: Sequence[str], n_matrices: int,
                       dense_max_params: int, num_steps: int, trace_probes: int, slq_probes: int,
                       output_dense_max_params: int = OUTPUT_DENSE_MAX_PARAMS) -> bool:
    """Whether ``analyze_curvature`` (same arguments; m examples) should use ``layer_operator``: the products
    its layer blocks need (n for a dense block, ``slq_probes * num_steps + trace_probes`` otherwise; none for
    an output block in closed form), at the cost of whole-model products (``model.matmul_flops``), reach
    ``LAYER_OPERATOR_MIN_FLOPS``."""
    products = 0
    for l in _layered_scopes(spec, scopes).values():
        n = nlmodel.layer_param_count(spec, l)
        if l == spec.n_layers and output_block_in_closed_form(spec, dense_max_params, output_dense_max_params):
            continue
        if n > dense_max_params:
            products += slq_probes * num_steps + trace_probes
        else:
            products += n
    return products * n_matrices * nlmodel.matmul_flops(spec, m) >= LAYER_OPERATOR_MIN_FLOPS


def analyze_curvature(spec: nlmodel.ModelSpec, params, X, y, *, key: jax.Array | None = None,
                      top_k: int = 5, dense_max_params: int = 1024, num_steps: int = 60,
                      trace_probes: int = 64, slq_probes: int = 8,
                      grid: np.ndarray | None = None, grid_size: int = 512, sigma_rel: float = 0.01,
                      sigma: float | None = None, scopes: Sequence[str] | None = None,
                      matrices: Sequence[str] = MATRICES, batch_size: int = 8,
                      layer_products: bool | None = None,
                      output_dense_max_params: int = OUTPUT_DENSE_MAX_PARAMS) -> CurvatureResult:
    """Curvature of a normlab model's analysis loss, for each scope and matrix.

    params: the model's parameters (their dtype is used throughout; X is cast to it). X (m, n_in),
    y (m,) labels or targets: the analysis batch (BN in training mode on it). scopes default to
    ``model_scopes(spec)``. Per (scope, matrix): dense eigh when the block has <= ``dense_max_params``
    parameters, else Lanczos + Hutchinson + SLQ (see ``spectrum``); the output layer's block is dense, from
    ``output_layer_matrix`` (its Hessian and Gauss-Newton blocks are one matrix, built without products),
    where ``output_block_in_closed_form``. ``negative_mass``
    is the exact fraction of |eigenvalue| mass on negative eigenvalues when dense, the SLQ estimate
    otherwise.
    Densities are on ``grid`` if given (then ``sigma`` is required, same units), else on
    ``default_grid(nodes, grid_size, sigma_rel, sigma)``. Rows include the analysis loss (scope
    ``model``, matrix ``none``, metric ``loss``). ``layer_products``: the blocks of layers 2..L go through
    ``layer_operator`` (products from the layer up; the same matrices) -- None decides by cost
    (``layer_products_pay``).
    """
    key = np.zeros(2, np.uint32) if key is None else key
    dtype = jnp.result_type(*jax.tree_util.tree_leaves(params))
    X = jnp.asarray(X, dtype)
    y = jnp.asarray(y) if spec.loss == "softmax_cross_entropy" else jnp.asarray(y, dtype)
    scopes = model_scopes(spec) if scopes is None else list(scopes)
    rows = [{"scope": "model", "matrix": "none", "metric": "loss",
             "value": float(_loss_value(SpecLoss(spec), params, X, y))}]
    densities, spectra = [], {}
    output_scope, output_block = f"layer{spec.n_layers}", None
    layered = _layered_scopes(spec, scopes)
    if layer_products is None:
        layer_products = layer_products_pay(spec, X.shape[0], scopes, len(matrices), dense_max_params, num_steps,
                                            trace_probes, slq_probes, output_dense_max_params)
    closed_form = output_block_in_closed_form(spec, dense_max_params, output_dense_max_params)
    for i, scope in enumerate(scopes):
        for j, matrix in enumerate(matrices):
            if scope == output_scope and closed_form:
                # exact, and no products: n per matrix for a dense block; slq_probes x num_steps + trace_probes
                # per matrix, and three programs to compile, for Lanczos + Hutchinson + SLQ
                if output_block is None:
                    output_block = dense_spectrum(*np.linalg.eigh(output_layer_matrix(spec, params, X, y)), top_k)
                s = output_block
            else:
                if layer_products and scope in layered:
                    op = layer_operator(spec, params, X, y, matrix, layered[scope])
                else:
                    op = model_operator(spec, params, X, y, matrix, scope)
                s = spectrum(op, _child_key(key, 100 * i + j), top_k, dense_max_params, num_steps,
                             trace_probes, slq_probes, batch_size)
            spectra[(scope, matrix)] = s
            rows += spectrum_rows(scope, matrix, s)
            if grid is None:
                g, sg = default_grid(s.nodes, grid_size, sigma_rel, sigma)
            else:
                if sigma is None:
                    raise ValueError("a fixed grid needs an explicit sigma")
                g, sg = np.asarray(grid), float(sigma)
            dens = gaussian_density(s.nodes, s.weights, g, sg)
            densities.append({"scope": scope, "matrix": matrix, "grid": np.asarray(g),
                              "density": dens, "sigma": sg, "nodes": s.nodes,
                              "weights": s.weights})
    return CurvatureResult(rows, densities, spectra)
