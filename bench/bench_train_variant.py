"""Benchmark of one train job's work: ``normlab.train.train_variant`` on the default study's deepest
variant (digits, raw inputs, batch norm, depth 8: 13 LRs x 3 seeds, 600 steps), as the train rule runs it
(one CPU thread, XLA optimization level ``runtime.XLA_OPTIMIZATION_LEVEL``).

Two timed calls in one process, with JAX's persistent compilation cache in a fresh temporary folder:
* cold: the first call: tracing, XLA compilation of every program, training (and the refinement
  training, where the code under test has one), tables;
* warm: the same call again: the programs come from the disk cache, so this is training plus tracing
  and cache loads (what a rerun with a warm ``NORMLAB_JAX_CACHE`` costs).
Each is given as wall time and as the process's CPU time (user + system, all threads): with one XLA
thread the CPU time is the work done, and stays comparable when other processes share the cores.

Run ``python bench/bench_train_variant.py [--out PATH] [--dataset digits] [--variant raw-batchnorm-d8]``;
to time another checkout's code, put its root first on ``PYTHONPATH`` (the script imports ``normlab``).
The row is printed and written as CSV (default bench/results/train_variant.csv).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import sys
import tempfile
import time

DEFAULT_OUT = os.path.join("bench", "results", "train_variant.csv")
COLUMNS = ("dataset", "variant", "runs", "steps", "cold_s", "warm_s", "cold_cpu_s", "warm_cpu_s", "n_refine_runs",
           "normlab", "platform", "cpu_count")


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--variant", default="raw-batchnorm-d8")
    parser.add_argument("--config", default=os.path.join("config", "config.yaml"))
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    from normlab import runtime

    runtime.limit_threads(args.threads)
    cache = tempfile.mkdtemp(prefix="normlab-bench-jax-")
    runtime.enable_compilation_cache(cache)
    runtime.start_jax(args.threads)

    import yaml

    import normlab
    from normlab import datasets, preprocess, train, variants

    with open(args.config) as f:
        config = yaml.safe_load(f)
    v = variants.Variant.parse(args.variant)
    df = datasets.load_sklearn(config["datasets"][args.dataset]["sklearn"])
    split = config["split"]
    data = preprocess.prepare(df, "target", split["test_fraction"], split["seed"], (v.input,))[v.input]
    quiet = lambda msg: None  # noqa: E731

    times, cpu, out = [], [], None
    for _ in range(2):
        start, start_cpu = time.perf_counter(), time.process_time()
        out = train.train_variant(args.dataset, v.name, data, config["variants"], config["sweep"], progress=quiet)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    sweep, runs = out["sweep"], out["runs"]
    grid = runs.get("grid", None)
    row = {
        "dataset": args.dataset, "variant": v.name, "runs": len(sweep["lr"]), "steps": config["sweep"]["steps"],
        "cold_s": round(times[0], 2), "warm_s": round(times[1], 2), "cold_cpu_s": round(cpu[0], 2),
        "warm_cpu_s": round(cpu[1], 2),
        "n_refine_runs": 0 if grid is None else int((~grid.astype(bool)).sum()),
        "normlab": os.path.dirname(os.path.dirname(normlab.__file__)), "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
    }
    print(",".join(COLUMNS))
    print(",".join(str(row[c]) for c in COLUMNS))
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, COLUMNS)
        w.writeheader()
        w.writerow(row)
    return [row]


if __name__ == "__main__":
    main(sys.argv[1:])
