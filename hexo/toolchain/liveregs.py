"""Callee-saved registers that the machine code reads after a call site, from the linked ELF.

A statepoint record lists the IR values live after a call; code generation may also keep
values of its own in callee-saved registers across the call. The one such value LLVM
creates on purpose in migratable builds is a *frame base*: on aarch64, when a frame is
larger than a load's immediate offset reaches (about 4 KiB), local stack-slot allocation
puts an address inside the frame (`sub x19, x29, #52`) in a callee-saved register at
function entry and addresses the far slots from it. No record holds it; it is a fixed
offset from the frame's CFA, so the transform can recompute it for the destination frame.

`analyse()` disassembles each function that has call sites (capstone), finds the
instructions that set a register to an address in the frame, and computes by backward
dataflow which callee-saved registers are read before being written after each return
address and by reaching definitions where their values come from. A live register whose
every definition is one frame address is a frame base; one that holds neither a recorded
value, the frame pointer nor a frame base holds a value no record describes, and the build
is refused, because the job could not be moved correctly. The other value LLVM keeps on
its own is x86-64's copy of a function's incoming sret pointer, which it returns in rax: a
register whose every definition copies the unmodified argument register at entry is
recorded as a copy of the site's sret value (`copies`). (A function with an indirect
jump, whose targets are in a table the disassembly does not follow, gets its frame bases
but no such verdict.)
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
    """DWARF number of the stack pointer or callee-saved register `name` names (any
    width), else None."""
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


def _evaluate(isa: str, insn, known: dict[int, int]) -> tuple[int, int] | None:
    """Update `known` (register -> CFA offset of the address it holds) for one instruction;
    return (register, CFA offset) when it sets a register to such an address."""
    sp = ABI[isa]["sp"]
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
        if mnem in ("push", "pop") and sp in known:
            known[sp] += 8 if mnem == "pop" else -8
            dests.discard(sp)
        m = _X86_LEA.match(text)
        if mnem in ("sub", "add") and text.startswith("rsp, ") and sp in known:
            try:
                value = known[sp] + (-1 if mnem == "sub" else 1) * _int(text[5:])
            except ValueError:
                value = None
        elif mnem == "mov" and ", " in text:
            value = known.get(_dwarf_reg(isa, text.split(", ")[1]))
        elif mnem == "lea" and m and _dwarf_reg(isa, m[2]) in known:
            off = _int(m[4]) if m[4] else 0
            value = known[_dwarf_reg(isa, m[2])] + (-off if m[3] == "-" else off)
    target = _dwarf_reg(isa, text.split(",")[0])
    for d in dests:
        known.pop(d, None)
    if value is None or target is None:
        return None
    known[target] = value
    return target, value


def predecessors(succ: list[list[int]]) -> list[list[int]]:
    pred = [[] for _ in succ]
    for i, s in enumerate(succ):
        for j in s:
            pred[j].append(i)
    return pred


def definitions_before(insns, writes: list[set[int]], pred: list[list[int]], at: int,
                       reg: int) -> set[int]:
    """Addresses of the instructions whose write of `reg` (`writes`: each instruction's
    written registers) may reach instruction `at` (-1: the caller's value), found by walking
    back over `pred` from it. For functions with an indirect jump (a switch table), whose jump
    gets every block start as a successor: a forward dataflow over that many edges does not
    end in useful time (zlib's inflate), one walk per question does."""
    found, seen, work = set(), {at}, list(pred[at])
    if at == 0:
        found.add(-1)
    while work:
        i = work.pop()
        if i in seen:
            continue
        seen.add(i)
        if reg in writes[i]:
            found.add(insns[i].address)
            continue
        if i == 0:
            found.add(-1)
        work.extend(pred[i])
    return found


def with_switch_targets(insns, succ: list[list[int]]) -> list[list[int]]:
    """`succ` with every instruction made a successor of each indirect jump: the cases of a
    switch table are reached only through one, whose targets the machine code does not name
    (a case that C lets fall into the next need not start a block the code shows)."""
    import capstone
    every = list(range(len(insns)))
    return [every if insn.group(capstone.CS_GRP_JUMP) and _branch_target(insn) is None
            else s for insn, s in zip(insns, succ)]


def frame_addresses(isa: str, insns) -> dict[int, tuple[int, int]]:
    """Instructions that set a register to an address in the frame: {instruction address:
    (DWARF register, offset from the CFA)}. The stack pointer is followed through the
    prologue (the entry block up to its first branch or call); after it, it stays put
    (migratable code has no dynamic stack allocation), and so does the frame pointer."""
    sp, fp = ABI[isa]["sp"], ABI[isa]["fp"]
    known = {sp: -8 if isa == "x86_64" else 0}
    out = {}
    body = len(insns)
    for i, insn in enumerate(insns):
        if _ends_block(insn):
            body = i
            break
        hit = _evaluate(isa, insn, known)
        if hit:
            out[insn.address] = hit
    settled = {r: known[r] for r in (sp, fp) if r in known}
    targets = {t for insn in insns if (t := _branch_target(insn)) is not None}
    known = dict(settled)
    for insn in insns[body:]:
        if insn.address in targets:
            known = dict(settled)
        hit = _evaluate(isa, insn, known)
        if hit:
            out[insn.address] = hit
        if _ends_block(insn):
            known = dict(settled)
    return out


def realignment(isa: str, insns) -> list[int] | None:
    """[a, A, b] when the prologue realigns the stack pointer for a stack object aligned
    beyond the ABI's 16 bytes (`and rsp, -64`; aarch64 `sub x9, sp, #N` then `and sp, x9,
    #-64`): at every call site the stack pointer is then align_down(CFA + a, A) - b, where
    the frame sits decides it, not the code. None when the prologue does not realign."""
    import capstone
    sp = ABI[isa]["sp"]
    known = {sp: -8 if isa == "x86_64" else 0}
    scratch: dict[str, int] = {}        # aarch64 `sub x9, sp, #N`: x9 = CFA + offset
    rule = None
    for insn in insns:
        if _ends_block(insn):
            break
        ops = insn.operands
        if insn.mnemonic == "and" and _dwarf_reg(isa, insn.reg_name(ops[0].reg)) == sp \
                and ops[-1].type == capstone.CS_OP_IMM:
            src = insn.reg_name(ops[-2].reg)
            base = scratch.get(src, known.get(_dwarf_reg(isa, src)))
            if base is None:
                return None
            rule, known = [base, -ops[-1].imm & (2 ** 64 - 1)], {sp: 0}
            continue
        m = _A64_ADDSUB.match(insn.op_str) if isa == "aarch64" else None
        if m and insn.mnemonic in ("add", "sub") and m[2] == "sp" and sp in known:
            delta = _int(m[3]) << int(m[4] or 0)
            scratch[m[1]] = known[sp] + (delta if insn.mnemonic == "add" else -delta)
        _evaluate(isa, insn, known)
    if rule is None or sp not in known:
        return None
    return rule + [-known[sp]]


_COMPARES = ("cmp", "cmn", "tst", "ccmp", "ccmn", "fcmp", "fcmpe", "fccmp", "fccmpe")


def access(isa: str, insn) -> tuple[set[int], set[int]]:
    """DWARF numbers of the registers `insn` reads and writes, correcting capstone where
    it is wrong (idioms whose result does not depend on their operands read nothing;
    aarch64 compares write only flags)."""
    import capstone
    read, written = insn.regs_access()
    if isa == "aarch64" and not read and not written and _A64_REG.search(insn.op_str):
        return _a64_operands(insn)
    if _breaks_dependency(insn) or insn.group(capstone.CS_GRP_RET):
        read = ()                           # a return hands registers back to the caller
    elif isa == "aarch64":
        read = _a64_reads(insn, read)
    if isa == "aarch64" and insn.mnemonic in _COMPARES:
        written = ()
    return ({_dwarf_reg(isa, insn.reg_name(x)) for x in read},
            {_dwarf_reg(isa, insn.reg_name(x)) for x in written})


def _a64_operands(insn) -> tuple[set[int], set[int]]:
    """Registers read and written, from the operand text, for the instructions capstone
    5 reports no register access for (`umov w22, v0.h[0]`): the first operand is the
    destination unless the instruction writes no register."""
    ops = [o.strip() for o in re.split(r",(?![^\[]*\])", insn.op_str)]
    names = [_A64_REG.findall(o) for o in ops]
    if _A64_NO_DEST.match(insn.mnemonic) or "[" in ops[0]:
        dest, read = [], [r for n in names for r in n]
    else:
        dest, read = names[0], [r for n in names[1:] for r in n]
        if _A64_DEST_READ.match(insn.mnemonic):
            read += dest
    return ({_dwarf_reg("aarch64", r) for r in read}, {_dwarf_reg("aarch64", r) for r in dest})


def reaching(isa: str, insns, succ: list[list[int]], callee_saved: set[int]) -> list[frozenset]:
    """Reaching definitions of callee-saved registers before each instruction: sets of
    (DWARF register, address of the defining instruction; -1 for the caller's value)."""
    n = len(insns)
    defs = [access(isa, insn)[1] & callee_saved for insn in insns]
    state = [frozenset()] * n
    state[0] = frozenset((r, -1) for r in callee_saved)
    work = [0]
    seen = {0}
    while work:
        i = work.pop()
        after = frozenset((r, d) for r, d in state[i] if r not in defs[i]) | \
            frozenset((r, insns[i].address) for r in defs[i])
        for j in succ[i]:
            merged = state[j] | after
            if merged != state[j] or j not in seen:
                state[j] = merged
                seen.add(j)
                work.append(j)
    return state


_SRET_ARGUMENT = {"x86_64": "rdi", "aarch64": "x8"}


def sret_copies(isa: str, insns) -> dict[int, int]:
    """Instructions of the entry block that copy the incoming sret pointer into a register:
    {instruction address: DWARF register}."""
    arg = _SRET_ARGUMENT[isa]
    out = {}
    for insn in insns:
        if _ends_block(insn):
            break
        dest, _, src = insn.op_str.partition(", ")
        if insn.mnemonic == "mov" and src == arg and _dwarf_reg(isa, dest) is not None:
            out[insn.address] = _dwarf_reg(isa, dest)
        if any(insn.reg_name(r) == arg for r in insn.regs_access()[1]):
            break
    return out


def _ends_block(insn) -> bool:
    import capstone
    return any(insn.group(g) for g in (capstone.CS_GRP_JUMP, capstone.CS_GRP_CALL,
                                       capstone.CS_GRP_RET, capstone.CS_GRP_INT))


def _branch_target(insn) -> int | None:
    """The target of a direct jump: its last immediate (aarch64 `tbz w8, #31, target` has
    the bit number first)."""
    import capstone
    if not insn.group(capstone.CS_GRP_JUMP):
        return None
    targets = [op.imm for op in insn.operands if op.type == capstone.CS_OP_IMM]
    return targets[-1] if targets else None


def successors(insns, noreturn: frozenset = frozenset()) -> list[list[int]]:
    """Indices of the instructions that may run after each one (calls return, except those
    of the addresses in `noreturn`; an indirect jump, from a switch table, gets none: see
    `analyse`)."""
    import capstone
    n = len(insns)
    index = {insn.address: i for i, insn in enumerate(insns)}
    succ = []
    for i, insn in enumerate(insns):
        out = []
        if insn.group(capstone.CS_GRP_RET):
            pass
        elif insn.group(capstone.CS_GRP_CALL):      # capstone also calls aarch64 bl a jump:
            target = next((op.imm for op in insn.operands if op.type == capstone.CS_OP_IMM),
                          None)
            if i + 1 < n and target not in noreturn:   # a recursive call is not a loop
                out.append(i + 1)
        elif insn.group(capstone.CS_GRP_JUMP):
            target = _branch_target(insn)
            if target in index:
                out.append(index[target])
            if target is not None and not _unconditional(insn) and i + 1 < n:
                out.append(i + 1)
        elif i + 1 < n:
            out.append(i + 1)
        succ.append(out)
    return succ


def live_before(isa: str, insns, succ: list[list[int]], callee_saved: set[int]) -> list[set]:
    """Callee-saved registers read before being written from each instruction on
    (backward dataflow)."""
    n = len(insns)
    uses, defs = [], []
    for insn in insns:
        read, written = access(isa, insn)
        uses.append(read & callee_saved)
        defs.append(written & callee_saved)
    pred = [[] for _ in range(n)]
    for i, s in enumerate(succ):
        for j in s:
            pred[j].append(i)
    live = [set() for _ in range(n)]
    work = list(range(n))
    queued = set(work)
    while work:
        i = work.pop()
        queued.discard(i)
        out = set().union(*(live[j] for j in succ[i]))
        new = uses[i] | (out - defs[i])
        if new != live[i]:
            live[i] = new
            for p in pred[i]:
                if p not in queued:
                    queued.add(p)
                    work.append(p)
    return live


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


def _breaks_dependency(insn) -> bool:
    """`xor eax, eax`, `sbb r13, r13` (0 or -1 by the carry flag: LLVM's select of -1) and
    the like: they write a register without reading it."""
    ops = insn.op_str.split(", ")
    return (insn.mnemonic in ("xor", "sub", "sbb", "pxor", "xorps", "xorpd", "eor")
            and len(set(ops)) == 1 and len(ops) >= 2)


def _unconditional(insn) -> bool:
    return insn.mnemonic in ("b", "jmp")


def analyse(elf, isa: str, sites: list[dict], function_ends: dict[int, int],
            noreturn=()) -> list[str]:
    """Add `frame_bases` to every site of `sites` (one ISA's metadata, modified in place):
    the callee-saved registers live after the call that hold an address in the frame, as
    [DWARF register, offset from the CFA]. Return the reasons the machine code keeps other
    unrecorded values across a call site. `noreturn` names the functions that never return:
    the code after a call of one is another block's."""
    import capstone
    names = set(noreturn)
    stops = frozenset(s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()
                      if s.name in names and s["st_info"]["type"] == "STT_FUNC")
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
        index = {insn.address: i for i, insn in enumerate(insns)}
        succ = successors(insns, stops)
        # Without the targets of an indirect jump, liveness would be a guess: such a
        # function still gets its frame bases but is not checked for unrecorded values.
        checked = not any(insn.group(capstone.CS_GRP_JUMP) and _branch_target(insn) is None
                          for insn in insns)
        live = live_before(isa, insns, succ, callee_saved)
        if checked:
            defs = reaching(isa, insns, succ, callee_saved)
        else:       # behind an indirect jump the dataflow misses paths: walk back over all
            full = predecessors(with_switch_targets(insns, succ))
            writes = [access(isa, insn)[1] for insn in insns]
        addresses = frame_addresses(isa, insns)
        copies = sret_copies(isa, insns)
        realign = realignment(isa, insns)
        for s in fsites:
            if realign:
                s["realign"] = realign
            i = index.get(s["ra"])
            if s["callee"] in names or (i is None and s["ra"] == end):
                # a call that never returns (exit): the code after it is another block's
                s["frame_bases"] = []
                continue
            if i is None:
                raise StackMapError(f"{isa}: return address {s['ra']:#x} is not an "
                                    f"instruction of {s['function']}")
            recorded = {v["reg"] for v in s["values"] if v["kind"] == "register"}
            sret = [k for k, v in enumerate(s["values"]) if v.get("sret")]
            bases, same, unknown = [], [], []
            for reg in sorted(live[i] - recorded):
                # -1: the caller's value, untouched here; read after the call only where
                # the IR reads an undefined value (a phi with an undef input).
                sources = ({d for r, d in defs[i] if r == reg} if checked else
                           definitions_before(insns, writes, full, i, reg)) - {-1}
                values = {addresses.get(d, (None, None))[1] for d in sources}
                if len(values) == 1 and None not in values:
                    bases.append([reg, values.pop()])
                elif sret and sources and all(copies.get(d) == reg for d in sources):
                    same.append([reg, sret[0]])
                elif checked and sources and (reg != abi["fp"] or s["cfa"][0] != abi["fp"]):
                    unknown.append(reg)
            s["frame_bases"] = bases
            if same:
                s["copies"] = same
            if unknown:
                problems.append(f"{isa}: {s['function']} keeps a value no record describes "
                                f"in DWARF register(s) {unknown} across the call at "
                                f"{s['source']} (return address {s['ra']:#x})")
    return problems
