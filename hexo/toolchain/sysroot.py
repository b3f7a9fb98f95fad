"""Per-ISA sysroots: newlib (built once from Debian's newlib-source) and the library OS.

Both live under the hexo home (resources.home()). The
library OS archive is rebuilt whenever its sources change; a file lock makes concurrent
builds (parallel tests) wait for one another instead of racing.
"""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .targets import COMMON_CFLAGS, TARGETS
from ..errors import HexoError
from ..resources import KERNEL_IMAGES, home

LIBOS = KERNEL_IMAGES / "libos"
LINUX_RUNTIME = KERNEL_IMAGES / "linux"
NEWLIB = KERNEL_IMAGES / "newlib"
ABI_INCLUDE = KERNEL_IMAGES / "include"


class ToolchainError(HexoError):
    """A build step failed; the message says which and why."""


def run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise ToolchainError(f"{what}: '{cmd[0]}' is not installed") from None
    if p.returncode != 0:
        raise ToolchainError(f"{what} failed:\n{p.stderr.strip() or p.stdout.strip()}")
    return p.stdout


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


@dataclass(frozen=True)
class Sysroot:
    isa: str
    root: Path
    linux: bool = False             # the Linux-mode runtime instead of the library OS

    @property
    def include(self) -> Path:
        return self.root / "newlib" / "include"

    @property
    def libs(self) -> list[Path]:
        lib = self.root / "newlib" / "lib"
        runtime = "libhexo-linux.a" if self.linux else "libhexo-os.a"
        return [self.root / runtime, lib / "libc.a", lib / "libm.a", lib / "libgcc.a"]

    def cflags(self) -> list[str]:
        t = TARGETS[self.isa]
        return [f"--target={t.clang_target}", *COMMON_CFLAGS, *t.cflags,
                "-isystem", str(self.include), "-I", str(ABI_INCLUDE)]


def _newlib_recipe() -> str:
    """newlib is rebuilt when its build script or a patch changes."""
    h = hashlib.sha256()
    for p in [NEWLIB / "build.sh", *sorted((NEWLIB / "patches").glob("*.patch"))]:
        h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def _runtime_sources(sr: Sysroot) -> tuple[Path, list[Path]]:
    """The runtime's directory and sources; Linux mode shares the migration point and
    resume code (context.S), setjmp/longjmp, posix_memalign and rand with the library OS."""
    if sr.linux:
        return LINUX_RUNTIME, (sorted(LINUX_RUNTIME.glob("*.c"))
                               + [LIBOS / "memalign.c", LIBOS / "rand.c"]
                               + sorted((LINUX_RUNTIME / "arch" / sr.isa).glob("*.S"))
                               + [LIBOS / "arch" / sr.isa / f for f in ("context.S", "setjmp.S")])
    return LIBOS, sorted(LIBOS.glob("*.c")) + sorted((LIBOS / "arch" / sr.isa).glob("*.S"))


def _build_runtime(sr: Sysroot) -> None:
    where, srcs = _runtime_sources(sr)
    # where the package data sits (a checkout, an installed wheel) does not change the archive
    h = hashlib.sha256(" ".join(sr.cflags()).replace(str(KERNEL_IMAGES), "").encode())
    for p in srcs + sorted(where.glob("*.h")) + sorted(ABI_INCLUDE.glob("*.h")):
        h.update(p.name.encode() + p.read_bytes())
    stamp = sr.libs[0].with_suffix(".stamp")
    if stamp.exists() and stamp.read_text() == h.hexdigest() and sr.libs[0].exists():
        return
    objdir = sr.root / ("linux-obj" if sr.linux else "libos-obj")
    objdir.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in srcs:
        obj = objdir / (src.stem + ".o")
        run(["clang", *sr.cflags(), *(["-DHEXO_LINUX"] if sr.linux else []), "-I", str(where),
             "-Wall", "-Werror", "-c", str(src),
             "-o", str(obj)], f"compiling runtime {src.name} for {sr.isa}")
        objs.append(str(obj))
    sr.libs[0].unlink(missing_ok=True)
    run(["llvm-ar", "rcs", str(sr.libs[0]), *objs], "archiving the runtime")
    stamp.write_text(h.hexdigest())


def ensure(isa: str, linux: bool = False) -> Sysroot:
    """The sysroot for `isa` (with the Linux-mode runtime if `linux`), building whatever is
    missing or stale."""
    sr = Sysroot(isa, home() / "sysroot" / isa, linux)
    with _locked(home() / "sysroot" / f".{isa}.lock"):
        recipe, want = sr.root / "newlib-recipe.sha256", _newlib_recipe()
        if not (recipe.exists() and recipe.read_text() == want
                and (sr.root / "newlib" / ".hexo-newlib").exists()):
            shutil.rmtree(sr.root / "newlib", ignore_errors=True)
            run(["bash", str(NEWLIB / "build.sh"), isa, str(sr.root / "newlib")],
                f"building newlib for {isa} (takes a few minutes once)")
            recipe.write_text(want)
        _build_runtime(sr)
    return sr
