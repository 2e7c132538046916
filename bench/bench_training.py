"""Benchmark of the training sweep: all (lr, seed) runs of a variant trained (a) together in one
vmapped call (``normlab.train.train_sweep``), (b) as a Python loop over runs, each a ``train_sweep``
call with one (lr, seed), and (c) as a naive Python loop over runs and steps calling one jitted
single-step function.

Default set-up (the default study's sweep on one dataset): digits (scikit-learn, offline), standardized
inputs, MLP width 64, depth 2 and 4, no normalization, 13 log-spaced LRs from 1e-4 to 10 x 3 seeds
= 39 runs, 300 SGD steps of batch 64, evaluation every 30 steps on 1024 training rows, float32.

What each time includes (printed with the table):
* vmapped-cold: the first train_sweep call in the process: tracing, XLA compilation and training.
* vmapped: a second, identical train_sweep call with JAX's persistent compilation cache (a temporary
  folder) holding the executables of the first: tracing, lowering, cache loads and training, no XLA
  compilation. This is what a rerun with a warm ``NORMLAB_JAX_CACHE`` costs.
* vmapped-exec: train_sweep's compiled pieces (``train.Sweep``) run once to compile, then timed on a
  second pass: execution only, the fair comparison with naive-loop.
* loop-train_sweep: one warm-up call (R=1) fills the cache, then the timed loop of R calls, each
  train_sweep([lr], [seed]): per call tracing + lowering + cache loads + training, no compilation.
* naive-loop: one jitted step and one jitted evaluation, compiled before timing (warm-up call); the
  timed loop initializes each run, computes its batch order and calls the step function ``steps``
  times, evaluating every ``log_every`` steps, as the library does.
All compute the same thing; as a check the table reports the median and largest relative difference of
the final training losses from the first vmapped call (runs stable in both) and how many runs' divergence
flags differ (float32: batched and single matmuls round differently, so a run at the edge of stability
can tip either way).

Run ``python bench/bench_training.py [--out PATH] [--depths 2 4] [--steps 300] ...``; the table is
printed and written as CSV (default bench/results/training.csv). ``main(argv)`` does the same when
imported (bench/run_all.py).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from normlab import datasets, model, preprocess, runtime, train, variants

DEFAULT_OUT = os.path.join("bench", "results", "training.csv")
COLUMNS = ("depth", "method", "runs", "steps", "wall_s", "per_run_ms", "ratio_to_vmapped", "median_rel_diff_final_loss",
           "max_rel_diff_final_loss", "diverged_mismatch", "n_diverged", "includes", "platform", "cpu_count")


def load_data(name: str) -> dict:
    df = datasets.load_sklearn(name)
    return preprocess.prepare(df, "target", 0.25, 0, ("standardize",))["standardize"]


def naive_trainer(spec: model.ModelSpec, cfg: train.TrainConfig, data: dict, eval_examples: int):
    """(c): a jitted single step and a jitted evaluation; returns run(lr, seed) -> final train loss."""
    dtype = jnp.dtype(cfg.dtype)
    X, y = jnp.asarray(data["X_train"], dtype), jnp.asarray(data["y_train"])
    X_eval, y_eval = X[:eval_examples], y[:eval_examples]
    loss = lambda p, X_, y_: model.loss(spec, p, X_, y_)  # noqa: E731
    grad_fn = jax.value_and_grad(loss)

    @jax.jit
    def init(seed, lr):
        params = model.init_params(spec, train.run_keys(seed)[0], dtype)
        return params, train.make_optimizer(cfg, lr).init(params), loss(params, X_eval, y_eval)

    @jax.jit
    def step(params, opt, lr, init_loss, diverged, idx):
        batch_loss, grads = grad_fn(params, X[idx], y[idx])
        bad = ~jnp.isfinite(batch_loss) | (batch_loss > cfg.divergence_factor * init_loss)
        bad = bad | ~jnp.all(jnp.stack([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(grads)]))
        frozen = diverged | bad
        updates, new_opt = train.make_optimizer(cfg, lr).update(grads, opt, params)
        new_params = optax.apply_updates(params, updates)
        keep = lambda old, new: jnp.where(frozen, old, new)  # noqa: E731
        return jax.tree.map(keep, params, new_params), jax.tree.map(keep, opt, new_opt), frozen

    @jax.jit
    def evaluate(params):
        eval_loss, grads = grad_fn(params, X_eval, y_eval)
        return eval_loss, train.per_layer_grad_norms(params, grads)

    def run(lr, seed):
        lr_ = jnp.asarray(lr, dtype)
        params, opt, init_loss = init(jnp.asarray(seed), lr_)
        sched = train.batch_schedule(train.run_keys(seed)[1], cfg.steps, X.shape[0], cfg.batch_size)
        diverged = jnp.zeros((), bool)
        logs = [evaluate(params)]
        for t in range(cfg.steps):
            params, opt, diverged = step(params, opt, lr_, init_loss, diverged, sched[t])
            if (t + 1) % cfg.log_every == 0:
                logs.append(evaluate(params))
        return float(logs[-1][0]), bool(diverged)

    return run


def agreement(final, diverged, ref) -> dict:
    """How far a method's final train losses are from the vmapped reference: the median and max relative
    difference over the runs that diverged in neither, and the number of runs whose divergence flag
    differs (float32 rounding differs between batched and single matmuls; at the edge of stability a
    run can then tip either way)."""
    final, diverged = np.asarray(final, np.float64), np.asarray(diverged, bool)
    ok = ~diverged & ~ref["diverged"]
    rel = np.abs(final[ok] - ref["final_train_loss"][ok]) / np.maximum(np.abs(ref["final_train_loss"][ok]), 1e-12)
    return {"median_rel_diff_final_loss": float(np.median(rel)) if rel.size else float("nan"),
            "max_rel_diff_final_loss": float(rel.max()) if rel.size else float("nan"),
            "diverged_mismatch": int((diverged != ref["diverged"]).sum()), "n_diverged": int(diverged.sum())}


def vmapped_execution(spec, cfg, data, lrs, seeds, ev) -> tuple[float, np.ndarray, np.ndarray]:
    """The compiled pieces of train_sweep (train.Sweep) run twice; the second pass is timed: execution
    of init, every interval and every evaluation of all runs, no tracing or compilation."""
    lr_runs, seed_runs = np.repeat(np.asarray(lrs), len(seeds)), np.tile(np.asarray(seeds), len(lrs))
    sweep = train.Sweep(spec, cfg, data["X_train"], data["y_train"], data["X_train"][:ev], data["y_train"][:ev])
    n = data["X_train"].shape[0]
    sched = np.stack([train.batch_schedule(train.run_keys(int(s))[1], cfg.steps, n, cfg.batch_size) for s in seeds])
    blocks = [jnp.asarray(sched[np.tile(np.arange(len(seeds)), len(lrs)), t0:t0 + cfg.log_every])
              for t0 in range(0, cfg.steps, cfg.log_every)]

    def one_pass():
        state, log0 = sweep.init(jnp.asarray(lr_runs), jnp.asarray(seed_runs))
        logs = [log0]
        for i, block in enumerate(blocks):
            state, log = sweep.interval(state, jnp.asarray(i * cfg.log_every, jnp.int32), block)
            logs.append(log)
        jax.block_until_ready((state, logs))
        return np.asarray(logs[-1]["train_loss"])[:, -1], np.asarray(state["diverged"])

    one_pass()
    t = time.perf_counter()
    final, diverged = one_pass()
    return time.perf_counter() - t, final, diverged


def bench_depth(depth: int, data: dict, args, quiet=lambda msg: None) -> list[dict]:
    spec = variants.model_spec(variants.Variant("standardize", "none", depth), data["X_train"].shape[1],
                               len(data["classes"]), args.width, "relu", 1e-5)
    cfg = train.TrainConfig(steps=args.steps, batch_size=args.batch_size, log_every=args.log_every, dtype=args.dtype)
    lrs = variants.lr_grid(args.lr_min, args.lr_max, args.n_lr)
    seeds = list(range(args.seeds))
    R = len(lrs) * len(seeds)
    runs = [(lr, s) for lr in lrs for s in seeds]  # lr-major, seed-minor, as train_sweep orders them
    ev = min(args.eval_examples, data["X_train"].shape[0])
    rows = []
    common = {"depth": depth, "runs": R, "steps": args.steps, "platform": jax.default_backend(),
              "cpu_count": os.cpu_count()}

    t = time.perf_counter()
    ref = train.train_sweep(spec, cfg, data, lrs, seeds, ev, progress=quiet)
    cold = time.perf_counter() - t
    t = time.perf_counter()
    again = train.train_sweep(spec, cfg, data, lrs, seeds, ev, progress=quiet)
    warm = time.perf_counter() - t
    rows.append({**common, "method": "vmapped", "wall_s": warm, **agreement(again["final_train_loss"],
                                                                          again["diverged"], ref),
                 "includes": "1 train_sweep call; tracing+lowering+cache loads+training, no XLA compile"})
    rows.append({**common, "method": "vmapped-cold", "wall_s": cold, **agreement(ref["final_train_loss"],
                                                                               ref["diverged"], ref),
                 "includes": "1 train_sweep call; tracing+XLA compile+training (empty cache)"})
    wall, final, diverged = vmapped_execution(spec, cfg, data, lrs, seeds, ev)
    rows.append({**common, "method": "vmapped-exec", "wall_s": wall, **agreement(final, diverged, ref),
                 "includes": "train.Sweep compiled before timing; execution only"})

    train.train_sweep(spec, cfg, data, [lrs[0]], [seeds[0]], ev, progress=quiet)  # warm-up: fills the cache
    t = time.perf_counter()
    loop = [train.train_sweep(spec, cfg, data, [lr], [s], ev, progress=quiet) for lr, s in runs]
    wall = time.perf_counter() - t
    rows.append({**common, "method": "loop-train_sweep", "wall_s": wall,
                 **agreement([r["final_train_loss"][0] for r in loop], [r["diverged"][0] for r in loop], ref),
                 "includes": f"{R} train_sweep calls; each tracing+lowering+cache loads+training, no XLA compile"})

    run = naive_trainer(spec, cfg, data, ev)
    run(lrs[0], seeds[0])  # warm-up: compiles init, step and evaluate once
    t = time.perf_counter()
    naive = [run(lr, s) for lr, s in runs]
    wall = time.perf_counter() - t
    rows.append({**common, "method": "naive-loop", "wall_s": wall,
                 **agreement([n[0] for n in naive], [n[1] for n in naive], ref),
                 "includes": f"{R * args.steps} jitted step calls, compiled before timing"})
    base = rows[0]["wall_s"]
    for r in rows:
        r["per_run_ms"] = 1e3 * r["wall_s"] / R
        r["ratio_to_vmapped"] = r["wall_s"] / base
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'depth':>5} {'method':<17} {'runs':>4} {'steps':>5} {'wall s':>8} {'ms/run':>8} {'x vmapped':>9} "
            f"{'med rel diff':>12} {'max rel diff':>12} {'div':>4} {'div !=':>6}  includes")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['depth']:>5} {r['method']:<17} {r['runs']:>4} {r['steps']:>5} {r['wall_s']:>8.2f} "
                     f"{r['per_run_ms']:>8.1f} {r['ratio_to_vmapped']:>9.2f} {r['median_rel_diff_final_loss']:>12.1e} "
                     f"{r['max_rel_diff_final_loss']:>12.1e} {r['n_diverged']:>4} {r['diverged_mismatch']:>6}  "
                     f"{r['includes']}")
    return "\n".join(lines)


def write_csv(rows: Sequence[dict], path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{r[k]:.6g}" if isinstance(r[k], float) else r[k]) for k in COLUMNS})


def main(argv: Sequence[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=DEFAULT_OUT, help="CSV path (default %(default)s)")
    p.add_argument("--dataset", default="digits", help="a bundled scikit-learn dataset (default %(default)s)")
    p.add_argument("--depths", type=int, nargs="+", default=[2, 4])
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--lr-min", type=float, default=1e-4)
    p.add_argument("--lr-max", type=float, default=10.0)
    p.add_argument("--n-lr", type=int, default=13)
    p.add_argument("--seeds", type=int, default=3, help="number of seeds (0..n-1)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--log-every", type=int, default=30)
    p.add_argument("--eval-examples", type=int, default=1024)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = p.parse_args(argv)

    data = load_data(args.dataset)
    cache = tempfile.mkdtemp(prefix="normlab-bench-jax-")
    runtime.enable_compilation_cache(cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    print(f"training sweep benchmark: {args.dataset} standardized ({data['X_train'].shape[0]} train rows, "
          f"{data['X_train'].shape[1]} features), width {args.width}, depths {args.depths}, {args.n_lr} LRs x "
          f"{args.seeds} seeds, {args.steps} steps of batch {args.batch_size}, eval every {args.log_every} on "
          f"{args.eval_examples} rows, {args.dtype}; backend {jax.default_backend()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}, {platform.processor() or platform.machine()}", flush=True)
    rows = []
    for depth in args.depths:
        rows += bench_depth(depth, data, args)
        print(f"done depth {depth}", file=sys.stderr, flush=True)
    print(format_table(rows))
    for depth in args.depths:
        by = {r["method"]: r["wall_s"] for r in rows if r["depth"] == depth}
        print(f"depth {depth}: (a) vmapped vs (b) loop of train_sweep calls: b/a = "
              f"{by['loop-train_sweep'] / by['vmapped']:.1f}x;  (a) vs (c) naive jitted-step loop: c/a = "
              f"{by['naive-loop'] / by['vmapped']:.1f}x, execution only c/a-exec = "
              f"{by['naive-loop'] / by['vmapped-exec']:.1f}x;  compile share: cold/warm = "
              f"{by['vmapped-cold'] / by['vmapped']:.1f}x")
    print("div = runs flagged diverged; div != = runs whose flag differs from the vmapped-cold reference; rel diff "
          "= |final train loss - reference| / reference over runs stable in both")
    write_csv(rows, args.out)
    print(f"wrote {args.out}")
    return rows


if __name__ == "__main__":
    main()
