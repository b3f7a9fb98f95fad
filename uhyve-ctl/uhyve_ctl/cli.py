"""uhyve-ctl: run hexo unikernel images on KVM or an emulated CPU; checkpoint and restore them.

Exit status of run/restore: the guest's own exit status (its low 8 bits, as on Linux; when
those are 123-126 or differ from what the guest passed, stderr says that the guest itself
exited, and with what); 0 after a checkpoint; 123 when a
post-copy restore lost its page source; 124 when --timeout expired; 125 when the guest
crashed or broke the hypercall ABI; 126 when the VM could not be started.

A restored job *confirms* at its first migration point (or a normal exit): until then a
cross-ISA checkpoint's untransformed copy is the job's safe state, and `restore --fallback`
resumes from it by itself if the transformed state dies first.
"""

import gc
import os
import sys
import time

EXIT_SOURCE_LOST, EXIT_TIMEOUT, EXIT_CRASH, EXIT_NOSTART = 123, 124, 125, 126
EXIT_UNCONFIRMED = -1      # internal: a held restore failed before it confirmed


def _vm_options(p) -> None:
    p.add_argument("--isa", choices=("x86_64", "aarch64"), help="which build to run "
                   "(default: this host's ISA)")
    p.add_argument("--backend", choices=("auto", "kvm", "emu"), default="auto",
                   help="kvm: hardware virtualization; emu: emulated CPU (default: kvm when "
                        "the ISA is the host's, else emu)")
    mount_option(p)
    p.add_argument("--timeout", type=_seconds, help="stop the guest after this many seconds")
    p.add_argument("--x86-entry", choices=("auto", "user", "kernel"), default="auto",
                   help="x86-64 KVM guest privilege: user (CPL3, needed on PVM hosts) or "
                        "kernel (CPL0, VT-x hosts); auto detects")
    p.add_argument("--name", help="name the VM so that `ps` and `checkpoint` can reach it")
    p.add_argument("--stats", action="store_true", help="print timing and exit counts to stderr")
    p.add_argument("--checkpoint-at", type=int, metavar="N",
                   help="checkpoint at the Nth migration point the job reaches (counting from "
                        "this start) into --checkpoint-dir, and stop there")
    p.add_argument("--checkpoint-dir", metavar="DIR", help="where --checkpoint-at writes")
    p.add_argument("--to", dest="target_isa", choices=("x86_64", "aarch64"),
                   help="with --checkpoint-at: ISA the job will resume on (default: its own)")


def mount_option(p) -> None:
    p.add_argument("--mount", action="append", default=[], metavar="HOST_DIR[:GUEST_DIR[:ro]]",
                   help="let the guest open files below HOST_DIR (repeatable)")


def env_option(p) -> None:
    p.add_argument("--env", action="append", default=[], type=_env_var, metavar="NAME=VALUE",
                   help="set a variable in the guest's environment (repeatable; the guest "
                        "sees no other host variable)")


def _env_var(text: str) -> str:
    from argparse import ArgumentTypeError
    name, eq, _ = text.partition("=")
    if not eq or not name or "\0" in text:
        raise ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return text


def _seconds(text: str) -> float:
    """A positive number of seconds."""
    from argparse import ArgumentTypeError
    try:
        value = float(text)
    except ValueError:
        raise ArgumentTypeError(f"bad number of seconds '{text}'") from None
    if not 0 < value < float("inf"):
        raise ArgumentTypeError(f"'{text}': the timeout must be a positive number of "
                                         "seconds")
    return value


def _duration(text: str) -> float:
    """'50ms', '2s', '0.5', 'off' (no background pull) -> seconds (-1 for off)."""
    t = text.strip().lower()
    if t == "off":
        return -1.0
    try:
        if t.endswith("ms"):
            return float(t[:-2]) / 1e3
        return float(t.removesuffix("s"))
    except ValueError:
        from argparse import ArgumentTypeError
        raise ArgumentTypeError(f"bad duration '{text}' (examples: 50ms, 2s, off)") from None


def _checkpoint_options(c) -> None:
    c.add_argument("name")
    c.add_argument("-o", "--output", required=True, help="checkpoint directory to create")
    c.add_argument("--to", dest="target_isa", choices=("x86_64", "aarch64"),
                   help="ISA the job will resume on (default: the VM's own)")
    c.add_argument("--timeout", type=_seconds, default=30.0,
                   help="give up (the job keeps running) if no migration point is reached")
    c.add_argument("--compress", action="store_true", help="zlib-compress memory areas")


def _time(args) -> int:
    from .timed import main
    return main(args)


def _parser():
    import argparse
    p = argparse.ArgumentParser(prog="uhyve-ctl", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="boot an image and run it",
                       description="Boot IMAGE and run it; arguments after -- go to the guest.")
    r.add_argument("image")
    r.add_argument("--mem", help="guest RAM, e.g. 512M or 2G (default: 256M or what the "
                   "image needs)")
    env_option(r)
    _vm_options(r)
    s = sub.add_parser("restore", help="resume a checkpoint")
    s.add_argument("checkpoint")
    s.add_argument("--image", help="the image (default: the path the checkpoint records)")
    s.add_argument("--pages-from", metavar="HOST:PORT", help="post-copy checkpoint: the "
                   "source's page server (default: the address the checkpoint records)")
    s.add_argument("--batch", type=int, default=8, help="pages fetched per fault: the "
                   "faulting page and the next ones (default 8)")
    s.add_argument("--prefetch-interval", type=_duration, default=0.05, metavar="TIME",
                   help="pause between background pulls, e.g. 50ms, 0 (as fast as the link "
                        "allows) or off (only on demand); default 50ms")
    s.add_argument("--prefetch-pages", type=int, default=64,
                   help="pages per background pull (default 64)")
    s.add_argument("--retry-for", type=_duration, default=10.0, metavar="TIME",
                   help="how long a lost page source is retried before the job stops "
                        "(default 10s)")
    kept = s.add_mutually_exclusive_group()
    kept.add_argument("--fallback", action="store_true",
                      help="if the transformed job cannot start or dies before its first "
                           "migration point, "
                           "resume it from the untransformed copy the checkpoint keeps (its "
                           "output is held until the transformed job has confirmed)")
    kept.add_argument("--source-copy", action="store_true",
                      help="resume from the untransformed copy the checkpoint keeps, on the "
                           "ISA it was taken on")
    _vm_options(s)
    c = sub.add_parser("checkpoint", help="checkpoint a named VM at its next migration point")
    _checkpoint_options(c)
    c.add_argument("--keep-running", action="store_true",
                   help="let the job go on once the checkpoint is written and verified "
                        "(default: it stops there)")
    m = sub.add_parser("migrate", help="move a named VM: stop-and-copy or post-copy",
                       description="stopcopy writes a full checkpoint; postcopy writes a "
                       "minimal one and serves the rest from this process until the target "
                       "has every page (a full checkpoint is also written at OUTPUT.full)")
    _checkpoint_options(m)
    m.add_argument("--mode", choices=("stopcopy", "postcopy"), default="stopcopy")
    m.add_argument("--serve", metavar="HOST:PORT", help="postcopy: where to serve pages")
    t = sub.add_parser("time", help="time a build to migration points (for the scheduler's "
                       "derived estimates)",
                       description="Run IMAGE counting migration points in the guest, for a "
                       "CPU budget, to one point or to its end; print one JSON line "
                       "(uhyve_ctl.timed). "
                       "Arguments after -- go to the guest, whose output is dropped.")
    t.add_argument("image")
    t.add_argument("--isa", choices=("x86_64", "aarch64"), help="which build to run "
                   "(default: this host's ISA)")
    t.add_argument("--backend", choices=("auto", "kvm", "emu"), default="auto")
    t.add_argument("--mem", help="guest RAM, e.g. 512M (default: 256M or what the image needs)")
    mode = t.add_mutually_exclusive_group()
    mode.add_argument("--budget", type=_seconds, help="CPU seconds to run for, then stop at "
                      "the next point (default: run to the end)")
    mode.add_argument("--point", type=int, metavar="N", help="stop at the Nth migration point")
    t.add_argument("--cap", type=_seconds, help="stop an emulated guest after this much CPU "
                   "(default: twice the budget, or twice --wall)")
    t.add_argument("--wall", type=_seconds, default=600.0,
                   help="stop the guest after this many seconds (default 600)")
    ps = sub.add_parser("ps", help="list named VMs")
    ps.add_argument("--json", action="store_true", help="print the state files as a JSON list "
                    "(for the scheduler daemon)")
    return p


# `run IMAGE [options]` is read without argparse when it uses only these options in their
# plain form: argparse, with the re, gettext and locale modules it brings, costs as much as
# the interpreter's own start. Anything else (help, a bad value, another command, --opt=value,
# an abbreviation) goes to the full parser, which gives every error message;
# tests/test_cli_errors.py checks that both readings agree.
_QUICK_VALUES = {"--isa": ("x86_64", "aarch64"), "--backend": ("auto", "kvm", "emu"),
                 "--x86-entry": ("auto", "user", "kernel"), "--name": None, "--mem": None,
                 "--timeout": _seconds}
_QUICK_LISTS = {"--mount": None, "--env": _env_var}      # repeatable
_RUN_DEFAULTS = {"isa": None, "backend": "auto", "timeout": None, "x86_entry": "auto",
                 "name": None, "stats": False, "checkpoint_at": None, "checkpoint_dir": None,
                 "target_isa": None, "mem": None}


def _quick_run(argv: list[str]):
    """The parsed `run` command line, or None when it needs the full parser."""
    if argv[:1] != ["run"]:
        return None
    args = dict(_RUN_DEFAULTS, cmd="run", **{o[2:]: [] for o in _QUICK_LISTS})
    rest = iter(argv[1:])
    for opt in rest:
        if not opt.startswith("-") and "image" not in args:
            args["image"] = opt
            continue
        if opt == "--stats":
            args["stats"] = True
            continue
        if opt not in _QUICK_VALUES and opt not in _QUICK_LISTS:
            return None
        check, value = _QUICK_VALUES.get(opt, _QUICK_LISTS.get(opt)), next(rest, None)
        if value is None or value.startswith("-"):
            return None
        if isinstance(check, tuple):
            if value not in check:
                return None
        elif check is not None:
            try:
                value = check(value)
            except Exception:
                return None
        key = opt[2:].replace("-", "_")
        if opt in _QUICK_LISTS:
            args[key].append(value)
        else:
            args[key] = value
    from hexo.records import Namespace
    return Namespace(**args) if "image" in args else None


def _paging(args, ckpt):
    """Where and how a post-copy restore gets its pages; None for a full checkpoint."""
    from .pager import PagingOptions
    from .pagewire import VERSION, parse_address
    info = ckpt.meta.get("postcopy")
    if info is None:
        return None
    if info["protocol"][0] != VERSION[0]:
        raise ValueError(f"{ckpt.path} needs page protocol {info['protocol'][0]}.x, this "
                         f"uhyve-ctl speaks {VERSION[0]}.x")
    address = parse_address(args.pages_from or info["server"])
    if address[0] in ("0.0.0.0", "::"):
        raise ValueError(f"the source listens on {info['server']}: say where it is reachable "
                         f"with --pages-from HOST:PORT")
    if args.batch < 1 or args.batch > 1024:
        raise ValueError("--batch must be between 1 and 1024 pages")
    interval = args.prefetch_interval
    return PagingOptions(address, bytes.fromhex(info["secret"]), args.batch,
                         0 if interval < 0 else args.prefetch_pages, max(interval, 0.0),
                         args.retry_for, info["full_checkpoint"])


def _start_vm(args, restore=None, stdio=(0, 1, 2)):
    from hexo.image import Image

    from .hypercalls import Mount
    from .vm import HOST_ISA, VirtualMachine

    if restore is not None:
        image = Image(args.image or restore.meta["image"]["path"])
        isa = args.isa or restore.meta["isa"]
        mem = None
    else:
        image = Image(args.image)
        isa = args.isa or HOST_ISA
        mem = None
        if args.mem:
            from hexo.sizes import parse_size
            mem = parse_size(args.mem)
    return VirtualMachine(image, isa, backend=args.backend, mem_size=mem, argv=args.guest_args,
                          env=getattr(args, "env", ()),     # a restore has the job's own
                          mounts=[Mount.parse(m) for m in args.mount],
                          x86_entry=args.x86_entry, restore=restore, stdio=stdio,
                          pages=None if restore is None else _paging(args, restore))


def _control(vm, name: str):
    from . import control
    from .migration import MigrationError, Request

    def handle(server, req: dict) -> dict:
        if req.get("op") == "status":
            return {"ok": True, **server.info}
        if req.get("op") != "checkpoint":
            return {"ok": False, "error": f"unknown request {req.get('op')!r}"}
        server.set_state("checkpointing")
        try:
            path = vm.migrator.request(Request(str(req["output"]),
                                               req.get("target_isa") or vm.isa,
                                               bool(req.get("compress")),
                                               req.get("mode") or "stopcopy", req.get("serve"),
                                               keep_running=bool(req.get("keep_running"))),
                                       float(req.get("timeout", 30)))
        except MigrationError as e:
            server.set_state("running")
            return {"ok": False, "error": str(e)}
        if req.get("keep_running"):
            server.set_state("running")
        if vm.page_server is not None:      # stopped: what a target fetches is served
            server.set_state("serving", migration="serving")
        t = vm.migrator.timings
        target = req.get("target_isa") or vm.isa
        return {"ok": True, "path": path, "isa": target, "transformed": target != vm.isa,
                "stop_ms": 1e3 * (t["stopped"] - t["requested"]),
                "transform_ms": 1e3 * t["transform_s"],
                "checkpoint_ms": 1e3 * (t["written"] - t["stopped"] - t["transform_s"]),
                "serving": vm.migrator.page_server is not None and _served_at(vm, path)}

    import threading
    info = {"isa": vm.isa, "backend": vm.backend_kind, "mem": vm.memory.size,
            "image": vm.image.path}
    if vm.backend_kind == "kvm":        # KVM_RUN runs on this thread: where counters count
        info["vcpu_tid"] = threading.get_native_id()
    return control.ControlServer(name, info, handle)


def _served_at(vm, path: str) -> str:
    from hexo.checkpoint import Checkpoint
    return Checkpoint(path).meta["postcopy"]["server"]


class HeldOutput:
    """The guest's stdout and stderr held in files until `release()` copies them out and
    lets later output through: a restore with --fallback prints nothing that a fallback
    would print again."""

    def __init__(self):
        import tempfile
        self.held = []
        for _ in range(2):
            fd, path = tempfile.mkstemp(prefix="uhyve-held-")
            os.unlink(path)
            self.held.append(fd)
        self.fds = (0, *self.held)

    def release(self) -> None:
        for fd, real in zip(self.held, (1, 2)):
            os.lseek(fd, 0, os.SEEK_SET)
            for chunk in iter(lambda: os.read(fd, 1 << 16), b""):
                os.write(real, chunk)
            os.dup2(real, fd)

    def close(self) -> None:
        for fd in self.held:
            os.close(fd)


def _execute(args, restore=None, held: HeldOutput | None = None) -> int:
    """Run or restore a VM to its end; returns its exit status. `held`: the guest's output
    is held until the restored job confirms."""
    from hexo.image import ImageError
    t0 = time.perf_counter()
    refused, lost, unfinished = (ImageError, ValueError, OSError), (), ()  # + CheckpointError
    if restore is not None:             # a plain run does not import the page protocol
        from .pager import SourceLost
        from .pagewire import ProtocolError
        refused, lost = refused + (ProtocolError,), (SourceLost,)
        unfinished = (SourceLost, OSError, ProtocolError)
    try:
        vm = _start_vm(args, restore, held.fds if held else (0, 1, 2))
    except refused as e:
        print(f"uhyve-ctl: cannot start: {e}", file=sys.stderr)
        if restore is not None and restore.source_isa:
            _unconfirmed(restore, "refused", EXIT_NOSTART)
        return EXIT_UNCONFIRMED if held else EXIT_NOSTART
    try:
        return _drive(vm, args, restore, held, t0, lost, unfinished)
    finally:
        # A run that ends the process leaves the VM to the kernel, which frees it all at
        # once; the emulator alone spends ~0.1 s unmapping a post-copy target's regions.
        if not (_process_ends and held is None):
            vm.close()


def _drive(vm, args, restore, held: HeldOutput | None, t0: float, lost: tuple,
           unfinished: tuple) -> int:
    """The started VM's life: control server, confirmation, run, report, post-copy."""
    server = None
    if args.name:
        from .control import ControlError
        try:
            server = _control(vm, args.name)
        except (ControlError, OSError) as e:
            print(f"uhyve-ctl: cannot start: {e}", file=sys.stderr)
            return EXIT_NOSTART
        server.set_state("running", **({"migration": "pulling"} if vm.pager else {}))

        def resumed(why: str) -> None:
            print(f"uhyve-ctl: post-copy abandoned: {why}", file=sys.stderr, flush=True)
            server.set_state("running", migration="abandoned")
        vm.migrator.on_resumed = resumed
    if vm.pager is not None:
        vm.pager.on_state = lambda m: server and server.set_state(
            server.info["state"], migration=m)
    if restore is not None:
        def confirmed():
            print("uhyve-ctl: confirmed: the restored job passed a migration point",
                  file=sys.stderr, flush=True)
            if held:
                with vm.ring.paused():      # no timer drain into the file being emptied
                    held.release()
            if server:
                server.set_state(server.info["state"], confirmed=True)
        vm.migrator.on_point = confirmed
        if args.checkpoint_at is None:
            vm.migrator.probe(confirmed)
    if args.checkpoint_at is not None:
        from .migration import MigrationError, Request
        try:
            vm.migrator.arm(Request(os.path.abspath(args.checkpoint_dir),
                                    args.target_isa or vm.isa, False,
                                    skip=args.checkpoint_at - 1))
        except MigrationError as e:
            print(f"uhyve-ctl: cannot start: {e}", file=sys.stderr)
            return EXIT_NOSTART
    if _process_ends:
        gc.freeze()         # what start-up made lives to the end: collections skip it
        gc.enable()
    t1, cpu1 = time.perf_counter(), time.process_time()
    try:
        stop = vm.run(args.timeout)
    except lost as e:
        return _source_lost(vm, server, e)
    t2, cpu2 = time.perf_counter(), time.process_time()
    if args.stats:
        # cpu: this process's CPU time over the run (a KVM guest's time included), which
        # a loaded machine does not stretch as it stretches the wall-clock run time
        print(f"uhyve-ctl: {vm.isa} on {vm.backend_kind}: setup {1e3 * (t1 - t0):.1f} ms, "
              f"run {1e3 * (t2 - t1):.1f} ms, cpu {1e3 * (cpu2 - cpu1):.1f} ms, "
              f"{vm.hypercalls.count} hypercalls", file=sys.stderr)
    code, state = _report(vm, stop)
    if state != "checkpointed":
        vm.end_requests(f"the job has ended ({state}, status {code}) without reaching "
                        f"another migration point")
    unconfirmed = False
    if restore is not None and not vm.migrator.passed_point.is_set():
        if state == "exited" and code == 0:
            vm.migrator.on_point()
        elif state in ("exited", "crashed") and restore.source_isa:
            unconfirmed = True
            _unconfirmed(restore, state, code)
    if args.checkpoint_at is not None and state != "checkpointed":
        why = vm.migrator.outcome() or f"it reached fewer than {args.checkpoint_at} " \
                                        f"migration points"
        print(f"uhyve-ctl: no checkpoint was written: {why}", file=sys.stderr)
    if vm.pager is not None:
        try:
            vm.pager.finish()
        except unfinished as e:
            print(f"uhyve-ctl: could not tell the page source we are done: {e}",
                  file=sys.stderr)
        if args.stats:
            print(f"uhyve-ctl: post-copy: {vm.pager.pages_fetched} of "
                  f"{vm.pager.tracker.total} pages fetched, {vm.pager.faults} faults, "
                  f"{vm.pager.reconnects} reconnects",
                  file=sys.stderr)
    if vm.page_server is not None:
        _serve_pages(vm, server)
        state = "migrated"
    if server:
        server.close(state, exit_status=code)
    return EXIT_UNCONFIRMED if unconfirmed and held else code


def _serve_pages(vm, server) -> None:
    """Post-copy source: hold the job until the target has every page it needs."""
    m = vm.migrator
    pages = m.page_server
    if server:
        server.set_state("serving", migration="serving")
    pages.wait()
    pages.close()
    print(f"uhyve-ctl: post-copy: served {pages.pages_served} of {pages.total_pages} pages; "
          f"the target has the job", file=sys.stderr)
    if server:
        server.set_state("serving", migration="done", pages_served=pages.pages_served)


def _source_lost(vm, server, err) -> int:
    missing = vm.pager.tracker.total - vm.pager.tracker.arrived
    print(f"uhyve-ctl: post-copy stopped: {err}; {missing} of {vm.pager.tracker.total} pages "
          f"never arrived, so the job cannot go on here. Restart it from the full checkpoint "
          f"the source wrote: {vm.pager.opts.full_checkpoint}", file=sys.stderr)
    if server:
        server.close("source-lost", exit_status=EXIT_SOURCE_LOST, migration="failed")
    return EXIT_SOURCE_LOST


def _report(vm, stop) -> tuple[int, str]:
    """Tell the user why the guest stopped; returns (exit status, final state)."""
    from .backends import Checkpointed, Crashed, Exited, TimedOut
    if isinstance(stop, Exited):
        code = stop.status & 0xFF            # what a process's exit status keeps, as on Linux
        if code != stop.status or EXIT_SOURCE_LOST <= code <= EXIT_NOSTART:
            print(f"uhyve-ctl: the guest itself exited with status {stop.status}"
                  + (f" (reported as {code})" if code != stop.status else ""), file=sys.stderr)
        return code, "exited"
    if isinstance(stop, Checkpointed):
        print(f"uhyve-ctl: checkpointed to {stop.path}; the job has stopped here",
              file=sys.stderr)
        return 0, "checkpointed"
    if isinstance(stop, TimedOut):
        print(f"uhyve-ctl: guest stopped after the {stop.seconds:g} s timeout", file=sys.stderr)
        return EXIT_TIMEOUT, "timed-out"
    assert isinstance(stop, Crashed)
    pc = f" at pc 0x{stop.pc:x}" if stop.pc is not None else ""
    print(f"uhyve-ctl: guest stopped: {stop.reason}{pc}", file=sys.stderr)
    regs = vm.backend.registers()
    print("uhyve-ctl: registers: " + " ".join(f"{k}={v:#x}" for k, v in regs.items()),
          file=sys.stderr)
    if vm.files.refused:
        path, why = vm.files.refused
        print(f"uhyve-ctl: the guest's last refused open: '{path}' ({why}); a program that "
              f"goes on with fopen()'s NULL crashes (relative paths are under /: "
              f"--mount DIR:/ gives it a working directory)", file=sys.stderr)
    return EXIT_CRASH, "crashed"


def _unconfirmed(ckpt, state: str, code: int) -> None:
    """One line: the restored job died before its first migration point, and where the job
    is still safe."""
    how = {"crashed": "crashed", "refused": "could not start"}.get(
        state, f"exited with status {code}")
    line = f"uhyve-ctl: the restored job {how} before its first migration point"
    if ckpt.source_isa:
        line += (f"; the {ckpt.source_isa} state it was transformed from is kept in "
                 f"{ckpt.path} (resume it with: uhyve-ctl restore --source-copy {ckpt.path})")
    print(line, file=sys.stderr)


def _restore(args) -> int:
    from hexo.checkpoint import Checkpoint, CheckpointError
    try:
        ckpt = Checkpoint(args.checkpoint)
        if args.source_copy:
            ckpt = ckpt.source_copy()
        if args.fallback and ckpt.source_isa is None:
            raise CheckpointError(f"--fallback: {ckpt.path} keeps no untransformed copy to "
                                  f"fall back to (it was not transformed for another ISA)")
    except CheckpointError as e:
        print(f"uhyve-ctl: cannot restore: {e}", file=sys.stderr)
        return EXIT_NOSTART
    if not args.fallback:
        return _execute(args, ckpt)
    held = HeldOutput()
    try:
        code = _execute(args, ckpt, held)
    finally:
        held.close()
    if code != EXIT_UNCONFIRMED:
        return code
    source = ckpt.source_copy()
    print(f"uhyve-ctl: resuming from the kept {source.meta['isa']} copy", file=sys.stderr)
    args.isa, args.backend = None, "auto"
    return _execute(args, source)


def _checkpoint(args) -> int:
    from . import control
    mode = getattr(args, "mode", "stopcopy")
    if mode == "postcopy" and not args.serve:
        print("uhyve-ctl: --mode postcopy needs --serve HOST:PORT", file=sys.stderr)
        return 2
    try:
        reply = control.request(args.name, {
            "op": "checkpoint", "output": os.path.abspath(args.output),
            "target_isa": args.target_isa, "timeout": args.timeout,
            "compress": args.compress, "mode": mode, "serve": getattr(args, "serve", None),
            "keep_running": getattr(args, "keep_running", False)},
            timeout=args.timeout + 600)
    except control.ControlError as e:
        print(f"uhyve-ctl: {e}", file=sys.stderr)
        return 1
    if not reply.get("ok"):
        print(f"uhyve-ctl: checkpoint failed: {reply.get('error')}", file=sys.stderr)
        return 1
    xform = (f"transformed for {reply['isa']} in {reply['transform_ms']:.1f} ms, "
             if reply["transformed"] else "")
    print(f"{reply['path']}: stopped in {reply['stop_ms']:.1f} ms, {xform}written and verified "
          f"in {reply['checkpoint_ms']:.1f} ms"
          + ("; the job goes on" if getattr(args, "keep_running", False) else ""))
    if reply.get("serving"):
        print(f"{reply['path']}: minimal checkpoint; pages served at {reply['serving']} once "
              f"the full checkpoint {reply['path']}.full, being written, is durable")
    elif mode == "postcopy":
        print(f"{reply['path']}: every area fits in the checkpoint: a full checkpoint, no "
              f"pages to serve")
    return 0


def _ps(args) -> int:
    from . import control
    vms = control.list_vms()
    if args.json:
        import json
        print(json.dumps(vms))
        return 0
    print(f"{'NAME':16} {'PID':>7} {'ISA':8} {'BACKEND':7} {'MEM':>7} {'STATE':12} MIGRATION")
    for v in vms:
        mem = v.get("mem")
        mem = f"{mem >> 20:>5}Mi" if isinstance(mem, int) else f"{'?':>7}"
        print(f"{v.get('name', '?'):16} {v.get('pid', '?'):>7} {v.get('isa', '?'):8} "
              f"{v.get('backend', '?'):7} {mem} {v.get('state', '?'):12} "
              f"{v.get('migration', '-')}")
    return 0


def main(argv=None) -> int:
    """The command; without `argv` it is the process (the console script, a board's wrapper):
    a run or restore then ends with os._exit as soon as its output is flushed. By then the
    guest has stopped, every state file and checkpoint is durable and the threads left are
    daemons; the VM (guest RAM, KVM or emulator state, the guest's open files) is left to the
    kernel, which frees it at exit, and the interpreter's own teardown (finalizing every
    module and object), which would add ~2 ms of CPU to every job, is skipped. Not under a
    profiler or a tracer (cProfile, coverage): those report at exit. The cyclic garbage
    collector waits until the guest runs: start-up makes thousands of objects that live to the
    end, and collecting among them cost ~0.5 ms of a short job's CPU."""
    global _process_ends
    if argv is not None:
        return _main(argv)[0]
    _process_ends = sys.getprofile() is None and sys.gettrace() is None
    if _process_ends:
        gc.disable()        # enabled again by _drive once the guest runs
    code, cmd = _main(sys.argv[1:])
    if _process_ends and cmd in ("run", "restore"):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except OSError:
            code = 120              # what the interpreter's exit would make of it
        os._exit(code)
    return code


_process_ends = False      # main() ends the process after this command (a run or restore)


def _main(argv) -> tuple[int, str]:
    """The exit status and the command that gave it."""
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = _quick_run(argv[:split]) or _parser().parse_args(argv[:split])
    args.guest_args = argv[split + 1:]
    if args.cmd in ("run", "restore") and (args.checkpoint_at is None) != (
            args.checkpoint_dir is None):
        _parser().error("--checkpoint-at and --checkpoint-dir go together")
    if args.cmd in ("run", "restore") and args.checkpoint_at is not None \
            and args.checkpoint_at < 1:
        _parser().error("--checkpoint-at counts from 1")
    if args.cmd == "time" and args.point is not None and args.point < 1:
        _parser().error("--point counts from 1")
    command = {"run": _execute, "restore": _restore, "checkpoint": _checkpoint,
               "migrate": _checkpoint, "ps": _ps, "time": _time}[args.cmd]
    try:
        return command(args), args.cmd
    except Exception as e:            # the boundary: a defect is one sentence, not a traceback
        from .migration import one_line_cause
        print(f"uhyve-ctl: {one_line_cause(e, args.cmd)}", file=sys.stderr)
        return (EXIT_CRASH if args.cmd in ("run", "restore") else 1), args.cmd


if __name__ == "__main__":
    sys.exit(main())
