"""Direction pytrees shaped like the parameters: embedding, normalization, the lecture's two weights and
filter-normalized random directions.

A direction is a pytree with the structure of the parameters (``{"layer<l>": {"W", "b", ...}}``); the
functions here build them on the host as numpy arrays in the parameters' dtype, so no device program is
compiled per direction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normlab.curvature import host_rng
from normlab.model import Params


def tree_dtype(tree):
    """The dtype of a pytree's first leaf (every normlab parameter pytree has one dtype)."""
    return jax.tree_util.tree_leaves(tree)[0].dtype


def cast_like(tree, like):
    """``tree`` with every leaf a JAX array in the dtype of the matching leaf of ``like``."""
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


def random_directions(params: Params, key: jax.Array, layers: Sequence[str] | None = None,
                      count: int = 2) -> tuple[Params, ...]:
    """``count`` (default 2) independent filter-normalized Gaussian directions (Li et al. 2018),
    deterministic from ``key``.

    For every weight matrix W (n_in, n_out) a Gaussian matrix is drawn and each column ("filter": the
    incoming weights of one output unit) is rescaled to the norm of the same column of W. Bias, gamma
    and beta directions are zero (Li et al.'s ``ignore='biasbn'``): they are few, and their scales have
    no filter to normalize against. ``layers``: restrict to those layer names (zero elsewhere). The
    Gaussian entries are one (count, total W entries) draw of standard normals, row c for direction c,
    laid out layer by layer, so the direction of a layer does not depend on ``layers``. Numpy arrays in
    the params' dtype. The Gaussians come from ``curvature.host_rng(key)`` (numpy, on the host; key: a JAX
    PRNG key or any integer array), so no random-number kernel is compiled per shape.
    """
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
