"""`make slurm-demo`: a batch of NPB jobs submitted with sbatch to a Slurm node that is the
server plus its board, each job a `hexo run`; hexo-schedd decides underneath where each runs.

Everything is real and on this host: munged, slurmctld and slurmd on loopback (a generated
slurm.conf in a temporary directory), hexo-schedd with a one-core KVM server and one board
reached over a real sshd on loopback. The board is the emulated arm64 stand-in (the aarch64
build on the emulated CPU, on this host), not a physical board; with --board-vm it is an arm64
board VM instead (qemu-system-aarch64 with EL2, the jobs on its KVM; needs `make board-image`).
Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import sshd_fixture                                   # noqa: E402  (a loopback sshd)
from npb_reference import check                       # noqa: E402  (NPB's published values)

from hexo_sched import slurm as bridge                # noqa: E402
from hexo_sched.config import load                    # noqa: E402
from hexo_sched.slurmlocal import LocalSlurm, missing  # noqa: E402

BIN = Path(sys.executable).parent
HEXO, UHYVE = str(BIN / "hexo"), str(BIN / "uhyve-ctl")
# Slurm starts the first two jobs together on the node's two CPUs, in either order; both are
# EP.W (~4 s on the server), so the one on the server runs long enough to be offloaded when
# the other arrives (class S jobs often ended before their checkpoint on a quiet machine).
BATCH = [("npb-ep", "W"), ("npb-ep", "W"), ("npb-is", "S"), ("npb-cg", "S")]
ENDED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")


def build(tmp: Path, workload: str, klass: str) -> Path:
    image = tmp / f"{workload}.{klass}.hexo"
    if not image.exists():
        print(f"== hexo build --workload {workload} --class {klass} --migratable", flush=True)
        subprocess.run([HEXO, "build", "--workload", workload, "--class", klass,
                        "--migratable", "-o", image], check=True, stdout=subprocess.DEVNULL)
    return image


def start_daemon(cfg: Path, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([str(BIN / "hexo-schedd"), "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=open(log, "a"),
                            start_new_session=True)
    sock = cfg.parent / "state" / "control.sock"
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"hexo-schedd exited: {log.read_text()[-2000:]}")
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(sock))
            return proc
        except OSError:
            time.sleep(0.1)
    sys.exit("hexo-schedd did not open its control socket")


def verified(kernel: str, klass: str, out: str) -> bool:
    try:
        check(kernel, klass, out)
        return out.count("NAS Parallel Benchmarks") == 1
    except (AssertionError, TypeError):
        return False


def board_vm_config(tmp: Path, **daemon) -> Path:
    """A cluster.toml whose board0 is a freshly booted arm64 board VM (its KVM runs the jobs)."""
    from hexo_sched.boards import vm
    print("== hexo board up slurm-demo (arm64 board VM, TCG with EL2)", flush=True)
    b = vm.up("slurm-demo")
    section = sshd_fixture.board_section("board0", b.port, b.image.client_key, b.known_hosts,
                                         "/var/tmp/hexo", "uhyve-ctl", backend="kvm",
                                         model="emulated-aarch64")
    return sshd_fixture.server_config(tmp, HEXO, UHYVE, section, **daemon)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--board-vm", action="store_true",
                    help="board0 is an arm64 board VM instead of the emulated stand-in")
    args = ap.parse_args()
    why = missing() or (None if args.board_vm else sshd_fixture.usable())
    if why:
        sys.exit(f"slurm-demo: {why}")
    tmp = Path(tempfile.mkdtemp(prefix="hexo-slurm-demo-"))
    print(f"== working directory {tmp}")
    images = [build(tmp, w, k) for w, k in BATCH]
    settings = dict(policy="hexo", idle_after_s=1, poll_s=0.2, confirm_timeout_s=120,
                    min_residence_s=15)
    ssh = None
    if args.board_vm:
        cfg = board_vm_config(tmp, **settings)
    else:
        ssh = sshd_fixture.start(tmp / "ssh")
        cfg = sshd_fixture.cluster_config(tmp, ssh, HEXO, UHYVE, **settings)
    daemon = start_daemon(cfg, tmp / "schedd.log")
    node = bridge.node(load(cfg))
    env = {"PATH": f"{BIN}:{os.environ['PATH']}", "HEXO_SCHEDD_STATE": str(tmp / "state")}
    cluster = LocalSlurm(tmp / "slurm", node, job_env=env)
    try:
        print("== hexo slurm conf (the node Slurm sees; board0 = "
              + ("an arm64 board VM" if args.board_vm else "the emulated arm64 stand-in")
              + ", over SSH on loopback)")
        print("\n".join("   " + line for line in node.lines()))
        cluster.start()
        print(f"== munged, slurmctld, slurmd up; sinfo: node {node.name} "
              f"{cluster.node_state().lower()}, {node.cpus} CPUs")
        ids = []
        for image in images:
            ids.append(cluster.sbatch("--wrap", f"hexo run {image}", cwd=tmp))
            print(f"   sbatch -p {cluster.partition} --wrap \"hexo run {image.name}\" -> "
                  f"job {ids[-1]}", flush=True)
        deadline = time.time() + 1800
        while time.time() < deadline:
            jobs = {i: cluster.job(i) for i in ids}
            if all(j["JobState"] in ENDED for j in jobs.values()):
                break
            time.sleep(1)
        st = json.loads(subprocess.run([HEXO, "status", "--json", "--state-dir",
                                        str(tmp / "state")], capture_output=True, text=True,
                                       check=True).stdout)
    finally:
        cluster.stop()
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            print("hexo-schedd did not stop within 30 s of SIGTERM; killed", file=sys.stderr)
            daemon.kill()
            daemon.wait()
        if ssh is not None:
            sshd_fixture.stop(ssh)
        else:
            from hexo_sched.boards import vm
            vm.down("slurm-demo")
    by_slurm = {j["slurm_job"]: j for j in st["jobs"]}
    ok = offloaded = 0
    print(f"{'SLURM':>5} {'STATE':10} {'EXIT':5} {'HEXO':7} {'WHERE IT RAN':32} NPB")
    for i, (workload, klass) in zip(ids, BATCH):
        j, h = jobs[i], by_slurm.get(i, {})
        where = [s["machine"] for s in h.get("segments", []) if not s["discarded"]]
        moved = any(m != "server" for m in where)
        out = (tmp / f"slurm-{i}.out").read_text(errors="replace")
        good = verified(workload.removeprefix("npb-"), klass, out)
        print(f"{i:>5} {j['JobState']:10} {j['ExitCode']:5} {h.get('id', '-'):7} "
              f"{' -> '.join(where) or '-':32} {workload}.{klass} "
              f"{'verified' if good else 'NOT VERIFIED'}")
        ok += good and j["JobState"] == "COMPLETED" and j["ExitCode"] == "0:0"
        offloaded += moved
    print(f"{ok}/{len(ids)} jobs COMPLETED and verified; {offloaded} offloaded")
    return 0 if ok == len(ids) and offloaded else 1


if __name__ == "__main__":
    sys.exit(main())
