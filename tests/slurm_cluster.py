"""A one-node SLURM cluster on localhost for tests: munged, slurmctld and slurmd started as root from
Debian's packages (munge, slurm-wlm), with their key, config, state and logs in a temporary folder.

SLURM's job steps (the ``srun`` that snakemake-executor-plugin-slurm runs inside each batch job) read the
config from the default path only: the plugin removes SLURM_CONF from the step's environment. So
/etc/slurm/slurm.conf is made a symlink to the temporary config for the cluster's lifetime (refused if a
real config is there) and removed by ``stop``. Daemons are stopped by the PIDs they wrote.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
COMMANDS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scancel")


def missing_commands() -> list[str]:
    from shutil import which

    return [c for c in COMMANDS if which(c) is None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def total_memory_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    raise RuntimeError("no MemTotal in /proc/meminfo")


class OneNodeCluster:
    """``start()`` brings the cluster up (idle node, partition ``partition``); ``stop()`` ends every daemon
    it started and removes the config symlink. ``env`` is the environment for SLURM commands."""

    def __init__(self, root: Path, partition: str = "normlab"):
        self.root = Path(root)
        self.partition = partition
        self.node = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.pid_files = {name: self.root / f"{name}.pid" for name in ("munged", "slurmctld", "slurmd")}
        self.linked = False
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))

    def log_tail(self, chars: int = 3000) -> str:
        return "".join(f"\n--- {p.name}\n{p.read_text(errors='replace')[-chars:]}"
                       for p in sorted((self.root / "log").glob("*.log")))

    def _write_config(self) -> None:
        r = self.root
        # more CPUs and memory than the machine may have (slurmd accepts the configured node with
        # config_overrides, and nothing enforces them): the quick study's 8 train (or 4 analyze) jobs then
        # run as one wave, not four waves with a status poll between each; together they ask for more memory
        # (the rules' requests carry head room) than they use
        cpus = max(8, os.cpu_count() or 1)
        memory = max(32000, int(total_memory_mb() * 0.9))
        self.conf.write_text(f"""\
ClusterName=normlab
SlurmctldHost={self.node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
AuthInfo=socket={r}/munge.sock
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={self.pid_files['slurmctld']}
SlurmdPidFile={self.pid_files['slurmd']}
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
SlurmdParameters=config_overrides
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""")

    def _link_default_config(self) -> None:
        if DEFAULT_CONF.is_symlink() and not DEFAULT_CONF.exists():
            DEFAULT_CONF.unlink()  # left by a test run that was killed: its target is gone
        if DEFAULT_CONF.exists() or DEFAULT_CONF.is_symlink():
            raise RuntimeError(f"{DEFAULT_CONF} exists (a real SLURM installation?); refusing to replace it")
        DEFAULT_CONF.parent.mkdir(parents=True, exist_ok=True)
        DEFAULT_CONF.symlink_to(self.conf)
        self.linked = True

    def _run(self, *cmd: str) -> None:
        proc = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr}{self.log_tail()}")

    def start(self, timeout_s: float = 60) -> None:
        r = self.root
        for d in ("state", "spool", "log"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o700)
        self._run("mungekey", "--create", f"--keyfile={r}/munge.key")
        self._run("munged", "--force", f"--key-file={r}/munge.key", f"--socket={r}/munge.sock",
                  f"--pid-file={self.pid_files['munged']}", f"--log-file={r}/log/munged.log",
                  f"--seed-file={r}/munged.seed")
        self._write_config()
        self._link_default_config()
        self._run("slurmctld", "-i")  # -i: ignore (absent) saved state
        self._run("slurmd", "-N", self.node)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(["sinfo", "--noheader", "--format=%t"], env=self.env, capture_output=True,
                                 text=True, timeout=30, check=False).stdout.split()
            if out and all(s == "idle" for s in out):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the node did not become idle within {timeout_s} s{self.log_tail()}")

    def _pid(self, name: str) -> int | None:
        try:
            return int(self.pid_files[name].read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """SIGTERM to each daemon this cluster started (by its PID file), SIGKILL after 10 s; remove the
        config symlink."""
        subprocess.run(["scancel", "--full", f"--partition={self.partition}"], env=self.env, capture_output=True,
                       timeout=30, check=False)
        for name in ("slurmd", "slurmctld", "munged"):
            pid = self._pid(name)
            if pid is None:
                continue
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)
            else:
                os.kill(pid, signal.SIGKILL)
        if self.linked and DEFAULT_CONF.is_symlink():
            DEFAULT_CONF.unlink()
            self.linked = False
