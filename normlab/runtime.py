"""Process set-up for one pipeline job: thread limits and a log file, and a clear one-line error."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback

# XLA's LLVM optimization level for every compiled program (XLA's default is 2). Measured on the default study's
# largest models (digits, depth 8, batch norm; 2 cores, cold cache, runs alternated): level 1 and 2 are the same
# (analysis of three checkpoints 59.3 / 66.2 s vs 60.9 / 64.3 s; training 25.3 / 26.2 s vs 25.5 / 24.7 s);
# level 0 compiles faster but runs 2.7x slower there (analysis 164 s). A user's own XLA_FLAGS setting wins.
XLA_OPTIMIZATION_LEVEL = 1

# Jobs whose work is below this fraction of the default study's deepest variant's (the pipeline's cost
# scales: steps x runs x layers x width^2 for training, examples x layers^2 x width^2 x Lanczos steps for the
# analysis) compile at level 0 instead: compilation is nearly all of such a job, and level 0 compiles about
# twice as fast (quick study's depth-3 batch-norm training programs 4.8 -> 2.1 s). Measured on the quick study
# (scales 2e-4 to 3e-3; 2 cores, cold cache): 95 -> 69 s for the whole DAG, the same answer section, tables
# equal but for float32 rounding (amplified in the chaotic high-LR runs, as on another CPU). The default
# study's smallest variants have scales 0.1-0.3, so the default study keeps XLA_OPTIMIZATION_LEVEL.
SMALL_JOB_SCALE = 0.01


def xla_optimization_level(scale: float) -> int:
    """XLA's optimization level for a job whose work is ``scale`` times that of the default study's deepest
    variant (dimensionless): 0 below ``SMALL_JOB_SCALE`` (compile-bound jobs), else ``XLA_OPTIMIZATION_LEVEL``."""
    return 0 if float(scale) < SMALL_JOB_SCALE else XLA_OPTIMIZATION_LEVEL


def limit_threads(threads: int, optimization_level: int | None = None) -> None:
    """Ask XLA and the BLAS libraries for at most ``threads`` CPU threads and set XLA's optimization level
    (``optimization_level``, default ``XLA_OPTIMIZATION_LEVEL``); must run before JAX creates its CPU backend
    (JAX ignores OMP_NUM_THREADS). The XLA flags alone no longer bound JAX's thread pools: jobs that run JAX
    also call ``start_jax``."""
    threads = max(1, int(threads))
    level = XLA_OPTIMIZATION_LEVEL if optimization_level is None else int(optimization_level)
    flags = os.environ.get("XLA_FLAGS", "")
    # only "--" flags: XLA stops reading XLA_FLAGS at the first word without them (until 2026-11-27 a bare
    # "intra_op_parallelism_threads=N" here hid the optimization level from XLA: every job compiled at level 2)
    if "xla_cpu_multi_thread_eigen" not in flags:
        flags = f"{flags} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    if "xla_backend_optimization_level" not in flags:
        flags = f"{flags} --xla_backend_optimization_level={level}"
    os.environ["XLA_FLAGS"] = flags.strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


def start_jax(threads: int) -> bool:
    """Create JAX's CPU backend with thread pools of ``threads`` threads. Returns False (and changes
    nothing) when the backend exists already or ``threads`` covers every CPU the process may use.

    XLA sizes its pools (compilation and execution) from the CPUs the process may run on when the backend
    is created, not from XLA_FLAGS: a job given one thread used 1.6 cores (depth-8 analysis: 75 CPU-s in
    47 s), and two such jobs side by side on 2 cores took 84 s where two one-core jobs took 72 s. So the
    process is narrowed to ``threads`` CPUs while the backend is created, then every thread of it (the
    pools' threads inherit the narrowed set) is given back all of its CPUs: the pools keep their size and
    the operating system still places their threads on any free core."""
    threads = max(1, int(threads))
    if not hasattr(os, "sched_setaffinity"):  # not Linux: XLA_FLAGS is all there is
        return False
    allowed = os.sched_getaffinity(0)
    if threads >= len(allowed):
        return False
    import jax
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        return False
    os.sched_setaffinity(0, sorted(allowed)[:threads])
    try:
        jax.devices("cpu")
    finally:
        # the pools' threads inherited the narrowed set: give every thread of the process its CPUs back
        for tid in os.listdir("/proc/self/task"):
            with contextlib.suppress(OSError):
                os.sched_setaffinity(int(tid), allowed)
    return True


def enable_compilation_cache(path: str | None = None) -> None:
    """Keep JAX's compiled programs on disk (``$NORMLAB_JAX_CACHE``, default ~/.cache/normlab/jax) so
    reruns and sibling jobs with the same shapes skip compilation. Results are unchanged: the cache
    stores the same executable the compiler would produce. Every program is cached, however fast it
    compiled: an analyze job compiles about 100 small programs (0.05-0.2 s each, 8 s together) besides a
    few large ones, and JAX's default threshold (1 s) would leave those to be compiled again by every job.

    If JAX is not imported yet, this only sets the environment variables JAX reads when it is imported
    (``JAX_COMPILATION_CACHE_DIR``, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``): jobs that never use
    JAX (fetch, preprocess, select, tables, report) then do not pay its import (about 1.4 s)."""
    path = path or os.environ.get("NORMLAB_JAX_CACHE") or os.path.expanduser("~/.cache/normlab/jax")
    if path.lower() in ("", "0", "off", "none"):
        return
    if "jax" in sys.modules:
        jax = sys.modules["jax"]
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    else:
        os.environ["JAX_COMPILATION_CACHE_DIR"] = path
        os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def fail_once(marker: str) -> None:
    """Test hook (config ``testing.fail_once_marker``): on the first call with a marker path, create
    the file and fail; once the file exists, do nothing. An empty path disables it. Lets a test check
    that a retried job (Snakemake's ``--retries``) completes the study."""
    if not marker:
        return
    if os.path.exists(marker):
        print(f"fail_once: {marker} exists, running normally", file=sys.stderr)
        return
    os.makedirs(os.path.dirname(os.path.abspath(marker)), exist_ok=True)
    with open(marker, "w") as f:
        f.write("failed once\n")
    raise RuntimeError(f"failing on purpose, once (testing.fail_once_marker = {marker}); a retry will pass")


def hold_while_exists(path: str, poll_s: float = 0.05, timeout_s: float = 900.0) -> None:
    """Test hook (config ``testing.hold_train_while_exists``): while the file ``path`` exists, wait here,
    having said so once on stderr (``holding: ...``). Lets a test interrupt a job at a known point instead
    of racing it. An empty path disables it; a file left for ``timeout_s`` seconds is an error."""
    if not path or not os.path.exists(path):
        return
    print(f"holding: {path} exists; waiting until it is removed", file=sys.stderr, flush=True)
    deadline = time.monotonic() + timeout_s
    while os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"held for {timeout_s:.0f} s: remove {path} (testing.hold_train_while_exists)")
        time.sleep(poll_s)


@contextlib.contextmanager
def job(log_path: str | None, threads: int = 1, name: str = "normlab", uses_jax: bool = False,
        optimization_level: int | None = None):
    """Run a job body with its progress going to ``log_path`` (and stderr). An exception ends the
    process with status 1 after writing ``<name>: error: <message>`` to both, with the traceback in
    the log only: the user sees what went wrong without digging. ``uses_jax``: create JAX's backend
    with ``threads`` threads (``start_jax``) first; jobs without JAX do not import it.
    ``optimization_level``: XLA's (see ``limit_threads``; a level in the user's XLA_FLAGS wins)."""
    limit_threads(threads, optimization_level)
    enable_compilation_cache()
    if uses_jax:
        start_jax(threads)
    real_stderr = sys.stderr
    log = open(log_path, "w") if log_path else None  # noqa: SIM115

    class Tee:
        def write(self, s):
            real_stderr.write(s)
            if log:
                log.write(s)
                log.flush()

        def flush(self):
            real_stderr.flush()

    sys.stderr = Tee()
    if uses_jax:
        print(f"{name}: {max(1, int(threads))} CPU thread(s), XLA_FLAGS={os.environ['XLA_FLAGS']}", file=sys.stderr)
    try:
        yield
    except Exception as exc:  # noqa: BLE001
        if log:
            traceback.print_exc(file=log)
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.stderr = real_stderr
        sys.exit(1)
    finally:
        sys.stderr = real_stderr
        if log:
            log.close()
