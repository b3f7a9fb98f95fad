"""The live-value pass: statepoints at every call site that can lead to a migration point.

The instrumentation is an LLVM pass plugin (livepass/LiveValues.cpp, which states its rules)
built here with clang++ against the LLVM the toolchain runs, on first use and whenever its
source changes, into the hexo home; `opt` runs it on the linked application IR and it writes
the side table (value kinds and sizes, site ids, file:line of what it refuses) that
stackmaps.isa_metadata joins with each ISA's records. Dynamic stack allocations of
migratable code go to the per-job region of livepass/dynstack.c, linked into the
application IR here.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from ..resources import package_path
from .sysroot import ToolchainError, _locked, home, run

SOURCE = package_path("hexo.toolchain", "livepass")
PLUGIN_SOURCE = SOURCE / "LiveValues.cpp"
DYNAMIC_STACK = SOURCE / "dynstack.c"


def plugin() -> Path:
    """The built plugin, compiled if missing or stale."""
    cxxflags = run(["llvm-config", "--cxxflags"], "asking llvm-config for the LLVM headers "
                   "(package llvm-14-dev)").split()
    h = hashlib.sha256(PLUGIN_SOURCE.read_bytes() + " ".join(cxxflags).encode()).hexdigest()
    so = home() / "livepass" / f"hexo-live-{h[:16]}.so"
    with _locked(home() / "livepass" / ".lock"):
        if not so.exists():
            tmp = so.with_suffix(".tmp")
            run(["clang++", *cxxflags, "-O2", "-fPIC", "-shared", "-Wall", "-Werror",
                 str(PLUGIN_SOURCE), "-o", str(tmp)], "building the live-value pass plugin")
            tmp.rename(so)
    return so


def reduce_loops(ir: Path, out: Path) -> None:
    """Loop strength reduction on the IR, before the pass: the induction variables it creates
    are then ordinary IR values that the pass records at every statepoint. llc's own LSR stays
    off in migratable builds (targets.MIGRATABLE_LLC_FLAGS) because the values it would create
    exist only in machine code; without any LSR, stencil loops ran 1.3-1.6x slower."""
    run(["opt", "-passes=function(loop-mssa(loop-reduce))", "-S", str(ir), "-o", str(out)],
        "reducing loop induction variables (a hexo defect if this fails)")


def instrument(ir: Path, out: Path, table: Path, auto_points: bool,
               dump_liveness: bool = False) -> dict:
    """Run the pass on `ir` into `out` (verified by opt); returns the side table. Raises
    ToolchainError listing every construct that cannot be made migratable, with file:line."""
    params = ["auto-points"] * auto_points + ["dump-liveness"] * dump_liveness
    run(["opt", f"-load-pass-plugin={plugin()}",
         f"-passes=hexo-live<{';'.join(params + [f'sites={table}'])}>", "-verify-each", "-S",
         str(ir), "-o", str(out)],
        "making the application IR migratable (a hexo defect if this fails)")
    result = json.loads(table.read_text())
    if result["problems"]:
        raise ToolchainError("cannot be made migratable for cross-ISA migration:\n  "
                             + "\n  ".join(result["problems"]))
    return result
