"""Common address layout of the two ISA builds of one program.

Each ISA is linked once with a plain script; its lld map says which input sections survive
and how big they are. An input-section group (one section name in one object file) is a
*unit*. Units present in both builds get one address in both (the larger size reserved);
units only one ISA has (constant pools, jump tables, ISA-specific kernel code) get private
space that no shared unit uses. Generated linker scripts then place every unit explicitly,
and `verify()` checks the result symbol by symbol.

Regions, in address order: text (library OS first), read-only data, init/fini arrays, kernel
data on pages of its own, then application data and bss. Linking with `ld.lld -O0` keeps
string and constant pools per object file (no cross-file merging), so they are units too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from hexo import abi
from ..errors import HexoError

PAGE = abi.PAGE_SIZE
KERNEL_ARCHIVE = "libhexo-os.a"
# Library OS objects whose data is the program's own state (rand()'s generator): it goes with
# the application's data, which a checkpoint carries to the other ISA, not on the kernel's
# pages, which stay behind.
APP_STATE = ("rand.o",)
DISCARD = (".comment", ".note", ".eh_frame", ".llvm_addrsig", ".debug", ".ARM.attributes",
           ".llvm_stackmaps_discard")
ARRAYS = (".preinit_array", ".init_array", ".fini_array")
# Per-ISA content of migratable builds: each ISA's own read-only copy, never shared, and kept
# although nothing references it.
ISA_PRIVATE = (".llvm_stackmaps",)


class LayoutError(HexoError):
    """The two ISA builds cannot be given one layout."""


@dataclass
class Unit:
    file: str                 # "app.o" or "libc.a(lib_a-printf.o)"
    name: str                 # input section name
    path: str                 # as the linker saw it, for the script's file pattern
    addr: int = 0
    size: int = 0
    align: int = 1
    symbols: list[str] = field(default_factory=list)
    anchor: tuple[int, str] | None = None     # (offset, name) of the first symbol

    @property
    def key(self) -> tuple[str, str]:
        """Identity across ISAs: the first symbol when there is one, because the two
        compilers may put the same object in differently named sections (a small constant
        array in .rodata.cst16 on one ISA, .rodata.<name> on the other)."""
        return (self.file, "=" + self.anchor[1]) if self.anchor else (self.file, self.name)

    @property
    def kernel(self) -> bool:
        return self.file.startswith(KERNEL_ARCHIVE + "(")

    @property
    def kernel_state(self) -> bool:
        return self.kernel and self.file[len(KERNEL_ARCHIVE) + 1:-1] not in APP_STATE

    @property
    def region(self) -> str:
        n = self.name
        if n.startswith(".text"):
            return "ktext" if self.kernel else "text"
        if n.startswith((".rodata", ".data.rel.ro", ".srodata") + ISA_PRIVATE):
            return "rodata"
        if n.startswith(ARRAYS):
            return "arrays"
        if n.startswith((".data", ".sdata")):
            return "kdata" if self.kernel_state else "data"
        if n.startswith((".bss", ".sbss", ".tbss")):
            return "kbss" if self.kernel_state else "bss"
        raise LayoutError(f"no place for section {n} of {self.file}")

    @property
    def isa_private(self) -> bool:
        return self.name.startswith(ISA_PRIVATE)

    def pattern(self) -> str:
        if "(" in self.file:
            archive, member = self.path.rsplit("(", 1)
            return f"*{Path(archive).name}:{member.rstrip(')')}({self.name})"
        return f"*{self.file}({self.name})"


_LINE = re.compile(r"^\s*([0-9a-f]+)\s+[0-9a-f]+\s+([0-9a-f]+)\s+(\d+) (\s*)(\S.*)$")


def parse_map(text: str) -> list[Unit]:
    """Input-section groups, in link order, from an ld.lld -Map file."""
    units: dict[tuple[str, str], Unit] = {}
    current: Unit | None = None
    for line in text.splitlines()[1:]:
        m = _LINE.match(line)
        if not m:
            continue
        addr, size, align, indent, what = int(m[1], 16), int(m[2], 16), int(m[3]), len(m[4]), m[5]
        if indent < 8:          # output section
            current = None
            continue
        if indent < 16:         # input section "file:(name)"
            fm = re.match(r"^(.*):\((.*)\)$", what)
            if not fm or fm[1].startswith("<internal>"):
                current = None
                continue
            path, name = fm[1], fm[2]
            if name.startswith(DISCARD):
                current = None
                continue
            file = Path(path.split("(")[0]).name + ("(" + path.split("(", 1)[1] if "(" in path else "")
            u = units.get((file, name))
            if u is None:
                # Code is at least 4-aligned: arm64 instructions must be, and an assembler
                # section without .balign may say 1 while its x86-64 twin sets the address.
                code = name == ".text" or name.startswith(".text.")
                u = units[(file, name)] = Unit(file, name, path, addr, 0, 4 if code else 1)
            u.size = max(u.size, addr + size - u.addr)
            u.align = max(u.align, align)
            current = u
            continue
        if current is not None and not what.startswith(("$", ".L")):
            current.symbols.append(what)
            mark = (addr - current.addr, what)
            current.anchor = min(current.anchor or mark, mark)
    return list(units.values())


@dataclass
class Placement:
    """Where every unit of every ISA goes, and the resulting memory areas."""
    addr: dict[str, dict[tuple[str, str], int]]
    units: dict[str, list[Unit]]
    shared: list[tuple[str, str]]
    areas: dict[str, tuple[int, int]]
    private: dict[str, list[Unit]]

    def app_mismatches(self) -> list[str]:
        """Application sections with symbols that only one ISA has (always a defect:
        both ISAs are generated from one IR). Constant pools and jump tables carry none."""
        return [f"{isa}: only this ISA has {u.name} of {u.file} ({', '.join(u.symbols)})"
                for isa, units in self.private.items() for u in units
                if u.file == "app.o" and u.symbols and not u.isa_private]


def _align(x: int, a: int) -> int:
    return -(-x // a) * a


REGION_ORDER = ("ktext", "text", "rodata", "arrays", "kdata", "kbss", "data", "bss")


def plan(maps: dict[str, list[Unit]], base: int = abi.IMAGE_BASE,
         page_regions: bool = False) -> Placement:
    """Addresses for every unit; with `page_regions` every region starts on a page (Linux
    maps each segment with its own permissions, page by page)."""
    isas = list(maps)
    by_key = {isa: {u.key: u for u in units} for isa, units in maps.items()}
    first = isas[0]
    shared = [u.key for u in maps[first]
              if not u.isa_private and all(u.key in by_key[i] for i in isas)]
    shared_set = set(shared)
    for key in shared:
        regions = {by_key[i][key].region for i in isas}
        if len(regions) > 1:
            raise LayoutError(f"{key[0]}: section {key[1]} is in different regions per ISA")
    addr: dict[str, dict] = {i: {} for i in isas}
    areas: dict[str, tuple[int, int]] = {}
    cursor = base
    for region in REGION_ORDER:
        if page_regions or region in ("kdata", "data"):
            cursor = _align(cursor, PAGE)   # kernel and application data never share a page
        cursor = _align(cursor, 64)
        start = cursor
        for key in shared:
            units = [by_key[i][key] for i in isas]
            if units[0].region != region:
                continue
            base = _align(cursor, max(u.align for u in units))
            starts = _anchored_starts(base, units, key)
            for i, unit_start in zip(isas, starts):
                addr[i][key] = unit_start
            cursor = max(st + u.size for st, u in zip(starts, units))
        end = cursor
        for i in isas:
            c = cursor
            for u in maps[i]:
                if u.key in shared_set or u.region != region:
                    continue
                c = _align(c, u.align)
                addr[i][u.key] = c
                c += u.size
            end = max(end, c)
        cursor = end
        areas[region] = (start, end)
    private = {i: [u for u in maps[i] if u.key not in shared_set] for i in isas}
    return Placement(addr, {i: maps[i] for i in isas}, shared, areas, private)


def _anchored_starts(base: int, units: list[Unit], key) -> list[int]:
    """Start addresses (>= base, each aligned) that put the units' anchor symbols at one
    address, even when one ISA has constants in front of it in the same section."""
    offs = [u.anchor[0] if u.anchor else 0 for u in units]
    top = max(offs)
    for pre in range(top, top + max(u.align for u in units)):
        if all((pre - o) % u.align == 0 for o, u in zip(offs, units)):
            return [base + pre - o for o in offs]
    raise LayoutError(f"{key[0]}: cannot align {key[1]} on every ISA")


_FLAGS = {"ktext": "text", "text": "text", "rodata": "rodata", "arrays": "rodata",
          "kdata": "kdata", "kbss": "kdata", "data": "data", "bss": "data"}


def linker_script(p: Placement, isa: str, keep_debug: tuple[str, ...] = ()) -> str:
    """The pass-2 script: every surviving input section at its planned address.
    `keep_debug` names non-allocated sections to keep instead of discarding them."""
    units = sorted(p.units[isa], key=lambda u: p.addr[isa][u.key])
    out = ["ENTRY(_start)",
           "PHDRS { text PT_LOAD FLAGS(5); rodata PT_LOAD FLAGS(4); "
           "kdata PT_LOAD FLAGS(6); data PT_LOAD FLAGS(6); }",
           "SECTIONS {"]
    for region in REGION_ORDER:
        start, end = p.areas[region]
        body = []
        for u in units:
            if u.region != region:
                continue
            keep = "KEEP(" if region == "arrays" or u.isa_private else ""
            body.append(f"    . = 0x{p.addr[isa][u.key]:x}; {keep}{u.pattern()}{')' if keep else ''}")
        name = {"ktext": ".hexo.ktext", "text": ".text", "rodata": ".rodata",
                "arrays": ".hexo.arrays", "kdata": ".hexo.kdata", "kbss": ".hexo.kbss",
                "data": ".data", "bss": ".bss"}[region]
        noload = " (NOLOAD)" if region in ("kbss", "bss") else ""
        syms = []
        if region == "arrays":
            syms = _array_symbols(units, p, isa)
        out.append(f"  {name} 0x{start:x}{noload} : {{")
        out += body + syms
        out.append(f"    . = 0x{end:x};")
        out.append(f"  }} :{_FLAGS[region]}")
    out.append(f"  __hexo_image_end = 0x{_align(p.areas['bss'][1], PAGE):x};")
    out += [f"  {name} 0 : {{ *({name}) }}" for name in keep_debug]
    out.append("  /DISCARD/ : { " + " ".join(f"*({d}*)" for d in DISCARD) + " }")
    out.append("}")
    return "\n".join(out) + "\n"


def _array_symbols(units: list[Unit], p: Placement, isa: str) -> list[str]:
    """newlib's __libc_init_array walks these bounds."""
    out = []
    for arr in ARRAYS:
        members = [u for u in units if u.name.startswith(arr)]
        if members:
            lo = min(p.addr[isa][u.key] for u in members)
            hi = max(p.addr[isa][u.key] + u.size for u in members)
        else:
            lo = hi = p.areas["arrays"][0]
        stem = arr.lstrip(".")
        out.append(f"    __{stem}_start = 0x{lo:x}; __{stem}_end = 0x{hi:x};")
    return out


def verify(maps: dict[str, list[Unit]], planned: dict[str, dict[tuple[str, str], int]],
           symbols: dict[str, dict[tuple[str, str], int]],
           strings: dict[str, dict[tuple[str, str], bytes]]) -> list[str]:
    """Problems that make the two final builds disagree; empty when the layout holds.

    `maps` are the pass-2 maps, `planned` the addresses plan() chose, `symbols` map (file, name) -> address per ISA (local symbols
    keyed by their source file), `strings` the bytes of every string pool per ISA.
    """
    isas = list(maps)
    problems = []
    a, b = isas
    for key in symbols[a].keys() & symbols[b].keys():
        if symbols[a][key] != symbols[b][key]:
            problems.append(f"symbol {key[1]} ({key[0] or 'global'}) at 0x{symbols[a][key]:x} "
                            f"on {a} but 0x{symbols[b][key]:x} on {b}")
    for isa in isas:
        for u in maps[isa]:
            if u.addr != planned[isa].get(u.key):
                problems.append(f"{isa}: {u.file}: section {u.name} landed at 0x{u.addr:x}, "
                                f"not where the layout put it")
    for key in strings[a].keys() & strings[b].keys():
        if strings[a][key] != strings[b][key]:
            problems.append(f"{key[0]}: string literals ({key[1]}) differ between {a} and {b}")
    return sorted(problems)
