"""Checkpointing a running guest at its next migration point.

A control thread calls `Migrator.request()`: it raises the flag in the shared page and waits.
The guest sees the flag at its next `hexo_check_migrate()`, saves its registers and makes the
MIGRATE hypercall, which lands in `Migrator.on_migrate()` on the vCPU thread. That writes and
verifies the checkpoint and only then stops the guest. If writing fails, or the request
timed out meanwhile, the guest is told so and keeps running: the source copy of a job is
never discarded before its checkpoint is durable. A failure is reported as one sentence, never
as a Python error's text. A *live* checkpoint (`keep_running`) is written and verified the
same way, and then the guest goes on from its migration point instead of stopping.

A *probe* request checkpoints nothing: the guest's next migration point only tells the host
that it got there (a restored job confirms that its state was sound), and with `skip` set
the guest counts the points it passes (`count_points`).
"""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections import namedtuple
from collections.abc import Callable

from hexo import abi
from hexo.errors import HexoError, one_line

from .backends import Checkpointed
from . import UhyveError

_KIND_NAMES = {v: k.removeprefix("AREA_").lower() for k, v in abi.AREA_KINDS.items()}


class MigrationError(UhyveError):
    """A checkpoint request that did not produce a checkpoint; the guest keeps running."""


INLINE_LIMIT = 64 << 10     # post-copy: areas up to this size travel in the checkpoint
ALL_POINTS = 2 ** 32 - 1    # a skip count no job exhausts: the guest counts every point


def one_line_cause(err: BaseException, stage: str) -> str:
    """The reason a user reads: the core's and the runtime's errors say their own sentence."""
    return one_line(err, stage, (HexoError, UhyveError))


class Request(namedtuple("Request", "output target_isa compress mode serve skip keep_running",
                         defaults=("stopcopy", None, 0, False))):
    # mode: "stopcopy", "postcopy", or "probe" (checkpoint nothing)
    # serve: postcopy: HOST:PORT of the page server
    # skip: migration points the guest lets pass before acting
    # keep_running: stopcopy: the guest goes on once the checkpoint is written and verified
    __slots__ = ()


def served_remotely(kind: str, size: int) -> bool:
    """Post-copy leaves the big areas at the source; the stack (rewritten for the target
    ISA, needed at once) and small areas go inline."""
    return kind != "stack" and size > INLINE_LIMIT


class Migrator:
    def __init__(self, vm):
        self.vm = vm
        self._lock = threading.Lock()
        self._pending: Request | None = None
        self._done = threading.Event()
        self._result: str | Exception | None = None     # the last request's outcome
        self._answer: str | Exception | None = None     # what its requester was told
        offset = abi.SHARED_PAGE.offset("migrate_request")
        base = vm.memory.host_address + abi.SHARED_PAGE_ADDR
        self._flag = ctypes.c_uint32.from_address(base + offset)
        self._target = ctypes.c_uint32.from_address(
            base + abi.SHARED_PAGE.offset("migrate_target_isa"))
        self._skip = ctypes.c_uint32.from_address(base + abi.SHARED_PAGE.offset("migrate_skip"))
        self.timings: dict[str, float] = {}
        self.page_server = None       # post-copy: serving the stopped guest's areas
        self.passed_point = threading.Event()    # the guest reached a migration point
        self.on_point: Callable[[], None] | None = None     # called once, on that thread
        # post-copy: the full checkpoint failed after the requester was answered; the guest
        # goes on here (called with the reason, on the vCPU thread)
        self.on_resumed: Callable[[str], None] | None = None
        self._stage = "checkpoint"

    def end(self, why: str) -> None:
        """No migration point will come (the VM's run is over, `vm.ended`): answer a pending
        request; arm() refuses later ones."""
        with self._lock:
            req, self._pending = self._pending, None
        if req is not None and req.mode != "probe":
            self._answer_with(MigrationError(why))

    def probe(self, on_point: Callable[[], None]) -> None:
        """Call `on_point` at the guest's next migration point and let it run on; a real
        request made meanwhile takes the probe's place (and confirms as well)."""
        self.on_point = on_point
        self.arm(Request("", self.vm.isa, False, mode="probe"))

    def count_points(self) -> None:
        """Before the guest runs: have it count every migration point it passes."""
        self.arm(Request("", self.vm.isa, False, mode="probe", skip=ALL_POINTS))

    @property
    def points_counted(self) -> int:
        return ALL_POINTS - self._skip.value + (1 if self.passed_point.is_set() else 0)

    def arm(self, req: Request) -> None:
        """Raise the request without waiting: before the guest runs, `req.skip` = N - 1
        makes the checkpoint happen at exactly the Nth migration point."""
        if not 0 <= req.skip < 2 ** 32:
            raise MigrationError(f"cannot let {req.skip} migration points pass")
        if req.keep_running and req.mode != "stopcopy":
            raise MigrationError(f"a {req.mode} checkpoint cannot leave the job running")
        if req.mode != "probe":
            self._prepare(req.target_isa)
        with self._lock:
            if self.vm.ended is not None:
                raise MigrationError(self.vm.ended)
            if self._pending is not None and self._pending.mode != "probe":
                raise MigrationError("a checkpoint of this VM is already in progress")
            self._pending, self._result, self._answer = req, None, None
            self._done.clear()
            self.timings = {"requested": time.perf_counter()}
            self._target.value = abi.ISA_IDS[req.target_isa]
            self._skip.value = req.skip
            self._flag.value = abi.MIGRATE_REQUESTED    # one aligned 32-bit store, the last

    def _prepare(self, target_isa: str) -> None:
        """Everything the checkpoint needs that does not depend on the guest's state, loaded
        while the guest still runs: the writer's code and both ISAs' migration metadata."""
        from hexo import checkpoint, retarget  # noqa: F401  (a run that never migrates skips them)
        if target_isa != self.vm.isa:
            try:
                retarget.metadata(self.vm.image, self.vm.isa)
                retarget.metadata(self.vm.image, target_isa)
            except HexoError as e:
                raise MigrationError(f"cannot move this job to {target_isa}: {e}") from None

    def request(self, req: Request, timeout: float) -> str:
        """Checkpoint at the next migration point (after `req.skip` more); returns the
        checkpoint path."""
        self.arm(req)
        if not self._done.wait(timeout):
            with self._lock:
                if self._pending is req:                # the guest has not started yet
                    self._flag.value = 0
                    self._skip.value = 0
                    self._pending = None
                    raise MigrationError(
                        f"the guest reached no migration point within {timeout:g} s; "
                        f"it keeps running")
            self._done.wait()
        if isinstance(self._answer, Exception):
            raise MigrationError(str(self._answer))
        return self._answer

    def outcome(self) -> str | None:
        """Why the last request produced no checkpoint, if it failed."""
        return str(self._result) if isinstance(self._result, Exception) else None

    def on_migrate(self, ctx: dict, kernel: dict, areas: list[dict]):
        with self._lock:
            req, self._pending = self._pending, None
            self._flag.value = 0
            self._skip.value = 0
        if req is None:
            return -abi.ERRNO["EAGAIN"]                  # request withdrawn: keep running
        if not self.passed_point.is_set():
            self.passed_point.set()
            if self.on_point is not None:
                self.on_point()
        if req.mode == "probe":
            self._done.set()
            return -abi.ERRNO["EAGAIN"]
        t0 = time.perf_counter()
        self.timings["stopped"] = t0
        self.timings["transform_s"] = 0.0
        self._stage = "checkpoint"
        try:
            path = self._write(req, ctx, kernel, areas)
        except Exception as e:                           # reported to the requester
            error = MigrationError(one_line_cause(e, self._stage))
            if self._done.is_set() and self.on_resumed is not None:
                self.on_resumed(str(error))              # it had been told of a checkpoint
            self._answer_with(error)
            self._result = error
            return -abi.ERRNO["EIO"]
        self._answer_with(path)
        return 0 if req.keep_running else Checkpointed(path)

    def _answer_with(self, result: str | Exception) -> None:
        """Answer the requester, once: a checkpoint path, or why there is none."""
        if not self._done.is_set():
            if not isinstance(result, Exception):
                self.timings["written"] = time.perf_counter()
            self._answer = self._result = result
            self._done.set()

    def _write(self, req: Request, ctx: dict, kernel: dict, areas: list[dict]) -> str:
        vm = self.vm
        isa = vm.isa
        if ctx["isa"] != abi.ISA_IDS[isa]:
            raise MigrationError(f"guest context claims ISA {ctx['isa']}, VM runs {isa}")
        names = abi.CALLEE_SAVED[isa]
        regs = {"pc": ctx["pc"], "sp": ctx["sp"]}
        regs.update({n: ctx[f"callee{i}"] for i, n in enumerate(names)})
        state = {
            "image": {"path": os.path.abspath(vm.image.path), "build_id": vm.image.index.build_id,
                      "name": vm.image.index.name},
            "isa": isa, "target_isa": req.target_isa, "mem_size": vm.memory.size,
            "abi_version": abi.ABI_VERSION, "created": time.time(),
            "context": regs, "kernel": kernel, "files": vm.files.describe(), "argv": vm.argv,
            "env": vm.env, "output": dict(vm.files.output),
        }
        from hexo import checkpoint, retarget   # loaded by _prepare while the guest ran
        mem = vm.memory
        data = [(_KIND_NAMES.get(a["kind"], "unknown"), a["start"],
                 mem.slice(a["start"], a["size"])) for a in areas]
        try:
            vm.check_areas([(k, s, len(d)) for k, s, d in data], regs["sp"], kernel["brk"])
            vm.check_context(regs["pc"], regs["sp"])
        except ValueError as e:
            raise MigrationError(f"the guest gave an invalid migration state: {e}") from None
        t0 = time.perf_counter()
        kept = retarget.kept_source(state, data, req.target_isa)
        self._stage = f"the transform for {req.target_isa}"
        state, data = retarget.retarget(state, data, vm.image, req.target_isa)
        self._stage = "writing the checkpoint"
        self.timings["transform_s"] = time.perf_counter() - t0
        if req.mode == "postcopy":
            return self._write_postcopy(req, state, data, kept)
        return checkpoint.write(req.output, state, data, req.compress, kept=kept).path

    def _write_postcopy(self, req: Request, state: dict, data: list, kept) -> str:
        """A minimal checkpoint, a listening page server holding the areas it leaves out, and
        a full checkpoint beside it (the fallback if either side dies before every page has
        arrived). The requester is answered once the minimal one is durable, so the target is
        copied and started while the full one is written; the page server welcomes no target
        before that is durable too, so no target runs while this process's memory is the
        job's only complete copy. If the full checkpoint cannot be written, the server
        refuses every target, the minimal checkpoint is removed and the guest keeps running."""
        from hexo import checkpoint

        from .pageserver import PageServer
        from .pagewire import VERSION, parse_address
        if not req.serve:
            raise MigrationError("post-copy needs a page server address (--serve HOST:PORT)")
        if not any(served_remotely(kind, len(d)) for kind, _, d in data):
            # Every area fits in the checkpoint: it is already complete, and a page server
            # no target ever connects to would hold the source forever.
            return checkpoint.write(req.output, state, data, req.compress, kept=kept).path
        secret = os.urandom(32)
        host, port = parse_address(req.serve)
        server = PageServer((host, port), secret,
                            [(s, d) for k, s, d in data if served_remotely(k, len(d))],
                            held=True)
        try:
            full = os.path.abspath(req.output).rstrip(os.sep) + ".full"
            bound = f"{host if ':' not in host else f'[{host}]'}:{server.address[1]}"
            minimal = dict(state, postcopy={"protocol": list(VERSION), "server": bound,
                                            "secret": secret.hex(), "full_checkpoint": full})
            path = checkpoint.write(req.output, minimal, data, req.compress,
                                    remote=served_remotely, kept=kept).path
        except BaseException:
            server.close()
            raise
        server.start()
        self.page_server = server
        self._answer_with(path)
        try:
            checkpoint.write(full, state, data, req.compress, kept=kept)
        except Exception as e:
            import shutil
            why = (f"the source could not write its full checkpoint "
                   f"({one_line_cause(e, 'writing it')}); the job goes on there")
            server.refuse(why)
            self.page_server = None
            shutil.rmtree(path, ignore_errors=True)
            server.close()
            raise MigrationError(why) from None
        server.release()
        return path
