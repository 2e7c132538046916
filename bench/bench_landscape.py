"""Benchmark of normlab.landscape grid evaluation.

Compares, on the same grid and model (default: 41 x 41 grid, MLP depth 4 width 64, 512 examples,
float64), for whole-model filter-normalized random directions:
* ``loop``: one compiled call per grid point (parameter shift and loss jitted together) from a Python
  loop (``evaluate_grid_loop`` here), the fastest way to write the loop;
* ``loop-eager``: the loop as usually written: shift the parameters with eager ``tree_map``, then call
  the jitted loss (timed on every 4th grid row, scaled to the whole grid);
* ``vectorized``: ``landscape.evaluate_grid`` (generic loss_fn; vmap over chunks of grid points, one
  program);
* ``model-aware``: ``landscape.model_grid`` (the first layer the directions touch is linear in its
  weights);
and for the lecture slice of layers 1, middle and L (two weights of one unit): ``vectorized`` vs
``model-aware`` vs ``lecture-fast`` (``landscape.lecture_grid``: A[l-1] once, only column j of Z[l]
moves).
Times are after compilation (one warm-up call), median of ``--repeats`` runs (loops: one run).
``speedup`` is against the row named in ``vs``. Goal: vectorized >= 3x faster than the loop.
Prints a table and writes it as CSV to ``--out``.

    python bench/bench_landscape.py [--grid 41] [--depth 4] [--width 64] [--examples 512] [--out ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from normlab import landscape as ls
from normlab import model
from normlab.landscape.grids import shift


def _time(fn, repeats: int, warm: bool = True):
    """(median seconds over ``repeats`` calls, result of the last call), after one warm-up call."""
    if warm:
        jax.block_until_ready(fn())  # compile
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), np.asarray(out)


def evaluate_grid_loop(loss_fn, center, d1, d2, alphas, betas, *, args: tuple = ()) -> np.ndarray:
    """``landscape.evaluate_grid`` as a loop: one compiled call per grid point (the parameter shift and the
    loss jitted together) from Python; numpy (n_a, n_b) in the dtype of center."""
    dtype = jax.tree_util.tree_leaves(center)[0].dtype
    d1, d2 = (jax.tree_util.tree_map(lambda x, r: jnp.asarray(x, r.dtype), d, center) for d in (d1, d2))
    point = jax.jit(lambda a, b, c, x, y, *rest: loss_fn(shift(c, x, y, a, b), *rest))
    alphas = np.asarray(alphas, dtype)
    betas = np.asarray(betas, dtype)
    out = np.empty((alphas.size, betas.size), dtype)
    for i, a in enumerate(alphas):
        for k, b in enumerate(betas):
            out[i, k] = float(point(a, b, center, d1, d2, *args))
    return out


def run(grid: int = 41, depth: int = 4, width: int = 64, examples: int = 512, features: int = 20,
        classes: int = 10, repeats: int = 2, loop_repeats: int = 1, chunk_size: int | None = None,
        dtype=jnp.float64, layers: tuple[int, ...] | None = None) -> list[dict]:
    """Time the grid evaluations; returns one row per (method, layer)."""
    spec = model.ModelSpec(sizes=(features,) + (width,) * depth + (classes,), activation="relu")
    params = model.init_params(spec, jax.random.PRNGKey(0), dtype)
    X = jax.random.normal(jax.random.PRNGKey(1), (examples, features), dtype)
    y = jax.random.randint(jax.random.PRNGKey(2), (examples,), 0, classes)
    alphas, betas = ls.grid_axes(grid, 1.0, dtype)
    chunk = chunk_size or ls.auto_chunk_size(spec, examples, grid * grid)

    def loss_fn(p, X, y):  # one function object for the whole run: each grid program compiles once
        return model.loss(spec, p, X, y)

    n = grid * grid
    common = {"grid": f"{grid}x{grid}", "depth": depth, "width": width, "examples": examples,
              "dtype": jnp.dtype(dtype).name, "chunk": chunk, "backend": jax.default_backend()}
    rows = []

    def add(method, slice_, layer, seconds, baseline, t_base, diff):
        rows.append({**common, "method": method, "slice": slice_, "layer": layer, "seconds": seconds,
                     "points_per_s": n / seconds, "speedup": t_base / seconds, "baseline": baseline,
                     "max_abs_diff": diff})

    # Whole-model filter-normalized random directions: every layer moves.
    d1, d2 = ls.random_directions(params, jax.random.PRNGKey(3))
    t_vec, g_vec = _time(lambda: ls.evaluate_grid(loss_fn, params, d1, d2, alphas, betas, args=(X, y),
                                                  chunk_size=chunk), repeats)
    t_mod, g_mod = _time(lambda: ls.model_grid(spec, params, X, y, d1, d2, alphas, betas, chunk_size=chunk),
                         repeats)
    # The loop jits its point function on each call (one compile, then one call per point): warm up on a
    # 1x1 grid, then time the full grid (its own compile is then a small part of the timed run).
    evaluate_grid_loop(loss_fn, params, d1, d2, alphas[:1], betas[:1], args=(X, y))
    t_loop, g_loop = _time(lambda: evaluate_grid_loop(loss_fn, params, d1, d2, alphas, betas,
                                                         args=(X, y)), loop_repeats, warm=False)
    # The loop as usually written: shift the parameters eagerly, call the jitted loss per point. Timed on
    # every 4th row of the grid and scaled to the whole grid (it is the slowest row of the table).
    rows_sub = slice(None, None, 4)
    _naive_loop(spec, params, d1, d2, X, y, alphas[:1], betas[:1])  # compile
    t_naive, g_naive = _time(lambda: _naive_loop(spec, params, d1, d2, X, y, alphas[rows_sub], betas),
                             loop_repeats, warm=False)
    t_naive *= n / g_naive.size
    add("loop-eager", "random", "model", t_naive, "loop", t_loop,
        float(np.max(np.abs(g_naive - g_loop[rows_sub]))))
    add("loop", "random", "model", t_loop, "loop", t_loop, 0.0)
    add("vectorized", "random", "model", t_vec, "loop", t_loop, float(np.max(np.abs(g_vec - g_loop))))
    add("model-aware", "random", "model", t_mod, "loop", t_loop, float(np.max(np.abs(g_mod - g_loop))))

    # Lecture slices: two weights of one unit of layer l.
    j, hi, lo = 0, 0, 1
    for l in layers or (1, (spec.n_layers + 1) // 2, spec.n_layers):
        e1, e2 = ls.lecture_directions(params, l, j, hi, lo)
        t_gen, g_gen = _time(lambda e1=e1, e2=e2: ls.evaluate_grid(loss_fn, params, e1, e2, alphas, betas,
                                                                   args=(X, y), chunk_size=chunk), repeats)
        t_mg, g_mg = _time(lambda e1=e1, e2=e2: ls.model_grid(spec, params, X, y, e1, e2, alphas, betas,
                                                              chunk_size=chunk), repeats)
        t_fast, g_fast = _time(lambda l=l: ls.lecture_grid(spec, params, X, y, l, j, hi, lo, alphas, betas,
                                                           chunk), repeats)
        add("vectorized", "lecture", f"layer{l}", t_gen, "vectorized", t_gen, 0.0)
        add("model-aware", "lecture", f"layer{l}", t_mg, "vectorized", t_gen,
            float(np.max(np.abs(g_mg - g_gen))))
        add("lecture-fast", "lecture", f"layer{l}", t_fast, "vectorized", t_gen,
            float(np.max(np.abs(g_fast - g_gen))))
    return rows


def _naive_loop(spec, params, d1, d2, X, y, alphas, betas) -> np.ndarray:
    loss = jax.jit(model.loss, static_argnums=0)
    out = np.empty((len(alphas), len(betas)))
    for i, a in enumerate(np.asarray(alphas)):
        for k, b in enumerate(np.asarray(betas)):
            p = jax.tree_util.tree_map(lambda c, x, z, a=a, b=b: c + a * x + b * z, params, d1, d2)
            out[i, k] = float(loss(spec, p, X, y))
    return out


COLUMNS = ["method", "slice", "layer", "grid", "depth", "width", "examples", "dtype", "chunk", "backend",
           "seconds", "points_per_s", "speedup", "baseline", "max_abs_diff"]


def format_table(rows: list[dict]) -> str:
    head = f"{'method':<13} {'slice':<8} {'layer':<7} {'seconds':>9} {'points/s':>10} {'speedup':>8}  " \
           f"{'vs':<10} {'max|diff|':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['method']:<13} {r['slice']:<8} {r['layer']:<7} {r['seconds']:>9.4f} "
                     f"{r['points_per_s']:>10.0f} {r['speedup']:>7.1f}x  {r['baseline']:<10} "
                     f"{r['max_abs_diff']:>9.1e}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--grid", type=int, default=41)
    ap.add_argument("--depth", type=int, default=4)
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--examples", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--float32", action="store_true", help="run in float32 instead of float64")
    ap.add_argument("--out", default="bench/results/landscape.csv")
    a = ap.parse_args(argv)
    rows = run(grid=a.grid, depth=a.depth, width=a.width, examples=a.examples, repeats=a.repeats,
               chunk_size=a.chunk_size, dtype=jnp.float32 if a.float32 else jnp.float64)
    r0 = rows[0]
    print(f"landscape grid evaluation: {r0['grid']} grid, MLP depth {r0['depth']} width {r0['width']}, "
          f"{r0['examples']} examples, {r0['dtype']}, chunk {r0['chunk']}, backend {r0['backend']}")
    print(format_table(rows))
    if a.out:
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=COLUMNS, lineterminator="\n")
            w.writeheader()
            for r in rows:
                w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        print(f"wrote {a.out}")
    return rows


if __name__ == "__main__":
    main()
