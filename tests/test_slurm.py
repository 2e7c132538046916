"""The quick study on a real SLURM scheduler: a one-node cluster on localhost (tests/slurm_cluster.py), the
workflow run through ``snakemake --profile workflow/profiles/slurm`` (snakemake-executor-plugin-slurm,
pinned in requirements.lock), every job an sbatch job.

Checked: the run completes within a hard limit (SIGKILL: a status loop that hangs ignores SIGTERM); one
job made to fail on its first attempt (the fault ``NORMLAB_FAULT=fail_once:select:<marker>``, see
normlab.runtime, which reaches the batch jobs through the environment) is retried and the study still
completes; every rule ran as a SLURM job; the tables, arrays and checkpoints are bitwise equal to the local
run of the same study (the ``quick`` fixture) and so is the report, apart from its wall-time table and
config echo. The cluster has no accounting database, so job status comes from squeue
(``--slurm-status-command squeue --slurm-no-account``).

Run alone with ``pytest -m slurm``. Needs root and Debian's slurm-wlm and munge (``make test`` installs them).
"""

import os
import re
import signal
import subprocess
import time

import pytest
import yaml
from conftest import QUICK, copy_workflow, say, study_folders
from slurm_cluster import OneNodeCluster, missing_commands
from snakemake_cli import snakemake_exe, subprocess_env
from test_reruns import outputs

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

HARD_LIMIT_S = 1200
# one batch job per rule, or per group of the slurm profile (fetch+preprocess, tables+report)
BATCH_JOBS = ("group_prepare_fetch_preprocess", "rule_train", "rule_select", "rule_analyze", "rule_analyze_input_bn",
              "group_summarize_report_tables")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, pytestconfig):
    if os.geteuid() != 0:
        pytest.skip("the one-node SLURM cluster runs its daemons as root")
    missing = missing_commands()
    if missing:
        pytest.fail(f"missing SLURM/munge commands {missing}: run `bash tests/system_deps.sh` as root")
    c = OneNodeCluster(tmp_path_factory.mktemp("slurm"))
    try:
        start = time.perf_counter()
        c.start()
        say(pytestconfig, f"[slurm] one-node cluster up (munged, slurmctld, slurmd; node idle) in "
                          f"{time.perf_counter() - start:.2f} s")
        yield c
    finally:
        c.stop()


def report_without_run_details(html: str) -> str:
    """The report minus what differs between two runs of the same study: the wall-time table and the
    config echo (this run's config adds the partition)."""
    return re.sub(r"<h3>Wall time per rule.*?</pre>", "", html, flags=re.S)


def run_killable(cmd, cwd, env, limit_s):
    """Run ``cmd`` in its own process group; SIGKILL the group after ``limit_s`` seconds."""
    with open(cwd / "snakemake.out", "w") as out:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=limit_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc = None
    return rc, (cwd / "snakemake.out").read_text()


def test_quick_study_on_slurm_retries_a_failed_job_and_matches_the_local_run(quick, cluster, tmp_path,
                                                                             pytestconfig):
    local_root, _, _ = quick
    root = tmp_path / "run"
    root.mkdir()
    copy_workflow(root)
    marker = root / "fail-once.marker"
    (root / "config" / "slurm-test.yaml").write_text(yaml.safe_dump({
        "resources": {"slurm_partition": cluster.partition},
    }))
    # The plugin polls job status init, 2 init + 10, 3 init + 30, ... s after the last finished job: with
    # init = 2, at 2, 14, 36, 68 s, so that a short single or grouped job (queueing, then snakemake starting
    # twice in the job) is seen at the second poll and a wave of train or analyze jobs at the third (init = 20
    # would add about 70 s to the test). --jobs above the quick study's 10 train jobs: one wave sends them all.
    cmd = [snakemake_exe(), "--profile", "workflow/profiles/slurm",
           "--configfile", "config/quick.yaml", "config/slurm-test.yaml",
           "--jobs", "16", "--retries", "1",
           "--slurm-status-command", "squeue", "--slurm-no-account",
           "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs"]
    # the local run's compile cache, as a shared filesystem gives every node: jobs skip XLA compilation.
    # The fault travels as the compile cache's variable does: the plugin submits with sbatch --export=ALL,
    # and the job step (srun, snakemake, the script) inherits the batch job's environment.
    env = dict(subprocess_env(local_root / "jax-cache"), SLURM_CONF=str(cluster.conf),
               NORMLAB_FAULT=f"fail_once:select:{marker}")
    start = time.perf_counter()
    rc, out = run_killable(cmd, root, env, HARD_LIMIT_S)
    wall = time.perf_counter() - start
    if rc != 0:
        logs = "".join(f"\n--- {p}\n{p.read_text(errors='replace')[-2000:]}"
                       for p in sorted((root / ".snakemake" / "slurm_logs").rglob("*.log")))
        what = "killed after the hard limit" if rc is None else f"exit status {rc}"
        pytest.fail(f"snakemake on SLURM: {what} ({wall:.0f} s)\n{out[-6000:]}{logs[-8000:]}{cluster.log_tail()}")
    say(pytestconfig, f"[slurm] quick study through the SLURM executor: {wall:.1f} s")

    # the select job failed once, on purpose, and its retry completed the study
    assert marker.exists()
    assert "failing on purpose, once" in out
    assert re.search(r"Trying to restart job|attempt 2", out), out[-4000:]

    # every rule ran as a SLURM batch job (the plugin keeps one log per job under .snakemake/slurm_logs)
    slurm_logs = root / ".snakemake" / "slurm_logs"
    assert sorted(p.name for p in slurm_logs.iterdir()) == sorted(BATCH_JOBS)

    # data/quick/raw, data/quick/processed, results/quick/: all but the report and benchmarks
    local, remote = outputs(local_root), outputs(root)
    assert sorted(remote) == sorted(local)
    assert [k for k in local if local[k] != remote[k]] == []
    html_local = study_folders(local_root, QUICK).report.read_text()
    html_remote = study_folders(root, QUICK).report.read_text()
    assert report_without_run_details(html_remote) == report_without_run_details(html_local)
