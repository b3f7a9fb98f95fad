"""The built-in workloads: NAS Parallel Benchmarks kernels, the corpus of HPC kernels of
distinct shapes (each verifies itself) and small C library programs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .resources import KERNEL_IMAGES

ROOT = KERNEL_IMAGES / "workloads"


@dataclass(frozen=True)
class Workload:
    name: str
    sources: tuple[str, ...]        # relative to kernel-images/workloads
    description: str
    classes: tuple[str, ...] = ()   # problem classes (NPB's S, W, A), chosen at compile time

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
_SWA = ("S", "W", "A")


def _corpus(name: str, description: str) -> Workload:
    return Workload(name, (f"corpus/{name}.c",), description, _SWA)


WORKLOADS = {w.name: w for w in (
    Workload("npb-ep", ("npb/ep.c",) + _NPB, "NPB EP: embarrassingly parallel Gaussian pairs",
             ("S", "W", "A")),
    Workload("npb-is", ("npb/is.c",) + _NPB, "NPB IS: integer bucket sort", ("S", "W", "A")),
    Workload("npb-cg", ("npb/cg.c",) + _NPB, "NPB CG: conjugate gradient, sparse matrix",
             ("S", "W", "A")),
    Workload("npb-mg", ("npb/mg.c",) + _NPB, "NPB MG: multigrid V-cycles on a 3-D Poisson problem",
             _SWA),
    Workload("npb-ft", ("npb/ft.c",) + _NPB, "NPB FT: 3-D FFT diffusion, arrays of complex structs",
             _SWA),
    _corpus("stream", "STREAM-like copy/scale/add/triad memory bandwidth"),
    _corpus("gemm", "dense matrix product, cache-blocked"),
    _corpus("jacobi2d", "Jacobi 2-D Laplace stencil (analytic eigenmode check)"),
    _corpus("heat3d", "explicit 3-D heat equation, 7-point stencil"),
    _corpus("spmv", "sparse matrix-vector products in CSR form"),
    _corpus("nbody", "direct-sum gravitational n-body, leapfrog, array of structs"),
    _corpus("lcs", "dynamic programming: longest common subsequence"),
    _corpus("sort", "bottom-up merge sort of 64-bit keys"),
    _corpus("montecarlo", "Monte-Carlo integration (pi, a polynomial)"),
    Workload("knr", ("corpus/knr.c", "corpus/knr_lib.c"),
             "legacy K&R C: Gaussian elimination, unprototyped calls across files", _SWA),
    _corpus("vla", "variable-length arrays of structs of doubles: cell diffusion"),
    Workload("hello", ("libc/hello.c",), "prints a greeting and its arguments"),
    Workload("libc-stdio", ("libc/stdio_fmt.c",), "printf/scanf formatting checks"),
    Workload("libc-stdlib", ("libc/stdlib_misc.c",), "strtol/strtod/qsort/malloc checks"),
    Workload("libc-string", ("libc/string_ops.c",), "string.h checks"),
    Workload("libc-math", ("libc/math_funcs.c",), "math.h checks"),
    Workload("libc-posix", ("libc/posix_surface.c",),
             "POSIX clocks, sleeps, getrusage, sysconf, aligned allocation, env, atexit"),
    Workload("libc-fileio", ("libc/file_io.c",), "file I/O through the host (argv[1]: a dir)"),
)}

# Programs of distinct shapes that verify themselves: the set the migration tests, the
# overhead benchmark and the scheduler's calibration run.
CORPUS = ("npb-ep", "npb-is", "npb-cg", "npb-mg", "npb-ft", "stream", "gemm", "jacobi2d",
          "heat3d", "spmv", "nbody", "lcs", "sort", "montecarlo", "knr", "vla")


def get(name: str) -> Workload:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"no workload '{name}' (try: {', '.join(WORKLOADS)})") from None
