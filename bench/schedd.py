"""Scheduler daemon benchmark (pyperf), side by side in one run (root: it starts an sshd):

    .venv/bin/python bench/schedd.py [-o results.json] [pyperf options]

Offloading a running NPB EP class S job from the KVM server to the emulated arm64 board, from
the moment the job is started until the board's VM runs it:

- by hand on this machine: `uhyve-ctl run`, `uhyve-ctl checkpoint`, `hexo transform`,
  `uhyve-ctl restore --isa aarch64 --backend emu` until its state file says running;
- through hexo-schedd, the board reached over a real sshd on loopback: from the policy's
  decision (taken when the job is submitted) to the board's confirmation, as the daemon
  records them. The same steps plus SSH round trips, SFTP copies and probing.

The ratio is what the daemon adds (target: <= 2x). The emulated board is a stand-in for a
physical one; its restore time is part of both sides.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyperf

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UHYVE, HEXO = str(BIN / "uhyve-ctl"), str(BIN / "hexo")
EP = ROOT / "build" / "bench" / "npb-ep.S.migratable.hexo"
IS = ROOT / "build" / "bench" / "npb-is.S.migratable.hexo"


def wait_state(run_dir: Path, name: str, state: str, timeout: float = 120) -> None:
    path, deadline = run_dir / f"{name}.json", time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads(path.read_text())["state"] == state:
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.001)
    raise RuntimeError(f"{name} never reached {state}")


def by_hand(loops: int) -> float:
    total = 0.0
    for _ in range(loops):
        with tempfile.TemporaryDirectory() as tmp:
            t = Path(tmp)
            env = dict(os.environ, HEXO_RUN_DIR=str(t / "server"))
            board_env = dict(os.environ, HEXO_RUN_DIR=str(t / "board"))
            t0 = time.perf_counter()
            job = subprocess.Popen([UHYVE, "run", str(EP), "--name", "job"], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_state(t / "server", "job", "running")
            subprocess.run([UHYVE, "checkpoint", "job", "-o", t / "ck"], env=env, check=True,
                           capture_output=True)
            job.wait()
            subprocess.run([HEXO, "transform", t / "ck", "--to", "aarch64", "-o", t / "ck-a",
                            "--image", EP], check=True, capture_output=True)
            restored = subprocess.Popen([UHYVE, "restore", t / "ck-a", "--isa", "aarch64",
                                         "--backend", "emu", "--name", "job"], env=board_env,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            wait_state(t / "board", "job", "running")
            total += time.perf_counter() - t0
            restored.kill()
            restored.wait()
    return total


class Cluster:
    """An sshd on loopback and a daemon with a one-slot server and a one-core board."""

    def __init__(self):
        sys.path.insert(0, str(ROOT / "tests"))
        import sshd_fixture
        self.dir = Path(tempfile.mkdtemp(prefix="hexo-bench-schedd-"))
        self.sshd = sshd_fixture.start(self.dir / "ssh")
        cfg = sshd_fixture.cluster_config(self.dir, self.sshd, HEXO, UHYVE, idle_after_s=0.5,
                                          poll_s=0.1)
        self.state = self.dir / "state"
        self.daemon = subprocess.Popen([BIN / "hexo-schedd", "--config", cfg],
                                       stdout=subprocess.DEVNULL,
                                       stderr=open(self.dir / "schedd.log", "w"))
        for _ in range(600):
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(self.state / "control.sock"))
                break
            except OSError:
                time.sleep(0.05)
        atexit.register(self.close)

    def offload_seconds(self) -> float:
        """Submit EP then IS (which makes EP move to the board); decision -> confirmation."""
        from hexo_sched import api
        ep_id = api.request(self.state, "submit", jobs=[{"image": str(EP)},
                                                        {"image": str(IS)}])["jobs"][0]
        deadline = time.time() + 300
        while time.time() < deadline:
            st = api.request(self.state, "status")
            if all(j["state"] == "done" for j in st["jobs"]):
                break
            time.sleep(0.1)
        job = next(j for j in st["jobs"] if j["id"] == ep_id)
        first = job["migrations"][0]
        if first["outcome"] != "done" or "SUCCESSFUL" not in Path(job["output"]).read_text():
            raise RuntimeError(f"offload did not happen as planned: {job}")
        return first["ended"] - first["time"]

    def close(self) -> None:
        import sshd_fixture
        self.daemon.send_signal(signal.SIGTERM)
        self.daemon.wait(30)
        sshd_fixture.stop(self.sshd)
        shutil.rmtree(self.dir, ignore_errors=True)


_cluster: Cluster | None = None


def via_daemon(loops: int) -> float:
    global _cluster
    if _cluster is None:
        _cluster = Cluster()
    return sum(_cluster.offload_seconds() for _ in range(loops))


def main() -> None:
    runner = pyperf.Runner(processes=2, values=3, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        if os.geteuid() != 0:
            sys.exit("bench/schedd.py starts an sshd that logs in as this user: run as root")
        EP.parent.mkdir(parents=True, exist_ok=True)
        for image, workload in ((EP, "npb-ep"), (IS, "npb-is")):
            if not image.exists():
                subprocess.run([HEXO, "build", "--workload", workload, "--class", "S",
                                "--migratable", "-o", image], check=True,
                               stdout=subprocess.DEVNULL)
    hand = runner.bench_time_func("offload-ep-S-by-hand", by_hand)
    daemon = runner.bench_time_func("offload-ep-S-through-hexo-schedd", via_daemon)
    if runner.args.worker or hand is None or daemon is None:
        return
    print("\nscheduler daemon (measured side by side in this run):")
    print(f"  EP.S offload, through hexo-schedd over SSH / by hand  "
          f"{daemon.mean() / hand.mean():5.2f}x ({daemon.mean():.2f} s vs {hand.mean():.2f} s; "
          "target <= 2x)")


if __name__ == "__main__":
    main()
