"""Calibration: measure what the slowdown model learns from, on the machines at hand.

Two measurements per workload and problem class:

* counters without hardware counters: the native build runs under valgrind's callgrind
  (insn_mix), which gives deterministic instruction, load, store, branch, misprediction, FP
  and cache-miss counts for a stated cache geometry, and an emulator's software-TLB refills;
  the mix is kept per instruction, and the three rates of HEXO's model (instructions, LLC
  references and misses per second) divide the counts by the job's CPU time on the server
  (KVM; the native build's when no board is measured), as a server samples a running job;
* a board's slowdown: the same .hexo image run on the server (`uhyve-ctl run --isa x86_64`) and
  on the board (`--isa aarch64`), compared by the CPU time of the run that uhyve-ctl reports
  (`--stats`): unlike wall-clock time it is not stretched by other work on the machine.

`hexo calibrate` (or `python -m hexo_sched.calibrate`) writes a CSV with its provenance in `#`
header lines, its own command line among them. The server is this machine (KVM); the board is
the local emulated one (`--emulated-board`) or a board of a hexo-schedd config reached over SSH
(`--board --config`).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import insn_mix
from .agents import stats_cpu_seconds
from .errors import SchedError
from .model import A64_FEATURES, COLUMNS, MIX_COUNTS, MIX_FEATURES, X86_MIX_FEATURES


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
    """Median CPU seconds (user + system) of `repeats` runs; the program must exit 0."""
    times = []
    for _ in range(repeats):
        p = subprocess.Popen([str(exe)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        err = p.stderr.read()
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise CalibrationError(f"{exe} exited {p.returncode}: {err[-500:].decode()}")
        times.append(usage.ru_utime + usage.ru_stime)
    return statistics.median(times)


def run_seconds(image: Path, isa: str, uhyve_ctl: str) -> float:
    """CPU time of the guest's run as reported by `uhyve-ctl run --stats` (boot excluded)."""
    p = subprocess.run([uhyve_ctl, "run", str(image), "--isa", isa, "--stats"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise CalibrationError(f"{image} on {isa} exited {p.returncode}: {p.stderr[-500:]}")
    seconds = stats_cpu_seconds(p.stderr)
    if seconds is None:
        raise CalibrationError(f"no CPU time in uhyve-ctl --stats output: {p.stderr[-300:]}")
    return seconds


def counter_row(workload: str, klass: str, work: Path, repeats: int = 3,
                server_seconds: tuple[float, str] | None = None) -> dict:
    """The mix of a workload's native build and HEXO's three rates: its counts over the run
    time of the job on the server (`server_seconds`: (seconds, what was timed)) when that was
    measured, as a server samples a running job, else over the native build's CPU time."""
    exe = build_native(workload, klass, work)
    if server_seconds is None:
        seconds = time_native(exe, repeats)
        timed = f"native CPU time {seconds:.4g} s (median of {repeats})"
    else:
        seconds, timed = server_seconds
    c = insn_mix.measure(exe)
    n = c["instructions"]
    row = {"benchmark": workload.removeprefix("npb-").upper(), "npb_class": klass,
           "instructions_per_s": n / seconds,
           "llc_references_per_s": c["l1_misses"] / seconds,
           "llc_misses_per_s": c["ll_misses"] / seconds, **mix_columns(c),
           "counters_source": f"derived: callgrind counts ({n:.4g} instructions) of this "
                              f"project's native build / {timed}"}
    return with_aarch64_columns(row, workload, klass, work, n)


def mix_columns(counts: dict) -> dict[str, float]:
    """The x86-64 mix columns of insn_mix.measure's counts, per instruction."""
    return {f: counts[k] / counts["instructions"] for f, k in zip(X86_MIX_FEATURES, MIX_COUNTS)}


def aarch64_columns(workload: str, klass: str, work: Path, instructions: int
                    ) -> dict[str, float]:
    """The aarch64 build's mix (insn_mix.measure_aarch64) per x86-64 instruction of the
    native build (`instructions`, the count the rates divide), from the workload's image
    built for Linux processes: the same application code at one layout on both ISAs, which
    valgrind runs."""
    build_dir = work / f"{workload}.{klass}.linux"
    _hexo_build(workload, klass, work / f"{workload}.{klass}.linux.hexo", "--linux",
                "--keep-build-dir", str(build_dir))
    c = insn_mix.measure_aarch64(build_dir)
    return {f: c[k] / instructions for f, k in zip(A64_FEATURES, insn_mix.A64_COUNTS)}


def with_aarch64_columns(row: dict, workload: str, klass: str, work: Path,
                         instructions: int) -> dict:
    """`row` with aarch64_columns, or with its counters_source saying why they are missing."""
    try:
        return {**row, **aarch64_columns(workload, klass, work, instructions)}
    except insn_mix.MixError as e:
        return {**row, **dict.fromkeys(A64_FEATURES),
                "counters_source": f"{row['counters_source']}; aarch64 mix not measured: {e}"}


def _hexo_build(workload: str, klass: str, image: Path, *flags: str) -> Path:
    if not image.exists():
        p = subprocess.run([str(Path(sys.executable).with_name("hexo")), "build", "--workload",
                            workload, "--class", klass, "-o", str(image), *flags],
                           capture_output=True, text=True)
        if p.returncode != 0:
            raise CalibrationError(f"hexo build failed: {p.stderr[-500:]}")
    return image


def _build_image(workload: str, klass: str, work: Path) -> Path:
    return _hexo_build(workload, klass, work / f"{workload}.{klass}.hexo")


def server_seconds(image: Path, uhyve_ctl: str, repeats: int) -> tuple[float, str]:
    """(CPU seconds of the image's run on KVM x86-64 here, median of `repeats`; what it is)."""
    seconds = statistics.median(run_seconds(image, "x86_64", uhyve_ctl) for _ in range(repeats))
    return seconds, f"uhyve-ctl run CPU time x86_64 (KVM) {seconds:.4g} s (median of {repeats})"


def emulated_slowdown(image: Path, server: tuple[float, str], uhyve_ctl: str
                      ) -> tuple[float, str]:
    """Slowdown of the emulated aarch64 board vs the server's run of the same image; the
    board's run, 10-150x longer, is run once."""
    board = run_seconds(image, "aarch64", uhyve_ctl)
    return board / server[0], (f"measured: uhyve-ctl run CPU time aarch64 (emulated) "
                               f"{board:.3f} s / {server[1]}")


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


def workload_of(benchmark: str) -> str:
    """The workload a dataset row's benchmark name came from (counter_row's naming)."""
    from hexo import workloads
    for name in workloads.WORKLOADS:
        if name.removeprefix("npb-").upper() == benchmark.upper():
            return name
    raise CalibrationError(f"no workload named {benchmark!r}")


def recount(dataset: Path, work: Path, jobs: int, aarch64_only: bool = False
            ) -> tuple[list[dict], list[str]]:
    """The rows of a calibration dataset with their instruction mix measured again by this
    tree's insn_mix (what it counts is deterministic; slowdowns and rates are kept), only
    the aarch64 build's when `aarch64_only`, and the dataset's provenance."""
    from .model import load_dataset
    ds = load_dataset(dataset)

    def mix(row: dict) -> dict:
        workload = workload_of(row["benchmark"])
        exe = build_native(workload, row["npb_class"], work)
        c = {"instructions": insn_mix.instructions(exe)} if aarch64_only else insn_mix.measure(exe)
        source = row["counters_source"].split("; aarch64 mix not measured")[0]
        row = {**row, **({} if aarch64_only else mix_columns(c)), "counters_source": source}
        row = with_aarch64_columns(row, workload, row["npb_class"], work, c["instructions"])
        print(f"{row['benchmark']}.{row['npb_class']}: {c} {row}", file=sys.stderr)
        return row

    with ThreadPoolExecutor(max(1, jobs)) as pool:
        rows = list(pool.map(mix, ds.frame.to_dict("records")))
    return rows, ds.provenance


COUNTERS_NOTE = ("counters: derived, not hardware (this machine has no hardware performance "
                 f"counters): valgrind --tool=callgrind ({insn_mix.CACHES_TEXT}, its branch "
                 "predictor) on the native build (clang -O2 -ffp-contract=off); FP and packed "
                 "SIMD instructions classified by mnemonic from objdump; tlb_misses: valgrind "
                 "--tool=cachegrind with an emulator's software TLB "
                 f"({insn_mix.SOFT_TLB_TEXT}) as its data cache; aarch64_*: the image's "
                 "aarch64 build per native instruction, each of its basic blocks run as often "
                 "as the most alike block (source lines, data accesses, FP lanes) of the "
                 "image's x86-64 build under callgrind (insn_mix.aarch64_counts)")


def generated(argv: list[str]) -> str:
    return (f"{datetime.date.today().isoformat()} on {platform.machine()} by: "
            f"python -m hexo_sched.calibrate {shlex.join(argv)}")


def header(what: str, argv: list[str]) -> list[str]:
    return [f"# {what}", f"# generated {generated(argv)}", f"# {COUNTERS_NOTE}",
            "# *_per_insn = counts per instruction; rates = counts / the run time named in "
            "counters_source (the job's run on KVM x86-64 when the row has a slowdown)"]


def write_csv(rows: list[dict], path: Path, lines: list[str]) -> None:
    import pandas as pd
    df = pd.DataFrame(rows, columns=[*COLUMNS, *MIX_FEATURES])
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
        df.to_csv(f, index=False, float_format="%.6g")


def board_slowdown(image: Path, server: tuple[float, str], config: Path, board: str,
                   repeats: int = 1) -> tuple[str, float, str]:
    """(board model, slowdown, provenance) of a board of a hexo-schedd config, reached over
    SSH as the daemon reaches it, vs KVM x86-64 here; same image on both."""
    from .agents import MachineAgent
    from .config import ConfigError, load
    from .hosts import HostError
    try:
        m = next(m for m in load(config).machines if m.kind == "board" and m.name == board)
    except (StopIteration, ConfigError) as e:
        raise CalibrationError(f"{config}: no board named {board!r} ({e})") from None
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
    return m.model, secs / server[0], (f"measured: uhyve-ctl run time {m.isa} ({kind}board "
                                       f"{board} over SSH) {secs:.3f} s / {server[1]}")


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
    ap.add_argument("--jobs", type=int, default=1, help="runs measured at once (default 1)")
    ap.add_argument("--recount", type=Path, metavar="CSV",
                    help="measure the instruction mix of a dataset's rows again (after a change "
                    "to what insn_mix counts), keeping its slowdowns and rates")
    ap.add_argument("--aarch64-only", action="store_true",
                    help="with --recount: measure only the aarch64 build's mix, keeping the "
                    "x86-64 one")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = ap.parse_args(argv)
    if args.recount:
        from hexo.errors import one_line
        try:
            with tempfile.TemporaryDirectory() as d:
                rows, provenance = recount(args.recount, Path(d), args.jobs, args.aarch64_only)
        except (SchedError, OSError) as e:
            print(f"{prog}: error: {one_line(e, 'recount', (SchedError,))}", file=sys.stderr)
            return 1
        lines = [f"# {COUNTERS_NOTE if line.startswith('counters:') else line}"
                 for line in provenance]
        what = "aarch64 mix" if args.aarch64_only else "instruction mix"
        write_csv(rows, args.output, lines + [f"# {what} measured again {generated(argv)}"])
        print(f"wrote {args.output} ({len(rows)} rows)")
        return 0
    if (args.board is None) != (args.config is None):
        ap.error("--board and --config go together")
    uhyve_ctl = str(Path(sys.executable).with_name("uhyve-ctl"))
    failed = []

    def measure(spec: str, work: Path) -> dict | None:
        try:
            return measure_one(spec, work)
        except (SchedError, ValueError) as e:      # one bad run loses none of the others
            failed.append(f"{spec}: {e}")
            print(f"{spec}: not measured: {e}", file=sys.stderr)
            return None

    def measure_one(spec: str, work: Path) -> dict:
        workload, _, klass = spec.partition(":")
        if not (args.board or args.emulated_board):
            row = counter_row(workload, klass, work, args.repeats)
            print(f"{spec}: {row}", file=sys.stderr)
            return row
        image = _build_image(workload, klass, work)
        server = server_seconds(image, uhyve_ctl, args.repeats)
        if args.board:
            board, slowdown, source = board_slowdown(image, server, args.config, args.board)
        else:
            board = "emulated-aarch64"
            slowdown, source = emulated_slowdown(image, server, uhyve_ctl)
        row = counter_row(workload, klass, work, args.repeats, server)
        row.update(board=board, slowdown=slowdown, slowdown_source=source)
        print(f"{spec}: {row}", file=sys.stderr)
        return row

    with tempfile.TemporaryDirectory() as d, ThreadPoolExecutor(max(1, args.jobs)) as pool:
        rows = [r for r in pool.map(lambda spec: measure(spec, Path(d)), args.runs) if r]
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
    write_csv(rows, args.output, header(what, argv) + [f"# not measured: {f}" for f in failed])
    print(f"wrote {args.output} ({len(rows)} rows"
          + (f"; {len(failed)} runs failed, listed in its header)" if failed else ")"))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
