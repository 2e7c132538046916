"""Curvature operators of a scalar loss: parameter blocks, Hessian and Gauss-Newton products, and the one
compiled program that contains the model.

Generic: it takes a loss function and a parameter pytree, so it works on any JAX model; nothing here
imports normlab's model.

* A **block** is a subset of the parameter leaves. Leaves are named by their pytree path joined with
  dots (``layer1.W`` for ``{"layer1": {"W": ...}}``). ``block`` may be ``None`` or ``"model"`` (all
  leaves), ``"layer<l>"`` (``layer<l>.W`` and ``layer<l>.b``), ``"norm<l>"`` (``layer<l>.gamma`` and
  ``layer<l>.beta``), an iterable of leaf names, or a predicate ``name -> bool``. The curvature of a block
  is the sub-matrix of the full matrix over the block's coordinates, the other leaves held fixed.
* Internally a block is one **flat vector** of length n (the block's leaves in ``ravel_pytree`` order).
  ``CurvatureOperator.indices`` gives each flat coordinate's position in ``ravel_pytree(params)`` (N,), so
  block matrices are literally sub-blocks of the full matrix.
* dtype: products run in the dtype of the parameters given (float32 or float64).
* Compilation: a block is a 0/1 mask over the full flat parameter vector (N,), passed as data, and an
  operator is a ``jax.tree_util.Partial`` whose static part is its kernel (kind, loss function, tree
  structure). The only compiled program that contains the model is the batched product ``_matmat``; it is
  compiled once per (kernel, shapes, dtype, batch width) and reused for every block, estimator and new
  parameter value. Reuse needs the same loss *object* (or one equal by value): pass data through ``args``
  rather than closing over it. A kernel may also compute a block's products from fewer operations than
  the whole model's (``normlab.curvature.mlp.layer_operator``); the operator is the same.
* A **scaled** operator S A S (``scaled_operator``, S a diagonal in the flat coordinates, e.g. the norms of
  scale-invariant weight groups) runs A's compiled product between two elementwise scalings, so it compiles
  nothing that contains the model.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial

BlockSpec = None | str | Iterable[str] | Callable[[str], bool]

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
# are frozen dataclasses (hashable by value) so jit caches on them. They take the flat parameter vector
# x0 (N,), built on the host, rather than the leaves: flattening the leaves inside the compiled product
# would put a concatenate in the program that the forward-over-reverse differentiates through, which makes
# the Hessian product markedly slower.


def _unflatten(treedef, shapes: tuple[tuple[int, ...], ...], x):
    """Flat vector x (N,) in ``ravel_pytree`` order -> the pytree (static treedef and leaf shapes); works
    on a traced array inside a compiled product and on a numpy array on the host."""
    leaves, start = [], 0
    for shape in shapes:
        size = math.prod(shape)
        leaves.append(x[start:start + size].reshape(shape))
        start += size
    return jax.tree_util.tree_unflatten(treedef, leaves)


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


@jax.jit
def _matmat(matvec, V):
    """The one compiled program containing the model: V (b, N) -> (b, N), vmapped products."""
    return jax.vmap(matvec)(V)


@jax.jit
def _scale_rows(V, scale):
    """V (b, N) times the diagonal scale (N,), row by row."""
    return V * scale


def _products(matvec, scale, V):
    """A V for the rows of V (b, N), A the operator ``matvec`` or, with ``scale`` (N,), S A S with S =
    diag(scale): the scaling runs outside ``_matmat``, so a scaled operator shares the unscaled one's
    compiled product."""
    if scale is None:
        return _matmat(matvec, V)
    return _scale_rows(_matmat(matvec, _scale_rows(V, scale)), scale)


@dataclasses.dataclass(frozen=True)
class CurvatureOperator:
    """A symmetric n x n curvature matrix of one parameter block, available only through products.

    matvec: ``jax.tree_util.Partial``, (N,) -> (N,), the block's matrix embedded in the full flat
    parameter space (zero outside the block), jit-compatible. mask: (N,) 1 on the block, 0 elsewhere.
    x0: (n,) the block's parameters, flat (numpy). names: the block's leaf names. indices: (n,) int, position of
    each block coordinate in ``ravel_pytree(params)`` (N,). scale: None, or (N,) the diagonal of S in the
    model's flat coordinates: the operator is then S A S (``scaled_operator``; its products run A's compiled
    program between two elementwise scalings). Calling the operator works in block coordinates: v (n,) -> (n,).
    """

    matvec: Partial
    mask: jax.Array
    x0: np.ndarray
    names: tuple[str, ...]
    indices: np.ndarray
    treedef: Any
    leaf_shapes: tuple[tuple[int, ...], ...]
    scale: jax.Array | None = None

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
        return _products(self.matvec, self.scale, _embed(self.mask, self.indices, jnp.asarray(V)))[:, self.indices]

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
    # the flat vector and the mask are built on the host: as device operations they would be a dozen small
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


def scaled_operator(op: CurvatureOperator, scale) -> CurvatureOperator:
    """S A S over op's block, A = op's matrix and S = diag(scale), scale (N,) in the model's flat coordinates
    (``ravel_pytree(params)`` order; only its block entries matter). On an operator that is already scaled by
    S', the result is S S' A S' S. Its products run op's compiled product between two elementwise scalings
    (no new program containing the model). Units: A's times scale's squared."""
    scale = jnp.asarray(np.asarray(scale, op.dtype))
    if scale.shape != (op.N,):
        raise ValueError(f"scale must be ({op.N},), the model's flat coordinates, got {scale.shape}")
    return dataclasses.replace(op, scale=scale if op.scale is None else op.scale * scale)


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
# Where an algorithm runs: a CurvatureOperator's block, or a plain function on R^n.


class _Space(NamedTuple):
    """matvec on R^N, mask (N,) of the block (device and numpy), indices (n,) of the block, and the diagonal
    scale (N,) of a scaled operator (None: unscaled). ``products`` applies the operator to rows (b, N)."""

    matvec: Partial
    mask: jax.Array
    indices: np.ndarray
    mask_np: np.ndarray
    scale: jax.Array | None = None

    def products(self, V):
        """The operator applied to the rows of V (b, N): (b, N)."""
        return _products(self.matvec, self.scale, V)

    @property
    def n(self) -> int:
        return int(self.indices.shape[0])

    @property
    def dtype(self):
        return self.mask.dtype


def _space(matvec, n: int | None, dtype) -> _Space:
    """The space of a ``CurvatureOperator`` (``dtype``, if given, must be its own), or of a symmetric function
    (n,) -> (n,) (then N = n, every coordinate in the block; dtype defaults to float64 when JAX has it)."""
    if isinstance(matvec, CurvatureOperator):
        if dtype is not None and jnp.dtype(dtype) != matvec.dtype:
            raise ValueError(f"operator dtype is {matvec.dtype}, got dtype={dtype}")
        return _Space(matvec.matvec, matvec.mask, matvec.indices, np.asarray(matvec.mask), matvec.scale)
    if n is None:
        raise ValueError("n is required unless matvec is a CurvatureOperator")
    if dtype is None:
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
    mv = matvec if isinstance(matvec, Partial) else Partial(matvec)
    mask = np.ones(int(n), jnp.dtype(dtype))
    return _Space(mv, jnp.asarray(mask), np.arange(int(n)), mask)


def _pad_rows(n_rows: int, b: int) -> int:
    """n_rows rounded up to a multiple of the batch width b."""
    return n_rows + (-n_rows) % b
