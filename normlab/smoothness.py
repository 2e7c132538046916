"""Smoothness of the loss along the gradient (Santurkar et al. 2018, "How does batch normalization help
optimization?"): at a checkpoint theta, how much the loss and its gradient change over steps along the
gradient of the lengths SGD takes.

For a checkpoint with learning rate lr, gradient g = grad J(theta) and step multipliers c_1..c_K (e.g. 0.5, 1,
2, 4), the points theta'_k = theta - c_k lr g are measured:

* ``loss``: J(theta'_k), in the loss's units;
* ``grad_change``: ||grad J(theta'_k) - g||, in loss units per parameter unit;
* ``beta``: grad_change / ||theta'_k - theta||, the effective beta-smoothness (loss units per squared
  parameter unit, the units of an eigenvalue of the Hessian: for a quadratic J = 1/2 theta^T A theta it is
  ||A g|| / ||g|| for every step);
* ``beta_invariant`` (given a scale tree S): ||S (g'_k - g)|| / ||S^-1 (theta'_k - theta)||, the same ratio
  in the coordinates u = S^-1 theta where every scale-invariant group of weights (``normlab.invariance``) is
  measured in units of its own norm (S held at its value at theta). Scaling a group by r scales its gradient
  by 1/r and its curvature by 1/r^2, so raw ``beta`` flatters a model whose invariant weights have grown;
  for a model whose parameters all lie in one group of norm r (S = r everywhere) beta_invariant = r^2 beta,
  unchanged when the group is rescaled together with the learning rate (r -> a r, lr -> a^2 lr).

``along_gradient`` is one compiled program for C checkpoints (parameters stacked on a leading axis) and K
multipliers: ``jax.vmap`` over both, no Python loop. J is the loss function given (for a normlab model
``model.loss``: BN, on the hidden layers and on the inputs, in training mode on the batch X). Everything
runs in the dtype of the parameters (X, the learning rates, the multipliers and S are cast to it).

``smoothness_rows`` is the analysis's entry: one variant's checkpoints, stacked, measured in one call, and
turned into the rows of ``smoothness.csv`` (``step_size, metric, value``; see ``rows_from_result``).

Non-finite values are results, not errors: a step that overflows the loss gives a NaN or inf loss (and
gradient change) in its row and counts in ``nonfinite_steps``. Norms are computed scaled by the largest
magnitude, so a gradient change whose squared entries would overflow still has a finite norm if the norm
itself is representable. Where the step is zero (g = 0, or a step below the rounding of theta: theta' ==
theta), beta and beta_invariant are NaN (0 / 0), never inf.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from normlab.curvature import SpecLoss
from normlab.spec import ModelSpec

STEP_METRICS = ("loss", "grad_change", "beta", "beta_invariant")  # one row per step size
AGGREGATE_METRICS = ("loss_range", "beta_max", "beta_invariant_max", "nonfinite_steps")  # step_size NaN
METRICS = STEP_METRICS + AGGREGATE_METRICS
INVARIANT_METRICS = ("beta_invariant", "beta_invariant_max")  # only with a scale tree


class Smoothness(NamedTuple):
    """The arrays of ``along_gradient`` for C checkpoints and K step multipliers, in the parameters' dtype.

    loss0 (C,): J(theta). grad_norm (C,): ||g||. loss (C, K): J(theta'_k). grad_change (C, K):
    ||g'_k - g||. step_norm (C, K): ||theta'_k - theta||, the step actually taken (theta'_k - theta after
    rounding, c_k lr ||g|| up to it). beta (C, K): grad_change / step_norm. beta_invariant (C, K):
    ||S (g'_k - g)|| / ||S^-1 (theta'_k - theta)||, None when no scale tree was given. Where the step is zero
    both ratios are 0 / 0 = NaN (theta' == theta, so g' == g).
    """

    loss0: jax.Array
    grad_norm: jax.Array
    loss: jax.Array
    grad_change: jax.Array
    step_norm: jax.Array
    beta: jax.Array
    beta_invariant: jax.Array | None


def tree_norm(tree) -> jax.Array:
    """The Euclidean norm of all entries of a pytree, a scalar in its dtype, computed as a * sqrt(sum((x /
    a)^2)) with a the largest magnitude, so squaring cannot overflow (or underflow) a representable norm.
    0 for an all-zero tree; inf or NaN if an entry is (NaN wins over inf)."""
    leaves = [jnp.ravel(x) for x in jax.tree.leaves(tree)]
    a = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x)) for x in leaves])
    ok = jnp.isfinite(a) & (a > 0)
    scale = jnp.where(ok, a, jnp.ones_like(a))
    total = sum(jnp.sum(jnp.square(x / scale)) for x in leaves)
    return jnp.where(ok, scale * jnp.sqrt(total), a)


@functools.partial(jax.jit, static_argnums=0)
def along_gradient(loss_fn: Callable, params, X, y, lr, multipliers, scales=None) -> Smoothness:
    """Loss and gradient change along the gradient for C checkpoints x K step sizes, one compiled program.

    loss_fn: ``J(params, X, y)`` -> scalar, hashable (a static argument: e.g. ``curvature.SpecLoss(spec)``).
    params: a pytree whose leaves have a leading axis C (the checkpoints of one model shape, stacked).
    X (m, n_features), y (m,) or (m, n_outputs): the batch J is evaluated on, shared by the checkpoints.
    lr (C,): each checkpoint's learning rate. multipliers (K,): the step multipliers c_k; the step is
    theta'_k = theta - c_k lr g. scales: optional pytree like params (leading axis C), S > 0 per entry
    (``invariance.scale_tree``: a group's norm on the group's entries, 1 elsewhere).

    Returns ``Smoothness`` with arrays (C,) and (C, K). The base gradient is computed once per checkpoint;
    vmap over the checkpoints (outer) and the multipliers (inner) gives C (K + 1) gradient evaluations in
    one program. X, lr, multipliers and S are cast to the dtype of params' first leaf.
    """
    dtype = jax.tree.leaves(params)[0].dtype
    X = jnp.asarray(X).astype(dtype)
    lr = jnp.asarray(lr).astype(dtype)
    multipliers = jnp.asarray(multipliers).astype(dtype)
    if scales is not None:
        scales = jax.tree.map(lambda s: jnp.asarray(s).astype(dtype), scales)
    value_and_grad = jax.value_and_grad(loss_fn)

    def one(p, lr_c, s):
        J0, g = value_and_grad(p, X, y)

        def step(c):
            t = c * lr_c
            p2 = jax.tree.map(lambda a, b: a - t * b, p, g)
            J1, g1 = value_and_grad(p2, X, y)
            dtheta = jax.tree.map(jnp.subtract, p2, p)
            dg = jax.tree.map(jnp.subtract, g1, g)
            change, length = tree_norm(dg), tree_norm(dtheta)
            invariant = None
            if s is not None:
                invariant = (tree_norm(jax.tree.map(jnp.multiply, s, dg))
                             / tree_norm(jax.tree.map(jnp.divide, dtheta, s)))
            # theta' == theta (g = 0, or a step below theta's rounding) gives g' == g: 0 / 0 = NaN
            return J1, change, length, change / length, invariant

        J1, change, length, beta, invariant = jax.vmap(step)(multipliers)
        return Smoothness(J0, tree_norm(g), J1, change, length, beta, invariant)

    return jax.vmap(one)(params, lr, scales)


def measure(spec: ModelSpec, params, X, y, lr, multipliers, scales=None) -> Smoothness:
    """``along_gradient`` of a normlab model's loss ``model.loss(spec, ...)`` (BN in training mode on X), for
    stacked parameters (leading axis C). Compiled once per spec, shapes and dtype (``spec.input`` aside)."""
    return along_gradient(SpecLoss(spec), params, X, y, lr, multipliers, scales)


def _finite_max(values: np.ndarray) -> float:
    """The largest finite value, NaN if there is none."""
    finite = values[np.isfinite(values)]
    return float(finite.max()) if finite.size else float("nan")


def rows_from_result(result: Smoothness, multipliers: Sequence[float]) -> list[dict]:
    """The rows of ``smoothness.csv`` for every checkpoint of ``result`` (C checkpoints, K multipliers).

    Each row is ``{"index": i, "step_size": c, "metric": name, "value": float}``: i the checkpoint's index
    in the stack (0..C-1); per step size c_k (the multiplier of lr g, as given) the metrics ``loss``,
    ``grad_change``, ``beta`` and, with a scale tree, ``beta_invariant``; then with step_size NaN:
    ``loss_range`` (max - min of J over theta and the K step points, finite values only; NaN if none is
    finite), ``beta_max`` and, with a scale tree, ``beta_invariant_max`` (the largest finite value over the
    step sizes; NaN if none), ``nonfinite_steps`` (how many of the K step sizes have a loss or a gradient
    change that is not finite, as a float). Values are in float64; non-finite values are kept as they are.
    """
    arrays = {k: (None if v is None else np.asarray(v, np.float64)) for k, v in result._asdict().items()}
    multipliers = [float(c) for c in np.asarray(multipliers, np.float64)]
    invariant = arrays["beta_invariant"] is not None
    step_metrics = [m for m in STEP_METRICS if invariant or m not in INVARIANT_METRICS]
    rows = []
    for i in range(arrays["loss0"].shape[0]):
        for k, c in enumerate(multipliers):
            rows += [{"index": i, "step_size": c, "metric": m, "value": float(arrays[m][i, k])} for m in step_metrics]
        nan = float("nan")
        losses = np.concatenate([arrays["loss0"][i:i + 1], arrays["loss"][i]])
        finite = losses[np.isfinite(losses)]
        aggregates = {"loss_range": float(finite.max() - finite.min()) if finite.size else nan,
                      "beta_max": _finite_max(arrays["beta"][i])}
        if invariant:
            aggregates["beta_invariant_max"] = _finite_max(arrays["beta_invariant"][i])
        bad = ~np.isfinite(arrays["loss"][i]) | ~np.isfinite(arrays["grad_change"][i])
        aggregates["nonfinite_steps"] = float(np.count_nonzero(bad))
        rows += [{"index": i, "step_size": nan, "metric": m, "value": v} for m, v in aggregates.items()]
    return rows


def stack(trees: Sequence):
    """Pytrees of one structure and shapes stacked on a new leading axis (numpy, on the host)."""
    return jax.tree.map(lambda *leaves: np.stack([np.asarray(a) for a in leaves]), *trees)


def smoothness_rows(spec: ModelSpec, params_list: Sequence, X, y, lrs: Sequence[float],
                    multipliers: Sequence[float], scales=None) -> list[list[dict]]:
    """``smoothness.csv`` rows of each of one variant's checkpoints, measured in one compiled call.

    params_list: C parameter pytrees of ``spec`` (same shapes and dtype: the computation runs in that
    dtype; cast them first to choose it). X (m, n_features), y: the analysis batch. lrs (C,): each
    checkpoint's run's learning rate. multipliers (K,): step multipliers c (the config's
    ``analysis.smoothness.step_multipliers``). scales: None (no ``beta_invariant`` rows; the model has no
    invariant groups) or C scale trees (``invariance.scale_tree(spec, params)`` of each checkpoint).

    Returns one list per checkpoint, in params_list's order, of rows ``{"step_size", "metric", "value"}``
    (``rows_from_result`` without ``index``); [] for no checkpoint.
    """
    if not len(params_list):
        return []
    if len(lrs) != len(params_list) or (scales is not None and len(scales) != len(params_list)):
        raise ValueError(f"{len(params_list)} checkpoints but {len(lrs)} learning rates"
                         + ("" if scales is None else f" and {len(scales)} scale trees"))
    dtype = np.dtype(jax.tree.leaves(params_list[0])[0].dtype)
    result = measure(spec, stack(params_list), np.asarray(X, dtype), np.asarray(y), np.asarray(lrs, dtype),
                     np.asarray(multipliers, dtype), None if scales is None else stack(scales))
    out: list[list[dict]] = [[] for _ in params_list]
    for row in rows_from_result(result, multipliers):
        out[row.pop("index")].append(row)
    return out
