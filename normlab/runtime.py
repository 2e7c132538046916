"""Process set-up for one pipeline job: thread limits, the compile cache, its lines labelled with the job on
the terminal and in its log file (through ``logging``), a clear one-line error; and the faults that the
fault tests inject through ``$NORMLAB_FAULT``."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import sys
import threading
import time

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
      waits while the file ``path`` exists, having said so in its log (``holding: ...``), so that a test
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
        logging.getLogger(LOGGER).info(f"fail_once: {path} exists, running normally")
        return
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write("failed once\n")
    raise RuntimeError(f"failing on purpose, once ({FAULT_VARIABLE}: {path} did not exist); a retry will pass")


def _hold(path: str) -> None:
    if not os.path.exists(path):
        return
    logging.getLogger(LOGGER).info(f"holding: {path} exists; waiting until it is removed")
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


# --- The job's log -----------------------------------------------------------------------------------------
# A job's lines go through the ``logging`` logger "normlab" (the library's modules log under it, e.g.
# "normlab.io", "normlab.download"): every line starts with the job's label, ``<rule> <what>:``, so that
# lines of jobs running side by side stay apart on the terminal. Two handlers: the terminal (stderr, INFO and
# above) and the job's log file (everything: also each file the job read or wrote, and a failure's traceback).
# Text that other code prints to sys.stderr (a library's warning, a progress print) is passed to the same
# logger line by line.
LOGGER = "normlab"
IO_LOGGER = "normlab.io"  # normlab.io logs each file a job reads or writes here (``io`` and ``rows`` attributes)


class LabelFormatter(logging.Formatter):
    """``<label>: <message>``, the label on every line of a message of several lines (a traceback included)."""

    def __init__(self, label: str):
        super().__init__()
        self.label = label

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(f"{self.label}: {line}" for line in super().format(record).splitlines() or [""])


class StderrToLog(io.TextIOBase):
    """What sys.stderr is while a job runs: each complete line written to it becomes one INFO record of
    ``logger`` (so it gets the job's label and reaches the job's log), the rest of a line waits for its end.
    Everything else a library may ask of sys.stderr (``fileno``, ``isatty``, ``encoding``, ``errors``,
    ``buffer``) is the real stream's: bytes written through those bypass the log. Text written while a line
    is being logged (a handler reporting its own failure on sys.stderr) goes to the real stream directly."""

    def __init__(self, logger: logging.Logger, stream):
        super().__init__()
        self._logger, self._stream, self._pending = logger, stream, ""
        self._lock = threading.Lock()
        self._busy = threading.local()

    def writable(self) -> bool:
        return True

    def write(self, s) -> int:
        s = str(s)
        if getattr(self._busy, "on", False):
            return self._stream.write(s)
        with self._lock:
            lines = (self._pending + s).split("\n")
            self._pending = lines.pop()
        self._busy.on = True
        try:
            for line in lines:
                self._logger.info(line.rstrip("\r"))
        finally:
            self._busy.on = False
        return len(s)

    def flush(self) -> None:
        self._stream.flush()

    def close_pending(self) -> None:
        """Log the text after the last newline, if any."""
        with self._lock:
            rest, self._pending = self._pending, ""
        if rest.strip():
            self._logger.info(rest.rstrip("\r"))

    def fileno(self) -> int:
        return self._stream.fileno()

    def isatty(self) -> bool:
        return self._stream.isatty()

    @property
    def encoding(self):
        return getattr(self._stream, "encoding", "utf-8")

    @property
    def errors(self):
        return getattr(self._stream, "errors", "strict")

    @property
    def buffer(self):
        return self._stream.buffer


class IOTally(logging.Handler):
    """Counts the files (and table rows) a job read and wrote, from normlab.io's records."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.files = {"read": 0, "wrote": 0}
        self.rows = {"read": 0, "wrote": 0}

    def emit(self, record: logging.LogRecord) -> None:
        action = getattr(record, "io", None)
        if action in self.files:
            self.files[action] += 1
            self.rows[action] += int(getattr(record, "rows", None) or 0)

    def summary(self) -> str:
        def part(action):
            n, rows = self.files[action], self.rows[action]
            text = f"{action} {n} file{'' if n == 1 else 's'}"
            return f"{text} ({rows:,} table rows)" if rows else text

        return f"{part('read')}, {part('wrote')}"


@contextlib.contextmanager
def _job_logging(log_path: str | None, label: str):
    """The job's handlers on the "normlab" logger and sys.stderr routed into it, for the ``with`` body; yields
    (logger, IOTally, the StderrToLog). Undone afterwards (the logger's level, handlers and propagation,
    sys.stderr)."""
    logger = logging.getLogger(LOGGER)
    saved = (logger.level, logger.propagate, sys.stderr)
    real_stderr = sys.stderr
    formatter = LabelFormatter(label)
    terminal = logging.StreamHandler(real_stderr)
    terminal.setLevel(logging.INFO)
    handlers = [terminal]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w", encoding="utf-8"))
        handlers[-1].setLevel(logging.DEBUG)
    for h in handlers:
        h.setFormatter(formatter)
        logger.addHandler(h)
    tally = IOTally()
    logging.getLogger(IO_LOGGER).addHandler(tally)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False  # the root logger's handlers (if any) would print every line again
    stream = StderrToLog(logging.getLogger(f"{LOGGER}.stderr"), real_stderr)
    sys.stderr = stream
    try:
        yield logger, tally, stream
    finally:
        stream.close_pending()
        sys.stderr = saved[2]
        logging.getLogger(IO_LOGGER).removeHandler(tally)
        for h in handlers:
            logger.removeHandler(h)
            h.close()
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


@contextlib.contextmanager
def job(log_path: str | None, threads: int = 1, name: str = "normlab", uses_jax: bool = False,
        optimization_level: int | None = None):
    """Run a job body with its lines labelled ``<name>: `` on stderr and in the log file ``log_path``
    (the logging set-up above). A successful job's last line says how long it took and how many files (and
    table rows) it read and wrote; its log also names each of those files. An exception ends the process
    with status 1 after writing ``<name>: error: <message>`` to both, with the traceback in the log only
    (just before that line): the user sees what went wrong without digging. ``name``: ``<rule> <what>``
    (e.g. ``train digits/raw-none-d2``); a ``$NORMLAB_FAULT`` fault (``fault_from_environment``) for that
    rule applies to this job. ``uses_jax``: create JAX's backend with ``threads`` threads (``start_jax``)
    first; jobs without JAX do not import it. ``optimization_level``: XLA's (see ``limit_threads``; a level in
    the user's XLA_FLAGS wins)."""
    global _ARMED
    limit_threads(threads, optimization_level)
    enable_compilation_cache()
    start = time.perf_counter()
    with _job_logging(log_path, name) as (logger, tally, stream):
        if uses_jax:
            logger.info(f"{max(1, int(threads))} CPU thread(s), XLA_FLAGS={os.environ['XLA_FLAGS']}")
        try:
            if uses_jax:
                start_jax(threads)
            fault = fault_from_environment()
            if fault is not None and fault.rule == name.partition(" ")[0]:
                _ARMED = fault
                if fault.kind == "fail_once":
                    _fail_once(fault.path)
                elif not fault.after:
                    _hold(fault.path)
            yield
        except Exception as exc:  # noqa: BLE001
            stream.close_pending()
            logger.debug("traceback:", exc_info=True)
            logger.error(f"error: {exc}")
            failed = True
        else:
            failed = False
            stream.close_pending()
            logger.info(f"done in {time.perf_counter() - start:.1f} s: {tally.summary()}")
        finally:
            _ARMED = None
    if failed:
        sys.exit(1)


def failure_lines(log_paths) -> list[str]:
    """One line per job log in ``log_paths`` (jobs that failed), for a summary at the end of a run: the log's
    first error line (``<label>: error: <message>``, as ``job`` writes it), else its last line, then the log's
    path. A job killed from outside (out of memory, a time limit) wrote no error line: its last line shows how
    far it got."""
    lines = []
    for path in log_paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as f:
                text = [ln.rstrip("\n") for ln in f if ln.strip()]
        except OSError:
            text = []
        first_error = next((ln for ln in text if ": error: " in ln), None)
        if first_error is not None:
            lines.append(f"{first_error}  (log: {path})")
        elif text:
            lines.append(f"no error line; the log ends with: {text[-1]}  (log: {path})")
        else:
            lines.append(f"no output; see the error report above  (log: {path})")
    return lines
