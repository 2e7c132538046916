"""Running the ``snakemake`` command from tests: through the command, in a subprocess, as a user runs it (its
Python API would share this process's state, imports and working directory with the tests)."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def snakemake_exe() -> str:
    """The ``snakemake`` on PATH (the Makefile puts .venv/bin first), else the one beside this Python.
    A missing snakemake is an error, not a skip: the workflow tests must run."""
    exe = shutil.which("snakemake") or str(Path(sys.executable).parent / "snakemake")
    if not Path(exe).exists():
        raise RuntimeError("snakemake is not installed: run `make setup` (or `make test`)")
    return exe


def subprocess_env(jax_cache: Path) -> dict:
    """The environment for a snakemake subprocess: snakemake's folder first on PATH, and a JAX compilation
    cache at ``jax_cache``, isolated from the user's."""
    env = os.environ.copy()
    env["PATH"] = f"{Path(snakemake_exe()).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NORMLAB_JAX_CACHE"] = str(jax_cache)
    return env
