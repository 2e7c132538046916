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
