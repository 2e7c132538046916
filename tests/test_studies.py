"""What a rerun redoes after the config changes, and studies side by side, on copies of the finished quick study
(the session's ``quick`` fixture; copies keep the files' modification times, which Snakemake compares).

* Each job's params are only the settings it reads, so a changed setting reruns only the jobs that read it:
  a changed analysis setting (``analysis.curvature.lanczos_steps``) plans no train or select job, only
  analyze and the study-wide tables and report; an added depth plans train jobs for the new variants only
  (checked on the job list of ``snakemake --dry-run``, exactly), and each rerun job's header names the changed
  setting; the order of the keys in the config file is not a setting (no job reruns when it changes).
* A second study (a config with another ``study``; here none, so the default name ``default``) run in the same
  folder writes only under its own folders and leaves every file of the quick study as it was (bytes and
  modification times); afterwards neither study plans any job.
"""

import copy
import shutil
from collections import Counter
from pathlib import Path

import pytest
from conftest import QUICK, study_folders
from test_reruns import TINY, dry_run_jobs, snakemake, tiny_config, tiny_csv, write_config

from normlab.variants import variant_grid

pytestmark = pytest.mark.workflow

TOPS = ("data", "results", "reports", "logs", "benchmarks")


def copy_run(src: Path, dest: Path) -> Path:
    shutil.copytree(src, dest, symlinks=True)  # copy2 keeps the modification times Snakemake compares
    return dest


def planned(root: Path, config: dict, name: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run with ``config`` (written to config/<name>) plans."""
    proc = snakemake(root, root / "jax-cache", "--configfile", write_config(root, config, name), "--dry-run")
    return dry_run_jobs(proc.stdout)


def study_files(root: Path, study: str) -> dict[str, tuple[bytes, int]]:
    """Every file of the study in ``root`` (data, results, reports, logs, benchmarks): bytes, mtime (ns)."""
    files = {}
    for top in TOPS:
        for p in sorted(getattr(study_folders(root, study), top).rglob("*")):
            if p.is_file():
                files[str(p.relative_to(root))] = (p.read_bytes(), p.stat().st_mtime_ns)
    return files


@pytest.fixture(scope="module")
def quick_copy(quick, tmp_path_factory):
    """A copy of the finished quick study, for dry runs only: (folder, its config)."""
    root, config, _ = quick
    return copy_run(root, tmp_path_factory.mktemp("quick-copy") / "run"), config


def reversed_keys(value):
    """``value`` with the keys of every mapping in it in reverse order."""
    if isinstance(value, dict):
        return {k: reversed_keys(value[k]) for k in reversed(list(value))}
    return value


def _grid(config):
    v = config["variants"]
    return variant_grid(v["inputs"], v["norms"], v["depths"], v.get("batchnorm_input_norms", ["none"]))


def test_the_order_of_the_config_keys_reruns_nothing(quick_copy):
    root, config = quick_copy
    assert planned(root, config, "quick-same.yaml") == []
    assert list(reversed_keys(config)) != list(config)
    assert planned(root, reversed_keys(config), "quick-reversed.yaml") == []


def test_an_analysis_setting_reruns_no_train_or_select_job(quick_copy):
    root, config = quick_copy
    edited = copy.deepcopy(config)
    steps = edited["analysis"]["curvature"]["lanczos_steps"]
    edited["analysis"]["curvature"]["lanczos_steps"] = steps + 1
    proc = snakemake(root, root / "jax-cache", "--configfile", write_config(root, edited, "quick-lanczos.yaml"),
                     "--dry-run")
    jobs = dry_run_jobs(proc.stdout)
    grid = _grid(config)
    n_ds = len(config["datasets"])
    networks = n_ds * len({(v.norm, v.depth) for v in grid if v.input != "batchnorm"})
    input_bn = n_ds * sum(v.input == "batchnorm" for v in grid)
    assert networks and input_bn  # the quick study has both kinds of analyze job
    # one analyze job per network (and one per network with batch norm on its inputs, whose message names the
    # variant: "analyze <dataset>/batchnorm-<norm>-d<depth>") reads the setting; the tables and the report follow
    # from their outputs
    kinds = Counter("analyze_input_bn" if rule == "analyze" and w.count("-") == 2 else rule for rule, w in jobs)
    assert kinds == {"analyze": networks, "analyze_input_bn": input_bn, "tables": 1, "report": 1, "all": 1}, jobs
    networks += input_bn
    # each analyze job's header says which setting changed, in one short line (normlab.terminal)
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("Reason: ")]
    changed = f"Reason: Params have changed since last execution: curvature.lanczos_steps: {steps} -> {steps + 1}"
    assert reasons.count(changed) == networks, reasons
    assert max(len(line) for line in proc.stdout.splitlines()) <= 300, proc.stdout


def test_an_added_depth_trains_only_the_new_variants(quick_copy):
    root, config = quick_copy
    edited = copy.deepcopy(config)
    v = edited["variants"]
    new_depth = max(v["depths"]) + 1
    v["depths"] = [*v["depths"], new_depth]
    jobs = planned(root, edited, "quick-depth.yaml")
    trains = sorted(w for rule, w in jobs if rule == "train")
    new = [x.name for x in _grid(edited) if x.depth == new_depth]
    assert len(new) == 2 * 3 + 1  # raw and standardized x 3 norms, and batch norm on the inputs without a norm
    assert trains == sorted(f"dataset={ds}, variant={name}" for ds in config["datasets"] for name in new), jobs
    # the data are as they were; select (and the analyze jobs after it) may rerun: variants.csv gains rows
    assert not {rule for rule, _ in jobs} & {"fetch", "preprocess"}, jobs
    assert sorted(w for rule, w in jobs if rule == "select") == [f"dataset={ds}" for ds in sorted(config["datasets"])]


def test_a_second_study_leaves_the_first_untouched_and_neither_reruns(quick, tmp_path):
    root = copy_run(quick[0], tmp_path / "two-studies")
    before = study_files(root, QUICK)
    assert any(k.startswith(f"results/{QUICK}/tables/") for k in before)
    tiny_csv(root / "tiny.csv")
    other = tiny_config({"tiny": TINY})
    del other["study"]  # a config without `study`: the default name
    other_cfg = write_config(root, other, "other.yaml")
    snakemake(root, root / "jax-cache", "--configfile", other_cfg)
    default = study_folders(root, "default")
    assert default.report.is_file() and (default.tables / "runs.csv").is_file()
    for top in TOPS:
        assert sorted(p.name for p in (root / top).iterdir() if p.name != "cache") == ["default", QUICK], top
    changed = [k for k, v in study_files(root, QUICK).items() if before.get(k) != v]
    assert changed == [] and sorted(study_files(root, QUICK)) == sorted(before), changed
    for cfg in ("config/quick.yaml", other_cfg):
        proc = snakemake(root, root / "jax-cache", "--configfile", cfg, "--dry-run")
        assert dry_run_jobs(proc.stdout) == [] and "Nothing to be done" in proc.stdout + proc.stderr, proc.stdout
