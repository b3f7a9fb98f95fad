"""Callee-saved registers that the machine code reads after a call site, from the linked ELF.

A statepoint record lists the IR values live after a call; code generation may also keep
values of its own in callee-saved registers across the call. The one such value LLVM
creates on purpose in migratable builds is a *frame base*: on aarch64, when a frame is
larger than a load's immediate offset reaches (about 4 KiB), local stack-slot allocation
puts an address inside the frame (`sub x19, x29, #52`) in a callee-saved register at
function entry and addresses the far slots from it. No record holds it; it is a fixed
offset from the frame's CFA, so the transform can recompute it for the destination frame.

`analyse()` disassembles each function that has call sites (capstone), finds the frame
bases its entry block sets up, and computes by backward dataflow which callee-saved
registers are read before being written after each return address. A register live there
that is neither a recorded value, the frame pointer nor a frame base holds a value no
record describes: the build is refused, because the job could not be moved correctly.
"""

from __future__ import annotations

import re

from .stackmaps import ABI, StackMapError

_IMM = r"#(-?(?:0x[0-9a-f]+|\d+))"
_A64_ADDSUB = re.compile(rf"^(\w+), (\w+), {_IMM}(?:, lsl #(\d+))?$")
_A64_WRITEBACK = re.compile(rf"\[sp, {_IMM}\]!$")
_A64_POSTINDEX = re.compile(rf"\[sp\], {_IMM}$")
_X86_LEA = re.compile(r"^(\w+), \[(\w+)(?: ([+-]) (0x[0-9a-f]+|\d+))?\]$")


def _dwarf_reg(isa: str, name: str) -> int | None:
    """DWARF number of the callee-saved register `name` names (any width), else None."""
    if isa == "aarch64":
        m = re.fullmatch(r"[xw](\d+)", name)
        if m and 19 <= int(m[1]) <= 30:
            return int(m[1])
        m = re.fullmatch(r"[bhsdqv](\d+)", name)
        if m and 8 <= int(m[1]) <= 15:
            return 64 + int(m[1])
        return 31 if name in ("sp", "wsp") else None
    m = re.fullmatch(r"r(1[2-5])[bwd]?", name)
    if m:
        return int(m[1])
    return {"bl": 3, "bh": 3, "bx": 3, "ebx": 3, "rbx": 3, "bpl": 6, "bp": 6, "ebp": 6,
            "rbp": 6, "rsp": 7, "esp": 7}.get(name)


def _disassembler(isa: str):
    import capstone
    arch = {"x86_64": (capstone.CS_ARCH_X86, capstone.CS_MODE_64),
            "aarch64": (capstone.CS_ARCH_ARM64, capstone.CS_MODE_ARM)}[isa]
    md = capstone.Cs(*arch)
    md.detail = True
    return md


def _int(text: str) -> int:
    return int(text, 0)


def frame_bases(isa: str, insns) -> dict[int, int]:
    """Callee-saved registers that the entry block (up to its first branch or call) leaves
    holding CFA + constant: {DWARF register: offset from the CFA}."""
    sp = ABI[isa]["sp"]
    known = {sp: -8 if isa == "x86_64" else 0}     # register -> CFA offset
    for insn in insns:
        if _ends_block(insn):
            break
        text, mnem = insn.op_str, insn.mnemonic
        _, written = insn.regs_access()
        dests = {_dwarf_reg(isa, insn.reg_name(r)) for r in written}
        value = None
        if isa == "aarch64":
            wb = _A64_WRITEBACK.search(text) or _A64_POSTINDEX.search(text)
            if wb and sp in known:
                known[sp] += _int(wb[1])
                dests.discard(sp)
            m = _A64_ADDSUB.match(text)
            if mnem in ("add", "sub") and m:
                src = _dwarf_reg(isa, m[2])
                delta = _int(m[3]) << int(m[4] or 0)
                if src in known:
                    value = known[src] + (delta if mnem == "add" else -delta)
            elif mnem == "mov" and text.endswith(", sp") and sp in known:
                value = known[sp]
        else:
            if mnem == "push" and sp in known:
                known[sp] -= 8
                dests.discard(sp)
            elif mnem == "pop" and sp in known:
                known[sp] += 8
                dests.discard(sp)
            m = _X86_LEA.match(text)
            if mnem in ("sub", "add") and text.startswith("rsp, ") and sp in known:
                try:
                    value = known[sp] + (-1 if mnem == "sub" else 1) * _int(text[5:])
                except ValueError:
                    value = None
            elif mnem == "mov" and ", " in text:
                src = _dwarf_reg(isa, text.split(", ")[1])
                value = known.get(src) if src is not None else None
            elif mnem == "lea" and m:
                src = _dwarf_reg(isa, m[2])
                if src in known:
                    off = _int(m[4]) if m[4] else 0
                    value = known[src] + (-off if m[3] == "-" else off)
        target = _dwarf_reg(isa, text.split(",")[0])
        for d in dests:
            known.pop(d, None)
        if value is not None and target is not None:
            known[target] = value
    known.pop(sp, None)
    return known


def _ends_block(insn) -> bool:
    import capstone
    return any(insn.group(g) for g in (capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL,
                                       capstone.CS_GRP_RET, capstone.CS_GRP_INT))


def _branch_target(insn) -> int | None:
    import capstone
    for op in insn.operands:
        if op.type == getattr(capstone, "CS_OP_IMM", 2) and insn.group(capstone.CS_GRP_JUMP):
            return op.imm
    return None


def live_after(isa: str, insns, callee_saved: set[int], ras: set[int]) -> dict[int, set[int]]:
    """Callee-saved registers read before written from each address in `ras` on (backward
    dataflow over the function's instructions; an indirect jump may reach any of them)."""
    import capstone
    n = len(insns)
    index = {insn.address: i for i, insn in enumerate(insns)}
    uses, defs, succ = [], [], []
    for i, insn in enumerate(insns):
        read, written = insn.regs_access()
        if _zeroing(insn):
            read = ()
        elif isa == "aarch64":
            read = _a64_reads(insn, read)
        uses.append({r for r in (_dwarf_reg(isa, insn.reg_name(x)) for x in read)
                     if r in callee_saved})
        defs.append({r for r in (_dwarf_reg(isa, insn.reg_name(x)) for x in written)
                     if r in callee_saved})
        out = []
        if insn.group(capstone.CS_GRP_RET):
            uses[-1] = set()                  # returns: the caller owns its registers
        elif insn.group(capstone.CS_GRP_JUMP):
            target = _branch_target(insn)
            if target is None:
                out = list(range(n))          # indirect jump (a switch table)
            else:
                if target in index:
                    out.append(index[target])
                if not _unconditional(insn) and i + 1 < n:
                    out.append(i + 1)
        elif i + 1 < n:
            out.append(i + 1)
        succ.append(out)
    pred = [[] for _ in range(n)]
    for i, s in enumerate(succ):
        for j in s:
            pred[j].append(i)
    live = [set() for _ in range(n)]
    work = list(range(n - 1, -1, -1))
    queued = set(work)
    while work:
        i = work.pop()
        queued.discard(i)
        out = set().union(*(live[j] for j in succ[i])) if succ[i] else set()
        new = uses[i] | (out - defs[i])
        if new != live[i]:
            live[i] = new
            for p in pred[i]:
                if p not in queued:
                    queued.add(p)
                    work.append(p)
    return {ra: live[index[ra]] if ra in index else set() for ra in ras}


_A64_REG = re.compile(r"\b([xwbhsdqv]\d+|w?sp)\b")
_A64_NO_DEST = re.compile(r"^(st|cmp|cmn|tst|ccmp|ccmn|fcmp|fccmp|cb|tb|b\b|b\.|bl|br|ret|prfm)")
_A64_DEST_READ = re.compile(r"^(movk|bfi|bfxil|bfm|bfc|fmla|fmls|mla|mls|ins|sli|sri|tbx)$")


def _a64_reads(insn, read):
    """capstone reports the destination of some aarch64 aliases (`lsl x22, x5, #4`) as
    read: keep a destination register among the reads only where an instruction really
    reads it (another operand names it, or the instruction merges into it)."""
    if _A64_NO_DEST.match(insn.mnemonic):
        return read
    ops = [o.strip() for o in re.split(r",(?![^\[]*\])", insn.op_str)]
    ndest = 2 if insn.mnemonic in ("ldp", "ldnp", "ldpsw", "ldxp", "ldaxp") else 1
    dest = {r for o in ops[:ndest] for r in _A64_REG.findall(o)}
    other = {r for o in ops[ndest:] for r in _A64_REG.findall(o)}
    if _A64_DEST_READ.match(insn.mnemonic) or "[" in ops[0]:
        return read                         # merges into it, or writes one lane
    return [r for r in read if insn.reg_name(r) not in dest - other]


def _zeroing(insn) -> bool:
    """`xor eax, eax` and the like: they write a register without reading it."""
    ops = insn.op_str.split(", ")
    return (insn.mnemonic in ("xor", "sub", "pxor", "xorps", "xorpd", "eor")
            and len(set(ops)) == 1 and len(ops) >= 2)


def _unconditional(insn) -> bool:
    m = insn.mnemonic
    return m in ("b", "br", "jmp") or (m.startswith("jmp"))


def analyse(elf, isa: str, sites: list[dict], function_ends: dict[int, int]) -> list[str]:
    """Add `frame_bases` to every site of `sites` (one ISA's metadata, modified in place);
    return the reasons the machine code keeps unrecorded values across a call site."""
    text = elf.get_section_by_name(".text")
    data, base = text.data(), text["sh_addr"]
    md = _disassembler(isa)
    abi = ABI[isa]
    callee_saved = set(abi["callee_saved"]) - {abi["ra"]}
    by_fn: dict[int, list[dict]] = {}
    for s in sites:
        by_fn.setdefault(s["function_addr"], []).append(s)
    problems = []
    for addr, fsites in by_fn.items():
        end = function_ends.get(addr)
        if end is None:
            raise StackMapError(f"{isa}: no symbol size for function at {addr:#x}")
        insns = list(md.disasm(data[addr - base:end - base], addr))
        bases = frame_bases(isa, insns)
        live = live_after(isa, insns, callee_saved, {s["ra"] for s in fsites})
        for s in fsites:
            s["frame_bases"] = sorted([r, off] for r, off in bases.items())
            known = {v["reg"] for v in s["values"] if v["kind"] == "register"}
            if s["cfa"][0] == abi["fp"]:
                known.add(abi["fp"])
            unknown = live[s["ra"]] - known - bases.keys()
            if unknown:
                problems.append(f"{isa}: {s['function']} keeps a value no record describes "
                                f"in DWARF register(s) {sorted(unknown)} across the call at "
                                f"{s['source']} (return address {s['ra']:#x})")
    return problems
