"""A unikernel VM: guest memory laid out per the ABI, one vCPU on a chosen backend."""

import _thread
import os
import time

from hexo import abi
from hexo.image import Image, ImageError

from . import kvm, paging
from .backends import Backend, BootState, Crashed, StopReason
from .hypercalls import FileTable, Hypercalls, Mount
from .ioring import OutputRing
from .memory import GuestMemory

DEFAULT_MEM = 256 << 20
HOST_ISA = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64",
            "arm64": "aarch64"}.get(os.uname().machine.lower())


def pick_backend(isa: str, requested: str = "auto") -> str:
    """KVM when the guest ISA is the host's and KVM is usable, else the emulator."""
    if requested not in ("auto", "kvm", "emu"):
        raise ValueError(f"unknown backend '{requested}' (auto, kvm, emu)")
    if requested == "emu":
        return requested
    if requested == "kvm" and isa != HOST_ISA:
        raise ValueError(f"the kvm backend runs {HOST_ISA} guests on this host, not {isa}")
    why_not = kvm.unavailable() if isa == HOST_ISA else "another ISA"
    if requested == "kvm" and why_not:
        raise ValueError(f"the kvm backend cannot run here: {why_not}")
    return "emu" if why_not else "kvm"


def make_backend(kind: str, memory: GuestMemory, isa: str, x86_entry: str = "auto",
                 absent=()) -> Backend:
    """`absent`: post-copy runs of guest RAM that defer_pages() will fill (an emulated CPU
    maps around them: unmapping them from its memory map costs it ~80 ms)."""
    if kind == "kvm" and isa == "aarch64":
        from .backends.kvm_aarch64 import Aarch64KvmBackend
        return Aarch64KvmBackend(memory, isa)
    if kind == "kvm":
        from .backends.kvm import KvmBackend
        return KvmBackend(memory, isa, mode=x86_entry)
    from .backends.emu import EmuBackend
    return EmuBackend(memory, isa, absent)


class VirtualMachine:
    """Boots one ISA build of an image, fresh or from a checkpoint; `run()` returns why the
    guest stopped."""

    def __init__(self, image: Image, isa: str, *, backend: str = "auto",
                 mem_size: int | None = None, argv: tuple[str, ...] | list[str] = (),
                 env: tuple[str, ...] | list[str] = (),
                 mounts: tuple[Mount, ...] | list[Mount] = (), x86_entry: str = "auto",
                 stdio: tuple[int, int, int] = (0, 1, 2), restore=None, pages=None):
        """`pages` (pager.PagingOptions): where the remote areas of a post-copy checkpoint
        come from."""
        self.image = image
        self.pager = None
        self.isa = isa
        self.build = image.build(isa)
        if restore is not None:
            mem_size = self._check_restore(restore)
        if image.index.abi_version >> 16 != abi.ABI_MAJOR:
            raise ImageError(f"{image.path}: built for hypercall ABI "
                             f"{image.index.abi_version >> 16}.x, this uhyve-ctl "
                             f"speaks {abi.ABI_MAJOR}.x")
        needed = image.index.min_mem
        mem_size = mem_size or max(DEFAULT_MEM, needed)
        mem_size = -(-mem_size // abi.MEM_ALIGN) * abi.MEM_ALIGN
        if mem_size < needed:
            raise ValueError(f"--mem {mem_size >> 20} MiB is below the {needed >> 20} MiB "
                             f"this image needs")
        self.backend_kind = pick_backend(isa, backend)
        small = self.image_end <= abi.IMAGE_BASE + abi.MEM_ALIGN    # a program in 2 MiB
        self.memory = GuestMemory(mem_size, abi.IMAGE_BASE + (abi.MEM_ALIGN if small else 0))
        try:
            self._load(image.elf(isa))
            self.files = FileTable(tuple(mounts), stdio)
            self._migrator = None
            self._migrator_lock = _thread.allocate_lock()
            self.ended: str | None = None      # why checkpoint requests get no checkpoint
            self.ring = OutputRing(self.memory, self.files)
            self.hypercalls = Hypercalls(self.memory, self.files,
                                         lambda *state: self.migrator.on_migrate(*state),
                                         self.ring)
            root = paging.BUILDERS[isa](self.memory)
            # A restored job gets the arguments and environment it started with: pointers
            # into them may be live in its frames or its data (getenv returns one).
            meta = restore.meta if restore is not None else {}
            self.argv = list(meta.get("argv", argv))
            self.env = list(meta.get("env", env))
            argv_addr = self._write_args([image.index.name] + self.argv,
                                         self.env)
            if restore is not None:
                self._restore(restore)
            self.ring.reset()
            if restore is not None and restore.remote_areas:
                self._connect_pager(restore, pages)
            self.backend = make_backend(self.backend_kind, self.memory, isa, x86_entry,
                                        self.pager.tracker.areas if self.pager else ())
            if self.pager is not None:
                self.backend.defer_pages(self.pager)
                self.memory.on_access = self.pager.ensure
            self.backend.boot(BootState(self.build.entry, self._boot_stack(restore),
                                        abi.BOOT_INFO_ADDR, root))
            counter_hz = self.backend.counter_hz()
            self._write_boot_info(root, argv_addr, len(self.argv) + 1, restore is not None,
                                  counter_hz)
            self.memory.write(abi.SHARED_PAGE_ADDR, abi.SHARED_PAGE.pack(
                magic=abi.SHARED_PAGE_MAGIC, abi_version=abi.ABI_VERSION,
                counter_hz=counter_hz))
        except BaseException:
            if self.pager is not None:
                self.pager.demand_link.close()
            self.memory.close()
            raise

    @property
    def migrator(self):
        """The VM's Migrator, made on first use (by a request, or by a guest's MIGRATE
        hypercall): a run that is never asked to checkpoint does not load migration.py."""
        with self._migrator_lock:           # the control thread and the vCPU may race here
            if self._migrator is None:
                from .migration import Migrator
                self._migrator = Migrator(self)
            return self._migrator

    def end_requests(self, why: str) -> None:
        """The run is over: a checkpoint request pending or still to come is answered with
        `why` at once (it would otherwise wait for a point that never comes, and the
        process end would cut its connection)."""
        with self._migrator_lock:
            self.ended = why
            m = self._migrator
        if m is not None:
            m.end(why)

    @property
    def page_server(self):
        """The post-copy page server a migration of this guest started, if any."""
        return self._migrator.page_server if self._migrator is not None else None

    def _load(self, elf: bytes) -> None:
        elf = memoryview(elf)        # segments go into guest RAM without a copy of their own
        for s in self.build.segments:
            if (s.vaddr < abi.IMAGE_BASE or s.vaddr + s.memsz > self.memory.size
                    or s.offset + s.filesz > len(elf) or s.filesz > s.memsz):
                raise ImageError(f"{self.image.path}: {self.isa} segment at 0x{s.vaddr:x} "
                                 f"does not fit the guest memory map")
            self.memory.write(s.vaddr, elf[s.offset:s.offset + s.filesz])

    @property
    def image_end(self) -> int:
        end = max(s.vaddr + s.memsz for s in self.build.segments)
        return -(-end // abi.PAGE_SIZE) * abi.PAGE_SIZE

    def _write_args(self, argv: list[str], env: list[str]) -> int:
        """The argv pointer table, a null, the environment's pointer table, a null, then
        the strings (docs/formats.md, guest memory map)."""
        strings = [a.encode() + b"\0" for a in argv + env]
        table = 8 * (len(argv) + len(env) + 2)
        if table + sum(map(len, strings)) > abi.ARGS_SIZE:
            raise ValueError(f"guest arguments and environment exceed {abi.ARGS_SIZE} bytes")
        pointers, ptr = [], abi.ARGS_ADDR + table
        for group in (strings[:len(argv)], strings[len(argv):]):
            for s in group:
                pointers.append(ptr)
                ptr += len(s)
            pointers.append(0)
        self.memory.write(abi.ARGS_ADDR, b"".join(p.to_bytes(8, "little") for p in pointers)
                          + b"".join(strings))
        return abi.ARGS_ADDR

    @property
    def app_data(self) -> tuple[int, int]:
        return self.image.index.app_data

    def check_areas(self, areas: list[tuple[str, int, int]], sp: int, brk: int) -> None:
        """Refuse migration areas outside where application state can live."""
        heap = (self.image_end, self.memory.size)
        allowed = {"data": self.app_data, "heap": heap, "stack": (abi.STACK_BOTTOM, abi.STACK_TOP)}
        if not (abi.STACK_BOTTOM <= sp <= abi.STACK_TOP and heap[0] <= brk <= heap[1]):
            raise ValueError(f"stack pointer 0x{sp:x} or heap break 0x{brk:x} out of range")
        for kind, start, size in areas:
            lo, hi = allowed.get(kind, (0, 0))
            if not (lo <= start and start + size <= hi):
                raise ValueError(f"{kind} area [0x{start:x}, +0x{size:x}) is outside "
                                 f"[0x{lo:x}, 0x{hi:x})")

    def check_context(self, pc: int, sp: int) -> None:
        """Refuse a saved context that cannot resume this build: pc outside its code, sp
        outside the stack (a forged or corrupt context must not stop a job that runs)."""
        code = [(s.vaddr, s.vaddr + s.memsz) for s in self.image.build(self.isa).segments
                if "x" in s.flags]
        if not any(lo <= pc < hi for lo, hi in code):
            raise ValueError(f"pc 0x{pc:x} is outside the {self.isa} code of {self.image.path}")
        if not abi.STACK_BOTTOM <= sp <= abi.STACK_TOP:
            raise ValueError(f"stack pointer 0x{sp:x} is outside the stack "
                             f"[0x{abi.STACK_BOTTOM:x}, 0x{abi.STACK_TOP:x}]")

    @staticmethod
    def _boot_stack(restore) -> int:
        """A restoring kernel boots on stack below the restored frames, not over them."""
        if restore is None:
            return abi.STACK_TOP
        top = (restore.meta["context"]["sp"] - abi.PAGE_SIZE) & ~0xF
        if top - abi.STACK_BOTTOM < 4 * abi.PAGE_SIZE:
            raise ValueError("the restored stack leaves no room to boot the kernel")
        return top

    def _check_restore(self, ckpt) -> int:
        meta = ckpt.meta
        ckpt.check_image(self.image)
        if meta["isa"] != self.isa:
            raise ValueError(f"{ckpt.path} holds {meta['isa']} registers; transform it for "
                             f"{self.isa} first")
        self.check_context(meta["context"]["pc"], meta["context"]["sp"])
        return meta["mem_size"]

    def _restore(self, ckpt) -> None:
        meta = ckpt.meta
        ctx, kernel = meta["context"], meta["kernel"]
        self.check_areas([(a.kind, a.start, a.size) for a in ckpt.areas], ctx["sp"],
                         kernel["brk"])
        for area in ckpt.areas:
            if not area.remote:
                self.memory.write(area.start, ckpt.read(area))
        callee = {f"callee{i}": ctx[n] for i, n in enumerate(abi.CALLEE_SAVED[self.isa])}
        self.memory.write(abi.RESTORE_CONTEXT_ADDR, abi.CPU_CONTEXT.pack(
            isa=abi.ISA_IDS[self.isa], pc=ctx["pc"], sp=ctx["sp"], **callee))
        self.memory.write(abi.RESTORE_KERNEL_ADDR, abi.KERNEL_STATE.pack(**kernel))
        self.files.reopen(meta["files"])
        self.files.output.update(meta.get("output", {}))

    def _connect_pager(self, ckpt, pages) -> None:
        """Post-copy: the remote areas stay absent until touched or pulled; the backend,
        made next, leaves them out of the guest's memory."""
        from .pager import Pager
        if pages is None:
            raise ValueError(f"{ckpt.path} is a post-copy checkpoint: its memory comes from "
                             f"the source's page server (--pages-from HOST:PORT)")
        self.pager = Pager([(a.start, a.size) for a in ckpt.remote_areas], pages,
                           self.memory.read, self.memory.fill)
        self.pager.connect()

    def _write_boot_info(self, root: int, argv: int, argc: int, restoring: bool,
                         counter_hz: int) -> None:
        """Written once the vCPU exists: its counter is read between two readings of the
        host's clock, whose midpoint the guest takes as the counter's instant (a restored
        guest so gets the clocks of the machine it resumes on)."""
        types = self.files.stdio_types()
        before = time.monotonic_ns()
        counter = self.backend.read_counter() if counter_hz else 0
        after = time.monotonic_ns()
        realtime = time.time_ns()
        monotonic = (before + after) // 2
        # a 1.5 guest line-buffers stdout on a character device or what could not be examined
        stdout_terminal = types[1] not in (abi.STDIO_TYPES["STDIO_FILE"],
                                           abi.STDIO_TYPES["STDIO_PIPE"])
        self.memory.write(abi.BOOT_INFO_ADDR, abi.BOOT_INFO.pack(
            magic=abi.BOOT_INFO_MAGIC, abi_version=abi.ABI_VERSION, isa=abi.ISA_IDS[self.isa],
            flags=abi.BOOT_STDOUT_TERMINAL if stdout_terminal else 0,
            mem_size=self.memory.size, image_start=abi.IMAGE_BASE, image_end=self.image_end,
            heap_start=self.image_end, heap_end=self.memory.size, stack_bottom=abi.STACK_BOTTOM,
            stack_top=abi.STACK_TOP, page_table_root=root, shared_page=abi.SHARED_PAGE_ADDR,
            argc=argc, argv=argv, app_data_start=self.app_data[0], app_data_end=self.app_data[1],
            restore_context=abi.RESTORE_CONTEXT_ADDR if restoring else 0,
            restore_kernel=abi.RESTORE_KERNEL_ADDR if restoring else 0,
            stdio_types=types[0] | types[1] << 8 | types[2] << 16,
            clock_monotonic_ns=monotonic, clock_realtime_ns=realtime - (after - monotonic),
            clock_counter=counter))

    def run(self, timeout: float | None = None) -> StopReason:
        if self.pager is not None:
            self.pager.start()
        self.ring.start(interruptible=self.backend_kind == "kvm")
        try:
            stop = self.backend.run(self.hypercalls, timeout)
        finally:
            self.ring.stop()
            broken = self.ring.drain()      # what the guest wrote before it stopped
        if broken is not None and not isinstance(stop, Crashed):
            return Crashed(broken)
        if isinstance(stop, Crashed):
            regs = self.backend.registers()
            sp = regs.get("sp", regs.get("rsp"))
            if sp is not None and (abi.STACK_GUARD - abi.PAGE_SIZE <= sp
                                   < abi.STACK_BOTTOM + abi.PAGE_SIZE):
                stop = stop._replace(reason=f"{stop.reason}; stack overflow: sp 0x{sp:x} reached "
                                     f"the guard page below the "
                                     f"{(abi.STACK_TOP - abi.STACK_BOTTOM) >> 10} KiB stack")
        return stop

    def close(self) -> None:
        if self.pager is not None:
            self.pager.demand_link.close()
            self.pager.pull_link.close()
            self.memory.on_access = None
        self.backend.close()
        self.files.close_all()
        self.memory.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
