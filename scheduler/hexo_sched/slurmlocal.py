"""A one-host Slurm cluster in a directory: munged, slurmctld and slurmd on loopback with a
generated slurm.conf whose one node is the hexo cluster (slurm.Node), for the tests and
`make slurm-demo`. Needs root and Debian's slurmctld, slurmd, slurm-client and munge; no
accounting database (finished jobs stay in `scontrol show job` for MinJobAge).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from .slurm import PARTITION, Node, SlurmError

DAEMONS = {"munged": "/usr/sbin/munged", "slurmctld": "/usr/sbin/slurmctld",
           "slurmd": "/usr/sbin/slurmd"}
CLIENTS = ("sbatch", "scontrol", "scancel", "squeue", "sinfo")


def missing() -> str | None:
    """Why a local Slurm cannot run here, or None."""
    absent = [n for n, p in DAEMONS.items() if not os.path.exists(p)]
    absent += [c for c in CLIENTS if not shutil.which(c)]
    if absent:
        return f"{', '.join(absent)} not installed (Debian: slurmctld slurmd slurm-client munge)"
    if os.geteuid() != 0:
        return "a local Slurm runs its daemons as root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalSlurm:
    def __init__(self, directory: Path, node: Node, partition: str = PARTITION,
                 kill_wait_s: int = 30, job_env: dict[str, str] | None = None):
        """`job_env`: added to the environment of Slurm's clients, and so of the jobs."""
        self.dir = Path(directory).resolve()
        self.node, self.partition, self.kill_wait_s = node, partition, kill_wait_s
        self.job_env = dict(job_env or {})
        self.conf = self.dir / "slurm.conf"
        self.munge_socket = self.dir / "munge" / "munge.socket"
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """The environment for Slurm's clients (and, through sbatch, for the jobs)."""
        return {**os.environ, **self.job_env, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        d = self.dir
        host = socket.gethostname().split(".")[0]
        lines = [
            "ClusterName=hexo", f"SlurmctldHost={host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}", f"SlurmdPort={_free_port()}",
            "SlurmUser=root", "SlurmdUser=root",
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            f"StateSaveLocation={d / 'ctld'}", f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}", f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}", f"SlurmdLogFile={d / 'slurmd.log'}",
            "ProctrackType=proctrack/pgid", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/backfill", "SlurmdParameters=config_overrides",
            "ReturnToService=2", f"KillWait={self.kill_wait_s}", "MinJobAge=3600",
            "SchedulerParameters=sched_interval=1", "JobCompType=jobcomp/none",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none", "SwitchType=switch/none",
            *self.node.lines(self.partition, "127.0.0.1")]
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 60.0) -> None:
        for sub in ("ctld", "spool", "munge"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir / "munge", 0o700)
        key = self.dir / "munge" / "munge.key"
        if not key.exists():
            key.write_bytes(secrets.token_bytes(1024))
            os.chmod(key, 0o400)
        self.write_config()
        self._spawn("munged", [DAEMONS["munged"], "--foreground", "--force",
                               f"--socket={self.munge_socket}", f"--key-file={key}",
                               f"--pid-file={self.dir / 'munge' / 'munged.pid'}",
                               f"--log-file={self.dir / 'munge' / 'munged.log'}",
                               f"--seed-file={self.dir / 'munge' / 'munged.seed'}"])
        self._wait(lambda: self.munge_socket.exists(), timeout, "munged")
        self._spawn("slurmctld", [DAEMONS["slurmctld"], "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", [DAEMONS["slurmd"], "-D", "-N", self.node.name, "-f",
                               str(self.conf)])
        self._wait(lambda: self.node_state().split("+")[0] in ("IDLE", "MIXED", "ALLOCATED"),
                   timeout, "the node to come up")

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.dir / f"{name}.out", "a")
        self.procs[name] = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                                            env=self.env, start_new_session=True)

    def _wait(self, ready, timeout: float, what: str) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise SlurmError(f"{name} exited with status {p.returncode}: "
                                     + self.log_tail(name))
            try:
                if ready():
                    return
            except SlurmError:
                pass
            time.sleep(0.2)
        raise SlurmError(f"timed out waiting for {what}: " + self.log_tail("slurmctld"))

    def log_tail(self, name: str) -> str:
        texts = []
        for f in (self.dir / f"{name}.log", self.dir / f"{name}.out"):
            if f.exists():
                texts.append(f.read_text(errors="replace")[-1500:])
        return "\n".join(texts)

    def run(self, *argv: str, timeout: float = 60.0, **kw) -> subprocess.CompletedProcess:
        """A Slurm client command against this cluster."""
        return subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              env=self.env, **kw)

    def node_state(self) -> str:
        p = self.run("sinfo", "-h", "-n", self.node.name, "-N", "-o", "%T")
        if p.returncode:
            raise SlurmError(p.stderr.strip())
        return p.stdout.strip().upper()

    def sbatch(self, *args: str, cwd: Path) -> str:
        """Submit; returns the Slurm job id."""
        p = self.run("sbatch", "--parsable", "-p", self.partition, *args, cwd=cwd)
        if p.returncode:
            raise SlurmError(f"sbatch: {p.stderr.strip()}")
        return p.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """`scontrol show job` as key=value pairs (JobState, ExitCode, StdOut, ...)."""
        p = self.run("scontrol", "show", "job", "-o", job_id)
        if p.returncode:
            raise SlurmError(f"scontrol show job {job_id}: {p.stderr.strip()}")
        return dict(re.findall(r"(\w+)=(\S*)", p.stdout))

    def stop(self) -> None:
        """Cancel what still runs, stop the daemons (slurmd first) and wait for them:
        nothing is left running."""
        if self.procs.get("slurmctld") and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "-p", self.partition)
            deadline = time.time() + self.kill_wait_s + 30
            while time.time() < deadline and self.run("squeue", "-h", "-p",
                                                      self.partition).stdout.strip():
                time.sleep(0.5)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.pop(name, None)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(10)
