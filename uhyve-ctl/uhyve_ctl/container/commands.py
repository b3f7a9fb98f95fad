"""`hexo container ...`, registered through the hexo.commands entry-point group."""

from __future__ import annotations

import json
import os
from pathlib import Path

from hexo.sizes import parse_size

from .. import UhyveError


def register(sub) -> None:
    c = sub.add_parser("container", help="Linux-mode processes: run, checkpoint with CRIU "
                       "(optionally for the other ISA), restore")
    c.set_defaults(errors=(UhyveError,))
    csub = c.add_subparsers(dest="container_command", required=True)
    r = csub.add_parser("run", help="run a Linux-mode image's executable for this ISA")
    r.add_argument("image", type=Path)
    r.add_argument("args", nargs="*")
    r.add_argument("--stop-at-point", type=int, metavar="N",
                   help="stop at the (N+1)-th migration point and wait there to be "
                        "checkpointed (or continued with hexo container resume)")
    r.set_defaults(run=_run)
    k = csub.add_parser("checkpoint", help="stop a process or a podman container at its next "
                        "migration point and dump it with CRIU")
    k.add_argument("target", metavar="PID|CONTAINER")
    k.add_argument("-o", "--output", type=Path, required=True,
                   help="a directory (a process) or an archive for podman's restore --import "
                        "(a container)")
    k.add_argument("--to", dest="to_isa", help="recode the images for this ISA")
    k.add_argument("--timeout", type=float, default=30.0,
                   help="seconds to wait for a migration point")
    k.add_argument("--leave-stopped", action="store_true",
                   help="keep the process parked at the point after the dump (kill it once "
                        "the target runs it, or continue it with hexo container resume)")
    k.add_argument("--without-image", action="store_true",
                   help="leave the container's image out of the archive (it names the image "
                        "by digest; the restoring machine must have it)")
    k.set_defaults(run=_checkpoint)
    s = csub.add_parser("restore", help="restore a process checkpoint directory, or a "
                        "container archive with podman, and let it run")
    s.add_argument("checkpoint", type=Path, metavar="DIR|ARCHIVE")
    s.add_argument("--wait", action="store_true",
                   help="wait for the job to end and exit with its status")
    s.add_argument("--until-point", action="store_true",
                   help="stop the job again at its next migration point (one step here)")
    s.add_argument("--held", type=Path, metavar="RECORD",
                   help="a handover: keep the job at its point and wait for a line on stdin, "
                        "'go' to let it continue, anything else or the end of input to end "
                        "it; each decision is written to RECORD before it is carried out")
    s.add_argument("--hold-limit", type=float, default=900.0, metavar="SECONDS",
                   help="with --held, end the job if no line has come after this long")
    s.add_argument("--name", help="a container's new name (default: its own)")
    s.add_argument("--timeout", type=float, default=120.0,
                   help="seconds CRIU may take to restore a process (then it is ended)")
    s.set_defaults(run=_restore)
    c = csub.add_parser("resume", help="let a process or container parked at its migration "
                        "point continue")
    c.add_argument("target", metavar="PID|CONTAINER")
    c.set_defaults(run=_resume)
    p = csub.add_parser("parked", help="exit 0 if a process or container waits at its "
                        "migration point, else 1")
    p.add_argument("target", metavar="PID|CONTAINER")
    p.set_defaults(run=_parked)
    o = csub.add_parser("image", help="an OCI image for podman with the executables of both "
                        "ISAs, from a local root file system tarball")
    o.add_argument("image", type=Path)
    o.add_argument("-t", "--tag", required=True, help="e.g. localhost/app")
    o.add_argument("--isa", help="the ISA whose executable is the entry point (default: this "
                   "machine's)")
    o.set_defaults(run=_image)
    m = csub.add_parser("images", help="the container images this machine keeps by digest "
                        "(least recently used first), or prune them")
    m.add_argument("action", nargs="?", choices=("list", "prune"), default="list")
    m.add_argument("--max-size", help="prune to this size (default: $HEXO_IMAGE_STORE_MAX "
                   "or 4G)")
    m.add_argument("--max-days", type=float, help="prune images unused for longer (default: "
                   "$HEXO_IMAGE_STORE_DAYS or 30)")
    m.set_defaults(run=_images)
    i = csub.add_parser("inspect", help="decode a checkpoint's CRIU images")
    i.add_argument("checkpoint", type=Path, metavar="DIR|ARCHIVE")
    i.set_defaults(run=_inspect)


def _run(args) -> int:
    from .process import STOP_AT_POINT, executable, host_isa, open_image
    exe = executable(open_image(args.image), host_isa())
    if os.getpgid(0) != os.getpid():
        os.setsid()                 # its own session: CRIU dumps it without --shell-job
    if args.stop_at_point is not None:
        os.environ[STOP_AT_POINT] = str(args.stop_at_point)
    os.execv(exe, [str(exe), *args.args])


def _pid(target: str) -> int | None:
    """The pid a command-line target names, or None for a container name or id."""
    return int(target) if target.isdigit() and Path(f"/proc/{target}").exists() else None


def _checkpoint(args) -> int:
    pid = _pid(args.target)
    if pid is None:
        from .podman import checkpoint
        state = checkpoint(args.target, args.output, args.to_isa, args.timeout,
                           args.leave_stopped, with_image=not args.without_image)
        what = f"container {args.target}"
    else:
        from .checkpoint import checkpoint
        state = checkpoint(pid, args.output, args.to_isa, args.timeout, args.leave_stopped)
        what = f"process {pid}"
    print(f"{args.output}: {what} ({state['image']['name']}) for {state['isa']}")
    return 0


def _restore(args) -> int:
    held = args.held is not None
    if args.checkpoint.is_file():
        from .podman import remove, restore, resume, wait
        name = restore(args.checkpoint, args.name, args.until_point, held)
        job, go, discard, end = (f"container {name}", lambda: resume(name),
                                 lambda: remove(name), lambda: wait(name))
    else:
        import signal
        from .checkpoint import restore, wait
        from .process import resume
        pid = restore(args.checkpoint, reap=args.wait, until_point=args.until_point,
                      timeout=args.timeout, held=held)
        job, go, discard, end = (f"process {pid}", lambda: resume(pid),
                                 lambda: os.kill(pid, signal.SIGKILL), lambda: wait(pid))
    from .handover import hold, say
    say(f"restored {job}")          # a mover that has gone meanwhile ends a held copy below
    if held:
        status = hold(job, go, discard, args.held, args.hold_limit)
        if status != 0:
            return status
    return end() if args.wait else 0


def _resume(args) -> int:
    pid = _pid(args.target)
    if pid is None:
        from .podman import resume
        resume(args.target)
    else:
        from .process import resume
        resume(pid)
    return 0


def _parked(args) -> int:
    pid = _pid(args.target)
    if pid is None:
        from .podman import parked
        return 0 if parked(args.target) else 1
    from .process import parked
    return 0 if parked(pid) else 1


def _image(args) -> int:
    from .oci import build
    print(f"{args.tag}: {build(args.image, args.tag, args.isa)}")
    return 0


def _images(args) -> int:
    import time
    from . import images
    from .process import ProcessError
    if args.action == "prune":
        try:
            max_bytes = parse_size(args.max_size) if args.max_size else None
        except ValueError as e:
            raise ProcessError(f"--max-size: {e}") from None
        if args.max_days is not None and not args.max_days >= 0:
            raise ProcessError(f"--max-days: {args.max_days:g} is not a number of days")
        for sha in images.prune(max_bytes, args.max_days):
            print(f"removed {sha}")
    for e in images.listing():
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["used"]))
        print(f"{e['digest']}  {e['size'] / (1 << 20):8.1f} MiB  {used}  "
              f"{' '.join(e['names'])}")
    return 0


def _inspect(args) -> int:
    if args.checkpoint.is_file():
        from .podman import summary
    else:
        from .criu_images import summary
    print(json.dumps(summary(args.checkpoint), indent=1))
    return 0
