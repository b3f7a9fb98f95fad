"""Per-ISA compiler and linker settings, declared once for the whole toolchain."""

from __future__ import annotations

from dataclasses import dataclass

ISAS = ("x86_64", "aarch64")


@dataclass(frozen=True)
class Target:
    isa: str
    clang_target: str
    llc_triple: str
    datalayout: str
    llc_flags: tuple[str, ...]
    cflags: tuple[str, ...]          # for code compiled per ISA (library OS)
    ldflags: tuple[str, ...]
    migratable_llc_flags: tuple[str, ...] = ()


# llc flags of migratable builds. Statepoint records must hold at the return address, and
# the transform needs each frame's call-frame rules. aarch64 reserves x30: otherwise the
# link register can hold a live value across a call.
# No machine LICM (before or after register allocation), CSE or CodeGenPrepare: they hoist
# or share constant materializations (addresses of globals and constant pools) across calls
# in callee-saved registers, values that exist only in machine code, so no record holds them
# and they would be lost when the job moves to the other ISA. The IR pass ends a block after
# every statepoint for the same reason (instruction selection shares values within a block);
# CodeGenPrepare and, on aarch64, the CFG tidy-up after atomic expansion would merge them back.
# Loop strength reduction runs on the IR before the live-value pass instead
# (livevalues.reduce_loops). x86-64 passes stack arguments with `mov`s into the frame's
# reserved area, not `push`es: after a call with pushed arguments the stack pointer is not
# the one the frame's size gives until the caller pops them, and the transform rebuilds
# frames from their sizes.
MIGRATABLE_LLC_FLAGS = ("--force-dwarf-frame-section", "-disable-machine-licm",
                        "-disable-postra-machine-licm", "-disable-lsr", "-disable-cgp",
                        "-disable-constant-hoisting", "--enable-global-merge=false",
                        "-disable-machine-cse")


# Flags every guest translation unit shares: per-symbol sections for the layout tool, no
# unwind tables, and no FMA contraction, so floating-point results do not depend on the ISA.
COMMON_CFLAGS = ("-O2", "-ffunction-sections", "-fdata-sections", "-fno-pic", "-fno-common",
                 "-ffp-contract=off", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
                 "-fsigned-char", "-fno-stack-protector", "-nostdlibinc")

TARGETS = {
    "x86_64": Target(
        "x86_64", "x86_64-unknown-none-elf", "x86_64-unknown-none-elf",
        "e-m:e-p270:32:32-p271:32:32-p272:64:64-i64:64-f80:128-n8:16:32:64-S128",
        ("-mcpu=x86-64",),
        ("-mno-red-zone",),
        (),
        MIGRATABLE_LLC_FLAGS + ("-no-x86-call-frame-opt",)),
    "aarch64": Target(
        "aarch64", "aarch64-none-elf", "aarch64-none-elf",
        "e-m:e-i8:8:32-i16:16:32-i64:64-i128:128-n32:64-S128",
        ("-mcpu=generic",),
        (),
        ("-z", "max-page-size=4096"),
        MIGRATABLE_LLC_FLAGS + ("-mattr=+reserve-x30", "-aarch64-enable-atomic-cfg-tidy=false")),
}
