"""Run every benchmark: each bench/bench_<name>.py's ``main(argv)`` with ``--out bench/results/<name>.csv``.

Run from anywhere: ``python bench/run_all.py [--only NAME ...] [--list]``; the working directory is the
repository root while the benchmarks run, so their relative paths resolve the same way as under
``make bench``. A benchmark that fails is reported and the others still run; the exit status is 1 if
any failed. Extra arguments after ``--`` are passed to every benchmark's main (e.g. ``-- --help``).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
import traceback
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
RESULTS = BENCH_DIR / "results"


def discover() -> dict[str, Path]:
    """{name: path} of bench/bench_<name>.py, sorted by name."""
    return {p.stem.removeprefix("bench_"): p for p in sorted(BENCH_DIR.glob("bench_*.py"))}


def load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(f"normlab_bench_{name}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    if not callable(getattr(module, "main", None)):
        raise AttributeError(f"{path.name} has no main(argv)")
    return module


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--only", nargs="+", default=None, help="run only these benchmarks (names without bench_)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = p.parse_args(argv)
    benches = discover()
    if args.list:
        print("\n".join(benches))
        return 0
    unknown = set(args.only or []) - set(benches)
    if unknown:
        p.error(f"unknown benchmark(s) {sorted(unknown)}; available: {sorted(benches)}")
    names = [n for n in benches if args.only is None or n in args.only]
    RESULTS.mkdir(parents=True, exist_ok=True)
    os.chdir(ROOT)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    summary = []
    for name in names:
        out = RESULTS / f"{name}.csv"
        print(f"\n=== bench_{name} -> {out.relative_to(ROOT)} ===", flush=True)
        start = time.perf_counter()
        try:
            load(name, benches[name]).main(["--out", str(out.relative_to(ROOT)), *extra])
            status = "ok"
        except SystemExit as exc:  # argparse exits (e.g. --help) are not failures of the benchmark itself
            status = "ok" if not exc.code else f"exit {exc.code}"
        except Exception:  # noqa: BLE001  (keep going; report at the end)
            traceback.print_exc()
            status = "FAILED"
        summary.append((name, status, time.perf_counter() - start, out))
    print("\n=== summary ===")
    for name, status, wall, out in summary:
        written = out.relative_to(ROOT) if out.exists() else "(no csv)"
        print(f"{name:<12} {status:<8} {wall:8.1f} s  {written}")
    return 0 if all(s == "ok" for _, s, _, _ in summary) else 1


if __name__ == "__main__":
    sys.exit(main())
