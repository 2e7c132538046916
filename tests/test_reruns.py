"""Reruns through the ``snakemake`` command (subprocess), on a tiny study (named ``tiny-study``: its files are
in data/tiny-study/, results/tiny-study/, ...): one CSV dataset, one variant (standardize-batchnorm-d1),
2 learning rates, 1 seed, 20 steps.

* adding a dataset to the config and rerunning executes only the new dataset's jobs (plus the study-wide
  tables and report): checked on the dry-run job list, then by running it (a regression dataset with a
  categorical column and missing values) and finding the first dataset's files untouched;
* two runs from scratch with the same config, in two folders, write bitwise-identical tables and arrays
  (same machine): the interrupted-then-rerun study below is compared file by file with the first run;
* Ctrl-C (SIGINT to Snakemake and its jobs) in the middle of the train job (held after writing two of its
  five outputs by the fault ``$NORMLAB_FAULT`` injects: ``hold:train:sweep.npz:<hold file>``, see
  normlab.runtime), then a rerun, completes;
  so does a kill -9 of everything at the same point followed by ``snakemake --unlock`` and a rerun, which
  must redo the partial job rather than trust the two outputs it left.
  Between the attempts no output is truncated; at the end no temporary file is left and every output is
  bitwise identical to the uninterrupted run's (nothing stale).

The tiny dataset also carries HTML in its column and target names and a constant column: the report must
escape the names, and no NaN/inf may appear in the processed data or the layer-input tables.

Helpers here are also used by test_bad_input.py.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import study_folders
from snakemake_cli import snakemake_exe, subprocess_env

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 1800
VARIANT = "standardize-batchnorm-d1"
TINY_STUDY = "tiny-study"
HTML_TARGET = "<b>label</b>"
HTML_COLUMN = "<script>alert(1)</script>"




def new_workdir(root: Path) -> Path:
    """A folder with copies of workflow/, scripts/ and config/ (the repository's, as they are now)."""
    root.mkdir(parents=True, exist_ok=True)
    for d in ("workflow", "scripts", "config"):
        shutil.copytree(REPO / d, root / d, ignore=shutil.ignore_patterns("__pycache__", ".snakemake"))
    return root


def tiny_config(datasets: dict, study: str = TINY_STUDY, **sweep) -> dict:
    """A tiny study named ``study`` on ``datasets``: the quick config's analysis settings (kept in step with
    the schema by whoever changes it), one variant, 2 LRs, 1 seed, 20 steps, 64 rows evaluated."""
    quick = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())
    analysis = dict(quick.get("analysis", {}), max_examples=64)
    return {
        "study": study,
        "datasets": datasets,
        "split": {"test_fraction": 0.25, "seed": 0},
        "variants": {"inputs": ["standardize"], "norms": ["batchnorm"], "depths": [1], "width": 8},
        "sweep": {"lr_min": 0.01, "lr_max": 0.1, "n_lr": 2, "seeds": [0], "steps": 20, "batch_size": 16,
                  "log_every": 10, "eval_examples": 64, "target_loss": 0.3, **sweep},
        "analysis": analysis,
        "report": {"title": "tiny <i>study</i>"},
    }


def write_config(root: Path, config: dict, name: str = "tiny.yaml") -> str:
    (root / "config" / name).write_text(yaml.safe_dump(config, sort_keys=False))
    return f"config/{name}"


def tiny_csv(path: Path, n: int = 96) -> None:
    """The lecture's problem in a CSV: features on scales 100:1, a constant column, HTML in names."""
    rng = np.random.default_rng(0)
    x1, x2 = rng.normal(0.0, 100.0, n), rng.normal(0.0, 1.0, n)
    df = pd.DataFrame({"x1": x1, HTML_COLUMN: x2, "const": 7.0,
                       HTML_TARGET: np.where(x1 / 100.0 + x2 > 0, "yes", "no")})
    df.to_csv(path, index=False)


def regression_csv(path: Path, n: int = 96) -> None:
    """A numeric target, a categorical column and a missing value in each feature kind."""
    rng = np.random.default_rng(1)
    x1, x2 = rng.normal(0.0, 10.0, n), rng.normal(0.0, 1.0, n)
    colour = np.array(["red", "green", "blue"], dtype=object)[rng.integers(0, 3, n)]
    y = 50.0 + 3.0 * x1 + 20.0 * x2 + 10.0 * (colour == "red") + rng.normal(0.0, 1.0, n)
    colour[4] = None
    x2[7] = np.nan
    pd.DataFrame({"x1": x1, "x2": x2, "colour": colour, "price": y}).to_csv(path, index=False)


TINY = {"csv": "tiny.csv", "target": HTML_TARGET}
REGRESSION = {"csv": "prices.csv", "target": "price", "task": "regression", "categorical": ["colour"],
              "impute": "mean"}


def logs_text(root: Path) -> str:
    return "".join(f"\n--- {p}\n{p.read_text()[-3000:]}" for p in sorted((root / "logs").rglob("*.log")))


def snakemake(root: Path, jax_cache: Path, *args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([snakemake_exe(), "--cores", "2", *args], cwd=root, env=subprocess_env(jax_cache),
                          capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n"
                    f"{proc.stderr[-8000:]}{logs_text(root)}")
    return proc


def outputs(root: Path) -> dict[str, bytes]:
    """Every deterministic output of every study in ``root``: data/<study>/ (raw, processed) and
    results/<study>/ (tables, arrays, checkpoints); not the shared downloads (data/cache/). The report and the
    benchmark files hold wall times, so they are left out."""
    files = {}
    for top in ("data", "results"):
        for p in sorted((root / top).rglob("*")):
            key = str(p.relative_to(root))
            if p.is_file() and not key.startswith("data/cache/"):
                files[key] = p.read_bytes()
    return files


def temp_files(root: Path) -> list[str]:
    """Leftovers of the atomic writes (``.<name>.<random>.tmp<suffixes>``)."""
    return sorted(str(p.relative_to(root)) for top in ("data", "results", "reports")
                  for p in (root / top).rglob(".*.tmp*") if p.is_file())


# the wildcards of each rule's one-line job message ("train <dataset>/<variant>", workflow/rules/*.smk)
MESSAGE_WILDCARDS = {"fetch": ("dataset",), "preprocess": ("dataset",), "select": ("dataset",),
                     "train": ("dataset", "variant"), "analyze": ("dataset", "arch"), "tables": (), "report": ()}


def dry_run_jobs(stdout: str) -> list[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run lists: a rule with a message prints ``Job <id>: <message>``
    (its wildcards read back from the message), one without prints ``rule <name>:`` and its wildcards."""
    jobs, rule = [], None
    for line in stdout.splitlines():
        m = re.match(r"^Job \d+: (\w+)(?: (\S+))?$", line)
        if m and m.group(1) in MESSAGE_WILDCARDS:
            if rule is not None:
                jobs.append((rule, ""))
                rule = None
            names, values = MESSAGE_WILDCARDS[m.group(1)], (m.group(2) or "").split("/") if m.group(2) else []
            assert len(names) == len(values), line
            jobs.append((m.group(1), ", ".join(f"{k}={v}" for k, v in zip(names, values, strict=True))))
            continue
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            if rule is not None:
                jobs.append((rule, ""))
            rule = m.group(1)
            continue
        m = re.match(r"^\s+wildcards: (.*)$", line)
        if m and rule is not None:
            jobs.append((rule, m.group(1)))
            rule = None
    if rule is not None:
        jobs.append((rule, ""))
    return jobs


@pytest.fixture(scope="module")
def jax_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("jax-cache")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, jax_cache):
    """The tiny study run once from scratch: (folder, config path, its outputs)."""
    root = new_workdir(tmp_path_factory.mktemp("run1"))
    tiny_csv(root / "tiny.csv")
    cfg = write_config(root, tiny_config({"tiny": TINY}))
    snakemake(root, jax_cache, "--configfile", cfg)
    return root, cfg, outputs(root)


def test_outputs_are_complete_escaped_and_finite(first_run):
    root, _, files = first_run
    study = study_folders(root, TINY_STUDY)
    tables = sorted(p.name for p in study.tables.glob("*.csv"))
    assert {"runs.csv", "variants.csv", "training.csv", "layer_inputs.csv", "gradients.csv"} <= set(tables)
    assert temp_files(root) == []
    # HTML in the target and column names: kept in the data, escaped in the report
    raw = pd.read_csv(study.data / "raw" / "tiny.csv")
    assert list(raw.columns) == ["x1", HTML_COLUMN, "const", HTML_TARGET]
    with np.load(study.data / "processed" / "tiny" / "standardize.npz") as f:
        assert f["feature_names"].tolist() == ["x1", HTML_COLUMN, "const"]
        assert all(np.isfinite(f[k]).all() for k in ("X_train", "X_test", "input_mean", "input_scale"))
        assert np.all(f["X_train"][:, 2] == 0.0)  # the constant column: centred, scale 1
    html = study.report.read_text()
    for text in (HTML_TARGET, HTML_COLUMN, "<i>study</i>"):
        assert text not in html
    assert "&lt;b&gt;label&lt;/b&gt;" in html and "tiny &lt;i&gt;study&lt;/i&gt;" in html
    # the constant column (a dead input unit once standardized) puts no NaN/inf into the layer-input table
    li = pd.read_csv(study.tables / "layer_inputs.csv")
    assert len(li) and np.isfinite(li["value"].astype(float)).all()
    runs = pd.read_csv(study.tables / "runs.csv")
    assert np.isfinite(runs["final_train_loss"]).all() and not runs["diverged"].any()


def test_adding_a_dataset_runs_only_its_jobs(first_run, tmp_path, jax_cache):
    root0, cfg_name, files1 = first_run
    root = tmp_path / "added"
    shutil.copytree(root0, root, symlinks=True)  # copy2 keeps the modification times Snakemake compares
    study = study_folders(root, TINY_STUDY)
    regression_csv(root / "prices.csv")
    cfg = write_config(root, tiny_config({"tiny": TINY, "prices": REGRESSION}), "tiny.yaml")
    assert cfg == cfg_name
    dry = snakemake(root, jax_cache, "--configfile", cfg, "--dry-run")
    jobs = dry_run_jobs(dry.stdout)
    per_dataset = sorted(j for j in jobs if j[1])
    assert per_dataset == sorted([
        ("fetch", "dataset=prices"), ("preprocess", "dataset=prices"),
        ("train", f"dataset=prices, variant={VARIANT}"), ("select", "dataset=prices"),
        ("analyze", f"dataset=prices, arch={VARIANT.split('-', 1)[1]}"),
    ]), dry.stdout
    assert sorted(r for r, w in jobs if not w) == ["all", "report", "tables"]
    # run it: the regression dataset goes through every step; the first dataset's files are untouched
    mtimes = {k: (root / k).stat().st_mtime_ns for k in files1}
    snakemake(root, jax_cache, "--configfile", cfg)
    for k, data in files1.items():
        if k.startswith(f"results/{TINY_STUDY}/tables/"):
            continue  # the study-wide tables gain the new dataset's rows
        assert (root / k).read_bytes() == data, k
        assert (root / k).stat().st_mtime_ns == mtimes[k], k
    runs = pd.read_csv(study.tables / "runs.csv")
    reg = runs[runs["dataset"] == "prices"]
    assert len(reg) == 2 and reg["test_accuracy"].isna().all() and np.isfinite(reg["test_loss"]).all()
    old = runs[runs["dataset"] == "tiny"].reset_index(drop=True)
    pd.testing.assert_frame_equal(old, pd.read_csv(study_folders(root0, TINY_STUDY).tables / "runs.csv"))
    model = json.loads((study.results / "prices" / VARIANT / "model.json").read_text())
    assert model["loss"] == "mse" and model["sizes"] == [5, 8, 1]  # x1, x2, colour=blue/green/red -> 1 output
    for table in ("layer_inputs", "gradients", "training"):
        t = pd.read_csv(study.tables / f"{table}.csv")
        assert (t["dataset"] == "prices").any(), table
    curvature = study.tables / "curvature.csv"
    if curvature.exists():
        c = pd.read_csv(curvature)
        assert (c["dataset"] == "prices").any()
    html = study.report.read_text()
    assert "Dataset: prices" in html and "Dataset: tiny" in html
    # a third run has nothing left to do ...
    again = snakemake(root, jax_cache, "--configfile", cfg, "--dry-run")
    assert dry_run_jobs(again.stdout) == [], again.stdout
    # ... until a dataset's CSV file changes: then that dataset's jobs rerun, and only those
    regression_csv(root / "prices.csv", n=100)
    edited = snakemake(root, jax_cache, "--configfile", cfg, "--dry-run")
    assert sorted(w for _, w in dry_run_jobs(edited.stdout) if w) == sorted([
        "dataset=prices", "dataset=prices", f"dataset=prices, variant={VARIANT}", "dataset=prices",
        f"dataset=prices, arch={VARIANT.split('-', 1)[1]}"]), edited.stdout


def wait_for_hold(proc: subprocess.Popen, root: Path, timeout: float = 600) -> None:
    """Until the train job is held (``$NORMLAB_FAULT``, see ``hold_env``): it has trained and written two of
    its five outputs, and waits while the hold file exists. Interrupting it there is not a race."""
    log = study_folders(root, TINY_STUDY).logs / "train" / "tiny" / f"{VARIANT}.log"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended ({proc.returncode}) before training was held:{logs_text(root)}")
        if log.exists() and "holding:" in log.read_text():
            return
        time.sleep(0.05)
    pytest.fail("training was not held in time")


def hold_env(jax_cache: Path, hold: Path) -> dict:
    """The environment of a Snakemake whose train job waits, once it has written sweep.npz (its second
    output), while the file ``hold`` exists; Snakemake passes the variable on to its jobs."""
    return dict(subprocess_env(jax_cache), NORMLAB_FAULT=f"hold:train:sweep.npz:{hold}")


def start(root: Path, env: dict, cfg: str) -> subprocess.Popen:
    """Snakemake in its own process group (as a terminal's foreground job), output to a file.

    A shell's background job starts with SIGINT ignored and children inherit that, so pytest run that way
    would start a Snakemake that no Ctrl-C reaches. While starting it, SIGINT gets a handler here: a
    handled signal is reset to its default in the child at exec (no preexec_fn, which forks a threaded
    process)."""
    out = open(root / "snakemake.out", "a")  # noqa: SIM115
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen([snakemake_exe(), "--cores", "2", "--configfile", cfg], cwd=root,
                                env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    finally:
        signal.signal(signal.SIGINT, previous)


def assert_nothing_truncated(root: Path) -> None:
    """Every file under a final name is whole: npz files load, CSV and JSON files parse."""
    for p in (root / "data").rglob("*"):
        if p.is_file() and not p.name.startswith(".") and "cache" not in p.parts:
            if p.suffix == ".npz":
                with np.load(p) as f:
                    [f[k] for k in f.files]
            elif p.suffix == ".csv":
                pd.read_csv(p)
    for p in (root / "results").rglob("*"):
        if p.is_file() and p.suffix == ".npz":
            with np.load(p) as f:
                [f[k] for k in f.files]
        elif p.is_file() and p.suffix == ".csv":
            pd.read_csv(p)


def test_killed_in_training_then_rerun_completes_with_nothing_stale(first_run, tmp_path, jax_cache):
    _, _, files1 = first_run
    root = new_workdir(tmp_path / "killed")
    tiny_csv(root / "tiny.csv")
    hold = root / "hold-train"
    hold.write_text("the train job waits while this file exists\n")
    cfg = write_config(root, tiny_config({"tiny": TINY}))
    study = study_folders(root, TINY_STUDY)
    out_dir = study.results / "tiny" / VARIANT
    written_first, written_last = out_dir / "sweep.npz", out_dir / "runs.csv"

    # 1. Ctrl-C: SIGINT to Snakemake and its jobs, while the train job has written two of its outputs
    proc = start(root, hold_env(jax_cache, hold), cfg)
    wait_for_hold(proc, root)
    assert written_first.exists() and not written_last.exists()
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(300) != 0
    assert not written_last.exists()
    assert_nothing_truncated(root)

    # 2. the rerun is killed too, harder: kill -9 of Snakemake and its jobs, held at the same point
    (study.logs / "train" / "tiny" / f"{VARIANT}.log").unlink()
    proc = start(root, hold_env(jax_cache, hold), cfg)
    wait_for_hold(proc, root)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert written_first.exists() and not written_last.exists()  # a partial job's outputs are left behind
    assert_nothing_truncated(root)
    hold.unlink()

    # 3. after a kill -9 Snakemake's lock remains: --unlock (as its message says), then the rerun completes
    locked = snakemake(root, jax_cache, "--configfile", cfg, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(root, jax_cache, "--configfile", cfg, "--unlock")
    snakemake(root, jax_cache, "--configfile", cfg)
    assert temp_files(root) == []
    files = outputs(root)
    assert sorted(files) == sorted(files1)
    assert [k for k in files1 if files[k] != files1[k]] == []
    assert study.report.exists()
    # Snakemake's record of incomplete jobs is empty again
    incomplete = root / ".snakemake" / "incomplete"
    assert not incomplete.exists() or [p for p in incomplete.rglob("*") if p.is_file()] == []
