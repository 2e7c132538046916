"""The curvature of a normlab MLP's loss: its losses as hashable functions, its operators (whole model and
per layer, ``model_operator``), the layer blocks' products from the layer up (``layer_operator``), and the
output layer's block in closed form (``output_layer_matrix``).

Scopes name blocks of ``model.init_params``'s pytree (``normlab.curvature.operators``): ``model`` (every
parameter), ``layer<l>`` (W and b of layer l), ``norm<l>`` (gamma and beta of hidden layer l).

The scale-invariant curvature S A S (``invariant_operator``), S = diag of the norms of the weight groups that
batch norm or layer norm make scale-invariant (``normlab.invariance``), is the curvature with every group
measured in units of its own norm: unchanged when a group is rescaled, where A itself scales as 1 / c^2.

The network's input goes through ``model.forward`` / ``model.forward_with_inputs`` everywhere (a model with
``spec.input_norm == "batchnorm"`` standardizes X with the batch's statistics before layer 1): the products
of the whole model run ``model.loss`` / ``model.forward`` on X, and the blocks computed from a layer up take
that layer's input from ``layer_inputs.network_layer_inputs`` (``model.forward_with_inputs``'s A[l-1]).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jax.tree_util import Partial

from normlab import invariance, layer_inputs
from normlab import model as nlmodel
from normlab.curvature.operators import (
    BlockSpec,
    CurvatureOperator,
    _Masked,
    ggn_operator,
    hessian_operator,
    scaled_operator,
)
from normlab.spec import ModelSpec, equal_hidden_widths, has_affine_norm, has_bias, layer_names

MATRICES = ("hessian", "ggn")


@dataclasses.dataclass(frozen=True)
class SpecLoss:
    """``J(params, X, y)`` of a normlab model (BN in training mode on X)."""

    spec: ModelSpec

    def __call__(self, params, X, y):
        return nlmodel.loss(self.spec, params, X, y)


@dataclasses.dataclass(frozen=True)
class SpecForward:
    """``f(params, X)``: the network outputs (m, n_outputs)."""

    spec: ModelSpec

    def __call__(self, params, X):
        return nlmodel.forward(self.spec, params, X)


@dataclasses.dataclass(frozen=True)
class SpecOuter:
    """``outer_loss(outputs, y)`` of a normlab model (softmax cross-entropy or MSE, a mean)."""

    spec: ModelSpec

    def __call__(self, out, y):
        return nlmodel.loss_from_outputs(self.spec, out, y)


@functools.partial(jax.jit, static_argnums=0)
def _loss_value(loss_fn, params, X, y):
    return loss_fn(params, X, y)


def model_scopes(spec: ModelSpec, include_norm: bool = False) -> list[str]:
    """``["model", "layer1", ..., "layerL"]`` (+ ``"norm<l>"`` for layers with gamma/beta)."""
    scopes = ["model"] + layer_names(spec)
    if include_norm:
        scopes += [f"norm{l}" for l in range(1, spec.n_layers + 1) if has_affine_norm(spec, l)]
    return scopes


def model_operator(spec: ModelSpec, params, X, y, matrix: str, block: BlockSpec = None) -> CurvatureOperator:
    """The Hessian (``matrix="hessian"``) or Gauss-Newton (``"ggn"``) operator of a normlab model's loss
    on the batch (X, y) over ``block`` (e.g. ``"model"``, ``"layer2"``, ``"norm1"``). Its products run the
    whole model, masked to the block."""
    if matrix == "hessian":
        return hessian_operator(SpecLoss(spec), params, block, (X, y))
    if matrix == "ggn":
        return ggn_operator(SpecForward(spec), SpecOuter(spec), params, block, (X,), (y,))
    raise ValueError(f"matrix must be one of {MATRICES}, got {matrix!r}")


@functools.partial(jax.jit, static_argnums=0)
def _flat_scale(spec: ModelSpec, params):
    return ravel_pytree(invariance.scale_tree(spec, params))[0]


def invariant_scale(spec: ModelSpec, params) -> np.ndarray:
    """The diagonal of S (N,) in the flat parameter order (``ravel_pytree(params)``, the operators' order):
    each entry of an invariant group holds the group's norm, every other entry 1 (``invariance.scale_tree``),
    numpy in params' dtype. One compiled program per model shape."""
    dtype = np.dtype(jnp.result_type(*jax.tree_util.tree_leaves(params)))
    return np.asarray(_flat_scale(spec, params), dtype)


def invariant_operator(spec: ModelSpec, params, op: CurvatureOperator) -> CurvatureOperator:
    """S A S over op's block, A the curvature operator ``op`` of the model (``model_operator`` or
    ``layer_operator`` at ``params``) and S = diag(``invariant_scale(spec, params)``). Its products run op's
    compiled product (``operators.scaled_operator``). Units: loss units (the group coordinates are
    measured in units of the group's norm; the coordinates outside every group keep theirs)."""
    return scaled_operator(op, invariant_scale(spec, params))


@dataclasses.dataclass(frozen=True)
class _LayerKernel:
    """(x0, args, outer_args, v) -> the product of one layer's (W, b) block of a normlab model, computed from
    that layer up: args = (A, params, start, l), outer_args = (y,).

    A (m, w_in): the layer's input A[l-1] on the batch, a constant of the block (the layers below do not
    depend on it); params: the parameter dict in the operator's dtype (None for the output layer, which has
    no layers above it); start: where the block (W row-major, then b: contiguous in ``ravel_pytree`` order)
    begins in x0 (N,); l: the layer. The block's Z[l] = ``model.affine`` of A, then ``model.outputs_from``
    runs the layers above it: nothing for the output layer (``output``: logits = A W + b), else from hidden
    layer l with l traced, so one program serves every hidden layer. Returns (N,), zero outside the block.
    """

    spec: ModelSpec
    matrix: str
    output: bool

    def __call__(self, x0, args, outer_args, v):
        A, params, start, l = args
        spec = self.spec
        n_in, n_out = A.shape[1], spec.sizes[-1] if self.output else spec.sizes[1]
        bias = self.output or has_bias(spec, 2)
        size = n_in * n_out + (n_out if bias else 0)
        theta, t = (jax.lax.dynamic_slice(x, (start,), (size,)) for x in (x0, v))

        def outputs(th):
            block = {"W": th[:n_in * n_out].reshape(n_in, n_out)}
            if bias:
                block["b"] = th[n_in * n_out:]
            z = nlmodel.affine(block, A)
            return nlmodel.outputs_from(spec, params, spec.n_layers if self.output else l, z)

        def outer(o):
            return nlmodel.loss_from_outputs(spec, o, *outer_args)

        if self.matrix == "hessian":
            r = jax.jvp(jax.grad(lambda th: outer(outputs(th))), (theta,), (t,))[1]
        else:  # J^T H_out J t by a jvp and a vjp: the whole model's linearize-and-transpose would also run,
            # in the transposed scan, the steps that the forward scan skips (the hidden layers up to l)
            out, jt = jax.jvp(outputs, (theta,), (t,))
            hjv = jax.jvp(jax.grad(outer), (out,), (jt,))[1]
            (r,) = jax.vjp(outputs, theta)[1](hjv)
        return jax.lax.dynamic_update_slice(jnp.zeros_like(x0), r, (start,))


def layer_operator_applies(spec: ModelSpec, l: int) -> bool:
    """Whether ``layer_operator`` can serve layer l: the output layer always; a hidden layer l >= 2 when the
    hidden layers share one width (layer 1 runs the whole network anyway: ``model_operator``)."""
    return l == spec.n_layers or (2 <= l < spec.n_layers and equal_hidden_widths(spec))


def layer_operator(spec: ModelSpec, params, X, y, matrix: str, l: int) -> CurvatureOperator:
    """The same operator as ``model_operator(..., matrix, f"layer{l}")`` (layer l's W and b block of the
    Hessian or Gauss-Newton matrix), with products that run only layers l..L.

    The layers below l are constants of the block, so their output A[l-1] is computed once (a float64
    forward, cast to params' dtype) and each product differentiates the loss of the layers from l up in the
    block alone: no gradients of the other layers' parameters, no pass through the layers below. So a
    product costs a fraction of the masked whole-model product, the less the higher the layer (the output
    layer's is a matmul and the outer loss). One compiled program per matrix serves every hidden layer (and
    one the output layer). Needs ``layer_operator_applies(spec, l)``.
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
    above = None if output else jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a, dtype)), params)
    mask, x0 = op.matvec.args[:2]
    args = (jnp.asarray(A), above, np.int32(start), np.int32(l))
    return dataclasses.replace(op, matvec=Partial(_Masked(_LayerKernel(spec, matrix, output)), mask, x0, args,
                                                  (jnp.asarray(y),)))


def output_layer_matrix(spec: ModelSpec, params, X, y) -> np.ndarray:
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
    # (summing kron(a~_i a~_i^T, H_i) example by example would take m n C).
    U = (At[:, :, None] * P[:, None, :]).reshape(m, a * C)
    M = -(U.T @ U)
    curv = P * (P @ (1.0 - np.eye(C)))  # (m, C): p_ic (1 - p_ic)
    idx = np.arange(C)
    M.reshape(a, C, a, C)[:, idx, :, idx] = np.matmul(At.T[None] * curv.T[:, None, :], At)  # (C, a, a)
    M /= m
    return 0.5 * (M + M.T)
