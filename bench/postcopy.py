"""Post-copy benchmarks (pyperf) on a real TCP link between two network namespaces shaped to
100 Mbit/s with tc, side by side in one run (needs root):

    .venv/bin/python bench/postcopy.py [-o results.json] [pyperf options]

The job (tests/programs/touch_memory.c) fills a 32 MiB heap buffer on x86-64 (KVM), is
migrated to arm64 (the emulated board) at its first migration point and then reads all or
half of the buffer.

- batch size 1/4/8/16: the job (8 MiB here) reading all its memory on demand only (no
  background pull), from restore to the job's end (HEXO: batching 4-8 pages ~50% faster
  than page by page);
- total migration time, request to the job's end on the target, post-copy vs stop-and-copy
  (the checkpoint copied over the same link), for a job needing all (target <= 1.1x) and
  half (target <= 0.6x) of its memory;
- downtime in both modes: request until the job runs on the target;
- link utilisation of a bulk pull (target >= 90% of the shaped rate);
- where the time goes, per phase, in one more migration of each mode (half the memory).

Measured here (2 cores shared with other work): needing half its memory, post-copy took
0.74-0.87x of stop-and-copy while the full checkpoint was written before the migration
answered, the page server copied the guest's areas, the emulated target unmapped the remote
areas and the pull had one request in flight; now 1.79 s vs 3.61 s = 0.50x (0.54x under
load 13; all of it: 3.49 vs 4.59 s = 0.76x; downtime 0.37 s vs 3.3 s; bulk pull 91% of the
link). Of post-copy's time, ~1.5 s is pulling 17 MiB (16 needed); the migrate command
(0.2 s), the checkpoint copy (0.15 s) and the target's start (0.1 s) are the rest.
Later, at load 7-10 from other work: 0.74x and 0.65x with ABI 1.6, 0.61x with the tree before
it in the same hour (post-copy 2.86-2.89 s both; stop-and-copy 4.4-5.0 s); its migrate
command, checkpoint copy and target start, Python processes each, took 2-4x as long.
At load 1.5-2: 2.05 vs 3.48 s = 0.59x (all: 0.93x; downtime 0.52 vs 3.5 s; bulk pull 90 %);
post-copy's target run, 1.75 s, is the 16 MiB the job reads at the link's rate (1.47 s) plus
the restore; the floor of the ratio is the link's, (16 MiB + fixed) / (32 MiB + fixed).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from netlink import ShapedLink  # noqa: E402

BIN = Path(sys.executable).parent
UHYVE = str(BIN / "uhyve-ctl")
IMAGE = ROOT / "build" / "bench" / "touch_memory.hexo"
MIB = 32
BATCH_MIB = 8                      # demand-only runs: one emulator mapping per fault run
LINK_MBIT = 100
COPY_PORT = 7300
BULK_RUN = 256                     # pages per request of the bulk pull
WINDOW = 0.5                       # seconds the job waits at migration points: room for the
                                   # migrate command to start on a loaded machine (a request
                                   # that comes later is tried again; a longer window would
                                   # keep a restored job waiting out the rest of it)
LINK = ShapedLink("hxbench", 240)


def _env(tmp: str) -> dict:
    os.makedirs(f"{tmp}/run", mode=0o700, exist_ok=True)
    return dict(os.environ, HEXO_RUN_DIR=f"{tmp}/run")


def _state(tmp: str, name: str) -> dict:
    try:
        with open(f"{tmp}/run/{name}.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _wait_state(tmp: str, name: str, state: str) -> None:
    while _state(tmp, name).get("state") != state:
        time.sleep(0.0005)


def _start_source(tmp: str, percent: int, mib: int = MIB) -> subprocess.Popen:
    job = subprocess.Popen(LINK.in_src([UHYVE, "run", IMAGE, "--name", "src", "--", mib,
                                        percent, WINDOW]),
                           env=_env(tmp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_state(tmp, "src", "running")
    return job


def _copy_over_link(src: str, dst: str) -> None:
    """Move a checkpoint directory from the source namespace to the target's, over TCP."""
    recv = subprocess.Popen(LINK.in_dst([sys.executable, __file__, "--recv", dst]),
                            stdout=subprocess.PIPE, text=True)
    recv.stdout.readline()                 # listening
    subprocess.run(LINK.in_src([sys.executable, __file__, "--send", src, LINK.dst_ip]),
                   check=True)
    if recv.wait() != 0:
        raise RuntimeError("checkpoint copy failed")


def _start_and_migrate(tmp: str, mode: str, percent: int, mib: int = MIB):
    """A source job and its migration to `tmp`/ck: (the source, when it was asked)."""
    cmd = [UHYVE, "migrate", "src", "--to", "aarch64", "--mode", mode, "-o", f"{tmp}/ck"]
    if mode == "postcopy":
        cmd += ["--serve", f"{LINK.src_ip}:0"]
    for _ in range(3):
        source = _start_source(tmp, percent, mib)
        t0 = time.perf_counter()
        migrated = subprocess.run(cmd, env=_env(tmp), capture_output=True, text=True)
        if migrated.returncode == 0:
            return source, t0
        source.wait()                      # it left its window before the request came
    raise RuntimeError(f"migration failed: {migrated.stderr}")


def _migration(tmp: str, mode: str, percent: int, restore_opts=(), timed="total",
               mib: int = MIB) -> float:
    """Seconds from the migrate request to the job's end (`total`), to the job running on
    the target (`downtime`), of the target's restore alone (`restore`), or of each phase
    (`phases`, a dict)."""
    env = _env(tmp)
    source, t0 = _start_and_migrate(tmp, mode, percent, mib)
    t_migrated = time.perf_counter()
    _copy_over_link(f"{tmp}/ck", f"{tmp}/ck-target")
    t1 = time.perf_counter()
    target = subprocess.Popen(LINK.in_dst([UHYVE, "restore", f"{tmp}/ck-target", "--name", "dst",
                                           *restore_opts]),
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if timed in ("downtime", "phases"):
        _wait_state(tmp, "dst", "running")
        t2 = time.perf_counter()
    out, err = target.communicate()
    t3 = time.perf_counter()
    source.wait()
    if target.returncode != 0 or "sum" not in out:
        raise RuntimeError(f"migrated job failed (status {target.returncode}): {err}")
    if timed == "phases":
        return {"migrate command": t_migrated - t0, "checkpoint copy": t1 - t_migrated,
                "target start": t2 - t1, "target run": t3 - t2}
    return {"total": t3 - t0, "downtime": t2 - t0 if timed == "downtime" else 0.0,
            "restore": t3 - t1}[timed]


def _loops(mode: str, percent: int, opts=(), timed="total", mib: int = MIB):
    def bench(loops: int) -> float:
        total = 0.0
        for _ in range(loops):
            with tempfile.TemporaryDirectory() as tmp:
                total += _migration(tmp, mode, percent, opts, timed, mib)
        return total
    return bench


def bulk_pull() -> tuple[int, float]:
    """(bytes, seconds) of pulling every page of a migrated job's buffer, back to back."""
    with tempfile.TemporaryDirectory() as tmp:
        source, _ = _start_and_migrate(tmp, "postcopy", 100)
        out = subprocess.run(LINK.in_dst([sys.executable, __file__, "--pull", f"{tmp}/ck"]),
                             check=True, capture_output=True, text=True).stdout
        source.wait()
    nbytes, seconds = out.split()
    return int(nbytes), float(seconds)


def _pull(ckpt: str) -> None:
    """In the target namespace: fetch every remote page in BULK_RUN-page requests."""
    from hexo.checkpoint import Checkpoint
    from uhyve_ctl.pager import PageLink
    from uhyve_ctl.pagewire import Run, parse_address
    meta = Checkpoint(ckpt).meta["postcopy"]
    link = PageLink(parse_address(meta["server"]), bytes.fromhex(meta["secret"]), 10)
    areas = link.connect()
    t0 = time.perf_counter()
    nbytes = 0
    for area in areas:
        for first in range(0, area.pages, BULK_RUN):
            run = Run(area.start + first * 4096, min(BULK_RUN, area.pages - first))
            nbytes += len(link.fetch(run))
    seconds = time.perf_counter() - t0
    link.done()
    print(nbytes, seconds)


def _send(directory: str, host: str) -> None:
    with socket.create_connection((host, COPY_PORT)) as s, s.makefile("wb") as f:
        with tarfile.open(fileobj=f, mode="w|") as tar:
            tar.add(directory, arcname=".")


def _recv(directory: str) -> None:
    with socket.create_server(("0.0.0.0", COPY_PORT), reuse_port=True) as srv:
        print("listening", flush=True)
        conn, _ = srv.accept()
        with conn, conn.makefile("rb") as f, tarfile.open(fileobj=f, mode="r|") as tar:
            tar.extractall(directory, filter="data")


def main() -> None:
    import pyperf         # not at the top: the checkpoint copy helpers would pay for it
    runner = pyperf.Runner(processes=1, values=3, warmups=1)
    runner.parse_args()
    if not runner.args.worker:
        IMAGE.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([BIN / "hexo", "build", ROOT / "tests" / "programs" / "touch_memory.c",
                        "--migratable", "-o", IMAGE], check=True, stdout=subprocess.DEVNULL)
    LINK.__enter__()                       # each pyperf worker sets the link up afresh
    try:
        demand = ("--prefetch-interval", "off")
        batches = {b: runner.bench_time_func(
            f"postcopy-demand-batch-{b}", _loops("postcopy", 100, demand + ("--batch", str(b)),
                                                 "restore", BATCH_MIB)) for b in (1, 4, 8, 16)}
        bulk = ("--prefetch-interval", "0", "--prefetch-pages", str(BULK_RUN))
        modes = {(mode, pct): runner.bench_time_func(
            f"{mode}-total-needs-{pct}pct", _loops(mode, pct, bulk if mode == "postcopy" else ()))
            for mode in ("stopcopy", "postcopy") for pct in (100, 50)}
        down = {mode: runner.bench_time_func(
            f"{mode}-downtime", _loops(mode, 100, bulk if mode == "postcopy" else (), "downtime"))
            for mode in ("stopcopy", "postcopy")}
        if runner.args.worker or any(v is None for v in
                                     [*batches.values(), *modes.values(), *down.values()]):
            return
        LINK.__enter__()
        nbytes, seconds = bulk_pull()
        phases = {}
        for mode in ("stopcopy", "postcopy"):
            with tempfile.TemporaryDirectory() as tmp:
                phases[mode] = _migration(tmp, mode, 50, bulk if mode == "postcopy" else (),
                                          "phases")
    finally:
        if not runner.args.worker:
            LINK.close()
    one = batches[1].mean()
    print(f"\npost-copy over a {LINK_MBIT} Mbit/s tc-shaped veth link, {MIB} MiB job, "
          f"x86-64 (KVM) -> arm64 (emulated), measured side by side in this run:")
    for b, r in batches.items():
        print(f"  demand only ({BATCH_MIB} MiB), batch {b:2}: restore to end {r.mean():6.2f} s, "
              f"{(one - r.mean()) / one:5.0%} faster than page by page (target batch 4-8: >= 50%)")
    for pct in (100, 50):
        ratio = modes["postcopy", pct].mean() / modes["stopcopy", pct].mean()
        goal = "<= 1.1x" if pct == 100 else "<= 0.6x"
        print(f"  needs {pct:3}% of its memory: post-copy {modes['postcopy', pct].mean():5.2f} s "
              f"vs stop-and-copy {modes['stopcopy', pct].mean():5.2f} s total = {ratio:4.2f}x "
              f"(target {goal})")
    print(f"  downtime (request -> running on the target): post-copy "
          f"{down['postcopy'].mean() * 1e3:6.0f} ms, stop-and-copy "
          f"{down['stopcopy'].mean() * 1e3:6.0f} ms")
    mbit = nbytes * 8 / seconds / 1e6
    print(f"  bulk pull: {nbytes >> 20} MiB in {seconds:.2f} s = {mbit:.1f} Mbit/s, "
          f"{mbit / LINK_MBIT:.0%} of the shaped rate (target >= 90%; page payload only)")
    for mode, times in phases.items():
        print(f"  {mode:9} phases (one run, half the memory): " + ", ".join(
            f"{name} {seconds:.2f} s" for name, seconds in times.items()))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--pull"]:
        _pull(sys.argv[2])
    elif sys.argv[1:2] == ["--send"]:
        _send(sys.argv[2], sys.argv[3])
    elif sys.argv[1:2] == ["--recv"]:
        _recv(sys.argv[2])
    else:
        main()
