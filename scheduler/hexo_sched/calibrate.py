"""Calibration: measure what the slowdown model learns from, on the machines at hand.

Two measurements per benchmark and problem class:

* counter rates without hardware counters: the native build runs under
  `valgrind --tool=cachegrind` with a fixed, stated cache geometry, which gives deterministic
  instruction, last-level-cache reference and miss counts; dividing by the native run time
  (median of a few runs, measured separately, not under valgrind) gives rates per second;
* a board's slowdown: the same .hexo image run on the server (`uhyve-ctl run --isa x86_64`) and
  on the board (`--isa aarch64`), compared by the run time uhyve-ctl reports (`--stats`).

`hexo calibrate` (or `python -m hexo_sched.calibrate`) writes a CSV with its provenance in `#`
header lines. The server is this machine (KVM); the board is the local emulated one
(`--emulated-board`) or a board of a hexo-schedd config reached over SSH (`--board --config`).
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .agents import stats_run_seconds
from .model import COLUMNS
from .errors import SchedError

#: Cache geometry given to cachegrind. Pinned so that counts do not depend on the host running
#: calibration; sets must be a power of two, so the LLC is 8 MiB 16-way (the paper's Xeon E5-2637
#: has 10-15 MiB of L3, depending on its version).
CACHES = ("--I1=32768,8,64", "--D1=32768,8,64", "--LL=8388608,16,64")
CACHES_TEXT = "I1 32 KiB 8-way, D1 32 KiB 8-way, LL 8 MiB 16-way, 64 B lines"



class CalibrationError(SchedError, RuntimeError):
    pass


def build_native(workload: str, klass: str, out_dir: Path) -> Path:
    """The workload as an ordinary Linux executable, built by hexo's own native build."""
    from hexo import workloads
    from hexo.toolchain.build import build_native as hexo_build_native
    w = workloads.get(workload)
    exe = out_dir / f"{workload}.{klass}"
    hexo_build_native(w.paths(), exe, w.defines(klass))
    return exe


def time_native(exe: Path, repeats: int = 3) -> float:
    """Median wall-clock seconds of `repeats` runs; the program must exit 0."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        p = subprocess.run([str(exe)], capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if p.returncode != 0:
            raise CalibrationError(f"{exe} exited {p.returncode}: {p.stderr[-500:]}")
    return statistics.median(times)


def parse_cachegrind(text: str) -> dict[str, int]:
    """Totals from a cachegrind.out file: instructions, LL references and LL misses.

    LL references are the first-level misses (I1mr + D1mr + D1mw); LL misses are ILmr + DLmr +
    DLmw. Raises when the file has no cache simulation (no misses recorded)."""
    events = summary = None
    for line in text.splitlines():
        if line.startswith("events:"):
            events = line.split()[1:]
        elif line.startswith("summary:"):
            summary = [int(x) for x in line.split()[1:]]
    if not events or not summary or len(events) != len(summary):
        raise CalibrationError("not a cachegrind output file (no events/summary lines)")
    v = dict(zip(events, summary))
    need = ("Ir", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")
    missing = [e for e in need if e not in v]
    if missing:
        raise CalibrationError(f"cachegrind ran without cache simulation (missing {missing})")
    return {"instructions": v["Ir"], "llc_references": v["I1mr"] + v["D1mr"] + v["D1mw"],
            "llc_misses": v["ILmr"] + v["DLmr"] + v["DLmw"]}


def cachegrind_counts(exe: Path) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "cachegrind.out"
        p = subprocess.run(["valgrind", "--tool=cachegrind", "--cache-sim=yes", *CACHES,
                            f"--cachegrind-out-file={out}", str(exe)],
                           capture_output=True, text=True)
        if p.returncode != 0 or not out.exists():
            raise CalibrationError(f"cachegrind failed on {exe}: {p.stderr[-500:]}")
        return parse_cachegrind(out.read_text())


def run_seconds(image: Path, isa: str, uhyve_ctl: str) -> float:
    """Guest run time as reported by `uhyve-ctl run --stats` (boot excluded)."""
    p = subprocess.run([uhyve_ctl, "run", str(image), "--isa", isa, "--stats"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise CalibrationError(f"{image} on {isa} exited {p.returncode}: {p.stderr[-500:]}")
    seconds = stats_run_seconds(p.stderr)
    if seconds is None:
        raise CalibrationError(f"no run time in uhyve-ctl --stats output: {p.stderr[-300:]}")
    return seconds


def counter_row(workload: str, klass: str, work: Path, repeats: int = 3) -> dict:
    exe = build_native(workload, klass, work)
    seconds = time_native(exe, repeats)
    c = cachegrind_counts(exe)
    return {"benchmark": workload.removeprefix("npb-").upper(), "npb_class": klass,
            "instructions_per_s": c["instructions"] / seconds,
            "llc_references_per_s": c["llc_references"] / seconds,
            "llc_misses_per_s": c["llc_misses"] / seconds,
            "counters_source": f"cachegrind counts / native run {seconds:.3f} s (median of "
                               f"{repeats}) on this project's build"}


def _build_image(workload: str, klass: str, work: Path, uhyve_ctl: str) -> Path:
    image = work / f"{workload}.{klass}.hexo"
    if not image.exists():
        p = subprocess.run([str(Path(uhyve_ctl).with_name("hexo")), "build", "--workload",
                            workload, "--class", klass, "-o", str(image)],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise CalibrationError(f"hexo build failed: {p.stderr[-500:]}")
    return image


def emulated_slowdown(workload: str, klass: str, work: Path, uhyve_ctl: str,
                      repeats: int = 1) -> tuple[float, str]:
    """Slowdown of the emulated aarch64 board vs KVM x86-64 on this machine, same image."""
    image = _build_image(workload, klass, work, uhyve_ctl)
    server = statistics.median(run_seconds(image, "x86_64", uhyve_ctl) for _ in range(repeats))
    board = statistics.median(run_seconds(image, "aarch64", uhyve_ctl) for _ in range(repeats))
    return board / server, (f"measured: uhyve-ctl run time aarch64 (emulated) {board:.3f} s / "
                            f"x86_64 (KVM) {server:.3f} s")


def potato_rows(counter_rows: list[dict]) -> list[dict]:
    """The default dataset: the Potato slowdowns the HEXO paper states, joined to the counter
    rates measured here. A slowdown goes on the class A row only (Table 2's checkpoints are
    class A; §5.2 does not name the class); benchmarks the project has no code for keep their
    slowdown with empty rates."""
    from . import paper
    stated = {**{k: (v, "HEXO §5.2 (consolidation jobs)") for k, v in
                 paper.POTATO_SLOWDOWN.items()},
              **{k: (v, "HEXO §2, Figure 1 (class B)") for k, v in
                 paper.POTATO_SLOWDOWN_FIG1.items() if k not in paper.POTATO_SLOWDOWN}}
    named = {b.upper(): b for b in stated}
    out = []
    for r in counter_rows:
        r = dict(r, board="potato")
        key = named.get(r["benchmark"].upper())
        if key and r["npb_class"] == "A":
            r["slowdown"], r["slowdown_source"] = stated[key]
        out.append(r)
    have = {r["benchmark"].upper() for r in counter_rows}
    for b, (s, src) in stated.items():
        if b.upper() not in have:
            out.append({"benchmark": b, "npb_class": "", "board": "potato", "slowdown": s,
                        "slowdown_source": src, "counters_source": None})
    return out


def header(what: str) -> list[str]:
    return [f"# {what}",
            f"# generated {datetime.date.today().isoformat()} by hexo_sched.calibrate on "
            f"{platform.machine()} {platform.processor() or ''}".rstrip(),
            f"# counters: valgrind --tool=cachegrind ({CACHES_TEXT}) on the native build "
            "(clang -O2 -ffp-contract=off); this machine has no hardware performance counters",
            "# rates = counts / median native wall time on this machine"]


def write_csv(rows: list[dict], path: Path, lines: list[str]) -> None:
    import pandas as pd
    df = pd.DataFrame(rows, columns=COLUMNS)
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
        df.to_csv(f, index=False, float_format="%.6g")


def board_slowdown(workload: str, klass: str, work: Path, uhyve_ctl: str, config: Path,
                   board: str, repeats: int = 1) -> tuple[str, float, str]:
    """(board model, slowdown, provenance) of a board of a hexo-schedd config, reached over
    SSH as the daemon reaches it, vs KVM x86-64 here; same image on both."""
    from .agents import MachineAgent
    from .config import ConfigError, load
    from .hosts import HostError
    try:
        m = next(m for m in load(config).machines if m.kind == "board" and m.name == board)
    except (StopIteration, ConfigError) as e:
        raise CalibrationError(f"{config}: no board named {board!r} ({e})") from None
    image = _build_image(workload, klass, work, uhyve_ctl)
    server = statistics.median(run_seconds(image, "x86_64", uhyve_ctl) for _ in range(repeats))
    agent = MachineAgent(m)
    try:
        agent.prepare()
        remote = agent.image_path(image)
        secs = statistics.median(agent.run_seconds(remote) for _ in range(repeats))
    except HostError as e:
        raise CalibrationError(str(e)) from None
    finally:
        agent.close()
    kind = "emulated on " if m.emulated else ""
    return m.model, secs / server, (f"measured: uhyve-ctl run time {m.isa} ({kind}board {board} "
                                    f"over SSH) {secs:.3f} s / x86_64 (KVM) {server:.3f} s")


def main(argv=None, prog: str = "python -m hexo_sched.calibrate") -> int:
    ap = argparse.ArgumentParser(prog=prog, description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--runs", nargs="+", default=["npb-ep:S", "npb-cg:S", "npb-is:S"],
                    metavar="WORKLOAD:CLASS")
    ap.add_argument("--emulated-board", action="store_true",
                    help="also measure the slowdown of the emulated aarch64 board")
    ap.add_argument("--potato-paper", action="store_true",
                    help="label the rows with the Potato slowdowns of the HEXO paper")
    ap.add_argument("--board", help="measure this board of --config over SSH, as the daemon "
                    "reaches it")
    ap.add_argument("--config", type=Path, help="the hexo-schedd config naming the board")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    if (args.board is None) != (args.config is None):
        ap.error("--board and --config go together")
    uhyve_ctl = str(Path(sys.executable).with_name("uhyve-ctl"))
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for spec in args.runs:
            workload, _, klass = spec.partition(":")
            row = counter_row(workload, klass, Path(d), args.repeats)
            if args.board:
                row["board"], row["slowdown"], row["slowdown_source"] = board_slowdown(
                    workload, klass, Path(d), uhyve_ctl, args.config, args.board)
            elif args.emulated_board:
                row["board"] = "emulated-aarch64"
                row["slowdown"], row["slowdown_source"] = emulated_slowdown(
                    workload, klass, Path(d), uhyve_ctl)
            rows.append(row)
            print(f"{spec}: {row}", file=sys.stderr)
    if args.board:
        what = f"slowdown of board {args.board} of {args.config.name} vs KVM x86-64 here"
    elif args.emulated_board:
        what = "slowdown of the emulated aarch64 board (unicorn) vs KVM x86-64, measured here"
    elif args.potato_paper:
        rows = potato_rows(rows)
        what = ("Potato board slowdowns as stated in the HEXO paper (HPDC'19); counter rates "
                "measured here; rows without a value were not measured or not published")
    else:
        what = "counter rates of the NPB kernels, measured here"
    write_csv(rows, args.output, header(what))
    print(f"wrote {args.output} ({len(rows)} rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
