"""The job-level helpers of normlab.runtime: the test hooks behave as their docstrings say."""

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
