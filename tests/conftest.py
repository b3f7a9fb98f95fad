"""Shared fixtures: images are built once per session with the real toolchain."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from uhyve_ctl import kvm

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
HEXO = str(BIN / "hexo")
UHYVE = str(BIN / "uhyve-ctl")


# Tests that say they run on x86-64 KVM are marked `kvm`: without KVM (or with HEXO_KVM=off)
# they skip, counted in one line at the end of the session, instead of passing on the emulator.
KVM_UNAVAILABLE = kvm.unavailable()
needs_kvm = pytest.mark.kvm


def pytest_collection_modifyitems(config, items):
    if KVM_UNAVAILABLE:
        skip = pytest.mark.skip(reason=f"needs x86-64 KVM: {KVM_UNAVAILABLE}")
        for item in items:
            if item.get_closest_marker("kvm"):
                item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, config):
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if "kvm" in r.keywords and "needs x86-64 KVM" in str(r.longrepr)]
    if skipped:
        terminalreporter.write_line(f"kvm: {len(skipped)} tests marked kvm skipped: "
                                    f"{KVM_UNAVAILABLE}", yellow=True)


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
        """The default build: migratable."""
        return self._build(workload, klass, "hexo")

    def plain(self, workload: str, klass: str | None = None) -> Path:
        return self._build(workload, klass, "plain.hexo", "--no-migratable")

    def program(self, name: str, migratable: bool = False, auto_points: bool = False) -> Path:
        """tests/programs/NAME.c as an image: plain unless asked (a plain job is never
        offloaded by the scheduler); `auto_points`: migratable with a point at every
        function entry and outer loop head, as an operator builds code that calls no hexo
        function."""
        source = (ROOT / "tests" / "programs" / f"{name}.c",)
        if auto_points:
            return self._build(name, None, "auto.hexo", "--auto-points", sources=source)
        if migratable:
            return self._build(name, None, "mig.hexo", sources=source)
        return self._build(name, None, "prog.hexo", "--no-migratable", sources=source)

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


@pytest.fixture
def env(tmp_path):
    """The environment of a test's own uhyve-ctl: its named VMs in a private run directory."""
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


@pytest.fixture(scope="session")
def clang():
    if not shutil.which("clang"):
        pytest.skip("clang is not installed")
    return "clang"


@pytest.fixture
def sshd(tmp_path):
    """A real sshd on loopback: the emulated board's SSH server (sshd_fixture.py)."""
    import sshd_fixture
    s = sshd_fixture.start(tmp_path / "ssh")
    yield s
    if s.proc.poll() is None:
        sshd_fixture.stop(s)
