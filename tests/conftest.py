"""Shared fixtures: images are built once per session with the real toolchain."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEXO = str(BIN / "hexo")
UHYVE = str(BIN / "uhyve-ctl")


def kvm_usable() -> bool:
    try:
        os.close(os.open("/dev/kvm", os.O_RDWR))
        return True
    except OSError:
        return False


needs_kvm = pytest.mark.skipif(not kvm_usable(), reason="/dev/kvm is not usable here")


def run(cmd, timeout=600, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True,
                          timeout=timeout, **kw)


class ImageCache:
    """Builds each (workload, class) once per test session, shared by xdist workers."""

    def __init__(self, root: Path):
        self.root = root

    def _build(self, workload: str, klass: str | None, suffix: str, *flags: str,
               sources: tuple = ()) -> Path:
        out = self.root / (f"{workload}.{klass}.{suffix}" if klass else f"{workload}.{suffix}")
        with open(self.root / (out.name + ".lock"), "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            if not out.exists():
                cmd = [HEXO, "build", *(sources or ("--workload", workload)), *flags, "-o", out]
                if klass:
                    cmd += ["--class", klass]
                p = run(cmd)
                assert p.returncode == 0, p.stderr
        return out

    def get(self, workload: str, klass: str | None = None) -> Path:
        return self._build(workload, klass, "hexo")

    def migratable(self, workload: str, klass: str | None = None) -> Path:
        return self._build(workload, klass, "migratable.hexo", "--migratable")

    def program(self, name: str) -> Path:
        """tests/programs/NAME.c as an image."""
        return self._build(name, None, "prog.hexo",
                           sources=(ROOT / "tests" / "programs" / f"{name}.c",))

    def native(self, workload: str, klass: str | None = None) -> Path:
        return self._build(workload, klass, "native", "--native")


@pytest.fixture(scope="session")
def images(tmp_path_factory, worker_id) -> ImageCache:
    if worker_id == "master":
        root = tmp_path_factory.getbasetemp() / "images"
    else:
        root = tmp_path_factory.getbasetemp().parent / "images"
    root.mkdir(parents=True, exist_ok=True)
    return ImageCache(root)


@pytest.fixture(scope="session")
def clang():
    if not shutil.which("clang"):
        pytest.skip("clang is not installed")
    return "clang"
