#!/usr/bin/env python3
"""Compare the x86_64 and aarch64 newlib builds made by build.sh.

The layout tool gives every function and global the same address in both ISA
builds, so both libraries must define the same symbols, with data objects of
the same size, and every symbol must live in its own section.  Per archive
(libc.a, libm.a) this reports:

  * defined global symbols present in only one ISA,
  * defined data objects (global, and static by member) whose size differs
    or that exist in only one ISA,
  * external symbols the archive needs but does not define (the syscall stubs
    and helpers the library OS / libgcc must provide), if they differ,
  * members with more than one symbol in a plain .text/.data/.rodata/.bss
    section (such code or data cannot be placed per function).

Exit status: 0 if everything not in ALLOW is identical, 1 otherwise.
usage: check_symbols.py PREFIX_X86 PREFIX_ARM [-v]
"""

import argparse
import io
import sys

from elftools.elf.elffile import ELFFile

ARCHIVES = ("libc.a", "libm.a")

# Known, accepted differences: (archive, kind, name) -> why.
# kind: "global", "object" (name or member:name), "undefined" or "plain"
# (ISA:member:section).
ALLOW = {
    # stdlib/strtold.c defines __flt_rounds() and its table for x86 only (it
    # reads the x87 control word); aarch64 uses a constant.  Nothing else
    # calls it.
    ("libc.a", "global", "__flt_rounds"): "x86-only helper of strtold",
    ("libc.a", "object", "lib_a-strtold.o:map"): "table of __flt_rounds",
    # long double is x87 80-bit on x86_64 but IEEE binary128 on aarch64, so
    # aarch64 calls libgcc's soft-float TF helpers where x86 uses x87 code.
    # printf/scanf of long double (--enable-newlib-io-long-double) add the rest.
    **{("libc.a", "undefined", n): "aarch64 long double (libgcc)" for n in (
        "__eqtf2", "__extenddftf2", "__fixtfsi", "__floatsitf", "__gttf2", "__lttf2",
        "__multf3", "__netf2", "__subtf3", "__trunctfdf2")},
    **{("libm.a", "undefined", n): "aarch64 long double (libgcc)" for n in (
        "__addtf3", "__divtf3", "__eqtf2", "__extenddftf2", "__extendsftf2",
        "__fixtfdi", "__floatditf", "__floatsitf", "__getf2", "__gttf2",
        "__multf3", "__netf2", "__subtf3", "__trunctfdf2", "__unordtf2")},
    # long double complex multiply: libgcc name depends on the format.
    ("libm.a", "undefined", "__multc3"): "aarch64 binary128 complex multiply",
    ("libm.a", "undefined", "__mulxc3"): "x86_64 x87 complex multiply",
}

PLAIN = (".text", ".data", ".rodata", ".bss")


def ar_members(path):
    """Yield (name, bytes) of the members of a GNU/SysV ar archive."""
    with open(path, "rb") as f:
        data = f.read()
    if not data.startswith(b"!<arch>\n"):
        raise ValueError(f"{path}: not an ar archive")
    pos, longnames = 8, b""
    while pos + 60 <= len(data):
        hdr = data[pos:pos + 60]
        name = hdr[:16].decode().rstrip()
        size = int(hdr[48:58].decode().strip())
        body = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size & 1)
        if name in ("/", "/SYM64/"):
            continue  # symbol index
        if name == "//":
            longnames = body
            continue
        if name.startswith("/") and name[1:].isdigit():
            off = int(name[1:])
            name = longnames[off:longnames.index(b"/\n", off)].decode()
        yield name.rstrip("/"), body


def scan(path):
    """Collect symbol facts of one archive."""
    defined = {}      # global name -> type
    objects = {}      # name or member:name -> size
    align = {}        # same keys -> alignment of the containing section
    undefined = set()
    plain = {}        # member -> [(section, symbols)]
    for member, blob in ar_members(path):
        elf = ELFFile(io.BytesIO(blob))
        symtab = elf.get_section_by_name(".symtab")
        if symtab is None:
            continue
        per_sec = {}
        for sym in symtab.iter_symbols():
            st, shndx = sym["st_info"], sym["st_shndx"]
            # .L* are assembler-private labels (x86 clang keeps some, e.g.
            # .LCPI constant pools); the layout tool places their sections.
            if st.type in ("STT_SECTION", "STT_FILE") or not sym.name \
                    or sym.name.startswith(".L"):
                continue
            if shndx == "SHN_UNDEF":
                if st.bind != "STB_LOCAL":
                    undefined.add(sym.name)
                continue
            is_global = st.bind in ("STB_GLOBAL", "STB_WEAK")
            if is_global:
                defined[sym.name] = st.type
            if st.type == "STT_OBJECT" or shndx == "SHN_COMMON":
                key = sym.name if is_global else f"{member}:{sym.name}"
                objects[key] = sym["st_size"]
                if isinstance(shndx, int):
                    align[key] = elf.get_section(shndx)["sh_addralign"]
                else:
                    align[key] = sym["st_value"]  # SHN_COMMON: value = alignment
            if isinstance(shndx, int) and st.type in ("STT_FUNC", "STT_OBJECT", "STT_NOTYPE"):
                sec = elf.get_section(shndx).name
                if sec in PLAIN:
                    per_sec.setdefault(sec, []).append(sym.name)
        bad = [(s, names) for s, names in sorted(per_sec.items()) if len(names) > 1]
        if bad:
            plain[member] = bad
    undefined -= set(defined)
    return defined, objects, undefined, plain, align


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix_x86", help="PREFIX of the x86_64 build")
    ap.add_argument("prefix_arm", help="PREFIX of the aarch64 build")
    ap.add_argument("-v", "--verbose", action="store_true",
                    help="also print the undefined-symbol list and allowed differences")
    args = ap.parse_args()

    failures = 0
    used = set()
    externals = {}

    def report(archive, kind, name, text):
        nonlocal failures
        key = (archive, kind, name)
        if key in ALLOW:
            used.add(key)
            if args.verbose:
                print(f"  allowed: {text}  ({ALLOW[key]})")
        else:
            failures += 1
            print(f"  DIFF: {text}")

    for archive in ARCHIVES:
        x = scan(f"{args.prefix_x86}/lib/{archive}")
        a = scan(f"{args.prefix_arm}/lib/{archive}")
        (xdef, xobj, xund, xplain, xal), (adef, aobj, aund, aplain, aal) = x, a
        externals[archive] = (xund, aund, set(xdef) | set(adef))
        print(f"{archive}: {len(xdef)} / {len(adef)} global symbols, "
              f"{len(xobj)} / {len(aobj)} data objects (x86_64 / aarch64)")
        for name in sorted(set(xdef) ^ set(adef)):
            where = "x86_64" if name in xdef else "aarch64"
            report(archive, "global", name, f"global {name} only in {where}")
        for name in sorted(set(xdef) & set(adef)):
            if xdef[name] != adef[name]:
                report(archive, "global", name, f"{name}: type {xdef[name]} vs {adef[name]}")
        for name in sorted(set(xobj) | set(aobj)):
            xs, as_ = xobj.get(name), aobj.get(name)
            if xs != as_:
                report(archive, "object", name, f"object {name}: size {xs} vs {as_}")
        for name in sorted(xund ^ aund):
            where = "x86_64" if name in xund else "aarch64"
            report(archive, "undefined", name, f"external {name} needed only on {where}")
        # Not an error: the layout tool must use the larger alignment
        # (e.g. x86-64 aligns arrays >= 16 bytes to 16, aarch64 does not).
        al = sorted(k for k in set(xal) & set(aal) if xal[k] != aal[k])
        if al:
            print(f"  note: {len(al)} data objects differ only in alignment"
                  + (": " + ", ".join(f"{k} {xal[k]}/{aal[k]}" for k in al) if args.verbose else ""))
        for isa, plain in (("x86_64", xplain), ("aarch64", aplain)):
            for member, secs in sorted(plain.items()):
                for sec, names in secs:
                    report(archive, "plain", f"{isa}:{member}:{sec}",
                           f"{isa} {member}: {len(names)} symbols share plain {sec}: "
                           + " ".join(sorted(names)[:8]))
    # What the library OS (stubs) and libgcc must provide for libc.a + libm.a.
    (cx, ca, cdef), (mx, ma, mdef) = externals["libc.a"], externals["libm.a"]
    both = ((cx | mx) & (ca | ma)) - cdef - mdef
    print(f"externals needed by libc.a+libm.a on both ISAs ({len(both)}): "
          + " ".join(sorted(both)))
    stale = set(ALLOW) - used
    if stale and args.verbose:
        for key in sorted(stale):
            print(f"  note: allow-list entry not needed: {key}")
    print("OK: builds match (modulo allow-list)" if not failures
          else f"FAILED: {failures} unexpected difference(s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
