"""Process set-up for one pipeline job: thread limits, the compile cache, a log file and a clear one-line
error; and the faults that the fault tests inject through ``$NORMLAB_FAULT``."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
import traceback

# XLA's LLVM optimization level for every compiled program (XLA's default is 2). On the default study's
# largest models (digits, depth 8, batch norm) levels 1 and 2 run equally fast; level 0 compiles faster but
# runs several times slower there. A user's own XLA_FLAGS setting wins.
XLA_OPTIMIZATION_LEVEL = 1

# Jobs whose work is below this fraction of the default study's deepest variant's (the pipeline's cost
# scales: steps x runs x layers x width^2 for training, examples x layers^2 x width^2 x Lanczos steps for the
# analysis) compile at level 0 instead: compilation is nearly all of such a job, and level 0 compiles about
# twice as fast. The quick study's jobs (scales 2e-4 to 3e-3) fall below it: they give the same answer
# section, their tables equal but for float32 rounding (amplified in the chaotic high-LR runs, as on another
# CPU). The default study's smallest variants have scales 0.1-0.3, so the default study keeps
# XLA_OPTIMIZATION_LEVEL.
SMALL_JOB_SCALE = 0.01


def xla_optimization_level(scale: float) -> int:
    """XLA's optimization level for a job whose work is ``scale`` times that of the default study's deepest
    variant (dimensionless): 0 below ``SMALL_JOB_SCALE`` (compile-bound jobs), else ``XLA_OPTIMIZATION_LEVEL``."""
    return 0 if float(scale) < SMALL_JOB_SCALE else XLA_OPTIMIZATION_LEVEL


def limit_threads(threads: int, optimization_level: int | None = None) -> None:
    """Ask XLA and the BLAS libraries for at most ``threads`` CPU threads and set XLA's optimization level
    (``optimization_level``, default ``XLA_OPTIMIZATION_LEVEL``); must run before JAX creates its CPU backend
    (JAX ignores OMP_NUM_THREADS). The XLA flags alone do not bound JAX's thread pools: jobs that run JAX
    also call ``start_jax``."""
    threads = max(1, int(threads))
    level = XLA_OPTIMIZATION_LEVEL if optimization_level is None else int(optimization_level)
    flags = os.environ.get("XLA_FLAGS", "")
    # only "--" flags: XLA stops reading XLA_FLAGS, silently, at the first word without them, so a bare
    # "name=value" here would hide every flag after it (the optimization level included) from XLA
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
    is created, not from XLA_FLAGS: a job given one thread would use more than one core, and jobs side by
    side would contend for the cores Snakemake gave each of them. So the process is narrowed to ``threads``
    CPUs while the backend is created, then every thread of it (the pools' threads inherit the narrowed set)
    is given back all of its CPUs: the pools keep their size and the operating system still places their
    threads on any free core."""
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
    compiled: an analyze job compiles about 100 small programs besides a few large ones, and JAX's default
    threshold (programs that took at least 1 s to compile) would leave the small ones to be compiled again
    by every job.

    If JAX is not imported yet, this only sets the environment variables JAX reads when it is imported
    (``JAX_COMPILATION_CACHE_DIR``, ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS``): jobs that never use
    JAX (fetch, preprocess, select, tables, report) then do not pay for importing it."""
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


# Fault injection, for the project's fault tests (kill and resume, a retried cluster job). The workflow has
# no switch for it: the fault comes from this one environment variable, which Snakemake passes on to local
# jobs and the SLURM executor to its batch jobs (sbatch --export=ALL); the config schema refuses unknown
# keys, so no config can carry it. Unset (the normal case), every job runs as written.
FAULT_VARIABLE = "NORMLAB_FAULT"
HOLD_POLL_S = 0.05  # how often a held job looks for its hold file again
HOLD_TIMEOUT_S = 900.0  # a hold file left this long (seconds) is an error, not a hang


@dataclasses.dataclass(frozen=True)
class Fault:
    """A fault to inject into the jobs of rule ``rule``:

    * ``fail_once``: the job fails at its start if the file ``path`` does not exist, creating it; once it
      exists the job runs normally (so Snakemake's retry of the job succeeds);
    * ``hold``: once the job has written its output named ``after`` (a file name; empty: at its start), it
      waits while the file ``path`` exists, having said so on stderr (``holding: ...``), so that a test
      interrupts it at a known point (some outputs written, others not) instead of racing it."""

    kind: str
    rule: str
    path: str
    after: str = ""


def fault_from_environment(environ=None) -> Fault | None:
    """The fault that ``$NORMLAB_FAULT`` asks for (the only place it is read), None when unset or empty:
    ``fail_once:<rule>:<marker file>`` or ``hold:<rule>:<output file name or empty>:<hold file>``.
    Anything else is an error, so that a mistyped fault never passes as no fault."""
    text = (os.environ if environ is None else environ).get(FAULT_VARIABLE, "")
    if not text:
        return None
    kind = text.split(":", 1)[0]
    fields = {"fail_once": 3, "hold": 4}
    parts = text.split(":", fields.get(kind, 1) - 1)
    if kind not in fields or len(parts) != fields[kind] or not parts[1] or not parts[-1]:
        raise ValueError(f"{FAULT_VARIABLE}={text!r}: expected 'fail_once:<rule>:<marker file>' or "
                         "'hold:<rule>:<output file name, or empty>:<hold file>'")
    if kind == "fail_once":
        return Fault(kind, parts[1], parts[2])
    return Fault(kind, parts[1], parts[3], after=parts[2])


_ARMED: Fault | None = None  # the running job's fault (set by ``job`` for the job of its rule)


def _fail_once(path: str) -> None:
    if os.path.exists(path):
        print(f"fail_once: {path} exists, running normally", file=sys.stderr)
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("failed once\n")
    raise RuntimeError(f"failing on purpose, once ({FAULT_VARIABLE}: {path} did not exist); a retry will pass")


def _hold(path: str) -> None:
    if not os.path.exists(path):
        return
    print(f"holding: {path} exists; waiting until it is removed", file=sys.stderr, flush=True)
    deadline = time.monotonic() + HOLD_TIMEOUT_S
    while os.path.exists(path):
        if time.monotonic() > deadline:
            raise RuntimeError(f"held for {HOLD_TIMEOUT_S:.0f} s: remove {path} ({FAULT_VARIABLE})")
        time.sleep(HOLD_POLL_S)


def output_written(path) -> None:
    """Called by normlab.io once an output is in place under its final name: a ``hold`` fault armed for
    this output's file name waits here."""
    fault = _ARMED
    if fault is not None and fault.kind == "hold" and fault.after and os.path.basename(path) == fault.after:
        _hold(fault.path)


@contextlib.contextmanager
def job(log_path: str | None, threads: int = 1, name: str = "normlab", uses_jax: bool = False,
        optimization_level: int | None = None):
    """Run a job body with its progress going to ``log_path`` (and stderr). An exception ends the
    process with status 1 after writing ``<name>: error: <message>`` to both, with the traceback in
    the log only: the user sees what went wrong without digging. ``name``: ``<rule> <what>`` (e.g.
    ``train digits/raw-none-d2``); a ``$NORMLAB_FAULT`` fault (``fault_from_environment``) for that rule
    applies to this job. ``uses_jax``: create JAX's backend with ``threads`` threads (``start_jax``) first;
    jobs without JAX do not import it. ``optimization_level``: XLA's (see ``limit_threads``; a level in the
    user's XLA_FLAGS wins)."""
    global _ARMED
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
        fault = fault_from_environment()
        if fault is not None and fault.rule == name.partition(" ")[0]:
            _ARMED = fault
            if fault.kind == "fail_once":
                _fail_once(fault.path)
            elif not fault.after:
                _hold(fault.path)
        yield
    except Exception as exc:  # noqa: BLE001
        if log:
            traceback.print_exc(file=log)
        print(f"{name}: error: {exc}", file=sys.stderr)
        sys.stderr = real_stderr
        sys.exit(1)
    finally:
        _ARMED = None
        sys.stderr = real_stderr
        if log:
            log.close()
