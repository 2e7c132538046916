"""Process set-up for one pipeline job: thread limits and a log file, and a clear one-line error."""

from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback


def limit_threads(threads: int) -> None:
    """Make XLA use at most ``threads`` CPU threads; must run before JAX creates its CPU backend
    (JAX ignores OMP_NUM_THREADS). Several jobs can then run side by side without oversubscription."""
    threads = max(1, int(threads))
    flags = os.environ.get("XLA_FLAGS", "")
    if "intra_op_parallelism_threads" not in flags:
        os.environ["XLA_FLAGS"] = (
            f"{flags} --xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'} "
            f"intra_op_parallelism_threads={threads}"
        ).strip()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)


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
def job(log_path: str | None, threads: int = 1, name: str = "normlab"):
    """Run a job body with its progress going to ``log_path`` (and stderr). An exception ends the
    process with status 1 after writing ``<name>: error: <message>`` to both, with the traceback in
    the log only: the user sees what went wrong without digging."""
    limit_threads(threads)
    enable_compilation_cache()
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
