"""Cross-ISA stack transformation (Popcorn/HEXO style). Pure: no I/O, no hypervisor.

Input: the source and destination ISAs' migration metadata (hexo.toolchain.stackmaps.load),
the application registers at a migration point (hexo_cpu_context by name) and the bytes of
the live stack. The source stack is unwound frame by frame with the call-frame rules recorded
at each return address, down to `hexo_main_return`. The destination stack is then built from
`main` inwards: each frame's return address and saved registers, every live value copied to
its destination location (a value headed for a callee-saved register is written where the
nearest inner frame saves that register, or into the final registers), stack objects copied
whole, and pointers into the source stack re-aimed at the matching destination object.
Globals and the heap need nothing: both ISAs use one layout.

Limits (as in Popcorn): pointers into the stack are followed only where the compiler typed the
live value as a pointer, not inside stack objects. Of the floating-point control state, the
rounding mode and flush-to-zero carry over (fp_control); exception masks and x87 precision
have no arm64 counterpart and take the destination's defaults.
"""

from __future__ import annotations

import struct

from .abi import STACK_BOTTOM, STACK_TOP
from .errors import HexoError
from .records import record

MAIN_CFA_GAP = 512          # bytes left above main's frame for the trampoline and boot frames

# hexo_cpu_context register names <-> DWARF register numbers.
_DWARF = {
    "x86_64": {"rbx": 3, "rbp": 6, "r12": 12, "r13": 13, "r14": 14, "r15": 15},
    "aarch64": {**{f"x{i}": i for i in range(19, 30)}, **{f"d{i}": 64 + i for i in range(8, 16)}},
}
_FP_DEFAULT = {"x86_64": ("fpctl", (0x37F << 32) | 0x1F80), "aarch64": ("fpcr", 0)}
# Rounding modes as MXCSR.RC / x87 RC encode them (nearest, down, up, toward zero) and as
# FPCR.RMode does (nearest, up, down, toward zero).
_X86_TO_ARM_ROUNDING = {0: 0, 1: 2, 2: 1, 3: 3}
_ARM_TO_X86_ROUNDING = {v: k for k, v in _X86_TO_ARM_ROUNDING.items()}
_RA_SLOT = {"x86_64": 16, "aarch64": 30}


class TransformError(HexoError):
    """The stack cannot be rewritten for the other ISA; the checkpoint stays as it was."""


# regs: DWARF register -> value at this frame's call site
Frame = record("Frame", "site regs cfa")
# context: pc, sp and callee-saved registers by name on the destination ISA; stack: the bytes
# of [stack_start, STACK_TOP)
Result = record("Result", "context stack_start stack frames")


class _Stack:
    def __init__(self, start: int, data: bytes):
        self.start, self.data = start, data

    def read(self, addr: int, size: int) -> bytes:
        off = addr - self.start
        if off < 0 or off + size > len(self.data):
            raise TransformError(f"stack read [0x{addr:x}, +{size}) is outside the saved stack")
        return self.data[off:off + size]

    def u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]


def unwind(meta, context: dict[str, int], stack: _Stack) -> list[Frame]:
    """Source frames from the migration point's caller out to main."""
    abi = meta.raw["abi"]
    regs = {_DWARF[meta.isa][n]: v for n, v in context.items() if n in _DWARF[meta.isa]}
    regs[abi["sp"]] = context["sp"]
    pc, frames = context["pc"], []
    stop = meta.raw["symbols"]["hexo_main_return"]
    while True:
        site = meta.by_ra.get(pc)
        if site is None:
            raise TransformError(f"{meta.isa}: return address 0x{pc:x} is not a recorded call "
                                 f"site (frame {len(frames)})")
        reg, off = site["cfa"]
        if reg not in regs:
            raise TransformError(f"{meta.isa}: CFA of {site['function']} uses register {reg}, "
                                 f"whose value is unknown")
        cfa = regs[reg] + off
        if not regs[abi["sp"]] <= cfa <= STACK_TOP:
            raise TransformError(f"{meta.isa}: CFA 0x{cfa:x} of {site['function']} is below "
                                 f"its stack pointer or above the stack")
        frames.append(Frame(site, dict(regs), cfa))
        caller = dict(regs)
        ra = None
        for r, o in site["saved"]:
            if o >= 0:
                raise TransformError(f"{meta.isa}: {site['function']} saves register {r} "
                                     f"above its CFA")
            value = stack.u64(cfa + o)
            if r == _RA_SLOT[meta.isa]:
                ra = value
            else:
                caller[r] = value
        if ra is None:
            raise TransformError(f"{meta.isa}: no saved return address in {site['function']}")
        caller[abi["sp"]] = cfa
        if ra == stop:
            return frames
        if len(frames) > 10000:
            raise TransformError("stack too deep or corrupt")
        pc, regs = ra, caller


def fp_control(src_isa: str, value: int, dst_isa: str) -> int:
    """The destination's FP control word with the source's rounding mode and flush-to-zero
    (x86-64 fpctl = x87 control word << 32 | MXCSR; aarch64 FPCR)."""
    if src_isa == dst_isa:
        return value
    name, out = _FP_DEFAULT[dst_isa]
    if src_isa == "x86_64":
        mxcsr = value & 0xFFFFFFFF
        rounding, ftz = _X86_TO_ARM_ROUNDING[(mxcsr >> 13) & 3], (mxcsr >> 15) & 1
        return out | rounding << 22 | ftz << 24
    rounding, ftz = _ARM_TO_X86_ROUNDING[(value >> 22) & 3], (value >> 24) & 1
    cw, mxcsr = out >> 32, out & 0xFFFFFFFF
    cw = (cw & ~(3 << 10)) | rounding << 10
    mxcsr = (mxcsr & ~(7 << 13)) | rounding << 13 | ftz << 15
    return cw << 32 | mxcsr


# LLVM's stackmap gives UINT64_MAX as the stack size of a frame whose size is only known at
# run time (dynamic allocas, stack realignment); anything near it is not a frame size.
_MAX_FRAME = 1 << 30


def _sp_at_call(meta, site: dict, cfa: int) -> int:
    """The caller's stack pointer after the call returns, from the frame's CFA."""
    reg, off = site["cfa"]
    if reg == meta.raw["abi"]["sp"]:
        return cfa - off
    if "realign" in site:           # liveregs.realignment
        a, align, b = site["realign"]
        return ((cfa + a) & -align) - b
    if not 0 <= site["frame_size"] < _MAX_FRAME:
        raise TransformError(f"{meta.isa}: {site['function']} ({site['source']}) has a frame "
                             f"whose size is only known at run time (dynamic stack allocation "
                             f"or realignment); it cannot be rebuilt for {meta.isa}")
    return cfa - site["frame_size"] - (8 if meta.isa == "x86_64" else 0)


def _check_frames(meta, frames: list[Frame]) -> None:
    """Refuse source frames whose recorded locations fall outside them: the state does not
    match the metadata, and a rewrite from it would be garbage. A frame's locations lie
    between its stack pointer and its caller's CFA (incoming stack arguments are recorded
    where the caller put them, just above the CFA)."""
    sp = meta.raw["abi"]["sp"]
    for i, f in enumerate(frames):
        lo, hi = f.regs[sp], frames[i + 1].cfa if i + 1 < len(frames) else STACK_TOP
        where = f"{meta.isa}: frame of {f.site['function']} ({f.site['source']})"
        for v in f.site["values"]:
            if v["kind"] not in ("direct", "indirect"):
                continue
            base = f.regs.get(v["reg"])
            if base is None:
                raise TransformError(f"{where}: a value is based on register {v['reg']}, "
                                     f"whose value is unknown")
            size = v.get("alloca_size", v["size"]) if v["kind"] == "direct" else v["size"]
            addr = base + v["offset"]
            if not lo <= addr <= addr + size <= hi:
                raise TransformError(f"{where}: location [0x{addr:x}, +{size}) is outside "
                                     f"the frame [0x{lo:x}, 0x{hi:x})")


def _pick(dst, site: dict, src_meta) -> dict:
    """The destination copy of a source call site (code generation may duplicate calls)."""
    copies = dst.by_id.get(site["id"])
    if not copies:
        raise TransformError(f"call site {site['id']} ({site['function']}, {site['source']}) "
                             f"has no {dst.isa} record")
    src_copies = src_meta.by_id[site["id"]]
    index = next(i for i, s in enumerate(src_copies) if s["ra"] == site["ra"])
    return copies[min(index, len(copies) - 1)]


def _value_bytes(v: dict, frame: Frame, stack: _Stack, meta) -> bytes | None:
    kind, size = v["kind"], v["size"]
    if kind == "constant":
        return None
    if kind == "register":
        if v["reg"] not in frame.regs:
            raise TransformError(f"{meta.isa}: value in register {v['reg']} of "
                                 f"{frame.site['function']} is not recoverable")
        return (frame.regs[v["reg"]] & (2 ** 64 - 1)).to_bytes(8, "little")[:size]
    base = frame.regs.get(v["reg"])
    if base is None:
        raise TransformError(f"{meta.isa}: base register {v['reg']} unknown")
    if kind == "direct":
        return (base + v["offset"]).to_bytes(8, "little")
    return stack.read(base + v["offset"], size)


def transform(src, dst, context: dict[str, int], stack_start: int, stack: bytes) -> Result:
    """Rewrite the stack and registers of a job stopped at a migration point for `dst`."""
    src_stack = _Stack(stack_start, stack)
    frames = unwind(src, context, src_stack)
    _check_frames(src, frames)
    n = len(frames)
    dst_sites = [_pick(dst, f.site, src) for f in frames]
    dabi = dst.raw["abi"]
    sp_reg, fp_reg = dabi["sp"], dabi["fp"]

    # Destination frame geometry, from main (outermost) inwards.
    cfa = [0] * n
    sp = [0] * n
    fp = [None] * n
    cfa[n - 1] = (STACK_TOP - MAIN_CFA_GAP) & ~0xF
    for i in range(n - 1, -1, -1):
        if i < n - 1:
            cfa[i] = sp[i + 1]
        sp[i] = _sp_at_call(dst, dst_sites[i], cfa[i])
        if not STACK_BOTTOM <= sp[i] <= cfa[i]:
            raise TransformError(f"{dst.isa}: the rewritten stack does not fit: frame of "
                                 f"{dst_sites[i]['function']} would end at 0x{sp[i]:x}")
        if dst_sites[i]["cfa"][0] == fp_reg:
            fp[i] = cfa[i] - dst_sites[i]["cfa"][1]
    low = sp[0]
    out = bytearray(STACK_TOP - low)

    def put(addr: int, data: bytes, frame: int | None = None) -> None:
        """Write into the new stack; with `frame`, only inside that frame."""
        lo, hi = (low, STACK_TOP) if frame is None else \
            (sp[frame], cfa[frame + 1] if frame + 1 < n else STACK_TOP)
        if addr < lo or addr + len(data) > hi:
            raise TransformError(f"{dst.isa}: write [0x{addr:x}, +{len(data)}) is outside "
                                 + ("the new stack" if frame is None else
                                    f"the frame of {dst_sites[frame]['function']}"))
        out[addr - low:addr - low + len(data)] = data

    # Stack objects: source range -> destination address, for copying and re-aiming.
    objects: list[tuple[int, int, int]] = []
    for i, (f, d) in enumerate(zip(frames, dst_sites)):
        for sv, dv in zip(f.site["values"], d["values"]):
            if sv["type"] == "alloca" and sv["kind"] == "direct" and dv["kind"] == "direct":
                base = {sp_reg: sp[i], fp_reg: fp[i]}.get(dv["reg"])
                if base is None:
                    raise TransformError(f"{dst.isa}: stack object of {d['function']} based on "
                                         f"register {dv['reg']}")
                src_addr = f.regs[sv["reg"]] + sv["offset"]
                objects.append((src_addr, sv["alloca_size"], base + dv["offset"], i))

    def reaim(value: int) -> int:
        if not (stack_start <= value < STACK_TOP):
            return value
        inside = [(s, d) for s, size, d, _ in objects if s <= value < s + size]
        past_end = [(s, d) for s, size, d, _ in objects if value == s + size]
        for s, d in inside + past_end:      # one past the end is a valid C pointer too
            return d + (value - s)
        raise TransformError(f"pointer 0x{value:x} into the stack matches no stack object")

    for s, size, d, i in objects:
        put(d, src_stack.read(s, size), i)

    # Register values each destination frame needs at its call site.
    # Frame bases first (liveregs.py: addresses in the frame that the code keeps in
    # callee-saved registers), then the recorded values, which take precedence.
    needs: list[dict[int, int]] = [dict() for _ in range(n)]
    for i in range(n):
        for reg, off in dst_sites[i].get("frame_bases", ()):
            needs[i][reg] = cfa[i] + off
        if fp[i] is not None:
            needs[i][fp_reg] = fp[i]
        values: dict[int, int] = {}
        for k, (sv, dv) in enumerate(zip(frames[i].site["values"], dst_sites[i]["values"])):
            raw = _value_bytes(sv, frames[i], src_stack, src)
            if raw is None or sv["type"] == "alloca":
                continue
            if sv["type"] == "pointer":
                raw = reaim(int.from_bytes(raw, "little")).to_bytes(8, "little")[:len(raw)]
            values[k] = int.from_bytes(raw, "little")
            if dv["kind"] == "register":
                needs[i][dv["reg"]] = int.from_bytes(raw, "little")
            elif dv["kind"] == "indirect":
                base = {sp_reg: sp[i], fp_reg: fp[i]}.get(dv["reg"])
                if base is None:
                    raise TransformError(f"{dst.isa}: spill slot of {dst_sites[i]['function']} "
                                         f"based on register {dv['reg']}")
                put(base + dv["offset"], raw.ljust(dv["size"], b"\0")[:dv["size"]], i)
        for reg, k in dst_sites[i].get("copies", ()):       # liveregs.py: sret pointers
            if k not in values:
                raise TransformError(f"{dst.isa}: {dst_sites[i]['function']} keeps a copy of "
                                     f"value {k}, which has no value to copy")
            needs[i][reg] = values[k]

    # Return addresses, and callee-saved values stored where the nearest inner frame saved
    # them (or left in the final registers when no inner frame did).
    final: dict[int, int] = {}
    ra_main = dst.raw["symbols"]["hexo_main_return"]
    for i in range(n):
        saved = dict(map(tuple, dst_sites[i]["saved"]))
        ra_reg = _RA_SLOT[dst.isa]
        if ra_reg not in saved:
            raise TransformError(f"{dst.isa}: {dst_sites[i]['function']} saves no return address")
        put(cfa[i] + saved[ra_reg], struct.pack("<Q", ra_main if i == n - 1
                                                else dst_sites[i + 1]["ra"]))
    for j in range(n):
        for reg, value in needs[j].items():
            for k in range(j - 1, -1, -1):
                slot = dict(map(tuple, dst_sites[k]["saved"])).get(reg)
                if slot is not None:
                    put(cfa[k] + slot, struct.pack("<Q", value & (2 ** 64 - 1)))
                    break
            else:
                final[reg] = value

    names = {v: k for k, v in _DWARF[dst.isa].items()}
    ctx = {"pc": dst_sites[0]["ra"], "sp": sp[0]}
    ctx.update({name: final.get(reg, 0) & (2 ** 64 - 1) for reg, name in names.items()})
    ctx[_FP_DEFAULT[dst.isa][0]] = fp_control(src.isa, context.get(_FP_DEFAULT[src.isa][0],
                                                                   _FP_DEFAULT[src.isa][1]),
                                              dst.isa)
    return Result(ctx, low, bytes(out), n)
