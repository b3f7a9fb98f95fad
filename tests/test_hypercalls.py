"""A hostile or buggy guest cannot reach past its memory, its files or the ABI."""

import os

import pytest

from hexo import abi
from uhyve_ctl.backends import Crashed, Exited
from uhyve_ctl.hypercalls import FileTable, Hypercalls, Mount
from uhyve_ctl.memory import GuestMemory

from conftest import HEXO, UHYVE, run

ARG = abi.IMAGE_BASE          # where these tests put argument structs
BUF = abi.IMAGE_BASE + 0x1000


@pytest.fixture
def guest(tmp_path):
    mem = GuestMemory(16 << 20)
    r, w = os.pipe()
    data = tmp_path / "data"
    data.mkdir()
    files = FileTable((Mount.parse(f"{data}:/data"),), stdio=(r, w, w))
    yield mem, Hypercalls(mem, files), r, data
    files.close_all()
    os.close(r)
    os.close(w)
    mem.close()


def call(hc, mem, name, **args):
    struct = abi.HYPERCALLS[name][1]
    mem.write(ARG, struct.pack(**args))
    stop = hc(abi.NR[name], ARG)
    return stop, struct.unpack(mem.read(ARG, struct.size))


def test_write_reaches_the_host(guest):
    mem, hc, r, _ = guest
    mem.write(BUF, b"hello")
    stop, res = call(hc, mem, "WRITE", fd=1, buf=BUF, len=5)
    assert stop is None and res["ret"] == 5
    assert os.read(r, 100) == b"hello"


@pytest.mark.parametrize("buf,length", [
    (16 << 20, 1),                      # just past guest RAM
    ((16 << 20) - 4, 8),                # straddles the end
    (abi.DOORBELL_ADDR - 8, 16),        # overlaps the doorbell hole
    (BUF, (1 << 64) - 1),               # absurd length
    (0, 16),                            # page 0: unmapped for the guest, so for us too
    (abi.STACK_GUARD + 8, 8),           # the guard page below the stack
])
def test_wild_buffers_stop_the_guest(guest, buf, length):
    mem, hc, _, _ = guest
    stop, _ = call(hc, mem, "WRITE", fd=1, buf=buf, len=length)
    assert isinstance(stop, Crashed) and "WRITE buffer" in stop.reason


def test_wild_argument_pointer(guest):
    mem, hc, _, _ = guest
    stop = hc(abi.NR["READ"], 0xFFFF_FFF0)
    assert isinstance(stop, Crashed) and "READ arguments" in stop.reason


def test_unknown_hypercall(guest):
    mem, hc, _, _ = guest
    stop = hc(999, ARG)
    assert isinstance(stop, Crashed) and "unknown hypercall 999" in stop.reason


def test_guest_cannot_use_host_fds(guest):
    mem, hc, _, _ = guest
    host_fd = os.open("/dev/null", os.O_RDONLY)
    try:
        _, res = call(hc, mem, "READ", fd=host_fd, buf=BUF, len=4)
        assert res["ret"] == -abi.ERRNO["EBADF"]
    finally:
        os.close(host_fd)


def _open(hc, mem, path: bytes, flags=0):
    mem.write(BUF, path)
    return call(hc, mem, "OPEN", path=BUF, path_len=len(path), flags=flags, mode=0o644)


def test_open_inside_mount_and_read_back(guest):
    mem, hc, _, data = guest
    (data / "in.txt").write_bytes(b"payload")
    _, res = _open(hc, mem, b"/data/in.txt")
    fd = res["ret"]
    assert fd >= 3
    _, res = call(hc, mem, "READ", fd=fd, buf=BUF + 0x100, len=100)
    assert res["ret"] == 7 and mem.read(BUF + 0x100, 7) == b"payload"
    _, res = call(hc, mem, "FSTAT", fd=fd)
    assert res["size"] == 7 and res["mode"] == abi.FILE_TYPES["S_IFREG"]


@pytest.mark.parametrize("path,err", [
    (b"/etc/passwd", "ENOENT"),               # not under any mount
    (b"/data/../etc/passwd", "ENOENT"),       # normalized first, still outside
    (b"/data/escape/passwd", "EACCES"),       # symlink leading out of the mount
    (b"/data/a\0b", "EINVAL"),                # embedded NUL
])
def test_paths_outside_mounts_are_refused(guest, path, err):
    mem, hc, _, data = guest
    os.symlink("/etc", data / "escape")
    _, res = _open(hc, mem, path)
    assert res["ret"] == -abi.ERRNO[err]


@pytest.mark.parametrize("name", ["OPEN", "UNLINK", "MKDIR"])
def test_an_overlong_path_is_enametoolong(guest, name):
    mem, hc, _, _ = guest
    stop, res = call(hc, mem, name, path=BUF, path_len=abi.MAX_PATH + 1)
    assert stop is None and res["ret"] == -abi.ERRNO["ENAMETOOLONG"]


def test_unlink_of_a_symlink_removes_the_link_not_its_target(guest):
    mem, hc, _, data = guest
    (data / "target").write_text("kept")
    os.symlink("target", data / "link")
    os.symlink("/etc/passwd", data / "outward")
    for name in (b"/data/link", b"/data/outward"):
        mem.write(BUF, name)
        _, res = call(hc, mem, "UNLINK", path=BUF, path_len=len(name))
        assert res["ret"] == 0
    assert sorted(p.name for p in data.iterdir()) == ["target"]
    assert (data / "target").read_text() == "kept" and os.path.exists("/etc/passwd")


def test_unlink_through_a_directory_link_out_of_the_mount_is_refused(guest, tmp_path):
    mem, hc, _, data = guest
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("x")
    os.symlink(outside, data / "door")
    mem.write(BUF, b"/data/door/precious")
    _, res = call(hc, mem, "UNLINK", path=BUF, path_len=19)
    assert res["ret"] == -abi.ERRNO["EACCES"] and (outside / "precious").exists()


def test_mkdir_inside_a_mount_only(guest, tmp_path):
    mem, hc, _, data = guest
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, data / "door")
    results = {}
    for name in (b"/data/made", b"/data/made", b"/data/door/made", b"/data/../made", b"/made"):
        mem.write(BUF, name)
        _, res = call(hc, mem, "MKDIR", path=BUF, path_len=len(name), mode=0o750)
        results.setdefault(name, []).append(res["ret"])
    assert results[b"/data/made"] == [0, -abi.ERRNO["EEXIST"]]
    assert results[b"/data/door/made"] == [-abi.ERRNO["EACCES"]]
    assert results[b"/data/../made"] == results[b"/made"] == [-abi.ERRNO["ENOENT"]]
    assert (data / "made").is_dir() and list(outside.iterdir()) == []
    assert not (tmp_path / "made").exists()


def test_read_only_mount(tmp_path):
    mem = GuestMemory(16 << 20)
    try:
        files = FileTable((Mount.parse(f"{tmp_path}:/ro:ro"),))
        hc = Hypercalls(mem, files)
        _, res = _open(hc, mem, b"/ro/new", abi.OPEN_FLAGS["O_WRONLY"] | abi.OPEN_FLAGS["O_CREAT"])
        assert res["ret"] == -abi.ERRNO["EROFS"]
        assert not (tmp_path / "new").exists()
        mem.write(BUF, b"/ro/dir")
        _, res = call(hc, mem, "MKDIR", path=BUF, path_len=7, mode=0o755)
        assert res["ret"] == -abi.ERRNO["EROFS"] and not (tmp_path / "dir").exists()
    finally:
        mem.close()


def test_exit_and_panic(guest):
    mem, hc, _, _ = guest
    stop, _ = call(hc, mem, "EXIT", status=7)
    assert stop == Exited(7)
    mem.write(BUF, b"out of cheese")
    stop, _ = call(hc, mem, "PANIC", msg=BUF, len=13)
    assert isinstance(stop, Crashed) and stop.reason == "guest panic: out of cheese"


WILD = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static int deep(int n) {
    volatile char frame[1024];
    frame[0] = (char)n;
    return n ? deep(n - 1) + frame[0] : 0;
}
int main(int argc, char **argv) {
    const char *what = argc > 1 ? argv[1] : "";
    if (!strcmp(what, "deep")) printf("%d\n", deep(1 << 20));
    /* big enough to bypass the output ring: the host checks the buffer */
    if (!strcmp(what, "write")) write(1, (const void *)0x7f0000000000UL, 1 << 20);
    if (!strcmp(what, "read")) read(0, (void *)0x3000, 16);
    if (!strcmp(what, "null")) { volatile int *p = 0; *p = 1; }
    printf("survived %s\n", what);
    return 0;
}
"""


@pytest.fixture(scope="module")
def wild_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("wild")
    (d / "wild.c").write_text(WILD)
    p = run([HEXO, "build", d / "wild.c", "-o", d / "wild.hexo"])
    assert p.returncode == 0, p.stderr
    return d / "wild.hexo"


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
@pytest.mark.parametrize("what,message", [
    ("write", "hypercall WRITE rejected"),
    ("read", "hypercall READ rejected"),
    ("null", ""),
    ("deep", "stack overflow"),
])
def test_misbehaving_guest_is_stopped_with_a_report(wild_image, isa, what, message):
    p = run([UHYVE, "run", wild_image, "--isa", isa, "--", what], timeout=120)
    assert p.returncode == 125, p.stdout + p.stderr
    assert "uhyve-ctl: guest stopped:" in p.stderr and message in p.stderr
    assert "survived" not in p.stdout


def test_well_behaved_run_of_the_same_image(wild_image):
    p = run([UHYVE, "run", wild_image, "--", "nothing"])
    assert p.returncode == 0 and p.stdout == "survived nothing\n"


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_a_crash_report_names_the_open_no_mount_allowed(images, tmp_path, isa):
    """CoMD opens its YAML report in the working directory and uses the stream unchecked:
    without a mount the guest died at address 0xc with nothing pointing at the file. The
    report names the last refused open; with a mount at / the same run writes the file."""
    image = images.program("report_file")
    p = run([UHYVE, "run", image, "--isa", isa])
    assert p.returncode == 125, p.stdout + p.stderr
    assert ("the guest's last refused open: 'run-report.yaml' (not under any mounted "
            "directory)") in p.stderr and "--mount DIR:/" in p.stderr
    p = run([UHYVE, "run", image, "--isa", isa, "--mount", f"{tmp_path}:/"])
    assert (p.returncode, p.stdout) == (0, "report written\n"), p.stderr
    assert (tmp_path / "run-report.yaml").read_text() == "steps: 20\n"
    assert "refused open" not in p.stderr
