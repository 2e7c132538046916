"""Benchmark of normlab.curvature: cost of a Hessian-vector product relative to a gradient, and of a
Lanczos top-1 eigenvalue, on the default models (MLP depth 2, 4, 8, width 64, 64 input features,
10 classes, a batch of 512 random inputs, with and without batch norm).

Goal: HVP time / gradient time <= 3 (forward-over-reverse costs about 2-3 gradients in theory). A second
table compares the layer blocks' products: whole-model products masked to a block vs
``curvature.layer_operator``'s products from the layer up (written beside the CSV as ``<name>_layers.csv``).
Times are medians over repeats, measured after compilation, each call ended by block_until_ready.
Run ``python bench/bench_curvature.py [--out PATH] [--dtype float32|float64] [--repeats R] [--threads T]``
(one JAX thread by default, as the pipeline's analyze jobs); the
table is printed and written as CSV (default bench/results/curvature.csv). ``main(argv)`` does the
same when imported.

``normlab_top_eig_and_trace`` is the reusable entry point for comparisons with peer tools (e.g.
PyHessian): numpy weights in, top Hessian eigenvalue and Hutchinson trace out.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from normlab import curvature as C
from normlab import model as M
from normlab.curvature.operators import _embed, _matmat

DEPTHS = (2, 4, 8)
NORMS = ("none", "batchnorm")
WIDTH, N_FEATURES, N_CLASSES, BATCH = 64, 64, 10, 512
DEFAULT_OUT = os.path.join("bench", "results", "curvature.csv")
COLUMNS = ("model", "depth", "norm", "n_params", "dtype", "grad_ms", "hvp_ms", "hvp_over_grad",
           "hvp_batch8_ms_per_vec", "hvp_batch8_over_grad", "lanczos_top1_s", "lanczos_steps", "lambda_max",
           "platform")


def default_spec(depth: int, norm: str) -> M.ModelSpec:
    """The benchmark model: ``depth`` hidden ReLU layers of width 64, 64 inputs, 10 classes."""
    return M.ModelSpec((N_FEATURES,) + (WIDTH,) * depth + (N_CLASSES,), activation="relu", norm=norm)


def random_batch(seed: int = 0, dtype=np.float32) -> tuple[np.ndarray, np.ndarray]:
    """X (512, 64) standard normal inputs and y (512,) uniform labels in 0..9."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((BATCH, N_FEATURES)).astype(dtype), rng.integers(0, N_CLASSES, BATCH)


def set_threads(threads: int, note: str = "") -> str:
    """Limit JAX to ``threads`` CPU threads, as the pipeline's jobs are (``runtime.limit_threads`` and
    ``runtime.start_jax``), if its backend is not started yet (it cannot change after); 0 keeps XLA's default
    (every core). Returns what normlab runs with, for the CSV."""
    if threads <= 0:
        return "default"
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        print(f"note: JAX was already started in this process; normlab keeps its thread settings "
              f"(XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}){'; ' + note if note else ''}", file=sys.stderr)
        return "1" if "intra_op_parallelism_threads=1" in os.environ.get("XLA_FLAGS", "") else "default"
    from normlab.runtime import limit_threads, start_jax

    limit_threads(threads)
    start_jax(threads)  # XLA_FLAGS alone does not keep XLA's CPU backend to one core
    return str(threads)


def median_times(fns: Sequence[Callable[[], object]], repeats: int) -> list[float]:
    """Median wall time in seconds of each ``fn()`` (its result blocked on) over ``repeats`` calls,
    after one untimed warm-up call each (compilation). The functions are called in turn within each
    repeat, so a ratio of two medians sees the same machine conditions (other load, clock)."""
    for fn in fns:
        jax.block_until_ready(fn())
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            jax.block_until_ready(fn())
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def normlab_top_eig_and_trace(spec: M.ModelSpec, weights: Mapping[str, np.ndarray], X: np.ndarray,
                              y: np.ndarray, *, dtype=np.float64, seed: int = 0, num_steps: int = 40,
                              trace_probes: int = 64, batch_size: int = 8, tol: float | None = None,
                              deflate: bool = False, trace_rtol: float | None = None, op=None) -> dict[str, float]:
    """Top Hessian eigenvalue (Lanczos, ``num_steps`` steps; with ``tol`` a cap, see
    ``curvature.top_eigenpairs``) and Hutchinson trace (``trace_probes`` Rademacher probes; ``deflate``: by
    the Lanczos basis; ``trace_rtol``: the probes a cap, see ``curvature.hutchinson_trace``) of a normlab
    model's loss on (X, y), from checkpoint-style numpy weights ``{"layer1.W": ..., ...}`` (as in the .npz
    checkpoints), in ``dtype``. ``op``: a function building the operator instead (same arguments).

    BN runs in training mode on the batch (X, y) (what the optimizer sees); peer tools that put BN
    in eval mode (e.g. PyHessian with model.eval()) measure a different function. Returns
    top_eigenvalue, top_residual, eig_steps, trace, trace_stderr, trace_probes (loss units per squared
    parameter unit) and seconds (wall time including compilation).
    """
    t0 = time.perf_counter()
    if op is None:
        params = M.unflatten_params({k: np.asarray(v, dtype) for k, v in weights.items()})
        operator = C.model_operator(spec, params, jnp.asarray(X, dtype), jnp.asarray(y), "hessian")
    else:
        operator = op(spec, weights, X, y, dtype)
    key = jax.random.PRNGKey(seed)
    eig = C.top_eigenpairs(operator, 1, key, num_steps=num_steps, tol=tol)
    basis = {"basis": eig.basis, "basis_trace": eig.basis_trace} if deflate else {}
    tr = C.hutchinson_trace(operator, key, trace_probes, batch_size=batch_size, rtol=trace_rtol, **basis)
    return {"top_eigenvalue": float(eig.values[0]), "top_residual": float(eig.residuals[0]),
            "eig_steps": len(eig.basis), "trace": tr.trace, "trace_stderr": tr.stderr,
            "trace_probes": len(tr.samples), "seconds": time.perf_counter() - t0}


def bench_model(depth: int, norm: str, dtype, repeats: int) -> dict[str, object]:
    """One row of the table for the default model of this depth and norm."""
    spec = default_spec(depth, norm)
    params = M.init_params(spec, jax.random.PRNGKey(depth), jnp.dtype(dtype))
    Xn, yn = random_batch(depth, dtype)
    X, y = jnp.asarray(Xn), jnp.asarray(yn)
    loss = C.SpecLoss(spec)
    flat, unravel = ravel_pytree(params)
    grad = jax.jit(jax.grad(lambda x, X, y: loss(unravel(x), X, y)))
    op = C.model_operator(spec, params, X, y, "hessian")
    rng = np.random.default_rng(0)
    v1 = jnp.asarray(rng.standard_normal((1, op.N)), op.dtype)
    v8 = jnp.asarray(rng.standard_normal((8, op.N)), op.dtype)
    # the product Lanczos, Hutchinson and SLQ use: one vector, and 8 vectors vmapped (per vector)
    t_grad, t_hvp, t_hvp8 = median_times([lambda: grad(flat, X, y), lambda: _matmat(op.matvec, v1),
                                          lambda: _matmat(op.matvec, v8)], repeats)
    t_hvp8 /= 8
    key = jax.random.PRNGKey(1)
    steps = C.default_lanczos_steps(1, op.n)
    eig = C.top_eigenpairs(op, 1, key)  # compiles the Lanczos steps
    t0 = time.perf_counter()
    eig = C.top_eigenpairs(op, 1, key)
    jax.block_until_ready(eig.values)
    t_lanczos = time.perf_counter() - t0
    return {"model": f"mlp-d{depth}-{norm}", "depth": depth, "norm": norm, "n_params": op.n,
            "dtype": jnp.dtype(dtype).name, "grad_ms": 1e3 * t_grad, "hvp_ms": 1e3 * t_hvp,
            "hvp_over_grad": t_hvp / t_grad, "hvp_batch8_ms_per_vec": 1e3 * t_hvp8,
            "hvp_batch8_over_grad": t_hvp8 / t_grad, "lanczos_top1_s": t_lanczos, "lanczos_steps": steps,
            "lambda_max": float(eig.values[0]), "platform": jax.devices()[0].platform}


LAYER_COLUMNS = ("model", "depth", "norm", "matrix", "layers", "vectors", "masked_ms", "from_layer_ms",
                 "masked_over_from_layer", "max_rel_diff", "platform")


def bench_layer_blocks(depth: int, norm: str, dtype, repeats: int, vectors: int = 2) -> list[dict[str, object]]:
    """Rows (one per matrix) comparing the layer blocks' products of layers 2..L+1 (every block
    ``curvature.layer_operator`` serves), ``vectors`` vectors per call as in the default analysis: the
    whole-model product masked to the block (``model_operator``) vs the product from the layer up
    (``layer_operator``). Times are the sum over the layers of each block's median; max_rel_diff compares
    the two products' results (float rounding only)."""
    spec = default_spec(depth, norm)
    params = M.init_params(spec, jax.random.PRNGKey(depth), jnp.dtype(dtype))
    Xn, yn = random_batch(depth, dtype)
    rng = np.random.default_rng(1)
    rows = []
    for matrix in C.MATRICES:
        fns, diff = [], 0.0
        for l in range(2, spec.n_layers + 1):
            masked = C.model_operator(spec, params, jnp.asarray(Xn), jnp.asarray(yn), matrix, f"layer{l}")
            layer = C.layer_operator(spec, params, Xn, yn, matrix, l)
            V = _embed(masked.mask, masked.indices, jnp.asarray(rng.standard_normal((vectors, masked.n)), dtype))
            a, b = (np.asarray(_matmat(op.matvec, V)) for op in (masked, layer))
            diff = max(diff, float(np.abs(a - b).max() / np.abs(a).max()))
            fns += [lambda op=masked, V=V: _matmat(op.matvec, V), lambda op=layer, V=V: _matmat(op.matvec, V)]
        times = median_times(fns, repeats)
        t_masked, t_layer = sum(times[0::2]), sum(times[1::2])
        rows.append({"model": f"mlp-d{depth}-{norm}", "depth": depth, "norm": norm, "matrix": matrix,
                     "layers": f"2-{spec.n_layers}", "vectors": vectors, "masked_ms": 1e3 * t_masked,
                     "from_layer_ms": 1e3 * t_layer, "masked_over_from_layer": t_masked / t_layer,
                     "max_rel_diff": diff, "platform": jax.devices()[0].platform})
    return rows


def format_table(rows: Sequence[Mapping[str, object]], columns: Sequence[str] = COLUMNS) -> str:
    """Fixed-width text table of the benchmark rows."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def write_csv(rows: Sequence[Mapping[str, object]], path: str, columns: Sequence[str] = COLUMNS,
              float_format: str = ".6g") -> None:
    """Benchmark rows as CSV (the given columns, floats with ``float_format``); bench_pyhessian reuses it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(columns), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (format(r[k], float_format) if isinstance(r[k], float) else r[k]) for k in columns})


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="CSV path (default %(default)s)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per measurement")
    parser.add_argument("--depths", type=int, nargs="+", default=list(DEPTHS))
    parser.add_argument("--threads", type=int, default=1,
                        help="JAX CPU threads (default 1, as each analyze job of the pipeline; 0: every core)")
    args = parser.parse_args(argv)
    print(f"JAX threads: {set_threads(args.threads)}", file=sys.stderr)
    rows = []
    for depth in args.depths:
        for norm in NORMS:
            rows.append(bench_model(depth, norm, args.dtype, args.repeats))
            print(f"done {rows[-1]['model']}", file=sys.stderr, flush=True)
    print(format_table(rows))
    worst = max(r["hvp_over_grad"] for r in rows)
    print(f"\nworst HVP / gradient time ratio: {worst:.2f} (goal <= 3)")
    write_csv(rows, args.out)
    print(f"wrote {args.out}")
    layer_rows = []
    for depth in args.depths:
        for norm in NORMS:
            layer_rows += bench_layer_blocks(depth, norm, args.dtype, args.repeats)
    print("\nlayer blocks: whole-model products masked to the block vs products from the layer up")
    print(format_table(layer_rows, LAYER_COLUMNS))
    ratios = [r["masked_over_from_layer"] for r in layer_rows]
    print(f"\nlayer blocks' products {min(ratios):.2f}-{max(ratios):.2f}x faster from the layer up")
    layer_out = os.path.splitext(args.out)[0] + "_layers.csv"
    write_csv(layer_rows, layer_out, LAYER_COLUMNS)
    print(f"wrote {layer_out}")
    return rows


if __name__ == "__main__":
    main()
