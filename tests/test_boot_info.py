"""Boot info 1.6: the host hands the guest the type of each stdio file and its clocks read
together with the guest's counter, so that a short job exits once (its EXIT). Both sides of
the format, a restored job getting the files and clocks of the machine it resumes on, and a
1.6 guest on a 1.5 host, which it asks instead."""

import os
import pty
import re
import subprocess
import time

import pytest

from hexo import abi
from hexo.image import Image
from uhyve_ctl.backends import Exited
from uhyve_ctl.vm import VirtualMachine

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run

ISAS = [pytest.param("x86_64", marks=needs_kvm), "aarch64"]
KINDS = ("terminal", "device", "file", "pipe")
TYPES = {"terminal": "STDIO_TERMINAL", "device": "STDIO_CHARDEV", "file": "STDIO_FILE",
         "pipe": "STDIO_PIPE"}
HELLO = b"Hello from hexo\nargc = 1\nargv[0] = hello\n"


class Stdio:
    """One file of each kind, opened for the test: `writer` is the fd a program gets,
    `read()` what it wrote (a terminal translates newlines)."""

    def __init__(self, kind: str, tmp_path):
        self.kind, self.reader = kind, None
        if kind == "terminal":
            self.reader, self.writer = pty.openpty()
        elif kind == "device":
            self.writer = os.open(os.devnull, os.O_WRONLY)
        elif kind == "file":
            self.path = tmp_path / f"out-{time.monotonic_ns()}"
            self.writer = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        else:
            self.reader, self.writer = os.pipe()

    def read(self) -> bytes:
        os.close(self.writer)
        if self.kind == "file":
            return self.path.read_bytes()
        out = b""
        while self.reader is not None:
            try:
                chunk = os.read(self.reader, 65536)
            except OSError:            # EIO: the terminal's writers have all closed it
                chunk = b""
            if not chunk:
                break
            out += chunk
        return out

    def close(self) -> None:
        for fd in (self.reader, self.writer):
            try:
                if fd is not None:
                    os.close(fd)
            except OSError:
                pass


@pytest.fixture
def stdio(tmp_path):
    opened = []

    def make(kind):
        opened.append(Stdio(kind, tmp_path))
        return opened[-1]
    yield make
    for s in opened:
        s.close()


@pytest.fixture(scope="module")
def kinds_program(tmp_path_factory):
    d = tmp_path_factory.mktemp("stdio-kinds")
    source = ROOT / "tests" / "programs" / "stdio_kinds.c"
    for flags, name in (([], "kinds.hexo"), (["--native"], "kinds.native")):
        p = run([HEXO, "build", source, *flags, "-o", d / name])
        assert p.returncode == 0, p.stderr
    return d


@pytest.mark.parametrize("kind", KINDS)
def test_the_host_writes_the_stdio_types_and_its_clocks(images, stdio, kind):
    out = stdio(kind)
    before, wall_before = time.monotonic_ns(), time.time_ns()
    with VirtualMachine(Image(images.get("hello")), "aarch64", backend="emu",
                        stdio=(out.writer,) * 3) as vm:
        after, wall_after = time.monotonic_ns(), time.time_ns()
        info = abi.BOOT_INFO.unpack(vm.memory.read(abi.BOOT_INFO_ADDR, abi.BOOT_INFO.size))
    mine = abi.STDIO_TYPES[TYPES[kind]]
    assert info["abi_version"] == abi.ABI_VERSION
    assert info["stdio_types"] == mine | mine << 8 | mine << 16
    # what a 1.5 guest reads: stdout is a character device
    assert info["flags"] == (abi.BOOT_STDOUT_TERMINAL if kind in ("terminal", "device") else 0)
    assert before <= info["clock_monotonic_ns"] <= after
    assert wall_before <= info["clock_realtime_ns"] <= wall_after
    assert info["clock_counter"] > 0            # the emulated arm64 counter


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", KINDS)
def test_hello_exits_once_whatever_its_stdout_is(images, stdio, isa, kind):
    out = stdio(kind)
    p = subprocess.run([UHYVE, "run", "--stats", "--isa", isa, images.get("hello")],
                       stdout=out.writer, stderr=subprocess.PIPE, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert re.search(r" 1 hypercalls", p.stderr), p.stderr
    expected = {"terminal": HELLO.replace(b"\n", b"\r\n"), "device": b""}.get(kind, HELLO)
    assert out.read() == expected


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("stdin,stdout", [("device", "terminal"), ("file", "pipe"),
                                          ("pipe", "file"), ("terminal", "device")])
def test_the_guest_sees_its_stdio_as_the_native_program_does(kinds_program, stdio, isa, stdin,
                                                             stdout):
    """isatty and fstat of stdin, stdout and stderr, and of stdin once closed."""
    def report(cmd):
        files = stdio(stdin), stdio(stdout)
        p = subprocess.run([str(c) for c in cmd], stdin=files[0].writer, stdout=files[1].writer,
                           stderr=subprocess.PIPE, text=True, timeout=300)
        assert p.returncode == 0, p.stderr
        return p.stderr
    guest = report([UHYVE, "run", "--isa", isa, kinds_program / "kinds.hexo"])
    assert guest == report([kinds_program / "kinds.native"])
    assert "fd 0: isatty 0 fstat 0" in guest        # the closed stdin


@needs_kvm
@pytest.mark.parametrize("src,dst", [("x86_64", "aarch64"), ("aarch64", "x86_64")])
def test_a_restored_job_sees_the_stdio_of_the_machine_it_resumes_on(kinds_program, stdio, src,
                                                                     dst, tmp_path, env):
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", kinds_program / "kinds.hexo", "--isa", src, "--checkpoint-at", "1",
             "--checkpoint-dir", ck, "--to", dst], env=env)
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    out = stdio("terminal")
    moved = subprocess.run([UHYVE, "restore", ck, "--isa", dst], stdin=subprocess.DEVNULL,
                           stdout=out.writer, stderr=subprocess.PIPE, text=True, env=env,
                           timeout=300)
    assert moved.returncode == 0, moved.stderr
    assert "fd 0: isatty 0 fstat 1 chr 1" in moved.stderr       # /dev/null, not the pipe
    assert "fd 1: isatty 1 fstat 1 chr 1" in moved.stderr       # the terminal it resumed on


@pytest.mark.parametrize("isa", ISAS)
def test_a_guest_on_a_1_5_host_asks_for_its_clocks_and_stdout(images, stdio, isa):
    """A 1.5 host writes neither stdio types nor clocks: the guest calibrates with CLOCK and
    asks FSTAT how to buffer stdout, a file here."""
    out = stdio("file")
    made = []
    with VirtualMachine(Image(images.get("hello")), isa, stdio=(0, out.writer, 2)) as vm:
        info = abi.BOOT_INFO.unpack(vm.memory.read(abi.BOOT_INFO_ADDR, abi.BOOT_INFO.size))
        info.update(abi_version=(abi.ABI_MAJOR << 16) | 5, stdio_types=0, clock_monotonic_ns=0,
                    clock_realtime_ns=0, clock_counter=0)
        vm.memory.write(abi.BOOT_INFO_ADDR, abi.BOOT_INFO.pack(**info))
        handler = vm.hypercalls
        vm.hypercalls = lambda nr, arg: made.append(nr) or handler(nr, arg)
        assert vm.run() == Exited(0)
    assert made == [abi.NR["CLOCK"], abi.NR["FSTAT"], abi.NR["EXIT"]]
    assert out.read() == HELLO
