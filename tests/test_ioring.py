"""Guest output through the I/O ring: same bytes, same order as the native program, exactly
once across crashes, timeouts, checkpoints, migrations and a `kill -9` of the hypervisor; a
guest that corrupts the ring is stopped without harming the host."""

import os
import pty
import re
import select
import signal
import struct
import subprocess
import threading
import time

import pytest

from hexo import abi
from uhyve_ctl.backends import Crashed
from uhyve_ctl.hypercalls import FileTable, Hypercalls, Mount
from uhyve_ctl.ioring import OutputRing
from uhyve_ctl.memory import GuestMemory

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run
from test_checkpoint import _wait_running

PROGRAM = ROOT / "tests" / "programs" / "chatty.c"
STATS = re.compile(r"uhyve-ctl: \w+ on \w+: .* (\d+) hypercalls.*\n")
BACKENDS = [pytest.param("x86_64", marks=needs_kvm), "aarch64"]


# --- the host side against a producer written here, honest or hostile ---------------------

class Producer:
    """The guest's half of the protocol (kernel-images/libos/ioring.c), in Python."""

    def __init__(self, mem):
        self.view = mem.view

    def field(self, name, value=None):
        at = abi.IO_RING_ADDR + abi.IO_RING.offset(name)
        if value is None:
            return struct.unpack_from("<Q", self.view, at)[0]
        struct.pack_into("<Q", self.view, at, value)

    def switch(self, index, pos, fd):
        struct.pack_into("<QI", self.view, abi.IO_SWITCH_ADDR + 16 * (index % abi.IO_SWITCH_SLOTS),
                         pos, fd)

    def write(self, fd, data):
        head, shead = self.field("head"), self.field("switch_head")
        assert head + len(data) - self.field("tail") <= abi.IO_DATA_SIZE
        last = struct.unpack_from("<I", self.view, abi.IO_SWITCH_ADDR + 8 + 16 * (
            (shead - 1) % abi.IO_SWITCH_SLOTS))[0] if shead else None
        if last != fd:
            self.switch(shead, head, fd)
            self.field("switch_head", shead + 1)
        for i, b in enumerate(data):
            self.view[abi.IO_DATA_ADDR + (head + i) % abi.IO_DATA_SIZE] = b
        self.field("head", head + len(data))


@pytest.fixture
def ring(tmp_path):
    mem = GuestMemory(16 << 20)
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    files = FileTable((Mount.parse(f"{tmp_path}:/data"),), stdio=(r, w, w))
    ring = OutputRing(mem, files)
    ring.reset()
    yield ring, Producer(mem), r, files
    files.close_all()
    for fd in (r, w, err_r, err_w):
        try:
            os.close(fd)
        except OSError:
            pass                                   # closed by the test
    mem.close()


@pytest.mark.parametrize("alarm_free", [True, False])
def test_output_of_a_guest_that_never_exits_is_drained(ring, monkeypatch, alarm_free):
    """A KVM run on the main thread: an alarm starts the drainer thread once the run has
    lasted INTERVAL, and a run that ends first starts none. With SIGALRM in use elsewhere
    (as pytest-timeout uses it), the thread starts with the run."""
    from uhyve_ctl import ioring
    ring, guest, r, _ = ring
    drainer = ioring._Drainer()
    monkeypatch.setattr(ioring, "_drainer", drainer)
    handler = signal.signal(signal.SIGALRM, signal.SIG_DFL if alarm_free else lambda *a: None)
    timer = signal.setitimer(signal.ITIMER_REAL, 0)
    try:
        ring.start(interruptible=True)
        ring.stop()                              # a short run
        assert drainer._started == (not alarm_free)
        guest.write(1, b"while the guest computes\n")
        ring.start(interruptible=True)
        deadline = time.monotonic() + 60
        while not select.select([r], [], [], 0.01)[0]:      # the alarm interrupts the wait
            assert time.monotonic() < deadline
        assert os.read(r, 100) == b"while the guest computes\n"
        assert drainer._started
        ring.stop()
    finally:
        signal.signal(signal.SIGALRM, handler)
        signal.setitimer(signal.ITIMER_REAL, *timer)


def test_order_across_fds_and_around_the_end_of_the_ring(ring):
    ring, guest, r, _ = ring
    received = []
    reader = threading.Thread(target=lambda: received.extend(iter(lambda: os.read(r, 1 << 16),
                                                                  b"")))
    reader.start()
    expected = b""
    for i in range(400):                           # 400 * ~1 KiB: wraps the 256 KiB ring
        fd = 1 + i % 3 // 2
        data = (b"%d:" % i) * (1000 // len(b"%d:" % i)) + b"\n"
        guest.write(fd, data)
        expected += data
        if i % 50 == 49:
            assert ring.drain() is None
    assert ring.drain() is None
    ring.files.close_all()
    os.close(ring.files.fds.pop(1)[0])             # the write end: the reader sees EOF
    reader.join()
    assert b"".join(received) == expected


@pytest.mark.parametrize("corrupt,message", [
    (lambda g: g.field("head", g.field("tail") + abi.IO_DATA_SIZE + 1), "head"),
    (lambda g: g.field("head", 2 ** 64 - 1), "head"),
    (lambda g: g.field("switch_head", abi.IO_SWITCH_SLOTS + 5), "switch_head"),
    (lambda g: (g.switch(1, 0, 1), g.switch(2, 0, 2), g.field("switch_head", 3),
                g.field("head", 10)), "goes back"),
])
def test_a_corrupt_ring_stops_the_guest_and_writes_nothing(ring, corrupt, message):
    ring, guest, r, files = ring
    guest.write(1, b"before\n")
    assert ring.drain() is None and os.read(r, 100) == b"before\n"
    guest.write(2, b"x" * 9)
    corrupt(guest)
    assert message in ring.drain()
    mem_hc = Hypercalls(None, files, ring=ring)
    stop = mem_hc(abi.NR["EXIT"], 0)
    assert isinstance(stop, Crashed) and "I/O ring protocol violation" in stop.reason
    assert select.select([r], [], [], 0)[0] == []          # nothing more reached the host


def test_the_guest_cannot_move_the_hosts_tail(ring):
    ring, guest, r, _ = ring
    guest.write(1, b"once\n")
    assert ring.drain() is None
    guest.field("tail", 0)                                 # try to get it written again
    guest.field("head", 5)
    assert ring.drain() is None
    assert os.read(r, 100) == b"once\n"


def test_closed_and_read_only_fds_are_refused_later_and_reported_at_close(ring, tmp_path):
    ring, guest, r, files = ring
    (tmp_path / "in.txt").write_text("data")
    fd = files.open("/data/in.txt", abi.OPEN_FLAGS["O_RDONLY"], 0)
    ring.publish_fds()
    bits = guest.field("writable_fds_lo")
    assert bits == 0b110                                  # stdout, stderr; not a read-only file
    guest.write(fd, b"sneaky")                            # a guest ignoring the bitmap
    guest.write(1, b"fine")
    assert ring.drain() is None
    assert os.read(r, 100) == b"fine" and (tmp_path / "in.txt").read_text() == "data"
    assert ring.deferred == {fd: -abi.ERRNO["EBADF"]}


def test_a_failed_buffered_write_is_reported_by_close(tmp_path):
    mem = GuestMemory(16 << 20)
    r, w = os.pipe()
    os.close(r)                                           # nobody reads: EPIPE
    files = FileTable((), stdio=(w, w, w))
    ring = OutputRing(mem, files)
    ring.reset()
    hc = Hypercalls(mem, files, ring=ring)
    Producer(mem).write(1, b"lost")
    mem.write(abi.IMAGE_BASE, abi.ARGS_CLOSE.pack(fd=1))
    assert hc(abi.NR["CLOSE"], abi.IMAGE_BASE) is None
    assert abi.ARGS_CLOSE.unpack(mem.read(abi.IMAGE_BASE, 16))["ret"] == -abi.ERRNO["EPIPE"]
    os.close(w)
    mem.close()


# --- real guests ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def chatty(tmp_path_factory):
    d = tmp_path_factory.mktemp("chatty")
    for flags, name in ((["--no-migratable"], "chatty.hexo"), ([], "chatty.migratable.hexo"),
                        (["--native"], "chatty.native")):
        p = run([HEXO, "build", PROGRAM, *flags, "-o", d / name])
        assert p.returncode == 0, p.stderr
    return d


def _merged(cmd, **kw) -> tuple[int, bytes]:
    """Exit status and what stdout and stderr wrote to one pipe, in order."""
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=300, **kw)
    return p.returncode, p.stdout


def _guest(chatty, isa, *args, image="chatty.hexo", opts=()):
    return [UHYVE, "run", chatty / image, "--isa", isa, *opts, "--", *args]


@pytest.mark.parametrize("isa", BACKENDS)
def test_interleaved_stdout_and_stderr_match_the_native_run_without_exits(chatty, isa):
    n = 3000 if isa == "x86_64" else 1000
    rc, out = _merged(_guest(chatty, isa, "pairs", n, opts=("--stats",)))
    native_rc, native = _merged([chatty / "chatty.native", "pairs", n])
    assert rc == native_rc == 0
    stats = STATS.search(out.decode())
    assert out.replace(stats[0].encode(), b"") == native
    assert int(stats[1]) < 50                   # 2n writes, a handful of exits


def _on_terminal(cmd) -> tuple[int, bytes]:
    """Exit status and what stdout and stderr wrote to one terminal (a pty), in order."""
    master, slave = pty.openpty()
    p = subprocess.Popen([str(c) for c in cmd], stdout=slave, stderr=slave)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:                 # EIO: every writer has closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=300), out


@pytest.mark.parametrize("isa", BACKENDS)
def test_stdout_on_a_terminal_is_line_buffered_as_natively(chatty, isa):
    """On a terminal each stdout line appears before the next stderr line, as with the native
    C library; into a pipe stdout is fully buffered. The host says which in the boot info."""
    guest, native = _on_terminal(_guest(chatty, isa, "lines", 20)), \
        _on_terminal([chatty / "chatty.native", "lines", 20])
    assert guest == native and guest[0] == 0
    assert b"out 0: jumps over the lazy dog\r\nerr 1:" in guest[1]
    assert b"out 0: jumps" not in _merged(_guest(chatty, isa, "lines", 20))[1].split(b"err 1:")[0]


@pytest.mark.parametrize("isa", BACKENDS)
def test_separate_destinations_get_their_own_bytes(chatty, isa):
    """Fully buffered stdout: where its chunks fall between stderr lines depends on the C
    library's buffer policy, so each stream is compared on its own."""
    guest = run(_guest(chatty, isa, "lines", 500))
    native = run([chatty / "chatty.native", "lines", 500])
    assert guest.returncode == 0
    assert (guest.stdout, guest.stderr) == (native.stdout, native.stderr)


@pytest.mark.parametrize("isa", BACKENDS)
def test_output_before_a_crash_appears_once(chatty, isa):
    rc, out = _merged(_guest(chatty, isa, "crash", 300))
    _, native = _merged([chatty / "chatty.native", "crash", 300])
    assert rc == 125
    report = out.index(b"uhyve-ctl: guest stopped")
    assert out[:report] == native


@pytest.mark.parametrize("isa", BACKENDS)
def test_output_before_a_timeout_appears_once(chatty, isa):
    rc, out = _merged(_guest(chatty, isa, "spin", 200, opts=("--timeout", "2")))
    assert rc == 124
    _, native = _merged([chatty / "chatty.native", "pairs", 200])
    assert out.replace(b"uhyve-ctl: guest stopped after the 2 s timeout\n", b"") == \
        native.replace(b"done\n", b"")


def _read_until(fd, marker: bytes, limit_s=60.0) -> bytes:
    got, end = b"", time.monotonic() + limit_s
    while marker not in got:
        assert time.monotonic() < end, got[-200:]
        if select.select([fd], [], [], 0.5)[0]:
            chunk = os.read(fd, 1 << 16)
            assert chunk, got[-200:]
            got += chunk
    return got


@pytest.mark.parametrize("isa", BACKENDS)
def test_kill_9_keeps_what_was_drained_exactly_once(chatty, isa):
    """The guest writes, then runs without a single exit. What the timer drained while it
    ran is out of the hypervisor for good: after `kill -9` the pipe holds it exactly once."""
    proc = subprocess.Popen([str(c) for c in _guest(chatty, isa, "spin", 200)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        got = _read_until(proc.stdout.fileno(), b"out 199: jumps over the lazy dog\n")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    got += proc.stdout.read()
    _, native = _merged([chatty / "chatty.native", "pairs", 200])
    assert got == native.replace(b"done\n", b"")


@pytest.mark.parametrize("isa", BACKENDS)
def test_kill_9_mid_stream_leaves_a_prefix_without_duplicates(chatty, isa):
    proc = subprocess.Popen([str(c) for c in _guest(chatty, isa, "stream")],
                            stdout=subprocess.PIPE)
    try:
        got = _read_until(proc.stdout.fileno(), b"000020000\n")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    got += proc.stdout.read()
    lines = len(got) // 10
    assert got[:lines * 10] == b"".join(b"%09d\n" % i for i in range(lines))
    assert (b"%09d\n" % lines).startswith(got[lines * 10:])   # at most one torn last line


@pytest.mark.parametrize("isa", BACKENDS)
def test_file_in_a_mount_written_and_read_back(chatty, isa, tmp_path):
    (tmp_path / "g").mkdir()
    guest = run([UHYVE, "run", chatty / "chatty.hexo", "--isa", isa, "--mount",
                 f"{tmp_path / 'g'}:/data", "--stats", "--", "file", 256, "/data/out.bin"])
    native = run([chatty / "chatty.native", "file", 256, tmp_path / "native.bin"])
    assert guest.returncode == 0, guest.stderr
    assert guest.stdout == native.stdout
    assert (tmp_path / "g" / "out.bin").read_bytes() == (tmp_path / "native.bin").read_bytes()
    assert int(STATS.search(guest.stderr)[1]) < 100      # 256 writes of 4 KiB, few exits


@pytest.mark.parametrize("isa", BACKENDS)
def test_reads_of_odd_sizes_with_seeks_see_every_byte_where_the_native_run_does(chatty, isa,
                                                                                tmp_path):
    """Read-ahead windows grow to 1 MiB on sequential reads and are given back at a seek; the
    guest checks every byte and every offset it is told against the pattern it wrote, and no
    read returns less than it asked for before the end (its count of reads is the native
    run's)."""
    kib = 3000 if isa == "x86_64" else 1200
    (tmp_path / "g").mkdir()
    guest = run([UHYVE, "run", chatty / "chatty.hexo", "--isa", isa, "--mount",
                 f"{tmp_path / 'g'}:/data", "--", "scan", kib, "/data/scan.bin"])
    native = run([chatty / "chatty.native", "scan", kib, tmp_path / "scan.bin"])
    assert guest.returncode == native.returncode == 0, guest.stdout + guest.stderr
    assert guest.stdout == native.stdout and " 0 wrong" in native.stdout


@needs_kvm
def test_a_checkpoint_mid_read_resumes_at_the_guests_offset_on_the_other_isa(chatty, tmp_path):
    """The checkpoint gives the unread part of the read-ahead window back to the host file,
    whose offset it records: the aarch64 run reads on from the byte the guest had reached."""
    (tmp_path / "g").mkdir()
    mount = ("--mount", f"{tmp_path / 'g'}:/data")
    ck = tmp_path / "ck"
    first = run([UHYVE, "run", chatty / "chatty.migratable.hexo", *mount, "--checkpoint-at",
                 300, "--checkpoint-dir", ck, "--to", "aarch64", "--", "scan", 1500,
                 "/data/scan.bin"])
    assert first.returncode == 0 and "checkpointed to" in first.stderr, first.stderr
    second = run([UHYVE, "restore", ck, "--isa", "aarch64", *mount])
    assert second.returncode == 0, second.stderr
    native = run([chatty / "chatty.native", "scan", 1500, tmp_path / "scan.bin"])
    assert first.stdout + second.stdout == native.stdout and " 0 wrong" in native.stdout


@pytest.mark.parametrize("isa", BACKENDS)
def test_reads_see_the_prompt_first_and_every_line(chatty, isa):
    proc = subprocess.Popen([str(c) for c in _guest(chatty, isa, "read")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    _read_until(proc.stderr.fileno(), b"ready\n")        # drained before the guest blocked
    out, _ = proc.communicate(b"".join(b"line %d\n" % i for i in range(1000)), timeout=120)
    assert proc.returncode == 0
    assert out == b"".join(b"%d line %d\n" % (i + 1, i) for i in range(1000)) + b"done\n"


@pytest.mark.parametrize("isa", BACKENDS)
def test_stdin_from_a_file_is_read_ahead_in_few_exits(chatty, isa, tmp_path):
    """`< input` (a filter's usual input): stdin is a regular file, read ahead like a mounted
    one; C's 1 KiB stdio buffer had made one exit per KiB (reverse-complement of 2.5 MB: 10x
    the native run). A pipe is still read as asked (the prompt test above)."""
    data = tmp_path / "input.txt"
    data.write_bytes(b"".join(b"line %d " % i + b"ACGT" * (i % 50) + b"\n"
                              for i in range(12000 if isa == "x86_64" else 3000)))
    with open(data, "rb") as f:
        guest = subprocess.run([str(c) for c in _guest(chatty, isa, "read", opts=("--stats",))],
                               stdin=f, capture_output=True, timeout=300)
    with open(data, "rb") as f:
        native = subprocess.run([str(chatty / "chatty.native"), "read"], stdin=f,
                                capture_output=True, timeout=60)
    assert guest.returncode == native.returncode == 0, guest.stderr
    assert guest.stdout == native.stdout
    assert int(STATS.search(guest.stderr.decode())[1]) < 40, guest.stderr


def _guest_lines(stderr: str) -> str:
    """What the guest wrote to stderr, without uhyve-ctl's own reports."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not line.startswith("uhyve-ctl: "))


@pytest.mark.parametrize("src,dst,point", [
    pytest.param("x86_64", "x86_64", 150, marks=needs_kvm),
    pytest.param("x86_64", "aarch64", 333, marks=needs_kvm),
    pytest.param("aarch64", "x86_64", 77, marks=needs_kvm),
])
def test_checkpoint_and_cross_isa_restore_print_every_line_once(chatty, tmp_path, src, dst,
                                                                point):
    ck = tmp_path / "ck"
    first = run([UHYVE, "run", chatty / "chatty.migratable.hexo", "--isa", src,
                 "--checkpoint-at", point, "--checkpoint-dir", ck, "--to", dst,
                 "--", "lines", 500])
    assert first.returncode == 0 and "checkpointed to" in first.stderr, first.stderr
    second = run([UHYVE, "restore", ck, "--isa", dst])
    assert second.returncode == 0, second.stderr
    native = run([chatty / "chatty.native", "lines", 500])
    err = _guest_lines(first.stderr + second.stderr)
    assert (first.stdout + second.stdout, err) == (native.stdout, native.stderr)


@needs_kvm
def test_postcopy_migration_prints_every_line_once(chatty, tmp_path):
    """Same ISA on KVM: an emulated target would need minutes for the paced rest of the job
    (the cross-ISA path of the ring is the checkpoint test's)."""
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    env = dict(os.environ, HEXO_RUN_DIR=str(run_dir))
    n, work = 400, 3_000_000                       # a few seconds: still running when asked
    proc = subprocess.Popen([UHYVE, "run", chatty / "chatty.migratable.hexo", "--name", "src",
                             "--", "lines", str(n), str(work)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "src", proc)
    seen = _read_until(proc.stderr.fileno(), b"err 2:")
    ck = run([UHYVE, "migrate", "src", "--mode", "postcopy", "--serve",
              "127.0.0.1:0", "-o", tmp_path / "ck"], env=env)
    assert ck.returncode == 0, ck.stderr
    restored = subprocess.Popen([UHYVE, "restore", tmp_path / "ck"], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dst_out, dst_err = restored.communicate(timeout=600)
    src_out, src_err = proc.communicate(timeout=60)
    assert restored.returncode == 0, dst_err
    native = run([chatty / "chatty.native", "lines", n, 0])
    src_err = seen.decode() + src_err
    err = _guest_lines(src_err + dst_err)
    assert (src_out + dst_out, err) == (native.stdout, native.stderr)
