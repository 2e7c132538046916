"""Grids of a loss along two directions, and the colour scale the report draws them with.

A grid is ``J(center + alpha * d1 + beta * d2)`` on ``alphas x betas``; every grid here is evaluated
vectorized: ``vmap`` over a chunk of grid points, ``lax.map`` over the chunks, one compiled program.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from normlab.landscape.directions import cast_like, tree_dtype
from normlab.model import ModelSpec


def grid_axes(n_points: int, extent: float, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric grid coordinates: ``alphas = betas = linspace(-extent, extent, n_points)``, each
    (n_points,) numpy, in parameter units. An odd ``n_points`` puts a grid point exactly on the centre."""
    if n_points < 2:
        raise ValueError(f"n_points must be >= 2, got {n_points}")
    if not extent > 0:
        raise ValueError(f"extent must be > 0, got {extent}")
    axis = np.linspace(-extent, extent, n_points, dtype=np.dtype(dtype))
    return axis, axis


def map_grid(point_fn: Callable, alphas: jax.Array, betas: jax.Array, chunk_size: int) -> jax.Array:
    """Evaluate ``point_fn(a, b) -> scalar`` on the grid alphas x betas, ``chunk_size`` points at a time
    (vmap inside a chunk, ``lax.map`` over chunks, so memory is bounded by one chunk). Returns
    (len(alphas), len(betas)); entry [i, k] is at (alphas[i], betas[k]). Traceable: call it inside jit."""
    A, B = jnp.meshgrid(alphas, betas, indexing="ij")
    a, b = A.ravel(), B.ravel()
    n = a.shape[0]
    chunk = max(1, min(int(chunk_size), n))
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    a = jnp.pad(a, (0, pad)).reshape(n_chunks, chunk)
    b = jnp.pad(b, (0, pad)).reshape(n_chunks, chunk)
    vals = jax.lax.map(lambda ab: jax.vmap(point_fn)(ab[0], ab[1]), (a, b))
    return vals.reshape(-1)[:n].reshape(A.shape)


def shift(center, d1, d2, a, b):
    """The pytree ``center + a * d1 + b * d2`` (leaf by leaf)."""
    return jax.tree_util.tree_map(lambda c, x, y: c + a * x + b * y, center, d1, d2)


@functools.partial(jax.jit, static_argnames=("loss_fn", "chunk_size"))
def _evaluate_grid_jit(loss_fn, center, d1, d2, alphas, betas, args, chunk_size):
    return map_grid(lambda a, b: loss_fn(shift(center, d1, d2, a, b), *args), alphas, betas, chunk_size)


def evaluate_grid(loss_fn: Callable, center, d1, d2, alphas, betas, *, args: tuple = (),
                  chunk_size: int | None = None) -> jax.Array:
    """Loss on a 2-D grid, vectorized and jit-compiled: ``out[i, k] = loss_fn(center + alphas[i] d1 +
    betas[k] d2, *args)``.

    loss_fn(params, *args) -> scalar; pass the data (X, y) through ``args`` (traced arrays) and reuse
    the same function object across calls so the compiled program is reused. center, d1, d2: pytrees
    of the same structure. alphas (n_a,), betas (n_b,): coordinates in units of d1, d2.
    chunk_size: grid points evaluated together (bounds memory at chunk_size forward passes); default
    16 on CPU (cache-sized chunks are fastest there), 1024 on an accelerator.
    Returns (n_a, n_b) in the dtype of the loss.
    """
    if chunk_size is None:
        chunk_size = 16 if jax.default_backend() == "cpu" else 1024
    dtype = tree_dtype(center)
    d1 = cast_like(d1, center)
    d2 = cast_like(d2, center)
    return _evaluate_grid_jit(loss_fn, center, d1, d2, jnp.asarray(alphas, dtype), jnp.asarray(betas, dtype),
                              tuple(args), int(chunk_size))


def auto_chunk_size(spec: ModelSpec, m: int, n_grid: int, budget: int | None = None) -> int:
    """Grid points per chunk so that one chunk's widest activation (chunk x m x max width) stays within
    ``budget`` array entries. Default budget: 2^19 entries (4 MiB in float64) on CPU, where chunks that
    stay in cache are fastest (a few grid points of a width-64 MLP on 512 examples run faster than
    hundreds), and 2^25 on an accelerator, where large batches are fastest."""
    if budget is None:
        budget = 2**19 if jax.default_backend() == "cpu" else 2**25
    return max(1, min(n_grid, budget // max(1, m * max(spec.sizes))))


# Plotting helpers (no plotting here): the report's colour scale for contour panels.


def log_excess(loss, floor: float | None = None) -> np.ndarray:
    """log10(J - min J) of one panel, (n_a, n_b). Excesses below ``floor`` (the minimum itself, 0,
    included) are clamped to it; default: the smallest positive excess of the panel, but at least 1e-6 x
    its largest (so rounding-level differences on a flat panel do not stretch the colour scale).
    Non-finite entries stay NaN."""
    loss = np.asarray(loss, np.float64)
    finite = np.isfinite(loss)
    if not finite.any():
        return np.full(loss.shape, np.nan)
    ex = np.where(finite, loss - loss[finite].min(), np.nan)
    pos = ex[finite & (ex > 0)]
    if floor is None:
        floor = max(float(pos.min()), 1e-6 * float(pos.max())) if pos.size else 1.0
    with np.errstate(invalid="ignore"):
        return np.log10(np.where(finite, np.maximum(ex, floor), np.nan))


def shared_log_scale(losses: Sequence) -> tuple[float, float]:
    """One colour scale for a row of panels: (vmin, vmax) of ``log_excess`` over all panels' finite
    values (each panel minus its own minimum, so panels at different loss levels compare by shape)."""
    vals = [v[np.isfinite(v)] for v in (log_excess(x) for x in losses)]
    vals = [v for v in vals if v.size]
    if not vals:
        return 0.0, 1.0
    allv = np.concatenate(vals)
    return float(allv.min()), float(allv.max())
