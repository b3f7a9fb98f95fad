"""uhyve-ctl: run a hexo unikernel image on KVM or on an emulated CPU.

Exit status: the guest's own exit status; 124 when --timeout expired; 125 when the guest
crashed or broke the hypercall ABI; 126 when the VM could not be started.
"""

from __future__ import annotations

import argparse
import sys
import time

EXIT_TIMEOUT, EXIT_CRASH, EXIT_NOSTART = 124, 125, 126


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="uhyve-ctl", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="boot an image and run it to completion",
                       description="Boot IMAGE and run it; arguments after -- go to the guest.")
    r.add_argument("image")
    r.add_argument("--isa", choices=("x86_64", "aarch64"), help="which build to run "
                   "(default: this host's ISA)")
    r.add_argument("--backend", choices=("auto", "kvm", "emu"), default="auto",
                   help="kvm: hardware virtualization; emu: emulated CPU (default: kvm when "
                        "the ISA is the host's, else emu)")
    r.add_argument("--mem", help="guest RAM, e.g. 512M or 2G (default: 256M or what the "
                   "image needs)")
    r.add_argument("--mount", action="append", default=[], metavar="HOST_DIR[:GUEST_DIR[:ro]]",
                   help="let the guest open files below HOST_DIR (repeatable)")
    r.add_argument("--timeout", type=float, help="stop the guest after this many seconds")
    r.add_argument("--x86-entry", choices=("auto", "user", "kernel"), default="auto",
                   help="x86-64 KVM guest privilege: user (CPL3, needed on PVM hosts) or "
                        "kernel (CPL0, VT-x hosts); auto detects")
    r.add_argument("--stats", action="store_true", help="print timing and exit counts to stderr")
    return p


def _run(args) -> int:
    from hexo.image import Image, ImageError

    from .backends.base import Crashed, Exited, TimedOut
    from .hypercalls import Mount
    from .vm import HOST_ISA, VirtualMachine, parse_size

    t0 = time.perf_counter()
    guest_args = args.guest_args
    try:
        image = Image(args.image)
        vm = VirtualMachine(image, args.isa or HOST_ISA, backend=args.backend,
                            mem_size=parse_size(args.mem) if args.mem else None,
                            argv=guest_args, mounts=[Mount.parse(m) for m in args.mount],
                            x86_entry=args.x86_entry)
    except (ImageError, ValueError, OSError) as e:
        print(f"uhyve-ctl: cannot start: {e}", file=sys.stderr)
        return EXIT_NOSTART
    with vm:
        t1 = time.perf_counter()
        stop = vm.run(args.timeout)
        t2 = time.perf_counter()
        if args.stats:
            print(f"uhyve-ctl: {vm.isa} on {vm.backend_kind}: setup {1e3 * (t1 - t0):.1f} ms, "
                  f"run {1e3 * (t2 - t1):.1f} ms, {vm.hypercalls.count} hypercalls",
                  file=sys.stderr)
        if isinstance(stop, Exited):
            return stop.status & 0xFF
        if isinstance(stop, TimedOut):
            print(f"uhyve-ctl: guest stopped after the {stop.seconds:g} s timeout",
                  file=sys.stderr)
            return EXIT_TIMEOUT
        assert isinstance(stop, Crashed)
        pc = f" at pc 0x{stop.pc:x}" if stop.pc is not None else ""
        print(f"uhyve-ctl: guest stopped: {stop.reason}{pc}", file=sys.stderr)
        regs = vm.backend.registers()
        print("uhyve-ctl: registers: " + " ".join(f"{k}={v:#x}" for k, v in regs.items()),
              file=sys.stderr)
        return EXIT_CRASH


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)
    args = _parser().parse_args(argv[:split])
    args.guest_args = argv[split + 1:]
    if args.cmd == "run":
        return _run(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
