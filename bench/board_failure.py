"""Work lost when a board dies, against the checkpoint period (root: it starts sshds):

    .venv/bin/python bench/board_failure.py [--periods 2 5 10] [--kill-after 7 13] [--json]

For each period and kill time: hexo-schedd with a one-core KVM server and the emulated arm64
board over a loopback sshd (a stand-in for a physical board); NPB EP class W is offloaded to
the board (IS class S makes room), the board dies `kill-after` seconds after EP arrived there
(its sshd and the job's VM are killed), and EP resumes on the server from its saved checkpoint
and must verify. Reported per run: the run time lost (from the checkpoint it resumed from to its
resumption), the part spent waiting for the silent board (`board_lost_after_s`), and the rest,
which a checkpoint every P seconds bounds by about P plus one checkpoint's own duration.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
UHYVE, HEXO = str(BIN / "uhyve-ctl"), str(BIN / "hexo")
EP = ROOT / "build" / "bench" / "npb-ep.W.migratable.hexo"
IS = ROOT / "build" / "bench" / "npb-is.S.migratable.hexo"
LOST_AFTER_S = 3.0


def image(path: Path, workload: str, klass: str) -> str:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([HEXO, "build", "--workload", workload, "--class", klass, "-o", path],
                       check=True, stdout=subprocess.DEVNULL)
    return str(path)


def one_run(period: float, kill_after: float) -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    import sshd_fixture
    from npb_reference import check
    from test_schedd_live import start_daemon, wait_for
    from hexo_sched import api
    d = Path(tempfile.mkdtemp(prefix="hexo-bench-boardfail-"))
    ssh = sshd_fixture.start(d / "ssh")
    cfg = sshd_fixture.cluster_config(d, ssh, HEXO, UHYVE, idle_after_s=3600, poll_s=0.2,
                                      checkpoint_period_s=period,
                                      board_lost_after_s=LOST_AFTER_S)
    state = d / "state"
    daemon = start_daemon(cfg, d / "schedd.log")
    try:
        ep = api.request(state, "submit", jobs=[{"image": image(EP, "npb-ep", "W")},
                                                {"image": image(IS, "npb-is", "S")}])["jobs"][0]
        wait_for(lambda s: any(j["id"] == ep and j["location"] == "board0"
                               and j["state"] == "running" for j in s["jobs"]),
                 state, 300, "EP to run on the board")
        time.sleep(kill_after)
        sshd_fixture.stop(ssh)
        vm = json.loads((d / "board" / "run" / f"{ep}.json").read_text())
        os.kill(vm["pid"], signal.SIGKILL)
        st = wait_for(lambda s: all(j["state"] == "done" for j in s["jobs"]), state, 900,
                      "the jobs to end")
        job = next(j for j in st["jobs"] if j["id"] == ep)
        check("ep", "W", Path(job["output"]).read_text())
        [loss] = job["losses"]
        return {"period_s": period, "kill_after_s": kill_after, "lost_s": loss["lost_s"],
                "silent_s": loss["silent_s"], "resumed_from": loss["resumed_from"],
                "lost_before_noticed_s": round(loss["lost_s"] - loss["silent_s"], 3)}
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
        if ssh.proc.poll() is None:
            sshd_fixture.stop(ssh)
        shutil.rmtree(d, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--periods", type=float, nargs="+", default=[2.0, 5.0, 10.0])
    ap.add_argument("--kill-after", type=float, nargs="+", default=[7.0, 13.0])
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [one_run(p, k) for p in args.periods for k in args.kill_after]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'PERIOD':>7} {'KILL AT':>8} {'LOST':>7} {'SILENT':>7} {'BEFORE':>7} FROM")
    for r in rows:
        print(f"{r['period_s']:>6.1f}s {r['kill_after_s']:>7.1f}s {r['lost_s']:>6.1f}s "
              f"{r['silent_s']:>6.1f}s {r['lost_before_noticed_s']:>6.1f}s {r['resumed_from']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
