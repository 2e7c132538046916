"""Shared fixtures. ``quick`` runs the quick DAG once per test session; tests/test_workflow.py checks what it
wrote, tests/test_browser.py opens its report and tests/test_studies.py reruns copies of it.

A study writes under its own folders (config key ``study``): data/<study>/, results/<study>/,
reports/<study>/, logs/<study>/, benchmarks/<study>/ (``study_folders``)."""

import os
import shutil
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from snakemake_cli import snakemake_exe, subprocess_env

import normlab  # noqa: F401  (enables float64 in JAX before any test builds arrays)

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800
QUICK = "quick"  # config/quick.yaml's study


def study_folders(root: Path, study: str) -> SimpleNamespace:
    """The folders a study writes in the run folder ``root``, and its report and tables folder."""
    f = SimpleNamespace(**{top: root / top / study for top in ("data", "results", "reports", "logs", "benchmarks")})
    f.tables, f.report = f.results / "tables", f.reports / "report.html"
    return f


def copy_workflow(dest: Path) -> None:
    for d in ("workflow", "scripts", "config"):
        shutil.copytree(REPO / d, dest / d, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))


def say(pytestconfig, msg: str) -> None:
    """Print past pytest's output capture (the wall time is wanted in every run's output)."""
    capman = pytestconfig.pluginmanager.getplugin("capturemanager")
    if capman is None:
        print(msg, flush=True)
        return
    with capman.global_and_fixture_disabled():
        print(f"\n{msg}", flush=True)


@pytest.fixture(scope="session")
def quick(tmp_path_factory, pytestconfig):
    """Run the quick DAG once; returns (root folder, config dict, wall seconds)."""
    root = tmp_path_factory.mktemp("quick")
    copy_workflow(root)
    cmd = [snakemake_exe(), "--cores", "2", "--configfile", "config/quick.yaml"]
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=subprocess_env(root / "jax-cache"), capture_output=True, text=True,
                          timeout=TIMEOUT_S, check=False)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        logs = "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((root / "logs").rglob("*.log")))
        pytest.fail(f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}{logs}")
    say(pytestconfig, f"[workflow] quick DAG wall time: {wall:.1f} s with --cores 2 (goal <= 90 s on 2 idle cores; "
                      f"1-min load average now {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs)")
    config = yaml.safe_load((root / "config" / "quick.yaml").read_text())
    assert config["study"] == QUICK
    return root, config, wall
