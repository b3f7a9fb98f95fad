"""The built-in workloads: NAS Parallel Benchmarks kernels and small C library programs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .toolchain.sysroot import KERNEL_IMAGES

ROOT = KERNEL_IMAGES / "workloads"


@dataclass(frozen=True)
class Workload:
    name: str
    sources: tuple[str, ...]        # relative to kernel-images/workloads
    description: str
    classes: tuple[str, ...] = ()   # NPB problem classes, chosen at compile time

    def paths(self) -> list[Path]:
        return [ROOT / s for s in self.sources]

    def defines(self, klass: str | None) -> list[str]:
        if not self.classes:
            if klass:
                raise ValueError(f"{self.name} has no problem classes")
            return []
        klass = (klass or self.classes[0]).upper()
        if klass not in self.classes:
            raise ValueError(f"{self.name} has classes {', '.join(self.classes)}, not {klass}")
        return [f"CLASS_{klass}"]


_NPB = ("npb/npb_common.c",)
WORKLOADS = {w.name: w for w in (
    Workload("npb-ep", ("npb/ep.c",) + _NPB, "NPB EP: embarrassingly parallel Gaussian pairs",
             ("S", "W", "A")),
    Workload("npb-is", ("npb/is.c",) + _NPB, "NPB IS: integer bucket sort", ("S", "W", "A")),
    Workload("npb-cg", ("npb/cg.c",) + _NPB, "NPB CG: conjugate gradient, sparse matrix",
             ("S", "W", "A")),
    Workload("hello", ("libc/hello.c",), "prints a greeting and its arguments"),
    Workload("libc-stdio", ("libc/stdio_fmt.c",), "printf/scanf formatting checks"),
    Workload("libc-stdlib", ("libc/stdlib_misc.c",), "strtol/strtod/qsort/malloc checks"),
    Workload("libc-string", ("libc/string_ops.c",), "string.h checks"),
    Workload("libc-math", ("libc/math_funcs.c",), "math.h checks"),
    Workload("libc-fileio", ("libc/file_io.c",), "file I/O through the host (argv[1]: a dir)"),
)}


def get(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"no workload '{name}' (try: {', '.join(WORKLOADS)})") from None
