"""Where one analyze job's time goes, per compiled program: XLA compilation seconds, calls and wall seconds.

Runs ``normlab.analysis.analyze_variant`` for the variants of one network of a finished study, as the
analyze job does (the prepared input treatments raw and standardize, or with ``--input-bn`` the batch norm
input alone), in this process, on one JAX thread, with the persistent compile cache off (what a job with a
cold cache compiles). Every ``jax.jit`` that normlab creates is wrapped, before normlab is imported, so that
each top-level call of a program is timed up to its result (``jax.block_until_ready``; calls made while
tracing another program are not counted), and XLA's compile times come from JAX's compile log
(``jax_log_compiles``). A program's ``wall`` includes its tracing and compilation on the first call; its run
time is about ``wall - compile``. Blocking after each call costs the pipeline's overlap of host and device
work, so the total is a little above the job's own.

``--level0 NAME ...`` compiles the programs of those names at XLA optimization level 0 (``jax.jit``'s
``compiler_options``; the others at the pipeline's level): a program that runs once per job compiles about
1.7x faster there and runs about 3x slower, so it pays only where its run time is well under its compile time.

Not a benchmark of bench/run_all.py (it needs a finished study): run from the repository root after e.g.
``make report``::

    .venv/bin/python bench/profile_analyze.py --dataset digits --arch batchnorm-d8
    .venv/bin/python bench/profile_analyze.py --root /path/to/run --config config/digits.yaml --dataset digits \\
        --arch batchnorm-d2 --level0 along_gradient interval_one

Prints the programs by wall time and writes them as JSON (``--out``).
"""

from __future__ import annotations

import argparse
import collections
import functools
import json
import logging
import os
import re
import sys
import time
from pathlib import Path

COMPILE_LINE = re.compile(r"Finished XLA compilation of jit\(([^)]*)\) in ([0-9.e+-]+) s")


def program_name(fun) -> str:
    """The name a jitted function's compile log line shows (that of the function under any partials)."""
    while isinstance(fun, functools.partial):
        fun = fun.func
    return getattr(fun, "__name__", repr(fun))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=".", help="the run folder holding config/, data/ and results/")
    ap.add_argument("--config", default="config/config.yaml", help="the study's config, relative to --root")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--arch", required=True, help="the network: <norm>-d<depth>, e.g. batchnorm-d8")
    ap.add_argument("--input-bn", action="store_true", help="the batch norm input's variant (analyze_input_bn)")
    ap.add_argument("--level0", nargs="*", default=[], help="program names compiled at XLA optimization level 0")
    ap.add_argument("--out", default=None, help="JSON output (default: bench/results/profile_<dataset>_<arch>.json)")
    args = ap.parse_args(argv)

    os.environ["NORMLAB_JAX_CACHE"] = "off"
    from normlab import runtime

    runtime.limit_threads(1)
    import jax

    stats = collections.defaultdict(lambda: {"calls": 0, "wall_s": 0.0, "compile_s": 0.0, "compiles": 0})
    plain_jit, level0 = jax.jit, set(args.level0)

    class Timed:
        """A jitted program whose top-level calls are timed up to their result."""

        def __init__(self, jitted, name):
            self._jitted, self._name = jitted, name

        def __call__(self, *a, **k):
            if any(isinstance(x, jax.core.Tracer) for x in jax.tree_util.tree_leaves((a, k))):
                return self._jitted(*a, **k)
            start = time.perf_counter()
            out = jax.block_until_ready(self._jitted(*a, **k))
            s = stats[self._name]
            s["calls"] += 1
            s["wall_s"] += time.perf_counter() - start
            return out

        def __getattr__(self, attr):
            return getattr(self._jitted, attr)

    def timed_jit(fun=None, **kw):
        if fun is None:
            return lambda f: timed_jit(f, **kw)
        name = program_name(fun)
        if name in level0:
            kw["compiler_options"] = {"xla_backend_optimization_level": 0}
        return Timed(plain_jit(fun, **kw), name)

    class CompileLog(logging.Handler):
        def emit(self, record):
            m = COMPILE_LINE.search(record.getMessage())
            if m:
                s = stats[m.group(1)]
                s["compile_s"] += float(m.group(2))
                s["compiles"] += 1

    jax.jit = timed_jit
    handler = CompileLog(logging.DEBUG)
    for name in ("jax._src.dispatch", "jax._src.interpreters.pxla", "jax._src.compiler"):
        logging.getLogger(name).addHandler(handler)
        logging.getLogger(name).setLevel(logging.DEBUG)
    logging.getLogger("jax").propagate = False
    jax.config.update("jax_log_compiles", True)
    runtime.start_jax(1)

    import yaml

    from normlab import analysis, io, model

    root = Path(args.root)
    cfg = yaml.safe_load((root / args.config).read_text())
    results = root / "results" / cfg["study"] / args.dataset
    rows = io.read_csv_rows(results / "variants.csv")
    inputs = ["batchnorm"] if args.input_bn else ["raw", "standardize"]
    start = time.perf_counter()
    for inp in inputs:
        variant = f"{inp}-{args.arch}"
        spec = model.ModelSpec.from_json(io.read_text(results / variant / "model.json"))
        data_file = "raw" if inp == "batchnorm" else inp
        data = io.load_npz(root / "data" / cfg["study"] / "processed" / args.dataset / f"{data_file}.npz")
        sweep = io.load_npz(results / variant / "sweep.npz")
        row = next(r for r in rows if r["variant"] == variant)
        with io.open_npz(results / variant / "sweep_checkpoints.npz") as checkpoints:
            analysis.analyze_variant(spec, data, sweep, checkpoints, row, cfg["analysis"], cfg["sweep"])
    total = time.perf_counter() - start

    compile_s = sum(s["compile_s"] for s in stats.values())
    print(f"{args.dataset}/{'batchnorm-' if args.input_bn else ''}{args.arch} ({', '.join(inputs)}), level 0: "
          f"{sorted(level0) or 'none'}: {total:.1f} s, of which XLA compilation {compile_s:.1f} s")
    print(f"  {'program':32s} {'calls':>6s} {'wall s':>8s} {'compile s':>9s}")
    for name, s in sorted(stats.items(), key=lambda kv: -kv[1]["wall_s"]):
        if s["wall_s"] >= 0.2 or s["compile_s"] >= 0.2:
            print(f"  {name:32s} {s['calls']:6d} {s['wall_s']:8.2f} {s['compile_s']:9.2f}")
    out = Path(args.out or f"bench/results/profile_{args.dataset}_{args.arch}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"total_s": total, "level0": sorted(level0), "programs": stats}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
