"""Scale invariance of normalized layers: which weights the loss cannot see the scale of, their norms, and
the diagonal rescaling S that makes curvature comparable across weight scales.

A **group** is a set of parameters g such that, at eps = 0, J(..., c g, ...) = J(..., g, ...) for every c > 0:

* Batch norm (``spec.norm == "batchnorm"``), hidden layer l, unit j: the group is the unit's incoming
  weights w_j = W[l][:, j] (n_in,). Z[l][:, j] = A[l-1] w_j (BN hidden layers have no bias), so over the
  batch its mean and its standard deviation both scale with ||w_j|| and the standardized unit
  (z_j - mean) / std does not change. One group per unit: ``sizes[l]`` groups.
* Layer norm (``spec.norm == "layernorm"``), hidden layer l: the group is (W[l], b[l]) together. Z[l] =
  A[l-1] W + b is linear in (W, b), so per example its mean and standard deviation over the layer's units
  scale with (W, b) as a whole (scaling one unit's column alone changes the other units' share of the
  mean and variance). One group per layer.
* Nothing else: gamma, beta, the output layer, the hidden layers of a model without normalization, and
  input batch norm (``spec.input_norm``), which has no weights before it.

The normalization adds eps to the variance, so for eps > 0 the invariance holds to relative order
eps / var(z), not exactly. Consequences (eps = 0): the gradient is orthogonal to each group (g . dJ/dg =
0); the Gauss-Newton matrix maps a group's radial direction to zero, and so does the Hessian at a
stationary point (differentiating g . dJ/dg = 0 gives H g = -dJ/dg); and scaling a group by c scales its
gradient by 1/c and its curvature by 1 / c^2, so a step of learning rate lr moves it like a step of lr /
||g||^2 at unit norm (the effective learning rate). S = diag(``scale_tree``) undoes that: S H S and S G S
are unchanged when any group is rescaled.

Units: norms are in the units of the weights (the group's Euclidean norm); S is a pytree of those norms.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from normlab.spec import ModelSpec

INVARIANT_NORMS = ("batchnorm", "layernorm")


def invariant_layers(spec: ModelSpec) -> list[int]:
    """The layers l (1-based) that hold invariant groups: every hidden layer (1..L-1) under batch norm or
    layer norm, none otherwise (no normalization, or a model of depth 0)."""
    return list(range(1, spec.n_layers)) if spec.norm in INVARIANT_NORMS else []


def _group_norms(spec: ModelSpec, params, l: int) -> jax.Array:
    """Layer l's group norms (jax): (sizes[l],) per unit under BN, (1,) under LN."""
    p = params[f"layer{l}"]
    if spec.norm == "batchnorm":
        return jnp.sqrt(jnp.sum(jnp.square(p["W"]), axis=0))
    return jnp.sqrt(jnp.sum(jnp.square(p["W"])) + jnp.sum(jnp.square(p["b"])))[None]


def group_norms(spec: ModelSpec, params) -> dict[int, np.ndarray]:
    """{l: the Euclidean norm of each of layer l's invariant groups} for l in ``invariant_layers(spec)``:
    (sizes[l],) (column j is ||W[l][:, j]||) under batch norm, (1,) (sqrt(||W[l]||_F^2 + ||b[l]||^2)) under
    layer norm. float64 numpy; empty for a model without invariant groups."""
    return {l: np.asarray(_group_norms(spec, params, l), np.float64) for l in invariant_layers(spec)}


def scale_tree(spec: ModelSpec, params):
    """S as a pytree shaped like params: each entry of an invariant group holds that group's norm (BN:
    ||W[l][:, j]|| broadcast down column j of W[l]; LN: the layer's norm over all of W[l] and b[l]), every
    other entry 1. Pure JAX (works under jit and vmap), in params' dtype.

    For the flat parameter vector theta, S = diag(ravel(scale_tree)): S H S is the Hessian in the
    coordinates theta = S u, i.e. with every group measured in units of its own norm."""
    out = jax.tree_util.tree_map(jnp.ones_like, params)
    for l in invariant_layers(spec):
        name = f"layer{l}"
        p, norms = params[name], _group_norms(spec, params, l)
        layer = dict(out[name])
        layer["W"] = jnp.broadcast_to(norms[None, :] if spec.norm == "batchnorm" else norms[0], p["W"].shape)
        if spec.norm == "layernorm":
            layer["b"] = jnp.broadcast_to(norms[0], p["b"].shape)
        out[name] = {k: v.astype(p[k].dtype) for k, v in layer.items()}
    return out


def layer_weight_norm(spec: ModelSpec, params) -> jax.Array:
    """(L,): per layer, the root-mean-square over its invariant groups of the group norm (BN:
    sqrt(mean_j ||W[l][:, j]||^2) = ||W[l]||_F / sqrt(sizes[l]); LN: sqrt(||W[l]||_F^2 + ||b[l]||^2), its one
    group), and ||W[l]||_F for a layer without invariant groups (the output layer; every layer of a model
    without normalization). Pure JAX (jit- and vmap-able), in params' dtype; weight units."""
    inv = set(invariant_layers(spec))
    norms = []
    for l in range(1, spec.n_layers + 1):
        if l in inv:
            norms.append(jnp.sqrt(jnp.mean(jnp.square(_group_norms(spec, params, l)))))
        else:
            norms.append(jnp.sqrt(jnp.sum(jnp.square(params[f"layer{l}"]["W"]))))
    return jnp.stack(norms)


def radial_direction(spec: ModelSpec, params, l: int, j: int = 0):
    """The radial direction of group j of layer l, as a pytree shaped like params: the group's own entries
    (BN: column j of W[l]; LN: all of W[l] and b[l], j = 0), zero elsewhere. Moving along it rescales the
    group, so at eps = 0 the loss is constant along it: the gradient is orthogonal to it, the Gauss-Newton
    matrix maps it to 0, the Hessian to minus the gradient restricted to the group (0 at a stationary point).
    Weight units."""
    if l not in invariant_layers(spec):
        raise ValueError(f"layer {l} has no invariant group (invariant layers: {invariant_layers(spec)})")
    n_groups = spec.sizes[l] if spec.norm == "batchnorm" else 1
    if not 0 <= j < n_groups:
        raise ValueError(f"layer {l} has {n_groups} invariant group(s), not group {j}")
    out = jax.tree_util.tree_map(jnp.zeros_like, params)
    p, layer = params[f"layer{l}"], dict(out[f"layer{l}"])
    if spec.norm == "batchnorm":
        layer["W"] = layer["W"].at[:, j].set(p["W"][:, j])
    else:
        layer["W"], layer["b"] = jnp.asarray(p["W"]), jnp.asarray(p["b"])
    out[f"layer{l}"] = layer
    return out
