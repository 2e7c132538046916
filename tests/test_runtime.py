"""The job-level helpers of normlab.runtime: the test hooks behave as their docstrings say."""

import os
import subprocess
import sys
import threading
import time

import pytest

from normlab import runtime


def test_fail_once_fails_on_the_first_call_only(tmp_path):
    marker = tmp_path / "sub" / "failed-once"
    with pytest.raises(RuntimeError, match="once"):
        runtime.fail_once(str(marker))
    assert marker.exists()
    runtime.fail_once(str(marker))  # the retry passes
    runtime.fail_once("")  # disabled


def test_hold_waits_until_the_file_is_removed(tmp_path, capsys):
    hold = tmp_path / "hold"
    hold.write_text("")
    threading.Timer(0.4, hold.unlink).start()
    t0 = time.monotonic()
    runtime.hold_while_exists(str(hold), poll_s=0.01)
    waited = time.monotonic() - t0
    assert 0.35 < waited < 5.0
    assert "holding:" in capsys.readouterr().err
    t0 = time.monotonic()
    runtime.hold_while_exists(str(hold))  # no file: no wait
    runtime.hold_while_exists("")
    assert time.monotonic() - t0 < 0.1


def test_a_hold_left_in_place_ends_in_an_error_that_names_the_file(tmp_path):
    hold = tmp_path / "forgotten"
    hold.write_text("")
    with pytest.raises(RuntimeError, match="forgotten"):
        runtime.hold_while_exists(str(hold), poll_s=0.01, timeout_s=0.05)


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
    assert log.read_text() == ""
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
