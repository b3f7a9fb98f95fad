"""`hexo board build|up|down|ls|exec`: arm64 board VMs for the scheduler and the tests."""

from __future__ import annotations

import sys
from pathlib import Path


def _errors() -> tuple:
    """The errors a board command reports in one line (imported only when one is run)."""
    from uhyve_ctl import UhyveError

    from ..hosts import HostError
    from .image import BoardImageError
    from .vm import BoardError
    return BoardError, BoardImageError, HostError, UhyveError


def register(sub) -> None:
    board = sub.add_parser("board", help="arm64 board VMs (qemu-system-aarch64 with KVM inside): "
                                         "build, up, exec, ls, status, down",
                           description="Arm64 Linux boards emulated by qemu-system-aarch64 "
                                       "(EL2, so the board has /dev/kvm), driven over SSH.")
    bsub = board.add_subparsers(dest="board_command", required=True)
    b = bsub.add_parser("build", help="build the board image (cached; progress shown)")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.set_defaults(run=_build)
    u = bsub.add_parser("up", help="boot a board and wait until SSH answers")
    u.add_argument("name")
    u.add_argument("--cpus", type=int, default=2)
    u.add_argument("--mem", default="2G")
    u.set_defaults(run=_up)
    d = bsub.add_parser("down", help="shut a board down (or clean up after a crashed one)")
    d.add_argument("names", nargs="+", metavar="name")
    d.set_defaults(run=_down)
    ls = bsub.add_parser("ls", help="boards and their state (running, crashed, ...)")
    ls.set_defaults(run=_ls)
    st = bsub.add_parser("status", help="check boards: qemu, the kernel's console, a command "
                                        "over SSH",
                         description="Check each board: its qemu runs, its serial console "
                                     "shows no kernel oops, panic or (with SSH silent) lockup, "
                                     "and it runs a command over SSH. Fails, naming the console "
                                     "log, on the first board that does not.")
    st.add_argument("names", nargs="+", metavar="name")
    st.set_defaults(run=_status)
    e = bsub.add_parser("exec", help="run a command in a fresh directory on a board",
                        usage="hexo board exec [-h] NAME [--put PATH]... -- CMD [ARG...]",
                        description="Copy each --put file or directory into a fresh working "
                                    "directory on the board, run CMD there with hexo's current "
                                    "code, stream its output and exit with its status.")
    e.add_argument("name")
    e.add_argument("--put", action="append", default=[], type=Path, metavar="PATH")
    e.add_argument("command", nargs="+", metavar="CMD")
    e.set_defaults(run=_exec)
    m = bsub.add_parser("migrate", help="move a Linux-mode process (hexo container run) or "
                        "podman container between this server and a board, or between boards",
                        description="Checkpoint the job at its next migration point with "
                                    "CRIU (a container through podman), recode it when the "
                                    "ISAs differ, restore it on the other side; a move between "
                                    "boards goes through this server. The source stays parked "
                                    "at the point; the target restores it held and runs it "
                                    "only on this server's go, then the source ends; if "
                                    "anything fails before the go the source continues.")
    m.add_argument("target", metavar="PID|CONTAINER",
                   help="the process or container (on the board with --from)")
    m.add_argument("--from", dest="from_board", metavar="BOARD",
                   help="the board it runs on (default: this server)")
    m.add_argument("--to", metavar="BOARD", help="the board to move it to (default: this "
                   "server)")
    m.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for a migration point")
    m.set_defaults(run=_migrate)
    from .ssh import STEP_TIMEOUT
    e.add_argument("--step-timeout", type=float, metavar="SECONDS",
                   help="give up on CMD if it has not ended after this long (default: wait)")
    m.add_argument("--step-timeout", type=float, default=STEP_TIMEOUT, metavar="SECONDS",
                   help="give up on a board command that has not ended after this long "
                        f"(default {STEP_TIMEOUT:g}: emulated boards are slow); what a "
                        "board that did not answer is left to do, it does at its next "
                        "connection")
    for p in (board, b, u, d, ls, st, e, m):
        p.set_defaults(errors=_errors)


def _build(args) -> int:
    from .image import build
    from .progress import BuildProgress
    with BuildProgress() as progress:
        img = build(progress.update, force=args.force)
    info = img.info
    print(f"board image {img.dir}: Debian {info['suite']} arm64, kernel {info['kernel']}, "
          f"wheels {' '.join(info['wheels'])}")
    return 0


def _up(args) -> int:
    from .vm import up
    b = up(args.name, cpus=args.cpus, mem=args.mem)
    print(f"{b.name}: up, SSH root@127.0.0.1:{b.port} (host key pinned in {b.known_hosts})")
    print(f"  ssh -i {b.image.client_key} -o UserKnownHostsFile={b.known_hosts} "
          f"-p {b.port} root@127.0.0.1")
    return 0


def _down(args) -> int:
    from .vm import down
    for name in args.names:
        print(f"{name}: {down(name)}")
    return 0


def _ls(args) -> int:
    from .vm import list_boards
    boards = list_boards()
    if not boards:
        print("no boards")
    for b in boards:
        print(f"{b.name:10} {b.state():34} 127.0.0.1:{b.port:<6} cpus {b.cpus} mem {b.mem}")
    return 0


def _status(args) -> int:
    from .vm import check
    for name in args.names:
        print(f"{name}: works (a command over SSH took {check(name):.1f} s)")
    return 0


def _exec(args) -> int:
    from .migrate import OnBoard
    with OnBoard(args.name, args.step_timeout) as board:      # what is pending there first
        return board.conn.run(args.command, puts=args.put, stdout=sys.stdout.buffer,
                              stderr=sys.stderr.buffer)


def _migrate(args) -> int:
    from .migrate import Job, MigrationError, move
    if args.from_board is None and args.to is None:
        raise MigrationError("say where the job runs (--from BOARD), where it goes (--to "
                             "BOARD), or both")
    new = move(args.target, args.from_board, args.to, args.timeout,
               step_timeout=args.step_timeout)
    print(f"{Job(args.target).what}{' of ' + args.from_board if args.from_board else ''} runs "
          f"{'on ' + args.to if args.to else 'here'} as {new}")
    return 0
