"""LLVM stackmap format v3, and the per-ISA migration metadata built from it.

`parse()` reads an `.llvm_stackmaps` section. `isa_metadata()` joins, for one final linked
ELF, each statepoint record (return address, live-value locations) with the call-frame rules
of `.debug_frame` at that address and with the pass's side table (value types and sizes,
which the records do not carry reliably), giving what the run-time stack transform needs per
call site. `check_isas()` refuses a build whose ISAs disagree on the sites. `load()` is the
run-time side: it imports nothing heavy and indexes the sites by return address and by id.
Format of the result: docs/formats.md, section 4.
"""

from __future__ import annotations

import struct

from .. import jsonc
from ..errors import HexoError
from ..records import record

META_FORMAT = "hexo-migration-meta"
META_VERSION = (1, 3)
STATEPOINT_HEADER = 3           # cc, flags, number of deopt values precede the values

REGISTER, DIRECT, INDIRECT, CONSTANT, CONSTANT_INDEX = 1, 2, 3, 4, 5
LOCATION_KINDS = {REGISTER: "register", DIRECT: "direct", INDIRECT: "indirect",
                  CONSTANT: "constant", CONSTANT_INDEX: "constindex"}

# DWARF register numbers of each ISA's frame registers and callee-saved registers.
ABI = {
    "x86_64": {"sp": 7, "fp": 6, "ra": 16, "callee_saved": [3, 6, 12, 13, 14, 15]},
    "aarch64": {"sp": 31, "fp": 29, "ra": 30,
                "callee_saved": list(range(19, 31)) + list(range(72, 80))},
}


class StackMapError(HexoError):
    """A malformed stackmap section, or metadata the ISAs disagree on."""


class StackMapStructs:
    """The format's fixed-size structures for one byte order, declared once."""

    def __init__(self, little_endian: bool = True):
        e = "<" if little_endian else ">"
        self.header = struct.Struct(e + "BBHIII")     # version, 2 reserved, counts
        self.function = struct.Struct(e + "QQQ")      # address, stack size, record count
        self.constant = struct.Struct(e + "Q")
        self.record = struct.Struct(e + "QIHH")       # id, offset, flags, location count
        self.location = struct.Struct(e + "BBHHHi")   # kind, -, size, regnum, -, offset
        self.liveout_head = struct.Struct(e + "HH")   # padding, live-out count
        self.liveout = struct.Struct(e + "HBB")       # regnum, -, size


_STRUCTS = {True: StackMapStructs(True), False: StackMapStructs(False)}


Function = record("Function", "address stack_size record_count")
Location = record("Location", "kind size reg offset")
# offset: of the return address, from the function's start; locations: Locations; liveouts:
# (register, size) pairs; function: index into StackMap.functions
Record = record("Record", "id offset flags locations liveouts function")
StackMap = record("StackMap", "version functions constants records")


def parse(data: bytes, little_endian: bool = True) -> StackMap:
    s = _STRUCTS[little_endian]
    try:
        version, _, _, nfun, ncon, nrec = s.header.unpack_from(data, 0)
        if version != 3:
            raise StackMapError(f"stackmap version {version}, expected 3")
        pos = s.header.size
        funcs = []
        for _ in range(nfun):
            funcs.append(Function(*s.function.unpack_from(data, pos)))
            pos += s.function.size
        consts = []
        for _ in range(ncon):
            consts.append(s.constant.unpack_from(data, pos)[0])
            pos += s.constant.size
        owners = [i for i, f in enumerate(funcs) for _ in range(f.record_count)]
        if len(owners) != nrec:
            raise StackMapError(f"functions own {len(owners)} records, header says {nrec}")
        records = []
        for r in range(nrec):
            rid, off, flags, nloc = s.record.unpack_from(data, pos)
            pos += s.record.size
            locs = []
            for _ in range(nloc):
                kind, _, size, reg, _, value = s.location.unpack_from(data, pos)
                if kind not in LOCATION_KINDS:
                    raise StackMapError(f"record {rid}: unknown location kind {kind}")
                locs.append(Location(kind, size, reg, value))
                pos += s.location.size
            pos += -pos % 8
            _, nlive = s.liveout_head.unpack_from(data, pos)
            pos += s.liveout_head.size
            live = []
            for _ in range(nlive):
                reg, _, size = s.liveout.unpack_from(data, pos)
                live.append((reg, size))
                pos += s.liveout.size
            pos += -pos % 8
            records.append(Record(rid, off, flags, tuple(locs), tuple(live), owners[r]))
    except struct.error:
        raise StackMapError("stackmap section is truncated") from None
    return StackMap(version, tuple(funcs), tuple(consts), tuple(records))


# --- build time: one final ELF -------------------------------------------------------------

def section_data(elf) -> bytes | None:
    """The stackmap bytes of a linked ELF. The layout tool places them inside `.rodata`
    (ISA-private), so they are found by LLVM's `__LLVM_StackMaps` symbol; an object file
    has its own section."""
    sec = elf.get_section_by_name(".llvm_stackmaps")
    if sec is not None:
        return sec.data()
    symtab = elf.get_section_by_name(".symtab")
    syms = symtab.get_symbol_by_name("__LLVM_StackMaps") if symtab else None
    if not syms:
        return None
    addr = syms[0]["st_value"]
    sec = elf.get_section(syms[0]["st_shndx"])
    return sec.data()[addr - sec["sh_addr"]:]


def _functions(elf) -> tuple[dict[int, str], dict[int, int]]:
    """Name and end address of every defined function, by start address."""
    names: dict[int, str] = {}
    ends: dict[int, int] = {}
    for sym in elf.get_section_by_name(".symtab").iter_symbols():
        if sym["st_info"]["type"] == "STT_FUNC" and sym.name and sym["st_shndx"] != "SHN_UNDEF":
            if sym["st_info"]["bind"] != "STB_LOCAL" or sym["st_value"] not in names:
                names[sym["st_value"]] = sym.name
                ends[sym["st_value"]] = sym["st_value"] + sym["st_size"]
    return names, ends


class FrameRules:
    """Call-frame rules of application code, from `.debug_frame` (non-allocated, kept by
    the migratable link; the application is compiled without .eh_frame)."""

    def __init__(self, elf):
        from elftools.dwarf.callframe import FDE
        self.fdes = []
        if elf.get_section_by_name(".debug_frame") is None:
            return
        dwarf = elf.get_dwarf_info(relocate_dwarf_sections=False)
        for entry in dwarf.CFI_entries():
            if isinstance(entry, FDE):
                lo = entry.header["initial_location"]
                self.fdes.append((lo, lo + entry.header["address_range"], entry))
        self.fdes.sort(key=lambda t: t[0])

    def at(self, pc: int) -> dict | None:
        """CFA rule and save slots (offsets from the CFA) in effect at `pc`."""
        for lo, hi, fde in self.fdes:
            if lo <= pc < hi:
                row = None
                for r in fde.get_decoded().table:
                    if r["pc"] <= pc:
                        row = r
                if row is None:
                    return None
                cfa = row["cfa"]
                if cfa.expr is not None:
                    raise StackMapError(f"CFA at {pc:#x} is a DWARF expression")
                saved = sorted([reg, rule.arg] for reg, rule in row.items()
                               if reg not in ("pc", "cfa") and rule.type == "OFFSET")
                return {"cfa": [cfa.reg, cfa.offset], "saved": saved}
        return None


def isa_metadata(elf_path, isa: str, side_table: dict) -> dict:
    """Migration metadata of one ISA's final ELF (format: docs/formats.md, section 4)."""
    from elftools.elf.elffile import ELFFile

    from . import liveregs
    sites_by_id = {s["id"]: s for s in side_table["sites"]}
    with open(elf_path, "rb") as f:
        elf = ELFFile(f)
        data = section_data(elf)
        if data is None and sites_by_id:
            raise StackMapError(f"{isa}: the linked ELF has no stackmap records")
        sm = parse(data, elf.little_endian) if data else StackMap(3, (), (), ())
        names, ends = _functions(elf)
        frames = FrameRules(elf)
        symbols = {s.name: s["st_value"] for s in elf.get_section_by_name(".symtab").iter_symbols()
                   if s.name in ("hexo_check_migrate", "hexo_main_return", "hexo_resume",
                                  "hexo_linux_resume", "main")}
    out = []
    for rec in sm.records:
        fn = sm.functions[rec.function]
        side = sites_by_id.get(rec.id)
        where = f"{isa}: stackmap record {rec.id}"
        if side is None:
            raise StackMapError(f"{where} is not a call site of the migration pass")
        head, locs = rec.locations[:STATEPOINT_HEADER], rec.locations[STATEPOINT_HEADER:]
        if len(head) < STATEPOINT_HEADER or head[2].offset != len(locs) \
                or len(locs) != len(side["values"]):
            raise StackMapError(f"{where} ({side['function']}, {side['source']}) has "
                                f"{len(locs)} values, the pass recorded "
                                f"{len(side['values'])}")
        ra = fn.address + rec.offset
        frame = frames.at(ra - 1)
        if frame is None:
            raise StackMapError(f"{where}: no call-frame rule covers return address {ra:#x}")
        values = []
        for loc, val in zip(locs, side["values"]):
            v = {"kind": LOCATION_KINDS[loc.kind], "reg": loc.reg, "offset": loc.offset,
                 "loc_size": loc.size, "type": val["type"], "size": val["size"]}
            if loc.kind == CONSTANT_INDEX:
                v["kind"], v["offset"] = "constant", sm.constants[loc.offset]
            if val["type"] == "alloca":
                v["alloca_size"] = val["alloca_size"]
            elif val.get("slot"):
                if loc.kind != DIRECT:
                    raise StackMapError(f"{where} ({side['function']}, {side['source']}): the "
                                        f"slot of {val['ir']} is not a stack object")
                v["kind"] = "indirect"      # the value is in memory at [reg + offset]
                if val.get("sret"):
                    v["sret"] = True
            values.append(v)
        out.append({"id": rec.id, "ra": ra, "function": names.get(fn.address, "?"),
                    "function_addr": fn.address, "frame_size": fn.stack_size,
                    "callee": side["callee"], "source": side["source"],
                    **frame, "values": values})
    out.sort(key=lambda s: s["ra"])
    with open(elf_path, "rb") as f:
        problems = liveregs.analyse(ELFFile(f), isa, out, ends, side_table.get("noreturn", ()))
    if problems:
        more = f" (and {len(problems) - 1} more call sites)" if len(problems) > 1 else ""
        raise StackMapError(f"{problems[0]}{more}; the job could not be moved there "
                            f"(a hexo defect)\n  " + "\n  ".join(problems[1:]))
    return {"format": META_FORMAT, "version": list(META_VERSION), "isa": isa,
            "abi": ABI[isa], "symbols": symbols, "sites": out}


def check_isas(metas: dict[str, dict]) -> list[str]:
    """Reasons the ISAs' metadata cannot be used together (empty when they agree): every
    call-site id on every ISA, with the same number of values of the same types."""
    problems = []
    shape = {isa: {} for isa in metas}
    for isa, m in metas.items():
        for s in m["sites"]:
            key = tuple((v["type"], v["size"]) for v in s["values"])
            prev = shape[isa].setdefault(s["id"], key)
            if prev != key:
                problems.append(f"{isa}: copies of call site {s['id']} ({s['function']}, "
                                f"{s['source']}) record different values")
    (a, sa), (b, sb) = list(shape.items())
    for only, x, y in ((sorted(sa.keys() - sb.keys()), a, b),
                       (sorted(sb.keys() - sa.keys()), b, a)):
        if only:
            problems.append(f"call sites {only[:10]} have a stackmap record on {x} but not "
                            f"on {y}")
    for sid in sorted(sa.keys() & sb.keys()):
        if sa[sid] != sb[sid]:
            problems.append(f"call site {sid}: {len(sa[sid])} values on {a}, {len(sb[sid])} "
                            f"on {b}, or their types differ")
    return problems


def dumps(meta: dict) -> bytes:
    import json
    return json.dumps(meta, separators=(",", ":")).encode()


# --- run time ------------------------------------------------------------------------------

Metadata = record("Metadata", "isa raw by_ra by_id", doc="""One ISA's metadata, indexed for the
transform: by return address (by_ra: ra -> site) and by id (by_id: id -> [site, ...]).""")


def load(blob: bytes) -> Metadata:
    try:
        m = jsonc.loads(blob)
        if m.get("format") != META_FORMAT or m.get("version", [0])[0] != META_VERSION[0]:
            raise StackMapError(f"not {META_FORMAT} {META_VERSION[0]}.x metadata")
        by_id: dict[int, list[dict]] = {}
        for s in m["sites"]:
            by_id.setdefault(s["id"], []).append(s)
        return Metadata(m["isa"], m, {s["ra"]: s for s in m["sites"]}, by_id)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise StackMapError(f"corrupt migration metadata ({e.__class__.__name__}: {e})") from None
