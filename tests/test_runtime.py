"""The job-level helpers of normlab.runtime: thread limits, the compile cache, the job wrapper and its
logging (labelled lines, the files read and written, the error line), and the faults that ``$NORMLAB_FAULT``
injects for the fault tests (test_reruns.py, test_slurm.py)."""

import logging
import os
import re
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from normlab import io, runtime


@pytest.fixture
def job_env(monkeypatch):
    """The variables a job sets (thread limits, XLA flags, the compile cache) restored after the test; no
    compile cache; no fault unless the test sets one."""
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "")
    monkeypatch.setenv("NORMLAB_JAX_CACHE", "off")
    monkeypatch.delenv(runtime.FAULT_VARIABLE, raising=False)
    return monkeypatch


def run_job(log, name, body=lambda: None) -> int:
    """Run ``body`` as the job ``name``; its exit status (0, or 1 after an error)."""
    try:
        with runtime.job(str(log), 1, name):
            body()
    except SystemExit as exc:
        return exc.code
    return 0


def test_a_fault_is_read_from_one_environment_variable():
    env = {runtime.FAULT_VARIABLE: "fail_once:select:/tmp/a:b"}  # a path may hold colons
    assert runtime.fault_from_environment(env) == runtime.Fault("fail_once", "select", "/tmp/a:b")
    env = {runtime.FAULT_VARIABLE: "hold:train:sweep.npz:/tmp/h:old"}
    assert runtime.fault_from_environment(env) == runtime.Fault("hold", "train", "/tmp/h:old", after="sweep.npz")
    env = {runtime.FAULT_VARIABLE: "hold:train::/tmp/hold"}  # no output named: at the job's start
    assert runtime.fault_from_environment(env) == runtime.Fault("hold", "train", "/tmp/hold")
    assert runtime.fault_from_environment({}) is None
    assert runtime.fault_from_environment({runtime.FAULT_VARIABLE: ""}) is None
    for bad in ("crash:train:/x", "fail_once:select", "fail_once::/x", "hold:train:/tmp/hold", "hold:train:x:"):
        with pytest.raises(ValueError, match=runtime.FAULT_VARIABLE):
            runtime.fault_from_environment({runtime.FAULT_VARIABLE: bad})


def test_fail_once_fails_the_first_job_of_its_rule_only(tmp_path, job_env):
    marker = tmp_path / "sub" / "failed-once"
    job_env.setenv(runtime.FAULT_VARIABLE, f"fail_once:select:{marker}")
    ran = []
    assert run_job(tmp_path / "train.log", "train demo/raw-none-d0", lambda: ran.append("train")) == 0
    assert not marker.exists()  # another rule's job: untouched
    assert run_job(tmp_path / "select.log", "select demo", lambda: ran.append("select 1")) == 1
    assert marker.exists() and ran == ["train"]
    assert "select demo: error: failing on purpose, once" in (tmp_path / "select.log").read_text()
    assert run_job(tmp_path / "select.log", "select demo", lambda: ran.append("select 2")) == 0  # the retry
    assert ran == ["train", "select 2"]


def test_hold_waits_after_the_named_output_until_the_file_is_removed(tmp_path, job_env):
    hold = tmp_path / "hold"
    hold.write_text("")
    job_env.setenv(runtime.FAULT_VARIABLE, f"hold:train:second.csv:{hold}")
    seen = {}

    def release():
        seen.update({p: (tmp_path / p).exists() for p in ("first.txt", "second.csv", "third.csv")})
        hold.unlink()

    def body():
        io.write_text(tmp_path / "first.txt", "1")
        threading.Timer(0.4, release).start()
        t0 = time.monotonic()
        io.write_text(tmp_path / "second.csv", "2")
        seen["waited"] = time.monotonic() - t0
        io.write_text(tmp_path / "third.csv", "3")

    assert run_job(tmp_path / "train.log", "train demo/raw-none-d0", body) == 0
    assert seen["first.txt"] and seen["second.csv"] and not seen["third.csv"]
    assert 0.35 < seen["waited"] < 5.0
    assert "holding:" in (tmp_path / "train.log").read_text()
    # no hold file, another rule, or no job at all: no wait
    def write_second():
        io.write_text(tmp_path / "second.csv", "")

    t0 = time.monotonic()
    assert run_job(tmp_path / "train.log", "train demo/raw-none-d0", write_second) == 0
    hold.write_text("")
    assert run_job(tmp_path / "select.log", "select demo", write_second) == 0
    write_second()
    assert time.monotonic() - t0 < 1.0


def test_a_hold_left_in_place_ends_in_an_error_that_names_the_file(tmp_path, job_env):
    hold = tmp_path / "forgotten"
    hold.write_text("")
    job_env.setenv(runtime.FAULT_VARIABLE, f"hold:train::{hold}")
    job_env.setattr(runtime, "HOLD_POLL_S", 0.01)
    job_env.setattr(runtime, "HOLD_TIMEOUT_S", 0.05)
    ran = []
    assert run_job(tmp_path / "train.log", "train demo/raw-none-d0", lambda: ran.append(1)) == 1
    assert ran == [] and "forgotten" in (tmp_path / "train.log").read_text()


def test_a_mistyped_fault_stops_the_job_instead_of_passing_as_none(tmp_path, job_env):
    job_env.setenv(runtime.FAULT_VARIABLE, "fail-once:select:/tmp/x")
    assert run_job(tmp_path / "select.log", "select demo") == 1
    assert f"select demo: error: {runtime.FAULT_VARIABLE}=" in (tmp_path / "select.log").read_text()


def test_compilation_cache_is_set_without_importing_jax_and_used_once_jax_compiles(tmp_path):
    """A job that never uses JAX does not import it to set the cache up; a later JAX import in the same
    process still caches every compiled program in the folder given."""
    cache = tmp_path / "jax-cache"
    code = (
        "import sys\n"
        "from normlab import runtime\n"
        f"runtime.enable_compilation_cache({str(cache)!r})\n"
        "assert 'jax' not in sys.modules, 'enable_compilation_cache imported jax'\n"
        "import jax, jax.numpy as jnp\n"
        f"assert jax.config.jax_compilation_cache_dir == {str(cache)!r}\n"
        "assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0\n"
        "jax.jit(lambda x: jnp.sin(x) * 2)(jnp.ones(3)).block_until_ready()\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_") and k != "NORMLAB_JAX_CACHE"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert any(cache.iterdir()), "no compiled program was written to the cache folder"


_CPU_RATIO = """
import os, sys, time
from normlab import runtime
threads = int(sys.argv[1])
runtime.limit_threads(threads)
started = runtime.start_jax(threads)
import jax, jax.numpy as jnp
allowed = os.sched_getaffinity(0)
narrowed = [t for t in os.listdir("/proc/self/task") if os.sched_getaffinity(int(t)) != allowed]
x = jnp.ones((1500, 1500), jnp.float32)
f = jax.jit(lambda a: a @ a)
f(x).block_until_ready()
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(30):
    f(x).block_until_ready()
print(started, len(narrowed), (time.process_time() - cpu) / (time.perf_counter() - wall))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs Linux and at least 2 CPUs")
def test_start_jax_bounds_the_cpus_a_one_thread_job_uses():
    """XLA_FLAGS alone do not stop XLA from spreading a program over every core; after start_jax(1) a
    matmul loop keeps one core busy (CPU time / wall time near 1), and no thread is left narrowed."""
    def run(threads):
        env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
        proc = subprocess.run([sys.executable, "-c", _CPU_RATIO, str(threads)], env=env, capture_output=True,
                              text=True, check=False)
        assert proc.returncode == 0, proc.stderr
        started, narrowed, ratio = proc.stdout.split()
        return started == "True", int(narrowed), float(ratio)

    all_cpus = len(os.sched_getaffinity(0))
    started, narrowed, free_ratio = run(all_cpus)
    assert not started and narrowed == 0
    if free_ratio < 1.3:
        pytest.skip(f"XLA did not spread the matmul over the cores here (CPU/wall {free_ratio:.2f})")
    started, narrowed, ratio = run(1)
    assert started, "start_jax(1) did not create the backend"
    assert narrowed == 0, f"{narrowed} threads kept the narrowed CPU set"
    assert ratio < 1.2, f"one-thread job used {ratio:.2f} cores (without start_jax: {free_ratio:.2f})"


def test_limit_threads_sets_the_optimization_level_unless_the_user_did(monkeypatch):
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "")  # restored after the test
    runtime.limit_threads(1)
    assert f"--xla_backend_optimization_level={runtime.XLA_OPTIMIZATION_LEVEL}" in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=3")
    runtime.limit_threads(1)
    assert os.environ["XLA_FLAGS"].count("xla_backend_optimization_level") == 1
    assert "--xla_backend_optimization_level=3" in os.environ["XLA_FLAGS"]


def test_limit_threads_takes_a_job_level_unless_the_user_set_one(monkeypatch):
    for var in ("XLA_FLAGS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.setenv(var, "")
    runtime.limit_threads(1, optimization_level=0)
    assert "--xla_backend_optimization_level=0" in os.environ["XLA_FLAGS"]
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=2")
    runtime.limit_threads(1, optimization_level=0)
    assert os.environ["XLA_FLAGS"].count("xla_backend_optimization_level") == 1
    assert "--xla_backend_optimization_level=2" in os.environ["XLA_FLAGS"]


def test_only_compile_bound_jobs_get_level_zero():
    assert runtime.xla_optimization_level(0.0) == 0
    assert runtime.xla_optimization_level(0.5 * runtime.SMALL_JOB_SCALE) == 0
    assert runtime.xla_optimization_level(runtime.SMALL_JOB_SCALE) == runtime.XLA_OPTIMIZATION_LEVEL
    assert runtime.xla_optimization_level(1.0) == runtime.XLA_OPTIMIZATION_LEVEL


def test_a_jax_job_names_its_threads_and_xla_flags_in_its_log(tmp_path, monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    log = tmp_path / "job.log"
    with runtime.job(str(log), 1, "demo"):  # uses_jax False: no header, no JAX
        pass
    assert re.fullmatch(r"demo: done in \d+\.\d s: read 0 files, wrote 0 files\n", log.read_text())
    code = (f"from normlab import runtime\nwith runtime.job({str(log)!r}, 1, 'demo', uses_jax=True, "
            "optimization_level=1):\n    pass\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    first = log.read_text().splitlines()[0]
    assert first.startswith("demo: 1 CPU thread(s), XLA_FLAGS=") and "--xla_backend_optimization_level=1" in first


def test_xla_reads_every_flag_limit_threads_sets():
    """XLA stops reading XLA_FLAGS at the first word that does not start with "--", silently: a flag put
    after the ones limit_threads sets must still be read (an unknown one is then a fatal error)."""
    code = ("import os\nfrom normlab import runtime\nruntime.limit_threads(1, 0)\n"
            "os.environ['XLA_FLAGS'] += ' --xla_normlab_no_such_flag=1'\n"
            "import jax.numpy as jnp\njnp.zeros(1).block_until_ready()\n")
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode != 0 and "xla_normlab_no_such_flag" in proc.stderr, proc.stderr[-2000:]


# --- the job's lines ---------------------------------------------------------------------------------------

def test_every_line_of_a_job_carries_its_label_on_the_terminal_and_in_its_log(tmp_path, job_env, capsys):
    """Lines from print(file=sys.stderr) (whole, in pieces, several at once) and from normlab's loggers start
    with the job's label, on stderr and in the log; DEBUG lines go to the log only; stdout is left alone."""
    log = tmp_path / "train.log"

    def body():
        print("  step 10/20  median train loss 0.5", file=sys.stderr)
        sys.stderr.write("in ")
        sys.stderr.write("pieces\nsecond line\nunfinished")
        logging.getLogger("normlab.somewhere").info("from a logger")
        logging.getLogger("normlab.somewhere").debug("details for the log only")
        print("to stdout")

    assert run_job(log, "train demo/raw-none-d0", body) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert captured.out == "to stdout\n"
    label = "train demo/raw-none-d0: "
    assert all(line.startswith(label) for line in err), err
    text = [line.removeprefix(label) for line in err]
    assert text[:-2] == ["  step 10/20  median train loss 0.5", "in pieces", "second line", "from a logger"]
    assert text[-2] == "unfinished"  # the rest of a line, at the job's end
    assert re.fullmatch(r"done in \d+\.\d s: read 0 files, wrote 0 files", text[-1])
    logged = log.read_text().splitlines()
    assert [ln for ln in logged if "details" not in ln] == err  # the log holds the terminal's lines, and more
    assert f"{label}details for the log only" in logged


_PROBING_JOB = """
import faulthandler, logging, sys, warnings
from normlab import runtime
with runtime.job(sys.argv[1], 1, "train demo/raw-none-d0"):
    faulthandler.enable()  # asks sys.stderr for its fileno()
    assert sys.stderr.isatty() in (True, False) and sys.stderr.encoding and sys.stderr.errors
    warnings.warn("a library's warning")
    logging.getLogger("somelib").warning("a library's own logger, through logging's last resort")
    print("a progress line", file=sys.stderr)
"""


def test_libraries_that_probe_or_write_to_stderr_work_inside_a_job_and_get_the_label(tmp_path):
    log = tmp_path / "job.log"
    proc = subprocess.run([sys.executable, "-c", _PROBING_JOB, str(log)], capture_output=True, text=True,
                          check=False, env={**os.environ, "NORMLAB_JAX_CACHE": "off"})
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr.splitlines()
    assert err and all(line.startswith("train demo/raw-none-d0: ") for line in err), err
    assert any("UserWarning: a library's warning" in line for line in err)
    assert "train demo/raw-none-d0: a library's own logger, through logging's last resort" in err
    assert "train demo/raw-none-d0: a progress line" in err
    assert log.read_text().splitlines() == err


def test_a_job_s_stderr_answers_what_libraries_ask_of_it(tmp_path, job_env):
    """Libraries probe sys.stderr (isatty, fileno, encoding, errors, buffer) before writing to it."""
    seen = {}

    def body():
        seen.update(isatty=sys.stderr.isatty(), fileno=sys.stderr.fileno(), encoding=sys.stderr.encoding,
                    errors=sys.stderr.errors, writable=sys.stderr.writable())
        sys.stderr.flush()

    with open(tmp_path / "fake-tty", "w", encoding="utf-8") as stream:
        real, sys.stderr = sys.stderr, stream
        try:
            assert run_job(tmp_path / "job.log", "select demo", body) == 0
        finally:
            sys.stderr = real
        assert seen == {"isatty": False, "fileno": stream.fileno(), "encoding": "utf-8", "errors": "strict",
                        "writable": True}


def test_a_job_s_log_says_what_it_read_and_wrote(tmp_path, job_env):
    from normlab import io

    csv, npz = tmp_path / "in.csv", tmp_path / "in.npz"
    csv.write_text("a,b\n1,2\n3,4\n5,6\n")
    io.write_npz(npz, {"x": np.zeros((4, 2)), "y": np.arange(4)})
    log = tmp_path / "job.log"

    def body():
        rows = io.read_csv_rows(csv)
        arrays = io.load_npz(npz)
        io.write_csv(tmp_path / "out.csv", {"a": np.array([r["a"] for r in rows]), "n": np.full(3, len(arrays))})
        io.write_text(tmp_path / "out.json", "{}\n")

    assert run_job(log, "select demo", body) == 0
    lines = log.read_text().splitlines()
    assert lines[:4] == [f"select demo: read {csv} (3 rows)",
                         f"select demo: read {npz} (2 arrays, {npz.stat().st_size:,} bytes)",
                         f"select demo: wrote {tmp_path / 'out.csv'} (3 rows, 2 columns)",
                         f"select demo: wrote {tmp_path / 'out.json'} (3 bytes)"]
    assert re.fullmatch(r"select demo: done in \d+\.\d s: read 2 files \(3 table rows\), wrote 2 files "
                        r"\(3 table rows\)", lines[4]) and len(lines) == 5


def test_a_failed_job_prints_one_error_line_and_logs_the_traceback_before_it(tmp_path, job_env, capsys):
    log = tmp_path / "fetch.log"

    def body():
        print("reading", file=sys.stderr)
        raise ValueError("the column 'y' is missing; set 'target'")

    assert run_job(log, "fetch demo", body) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["fetch demo: reading", "fetch demo: error: the column 'y' is missing; set 'target'"]
    lines = log.read_text().splitlines()
    assert lines[0] == "fetch demo: reading" and lines[-1] == err[-1]
    assert "fetch demo: Traceback (most recent call last):" in lines
    assert all(ln.startswith("fetch demo: ") for ln in lines)
    assert runtime.failure_lines([log]) == [f"{err[-1]}  (log: {log})"]


def test_the_job_s_logging_is_undone_afterwards(tmp_path, job_env):
    logger, stderr = logging.getLogger("normlab"), sys.stderr
    before = (list(logger.handlers), logger.level, logger.propagate)
    assert run_job(tmp_path / "a.log", "select demo", lambda: 1 / 0) == 1
    assert run_job(tmp_path / "b.log", "select demo") == 0
    assert sys.stderr is stderr and (list(logger.handlers), logger.level, logger.propagate) == before
    assert "ZeroDivisionError" not in (tmp_path / "b.log").read_text()


def test_failure_lines_name_each_failed_job_s_error_and_log(tmp_path):
    killed, empty, missing = tmp_path / "killed.log", tmp_path / "empty.log", tmp_path / "missing.log"
    killed.write_text("train d/v: 1 CPU thread(s), XLA_FLAGS=...\ntrain d/v:   step 100/600\n")
    empty.write_text("")
    assert runtime.failure_lines([killed, empty, missing]) == [
        f"no error line; the log ends with: train d/v:   step 100/600  (log: {killed})",
        f"no output; see the error report above  (log: {empty})",
        f"no output; see the error report above  (log: {missing})",
    ]
