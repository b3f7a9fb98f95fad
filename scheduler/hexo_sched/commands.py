"""The scheduler's subcommands of `hexo` (simulate, submit, status, move, drain, run,
calibrate, board, slurm), registered through the `hexo.commands` entry-point group so that
the core CLI does not import the scheduler."""

import os
import sys


def register(sub) -> None:
    import argparse
    from pathlib import Path

    from .cli import add_simulate_arguments, simulate
    add_simulate_arguments(sub.add_parser(
        "simulate", help="simulate offloading jobs from a server to boards with a policy"))
    sub.choices["simulate"].set_defaults(run=simulate)
    sd = argparse.ArgumentParser(add_help=False)
    sd.add_argument("--state-dir", type=Path, help="the daemon's state directory (default: "
                    "$HEXO_SCHEDD_STATE, else /var/lib/hexo-schedd for root)")
    s = sub.add_parser("submit", parents=[sd], help="queue jobs on the scheduler daemon",
                       description="Queue images on hexo-schedd: image files, directories of "
                                   "images (*.hexo), or --list files with one job a line "
                                   "(IMAGE [--vcpus N] [--mem SIZE]).")
    s.add_argument("images", nargs="*", type=Path)
    s.add_argument("--list", dest="lists", action="append", default=[], type=Path,
                   metavar="FILE", help="a job-list file (repeatable)")
    s.add_argument("--vcpus", type=int, default=1)
    s.add_argument("--mem", default="256M", help="guest RAM per job, as uhyve-ctl's --mem: "
                   "256M, 1G (a bare number is MiB); at least what the image needs")
    s.set_defaults(run=_submit)
    st = sub.add_parser("status", parents=[sd], help="jobs of the scheduler daemon: where they "
                        "run, estimated slowdowns, migrations")
    st.add_argument("--json", action="store_true")
    st.set_defaults(run=_status, ends_process=True)     # hexo.cli.main: no teardown
    mv = sub.add_parser("move", parents=[sd], help="move a running job of the scheduler "
                        "daemon to another machine (a board, or a server)",
                        description="The job is checkpointed at its next migration point, "
                                    "moved (through this server) and restored; its source "
                                    "stays until the target confirms, and it goes on there "
                                    "if the move fails. hexo status shows how it went.")
    mv.add_argument("job")
    mv.add_argument("--to", required=True, metavar="MACHINE")
    mv.set_defaults(run=_move)
    dr = sub.add_parser("drain", parents=[sd], help="empty a board for maintenance: its jobs "
                        "go to other boards (else a server), nothing new goes there")
    dr.add_argument("board")
    dr.add_argument("--undo", action="store_true", help="the board takes jobs again")
    dr.set_defaults(run=_drain)
    r = sub.add_parser("run", add_help=False,
                       help="run one image through the scheduler daemon as if here: its "
                            "output, its exit status; SIGTERM cancels it (hexo run --help)")
    r.set_defaults(run=_run, raw_argv=True)
    c = sub.add_parser("calibrate", add_help=False,
                       help="measure counter rates and board slowdowns for the slowdown model "
                            "(options: hexo calibrate --help)")
    c.set_defaults(run=_calibrate, raw_argv=True)
    from .errors import SchedError
    for name in ("simulate", "submit", "status", "move", "drain"):
        sub.choices[name].set_defaults(errors=(SchedError,))
    from .boards.commands import register as register_boards
    register_boards(sub)
    from .slurm import register as register_slurm
    register_slurm(sub)


def _job_specs(args) -> list[dict]:
    """Every job named on the command line, from files, directories and job lists."""
    import argparse
    import shlex
    from pathlib import Path
    specs = []

    def add(path: Path, vcpus: int, mem: str) -> None:
        if path.is_dir():
            found = sorted(path.glob("*.hexo"))
            if not found:
                raise ValueError(f"{path}: no *.hexo images in this directory")
            for p in found:
                specs.append({"image": str(p.resolve()), "vcpus": vcpus, "mem": mem})
        elif path.exists():
            specs.append({"image": str(path.resolve()), "vcpus": vcpus, "mem": mem})
        else:
            raise ValueError(f"{path}: no such image or directory")

    for p in args.images:
        add(p, args.vcpus, args.mem)
    line_parser = argparse.ArgumentParser(prog="job list line", add_help=False,
                                          exit_on_error=False)
    line_parser.add_argument("image", type=Path)
    line_parser.add_argument("--vcpus", type=int, default=args.vcpus)
    line_parser.add_argument("--mem", default=args.mem)
    for lst in args.lists:
        if not lst.is_file():
            raise ValueError(f"{lst}: no such job-list file")
        for no, line in enumerate(lst.read_text().splitlines(), 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            try:
                a = line_parser.parse_args(shlex.split(line))
            except (argparse.ArgumentError, SystemExit):
                raise ValueError(f"{lst}:{no}: expected IMAGE [--vcpus N] [--mem SIZE]") \
                    from None
            add(a.image if a.image.is_absolute() else lst.parent / a.image, a.vcpus, a.mem)
    if not specs:
        raise ValueError("nothing to submit: give images, directories or --list files")
    return specs


def _submit(args) -> int:
    from . import api
    reply = api.request(args.state_dir or api.default_state_dir(), "submit",
                        jobs=_job_specs(args))
    for jid in reply["jobs"]:
        print(jid)
    return 0


def _move(args) -> int:
    from . import api
    reply = api.request(args.state_dir or api.default_state_dir(), "move", job=args.job,
                        to=args.to)
    print(f"{reply['job']}: moving {reply['from']} -> {reply['to']}")
    return 0


def _drain(args) -> int:
    from . import api
    reply = api.request(args.state_dir or api.default_state_dir(), "drain", board=args.board,
                        undo=args.undo)
    if not reply["draining"]:
        print(f"{reply['board']}: takes jobs again")
        return 0
    print(f"{reply['board']}: draining; leaving: {' '.join(reply['leaving']) or '-'}; "
          f"no room elsewhere yet: {' '.join(reply['staying']) or '-'}")
    return 0


def _status(args) -> int:
    from . import api
    st = api.request(args.state_dir or api.default_state_dir(), "status")
    if args.json:
        import json
        json.dump({k: v for k, v in st.items() if k not in ("protocol", "ok")}, sys.stdout,
                  indent=1, sort_keys=True)
        print()
        return 0
    print(f"policy {st['policy']}; {st['counters']}")
    for m in st["machines"]:
        emu = " (emulated: a stand-in for a physical board)" if m["emulated"] else ""
        silent = f"; silent for {m['silent_s']:.0f} s" if m.get("silent_s") is not None else ""
        silent += "; draining" if m.get("draining") else ""
        silent += "; timing a sample (no job goes there meanwhile)" if m.get("sampling") else ""
        print(f"{m['kind']:6} {m['name']:10} {m['model']:18} {m['isa']} on {m['backend']}{emu}; "
              f"cores {m['cores_used']}/{m['cores_usable']}, RAM {m['ram_used_mb']:.0f}/"
              f"{m['ram_mb']:.0f} MiB{silent}")
    print(f"{'JOB':8} {'STATE':14} {'WHERE':16} {'BENCH':6} {'EST.SLOWDOWN':>12} MIGRATIONS  "
          "IMAGE")
    for j in st["jobs"]:
        where = j["location"] or "-"
        if j["migrating_to"]:
            where += f"->{j['migrating_to']}"
        slow = ",".join(f"{v:.3g}x" for v in j["slowdown"].values()) or "-"
        moves = sum(1 for h in j["migrations"] if h["outcome"] == "done")
        state = j["state"] if not j["outcome"] else f"{j['state']}({j['outcome']})"
        print(f"{j['id']:8} {state:14} {where:16} {(j['benchmark'] or '-'):6} {slow:>12} "
              f"{moves:>10}  {os.path.basename(j['image'])}")
        if j["state"] != "done":
            print(f"{'':8} estimate: {j['estimate_source']}")
        for h in j["migrations"]:
            if h["outcome"] != "done":
                print(f"{'':8} migration {h['src']} -> {h['dst']} {h['outcome']}")
        for x in j["losses"]:
            print(f"{'':8} lost {x['lost_s']:.1f} s of work on {x['machine']} ({x['why']}); "
                  f"resumed from {x['resumed_from']}")
    e = st["energy"]
    per_job = f", {e['joules_per_job'] / 1000:.2f} kJ per job" if e["joules_per_job"] else ""
    print(f"energy {e['energy_kj']:.2f} kJ, {e['jobs_completed']} jobs completed, "
          f"{e['jobs_per_kj']:.3g} jobs/kJ{per_job} ({e['source']})")
    for d in st["decisions"][-10:]:
        print(f"  {d['reason']}")
    return 0


def quick(argv: list[str]):
    """`status [--json] [--state-dir DIR]` read without argparse, pathlib or the other
    commands (hexo.cli's quick path for plug-ins): they were most of the client's CPU time.
    Any other form goes to the full parser; tests/test_cli_errors.py checks both agree."""
    if argv[:1] != ["status"]:
        return None
    from hexo.records import Namespace
    args = Namespace(cmd="status", json=False, state_dir=None, run=_status, ends_process=True,
                     errors=_errors)
    rest = iter(argv[1:])
    for opt in rest:
        if opt == "--json":
            args.json = True
        elif opt == "--state-dir":
            value = next(rest, None)
            # as pathlib would write it (messages name it), else the full parser makes it so
            if value is None or value.startswith("-") or os.path.normpath(value) != value \
                    or ".." in value.split("/"):
                return None
            args.state_dir = value
        else:
            return None
    return args


def _errors() -> tuple:
    from .errors import SchedError
    return (SchedError,)


def _run(argv) -> int:
    from .run import main
    return main(argv)


def _calibrate(argv) -> int:
    from .calibrate import main as calibrate_main
    return calibrate_main(argv, prog="hexo calibrate")
