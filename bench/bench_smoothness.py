"""Benchmark of normlab.smoothness: the loss and gradient change along the gradient at C checkpoints x K step
sizes measured (a) in one vmapped call (``smoothness.along_gradient``), (b) as a Python loop over the step
sizes (K calls, each with the C checkpoints stacked and one multiplier) and (c) as a Python loop over
checkpoints and step sizes (C K calls of one checkpoint and one multiplier).

Default set-up (one variant's analysed checkpoints in the default study): MLP depth 4, width 64, 64 input
features, 10 classes, softmax cross-entropy, a batch of 512 random rows, C = 12 checkpoints (random weights),
learning rates log-spaced from 1e-3 to 1, K = 4 multipliers (0.5, 1, 2, 4), float32, with batch norm (and
the scale tree S, so beta_invariant too) and without normalization.

What each time includes (printed with the table):
* vmapped-cold: the first along_gradient call of the process for that model: tracing, XLA compilation and
  execution (what the analyze job pays once per variant; no persistent compilation cache).
* vmapped: the same call again, execution only (median over repeats).
* rows: ``smoothness.smoothness_rows`` warm: stacking C parameter pytrees, the call, and the rows.
* loop-steps, loop-all: the loops above, each call compiled before timing (one warm-up call), median over
  repeats of the whole loop. Each call computes its checkpoints' base gradient again, as a loop must.
All compute the same numbers; the table reports the largest relative difference of beta from vmapped.

Run ``python bench/bench_smoothness.py [--out PATH] [--checkpoints 12] [--depth 4] [--threads 1] ...``; the
table is printed and written as CSV (default bench/results/smoothness.csv). ``main(argv)`` does the same when
imported (bench/run_all.py). One JAX CPU thread by default, as each analyze job of the pipeline.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

import normlab  # noqa: F401  (float64 support before JAX starts)

DEFAULT_OUT = os.path.join("bench", "results", "smoothness.csv")
COLUMNS = ("norm", "method", "checkpoints", "steps", "calls", "wall_s", "ratio_to_vmapped", "max_rel_diff_beta",
           "includes", "platform", "cpu_count", "threads")
INCLUDES = {
    "vmapped-cold": "trace + compile + run",
    "vmapped": "run",
    "rows": "stack + run + rows",
    "loop-steps": "K runs (C stacked each)",
    "loop-all": "C*K runs",
}


def set_threads(threads: int) -> str:
    """Limit JAX to ``threads`` CPU threads as the pipeline's jobs do (``runtime.limit_threads`` and
    ``runtime.start_jax``), if its backend is not started yet; 0 keeps XLA's default. Returns the setting."""
    if threads <= 0:
        return "default"
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        print("note: JAX was already started in this process; its thread settings stay", file=sys.stderr)
        return "unchanged"
    from normlab.runtime import limit_threads, start_jax

    limit_threads(threads)
    start_jax(threads)
    return str(threads)


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall seconds of ``fn()`` (its result blocked on) over ``repeats`` calls after one warm-up."""
    import jax

    jax.block_until_ready(fn())
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def problem(norm: str, args):
    """(spec, stacked params, X, y, lrs, multipliers, stacked scales or None, params list, scales list)."""
    import jax

    from normlab import invariance, smoothness
    from normlab import model as M

    spec = M.ModelSpec((args.features, *[args.width] * args.depth, args.classes), norm=norm)
    dtype = np.dtype(args.dtype)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, args.features)).astype(dtype)
    y = rng.integers(0, args.classes, args.rows)
    params_list = [jax.tree.map(np.asarray, M.init_params(spec, jax.random.PRNGKey(i), dtype))
                   for i in range(args.checkpoints)]
    scales_list = None
    if invariance.invariant_layers(spec):
        scales_list = [jax.tree.map(np.asarray, invariance.scale_tree(spec, p)) for p in params_list]
    lrs = np.geomspace(1e-3, 1.0, args.checkpoints).astype(dtype)
    multipliers = np.asarray(args.multipliers, dtype)
    stacked_scales = None if scales_list is None else smoothness.stack(scales_list)
    return (spec, smoothness.stack(params_list), X, y, lrs, multipliers, stacked_scales, params_list,
            scales_list)


def bench_norm(norm: str, args, threads: str) -> list[dict]:
    import jax

    from normlab import smoothness

    spec, params, X, y, lrs, mult, scales, params_list, scales_list = problem(norm, args)
    C, K = len(lrs), len(mult)
    measure = lambda p, lr, m, s: smoothness.measure(spec, p, X, y, lr, m, s)  # noqa: E731
    common = {"norm": norm, "checkpoints": C, "steps": K, "platform": jax.default_backend(),
              "cpu_count": os.cpu_count(), "threads": threads}

    start = time.perf_counter()
    ref = jax.block_until_ready(measure(params, lrs, mult, scales))
    cold = time.perf_counter() - start
    warm = median_time(lambda: measure(params, lrs, mult, scales), args.repeats)
    rows_t = median_time(lambda: smoothness.smoothness_rows(spec, params_list, X, y, lrs, mult, scales_list),
                         args.repeats)

    def loop_steps():
        return [measure(params, lrs, mult[k:k + 1], scales) for k in range(K)]

    def take(tree, i):
        return None if tree is None else jax.tree.map(lambda a: a[i:i + 1], tree)

    singles = [(take(params, i), lrs[i:i + 1], take(scales, i)) for i in range(C)]

    def loop_all():
        return [[measure(p, lr, mult[k:k + 1], s) for k in range(K)] for p, lr, s in singles]

    t_steps = median_time(loop_steps, args.repeats)
    t_all = median_time(loop_all, args.repeats)
    beta_steps = np.concatenate([np.asarray(r.beta) for r in loop_steps()], axis=1)
    beta_all = np.array([[float(r.beta[0, 0]) for r in row] for row in loop_all()])
    ref_beta = np.asarray(ref.beta, np.float64)

    def rel(b):
        return float(np.max(np.abs(b - ref_beta) / np.abs(ref_beta)))

    out = []
    for method, wall, calls, diff in (("vmapped-cold", cold, 1, 0.0), ("vmapped", warm, 1, 0.0),
                                      ("rows", rows_t, 1, 0.0), ("loop-steps", t_steps, K, rel(beta_steps)),
                                      ("loop-all", t_all, C * K, rel(beta_all))):
        out.append({**common, "method": method, "calls": calls, "wall_s": wall, "ratio_to_vmapped": wall / warm,
                    "max_rel_diff_beta": diff, "includes": INCLUDES[method]})
    return out


def format_table(rows: list[dict]) -> str:
    head = (f"{'norm':<10} {'method':<13} {'C':>3} {'K':>2} {'calls':>5} {'wall_s':>9} {'x vmapped':>9} "
            f"{'beta rel diff':>13}  includes")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['norm']:<10} {r['method']:<13} {r['checkpoints']:>3} {r['steps']:>2} {r['calls']:>5} "
                     f"{r['wall_s']:>9.4f} {r['ratio_to_vmapped']:>9.1f} {r['max_rel_diff_beta']:>13.1e}  "
                     f"{r['includes']}")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="CSV path (default %(default)s)")
    p.add_argument("--norms", nargs="+", default=["batchnorm", "none"], choices=("none", "batchnorm", "layernorm"))
    p.add_argument("--checkpoints", type=int, default=12, help="C, checkpoints stacked in one call")
    p.add_argument("--multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0, 4.0])
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--features", type=int, default=64)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--rows", type=int, default=512, help="rows of the analysis batch")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="JAX CPU threads (default 1, as each analyze job; 0: all)")
    args = p.parse_args(argv)
    threads = set_threads(args.threads)
    import jax

    print(f"smoothness benchmark: depth {args.depth} width {args.width}, {args.features} features, {args.classes} "
          f"classes, {args.rows} rows, C = {args.checkpoints} checkpoints x K = {len(args.multipliers)} steps, "
          f"{args.dtype}; backend {jax.default_backend()}, {os.cpu_count()} CPUs, JAX threads {threads}, "
          f"load average {os.getloadavg()[0]:.1f}, {platform.processor() or platform.machine()}", flush=True)
    rows = []
    for norm in args.norms:
        rows += bench_norm(norm, args, threads)
        print(f"done {norm}", file=sys.stderr, flush=True)
    print(format_table(rows))
    for norm in args.norms:
        by = {r["method"]: r["wall_s"] for r in rows if r["norm"] == norm}
        print(f"{norm}: loop over step sizes / vmapped = {by['loop-steps'] / by['vmapped']:.1f}x; loop over "
              f"checkpoints and step sizes / vmapped = {by['loop-all'] / by['vmapped']:.1f}x; one cold call "
              f"{by['vmapped-cold']:.2f} s (compile share {by['vmapped-cold'] / by['vmapped']:.0f}x the run)")
    write_csv(rows, args.out)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
