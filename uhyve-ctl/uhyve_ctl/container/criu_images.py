"""CRIU images <-> the transform core: a dumped Linux-mode process recoded for the other ISA.

What changes (docs/formats.md, section 8): the stack pages
[sp, STACK_TOP) are rewritten by hexo.retarget (the very function VM checkpoints go through);
the transformed hexo_cpu_context is stored at LINUX_CONTEXT_ADDR and the thread's registers
in core-PID.img are replaced by the other ISA's, entering hexo_linux_resume() with that address
as its argument; the vdso, vvar and vsyscall areas are dropped (the runtime never calls them);
the executable in files.img becomes the other ISA's build of the same image. Globals and the
heap stay as they are: both ISAs share one layout. Images are read and written with pycriu.
"""

from __future__ import annotations

import stat
from pathlib import Path

from hexo import abi, retarget

from . import criu, process
from .process import ProcessError

PAGE = abi.PAGE_SIZE
# VMA status bits (CRIU's criu/include/image.h): VSYSCALL, VDSO, VVAR.
DROPPED_VMAS = 1 << 2 | 1 << 3 | 1 << 12
PROT_WRITE = 2
# Auxiliary vector entries that describe the source ISA or its vdso, dropped (the target's
# CRIU bounds the vector by its own, smaller on arm64, AT_VECTOR_SIZE): AT_PLATFORM, AT_HWCAP,
# AT_SYSINFO_EHDR, AT_HWCAP2, AT_MINSIGSTKSZ, and the AT_NULL/AT_IGNORE padding.
_DROPPED_AUXV = {0, 1, 15, 16, 33, 26, 51}
_MTYPE = {"x86_64": "X86_64", "aarch64": "AARCH64"}
# Open-file flags whose bits differ between the ISAs' Linux ABIs (fcntl.h), as
# (x86-64, aarch64): an arm64 file's O_LARGEFILE is x86-64's O_NOFOLLOW, with which CRIU's
# reopening of a pipe through /proc/self/fd fails (ELOOP).
_OPEN_FLAGS = {"O_DIRECT": (0o40000, 0o200000), "O_LARGEFILE": (0o100000, 0o400000),
               "O_DIRECTORY": (0o200000, 0o40000), "O_NOFOLLOW": (0o400000, 0o100000)}
_ISA_COLUMN = {"x86_64": 0, "aarch64": 1}


def load_image(directory: Path, name: str) -> dict:
    with open(directory / name, "rb") as f:
        return criu.pycriu().images.load(f)


def dump_image(directory: Path, name: str, img: dict) -> None:
    with open(directory / name, "wb") as f:
        criu.pycriu().images.dump(img, f)


class Pages:
    """A process's dumped memory (pagemap-PID.img + pages-N.img) as page address -> bytes."""

    def __init__(self, directory: Path, pid: int):
        self.directory, self.name = directory, f"pagemap-{pid}.img"
        self.pagemap = load_image(directory, self.name)
        head, *entries = self.pagemap["entries"]
        self.pages_file = f"pages-{head['pages_id']}.img"
        raw = (directory / self.pages_file).read_bytes()
        self.pages, self.flags, off = {}, {}, 0
        for e in entries:
            for i in range(e["nr_pages"]):
                addr = e["vaddr"] + i * PAGE
                self.pages[addr] = bytearray(raw[off:off + PAGE])
                self.flags[addr] = e.get("flags")
                off += PAGE
        self.default_flags = next(iter(self.flags.values()), None)

    def read(self, addr: int, size: int) -> bytes:
        out = bytearray()
        for a in range(addr & ~(PAGE - 1), addr + size, PAGE):
            out += self.pages.get(a, bytes(PAGE))
        start = addr & (PAGE - 1)
        return bytes(out[start:start + size])

    def write(self, addr: int, data: bytes) -> None:
        for a in range(addr & ~(PAGE - 1), addr + len(data), PAGE):
            if a not in self.pages:
                self.pages[a] = bytearray(PAGE)
                self.flags[a] = self.default_flags
        pos = 0
        while pos < len(data):
            a = (addr + pos) & ~(PAGE - 1)
            o = (addr + pos) - a
            n = min(PAGE - o, len(data) - pos)
            self.pages[a][o:o + n] = data[pos:pos + n]
            pos += n

    def drop(self, start: int, end: int) -> None:
        for a in [a for a in self.pages if start <= a < end]:
            del self.pages[a], self.flags[a]

    def save(self) -> None:
        entries, blob = [], bytearray()
        for a in sorted(self.pages):
            last = entries[-1] if entries else None
            if last and last["vaddr"] + last["nr_pages"] * PAGE == a \
                    and last.get("flags") == self.flags[a]:
                last["nr_pages"] += 1
            else:
                e = {"vaddr": a, "nr_pages": 1}
                if self.flags[a] is not None:
                    e["flags"] = self.flags[a]
                entries.append(e)
            blob += self.pages[a]
        self.pagemap["entries"] = self.pagemap["entries"][:1] + entries
        dump_image(self.directory, self.name, self.pagemap)
        (self.directory / self.pages_file).write_bytes(bytes(blob))


def symbol(image, isa: str, name: str) -> int:
    value = retarget.metadata(image, isa).raw["symbols"].get(name)
    if value is None:
        raise ProcessError(f"the {isa} build of {image.path} has no symbol {name}")
    return value


def _thread_info(isa: str, pc: int, sp: int, arg: int, old: dict) -> dict:
    """Registers that enter hexo_linux_resume(arg) at `pc` on `isa`; everything else zero."""
    if isa == "aarch64":
        regs = [0] * 31
        regs[0] = arg
        return {"clear_tid_addr": old.get("clear_tid_addr", 0), "tls": 0,
                "gpregs": {"regs": regs, "sp": sp, "pc": pc, "pstate": 0},
                "fpsimd": {"vregs": [0] * 64, "fpsr": 0, "fpcr": 0}}
    names = ("r15", "r14", "r13", "r12", "bp", "bx", "r11", "r10", "r9", "r8", "ax", "cx",
             "dx", "si", "di", "orig_ax", "ip", "cs", "flags", "sp", "ss", "fs_base",
             "gs_base", "ds", "es", "fs", "gs")
    gp = dict.fromkeys(names, 0)
    gp.update({"di": arg, "ip": pc, "sp": sp, "cs": 0x33, "ss": 0x2b, "flags": 0x202,
               "orig_ax": 2 ** 64 - 1, "mode": "NATIVE"})
    return {"clear_tid_addr": old.get("clear_tid_addr", 0), "gpregs": gp,
            "fpregs": {"cwd": 0x37F, "swd": 0, "twd": 0, "fop": 0, "rip": 0, "rdp": 0,
                       "mxcsr": 0x1F80, "mxcsr_mask": 0xFFFF, "st_space": [0] * 32,
                       "xmm_space": [0] * 64, "padding": [0] * 24}}


def tmpfs_contents(directory: Path, mount: dict) -> Path:
    """Where CRIU keeps the files of a dumped tmpfs (named by its device, not its mount)."""
    return directory / f"tmpfs-dev-{mount['root_dev']}.tar.gz.img"


def drop_mounts(directory: Path, dropped) -> list[str]:
    """Remove the mounts whose mount point `dropped(path)` says from the dumped mount
    namespaces (with the contents CRIU saved of a tmpfs no kept mount shows); their mount
    points."""
    gone = []
    for mounts in directory.glob("mountpoints-*.img"):
        img = load_image(directory, mounts.name)
        kept = [m for m in img["entries"] if not dropped(m["mountpoint"])]
        devices = {m["root_dev"] for m in kept}
        for m in img["entries"]:
            if dropped(m["mountpoint"]):
                if m["root_dev"] not in devices:
                    tmpfs_contents(directory, m).unlink(missing_ok=True)
                gone.append(m["mountpoint"])
        img["entries"] = kept
        dump_image(directory, mounts.name, img)
    return gone


def mark_running(directory: Path, pid: int, until_point: bool = False,
                 held: bool = False) -> None:
    """Say `running` in the dumped shared page: a restored process leaves its park at the
    point by itself (kernel-images/linux/runtime.c; one recoded for the other ISA parks in
    hexo_linux_resume()). With `held` the page says `stopped` instead: the job waits at its
    point until a tool continues it (process.resume). With `until_point` the migration
    request is raised in the page too: the restored job stops at its very next point, however
    soon it gets there (a request written after the restore could come too late)."""
    pages = Pages(directory, pid)
    shared = abi.SHARED_PAGE
    state = process.LINUX_STOPPED if held else process.LINUX_RUNNING
    pages.write(abi.LINUX_PAGE_ADDR + shared.offset("guest_state"), state.to_bytes(4, "little"))
    if until_point:
        pages.write(abi.LINUX_PAGE_ADDR + shared.offset("migrate_request"),
                    abi.MIGRATE_REQUESTED.to_bytes(4, "little"))
        pages.write(abi.LINUX_PAGE_ADDR + shared.offset("migrate_skip"), bytes(4))
    pages.save()


def recode(directory: Path, state: dict, image, to_isa: str, exe: Path | None = None) -> dict:
    """Rewrite the CRIU images of `directory` (a process dumped at a migration point) so that
    CRIU restores it on `to_isa` with `exe` (default: the build unpacked under the hexo home)
    as its executable; the new hexo-process state."""
    pid, isa = state["pid"], state["isa"]
    pstree = load_image(directory, "pstree.img")["entries"]
    if len(pstree) != 1 or pstree[0].get("threads", [pid]) != [pid]:
        raise ProcessError("only single-threaded, single-process jobs can change ISA")
    pages = Pages(directory, pid)
    sp = state["context"]["sp"]
    stack = pages.read(sp, abi.STACK_TOP - sp)
    new_state, areas = retarget.retarget({"isa": isa, "context": state["context"]},
                                         [("stack", sp, stack)], image, to_isa)
    _, low, new_stack = areas[-1]
    pages.drop(abi.STACK_BOTTOM, abi.STACK_TOP)
    pages.write(low, new_stack)
    ctx = new_state["context"]
    pages.write(abi.LINUX_CONTEXT_ADDR, abi.CPU_CONTEXT.pack(
        isa=abi.ISA_IDS[to_isa], reserved=0, pc=ctx["pc"], sp=ctx["sp"],
        **{f"callee{i}": ctx.get(n, 0) for i, n in enumerate(abi.CALLEE_SAVED[to_isa])},
        **{f"callee{i}": 0 for i in range(len(abi.CALLEE_SAVED[to_isa]), abi.CALLEE_SLOTS)}))

    mm_name = f"mm-{pid}.img"
    mm = load_image(directory, mm_name)
    m = mm["entries"][0]
    kept = []
    for vma in m["vmas"]:
        if vma["status"] & DROPPED_VMAS:
            pages.drop(vma["start"], vma["end"])
        else:
            kept.append(vma)
        if vma.get("shmid") == m.get("exe_file_id") and not vma["prot"] & PROT_WRITE:
            # The executable's code and read-only data come from the other ISA's file; a
            # copy of such a page in the dump (CRIU's parasite wrote into the code) would
            # put this ISA's instructions back.
            pages.drop(vma["start"], vma["end"])
    m["vmas"] = kept
    auxv = m.get("mm_saved_auxv", [])
    m["mm_saved_auxv"] = [v for i in range(0, len(auxv) - 1, 2)
                          if auxv[i] not in _DROPPED_AUXV for v in auxv[i:i + 2]]
    dump_image(directory, mm_name, mm)
    pages.save()

    core_name = f"core-{pid}.img"
    core = load_image(directory, core_name)
    c = core["entries"][0]
    old = c.pop("thread_info", None) or c.pop("ti_aarch64", None) or {}
    c.pop("ti_aarch64", None)
    c["mtype"] = _MTYPE[to_isa]
    c["tc"]["comm"] = to_isa                # the executable's name, as exec would have set it
    resume = symbol(image, to_isa, "hexo_linux_resume")
    ti = _thread_info(to_isa, resume, (low - 256) & ~0xF, abi.LINUX_CONTEXT_ADDR, old)
    c["ti_aarch64" if to_isa == "aarch64" else "thread_info"] = ti
    dump_image(directory, core_name, core)

    _recode_file_flags(directory, isa, to_isa)
    if exe is None:
        exe = process.executable(image, to_isa)
    point_executable(directory, pid, exe, len(image.payload(f"elf.{to_isa}")))
    return dict(state, isa=to_isa, context=ctx, transformed=new_state["transformed"])


def open_flags(flags: int, isa: str, to_isa: str) -> int:
    """Open-file flags of `isa` as `to_isa` spells them."""
    src, dst = _ISA_COLUMN[isa], _ISA_COLUMN[to_isa]
    out = flags
    for bits in _OPEN_FLAGS.values():
        out &= ~bits[src]
    for bits in _OPEN_FLAGS.values():
        if flags & bits[src]:
            out |= bits[dst]
    return out


def _recode_file_flags(directory: Path, isa: str, to_isa: str) -> None:
    files = load_image(directory, "files.img")
    for entry in files["entries"]:
        for part in entry.values():
            if isinstance(part, dict) and "flags" in part:
                part["flags"] = open_flags(part["flags"], isa, to_isa)
    dump_image(directory, "files.img", files)


def _exe_entry(files: dict, mm: dict) -> dict:
    for f in files["entries"]:
        if f.get("reg") and f["reg"]["id"] == mm.get("exe_file_id"):
            return f["reg"]
    raise ProcessError("the dump names no executable file")


def point_executable(directory: Path, pid: int, exe: Path, size: int) -> None:
    """Make the images map `exe` (`size` bytes; a path as the restored process sees it) as
    the process's executable (build id dropped: the file is another build, or the same one
    unpacked elsewhere)."""
    files = load_image(directory, "files.img")
    reg = _exe_entry(files, load_image(directory, f"mm-{pid}.img")["entries"][0])
    reg["name"] = str(exe)
    reg["size"] = size
    reg.pop("build_id", None)
    dump_image(directory, "files.img", files)


def open_files(directory: Path, pid: int) -> list[tuple[int, str, int]]:
    """(entry id, path, mode) of the regular files the dumped process has open, but its
    executable and files under /dev, /proc and /sys."""
    files = load_image(directory, "files.img")
    exe_id = _exe_entry(files, load_image(directory, f"mm-{pid}.img")["entries"][0])["id"]
    return [(f["reg"]["id"], f["reg"]["name"], f["reg"]["mode"]) for f in files["entries"]
            if f.get("reg") and f["reg"]["id"] != exe_id
            and stat.S_ISREG(f["reg"].get("mode", 0))
            and not f["reg"]["name"].startswith(("/dev/", "/proc/", "/sys/"))]


def working_directory(directory: Path, pid: int) -> tuple[str, int]:
    """The dumped process's working directory and its mode (CRIU checks both)."""
    cwd = load_image(directory, f"fs-{pid}.img")["entries"][0]["cwd_id"]
    return next((f["reg"]["name"], f["reg"]["mode"])
                for f in load_image(directory, "files.img")["entries"]
                if f.get("reg") and f["reg"]["id"] == cwd)


def summary(directory: Path) -> dict:
    """What a process checkpoint holds, decoded from its CRIU images."""
    from .checkpoint import load_state
    state = load_state(directory)
    return {"isa": state["isa"], "pid": state["pid"], "image": state["image"],
            "context": state["context"], **decoded(directory, state["pid"]),
            **({"transformed": state["transformed"]} if "transformed" in state else {})}


def decoded(directory: Path, pid: int) -> dict:
    """The thread, executable, memory areas and dumped pages of process `pid`'s images."""
    core = load_image(directory, f"core-{pid}.img")["entries"][0]
    mm = load_image(directory, f"mm-{pid}.img")["entries"][0]
    pages = Pages(directory, pid)
    exe = _exe_entry(load_image(directory, "files.img"), mm)["name"]
    ti = core.get("ti_aarch64") or core.get("thread_info") or {}
    pc = ti.get("gpregs", {}).get("pc", ti.get("gpregs", {}).get("ip"))
    return {"core_mtype": core["mtype"], "thread_pc": pc, "executable": exe,
            "vmas": [{"start": v["start"], "end": v["end"], "status": v["status"]}
                     for v in mm["vmas"]],
            "dumped_pages": len(pages.pages)}
