"""arm64 board VMs (qemu-system-aarch64 at EL2, so KVM inside): built image, lifecycle, exec
over a pinned SSH connection, hexo's code current on the board, crashes noticed.

The boards boot once for this module (all its tests share one xdist group)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

import sshd_fixture
from conftest import HEXO, run

pytestmark = [pytest.mark.board, pytest.mark.slow, pytest.mark.xdist_group("board"),
              pytest.mark.timeout(3600)]    # the first image build, TCG on a loaded host


def qemu_unusable() -> str | None:
    if shutil.which("qemu-system-aarch64") is None:
        return "qemu-system-aarch64 is not installed (Debian qemu-system-arm; make board-image)"
    p = subprocess.run(["qemu-system-aarch64", "-M", "virt,virtualization=on", "-machine",
                        "help"], capture_output=True)
    return None if p.returncode == 0 else "qemu-system-aarch64 cannot start here"


if qemu_unusable():
    pytest.skip(qemu_unusable(), allow_module_level=True)

from hexo_sched.boards import image as board_image, vm  # noqa: E402
from hexo_sched.boards.console import scan  # noqa: E402
from hexo_sched.boards.ssh import CODE_DIR, BoardConnection, code_bundle  # noqa: E402
from hexo_sched.hosts import HostError  # noqa: E402


@pytest.fixture(scope="module")
def board_state(tmp_path_factory):
    """A private board state directory; the image itself is the shared cached one."""
    d = tmp_path_factory.mktemp("boards")
    old = os.environ.get("HEXO_BOARD_STATE")
    os.environ["HEXO_BOARD_STATE"] = str(d)
    board_image.build()
    yield d
    for b in vm.list_boards():
        vm.down(b.name)
    if old is None:
        del os.environ["HEXO_BOARD_STATE"]
    else:
        os.environ["HEXO_BOARD_STATE"] = old


def boot_side_by_side(names) -> dict:
    """Boards booted side by side, each on its own overlay disk: {name: Board}."""
    started, errors = {}, []

    def boot(name):
        try:
            started[name] = vm.up(name)
        except Exception as e:                       # reported below, with the other board's
            errors.append(e)
    threads = [threading.Thread(target=boot, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return started


class CheckedBoards(dict):
    """A module's shared board VMs by name, checked around each test (`checked`). Before it,
    a board found crashed or failed is booted again; after it, each board must still work (no
    kernel failure on its console, `echo` over an SSH connection kept open for these checks):
    one whose kernel failed fails that test with its console's report, and is booted again
    before the next test uses it. A board whose qemu is gone without a report was killed by
    the test: it too is booted again, if used."""

    def __init__(self, boards: dict):
        super().__init__(boards)
        self.broken: set[str] = set()
        self.conns: dict = {}

    def _connection(self, b):
        conn = self.conns.get(b.name)
        if conn is None or conn.board.port != b.port:
            if conn is not None:
                conn.host.close()
            conn = self.conns[b.name] = BoardConnection(b, vm.CHECK_TIMEOUT)
        return conn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for conn in self.conns.values():
            conn.host.close()

    @contextmanager
    def checked(self):
        for name in sorted(self):
            self[name] = vm.Board.load(name)       # the test before may have booted it again
            if name in self.broken or self[name].failure() is not None:
                vm.down(name)
                self[name] = vm.up(name)
        self.broken.clear()
        yield self
        problems = []
        for name in sorted(self):
            b = vm.Board.load(name)
            if b.pid() is None and scan(b.console) is None:
                self.broken.add(name)
                continue
            try:
                vm.check(name, self._connection(b))
            except vm.BoardError as e:
                self.broken.add(name)
                problems.append(str(e))
        if problems:
            pytest.fail("; ".join(problems), pytrace=False)


@pytest.fixture(scope="module")
def booted(board_state):
    with CheckedBoards(boot_side_by_side(("b0", "b1"))) as boards:
        yield boards


@pytest.fixture
def boards(booted):
    with booted.checked() as checked:
        yield checked


def hexo_board(*args, timeout=600):
    return run([HEXO, "board", *args], timeout=timeout)


def test_boards_are_arm64_with_kvm_on_their_own_disks(boards):
    b0, b1 = boards["b0"], boards["b1"]
    assert b0.port != b1.port
    for b in (b0, b1):
        with b.connect() as conn:
            rc, out, err = conn.host.sh("uname -m; test -c /dev/kvm && echo kvm; "
                                        "dmesg | grep -c 'kvm.*initialized' || true")
            assert rc == 0, err
            lines = out.split()
            assert lines[:2] == ["aarch64", "kvm"], out
    with b0.connect() as c0, b1.connect() as c1:
        assert c0.host.sh("echo b0 > /root/whoami")[0] == 0
        rc, out, _ = c1.host.sh("cat /root/whoami 2>/dev/null || echo absent")
        assert out.strip() == "absent"                 # b1's disk did not see b0's write
    ls = hexo_board("ls")
    assert ls.returncode == 0, ls.stderr
    rows = {line.split()[0]: line for line in ls.stdout.splitlines()}
    assert "running" in rows["b0"] and "running" in rows["b1"], ls.stdout


def test_criu_and_podman_work_on_the_board(boards):
    with boards["b1"].connect() as conn:
        rc, out, err = conn.host.sh("criu check 2>&1; podman --version")
    assert rc == 0, out + err
    assert "Looks good." in out and "podman version" in out, out


def test_exec_puts_files_in_a_fresh_dir_streams_output_and_exits_with_status(boards, tmp_path):
    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "data.bin").write_bytes(os.urandom(200_000))
    (tmp_path / "note.txt").write_text("hello board\n")
    script = ("pwd; cat note.txt; sha256sum ck/data.bin | cut -d' ' -f1; "
              "echo to-stderr >&2; exit 7")
    p = hexo_board("exec", "b0", "--put", tmp_path / "ck", "--put", tmp_path / "note.txt",
                   "--", "sh", "-c", script)
    assert p.returncode == 7, p.stderr
    pwd, note, digest = p.stdout.splitlines()
    assert note == "hello board"
    assert digest == subprocess.run(["sha256sum", tmp_path / "ck" / "data.bin"],
                                    capture_output=True, text=True).stdout.split()[0]
    assert "to-stderr" in p.stderr
    again = hexo_board("exec", "b0", "--", "sh", "-c",
                       f"pwd; if test -e {pwd}; then echo kept; fi")
    assert again.returncode == 0, again.stderr
    fresh, *rest = again.stdout.split()
    assert fresh != pwd and rest == []                 # a new directory; the last one is gone


def test_exec_with_a_missing_put_is_a_one_line_error(boards, tmp_path):
    p = hexo_board("exec", "b0", "--put", tmp_path / "absent", "--", "true")
    assert p.returncode != 0
    assert "absent: no such file or directory" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_hexo_code_on_the_board_is_the_checkout(boards):
    version, _ = code_bundle()
    with boards["b1"].connect() as conn:
        conn.sync_code()
        rc, out, err = conn.host.sh(f"cat {CODE_DIR}/VERSION; "
                                    "uhyve-ctl --help >/dev/null && echo runs")
    assert rc == 0, err
    assert out.split() == [version, "runs"]


def test_counter_sampling_on_the_board_says_what_it_can_read(boards):
    """Each event of the slowdown model is readable or not, and why in terms of the PMU the
    board's kernel lists; each event that PMU lists is counted over a busy loop."""
    p = hexo_board("exec", "b1", "--", "sh", "-c",
                   "ls /sys/bus/event_source/devices; echo --; python3 -m hexo_sched.counters")
    assert p.returncode == 0, p.stderr
    sources, report = p.stdout.split("--\n")
    pmus = [s for s in sources.split() if s not in ("software", "tracepoint", "kprobe", "uprobe",
                                                     "breakpoint", "msr", "power")]
    lines = report.splitlines()
    assert lines[0].startswith("hardware counters on aarch64"), report
    events = {line.split()[0]: line for line in lines[1:4]}
    assert set(events) == {"instructions_per_s", "llc_references_per_s", "llc_misses_per_s"}
    for line in events.values():
        if " NOT readable: " in line:
            assert all(pmu in line for pmu in pmus) if pmus else "no hardware PMU" in line, line
        else:
            assert " readable: perf_event_open works" in line, line
    counted = {line.split()[2].rstrip(":"): line for line in lines if line.startswith("  PMU ")}
    if "armv8_pmuv3" in pmus:                        # qemu's TCG PMU: a cycle counter at least
        assert int(counted["cpu_cycles"].split("readable, ")[1].split()[0]) > 0, report
    unreadable = any("NOT readable" in line for line in events.values())
    assert lines[-1].startswith("sampling: NOT possible" if unreadable else "sampling: possible")


def test_a_wrong_host_key_is_refused(boards, tmp_path):
    b = boards["b1"]
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    b.known_hosts.write_text(f"[127.0.0.1]:{b.port} "
                             + " ".join(other.with_suffix(".pub").read_text().split()[:2]) + "\n")
    try:
        with pytest.raises(HostError, match="does not match|refused"):
            with b.connect() as conn:
                conn.host.sh("true")
    finally:
        b.known_hosts.write_text(f"[127.0.0.1]:{b.port} {b.image.host_key}\n")


def test_npb_is_runs_on_the_board_and_verifies(boards, images):
    from npb_reference import check
    img = images.get("npb-is", "S")
    p = hexo_board("exec", "b0", "--put", img, "--", "uhyve-ctl", "run", img.name,
                   "--isa", "aarch64", "--backend", "emu", timeout=1800)   # KVM: test_board_kvm.py
    assert p.returncode == 0, p.stderr
    check("is", "S", p.stdout)


def test_a_crashed_board_is_reported_and_cleaned_up(board_state):
    """A real kernel crash (sysrq) ends qemu; status and exec say so at once with the panic
    the kernel wrote on the serial console, naming that log."""
    b = vm.up("crash")
    with b.connect() as conn:
        conn.host.open_channel().exec_command("echo c > /proc/sysrq-trigger")
    deadline = time.monotonic() + 120
    while b.pid() is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    ls = hexo_board("ls")
    row = next(line for line in ls.stdout.splitlines() if line.startswith("crash"))
    assert "crashed" in row, ls.stdout
    for args in (["status", "crash"], ["exec", "crash", "--", "true"]):
        p = hexo_board(*args)
        assert p.returncode == 1, p
        assert "board crash has crashed: Kernel panic - not syncing: sysrq triggered crash | " \
               "CPU: " in p.stderr and f"(console {b.console};" in p.stderr, p.stderr
    down = hexo_board("down", "crash")
    assert down.returncode == 0 and "crashed" in down.stdout
    assert not (Path(board_state) / "crash").exists()


def test_down_powers_off_and_removes_the_board(board_state):
    b = vm.up("short")
    pid = b.pid()
    assert pid is not None
    p = hexo_board("down", "short")
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "short: shut down"
    assert not Path(f"/proc/{pid}/cmdline").exists() or \
        Path(f"/proc/{pid}/cmdline").read_bytes() == b""     # gone (or a zombie)
    assert not (Path(board_state) / "short").exists()


def board_cluster(boards: dict, tmp_path: Path, **daemon) -> Path:
    """cluster.toml of hexo-schedd (policy hexo) with a one-core KVM server and `boards` as
    its boards (their consoles watched), their jobs on the boards' KVM; `daemon`: more
    [daemon] settings."""
    from test_schedd_live import UHYVE
    sections = "".join(
        sshd_fixture.board_section(name, b.port, b.image.client_key, b.known_hosts,
                                   "/var/tmp/hexo", "uhyve-ctl", backend="kvm",
                                   model="emulated-aarch64", console=str(b.console))
        for name, b in sorted(boards.items()))
    return sshd_fixture.server_config(tmp_path, HEXO, UHYVE, sections, policy="hexo",
                                      poll_s=0.5, confirm_timeout_s=900,
                                      checkpoint_timeout_s=600, **daemon)


def test_schedd_offloads_to_two_board_vms_and_brings_jobs_back(boards, images, tmp_path):
    """hexo-schedd with a one-core KVM server and the two board VMs as its boards, their jobs
    on the boards' KVM. EP, EP (class W) and IS (class S) are queued at once: each EP is
    offloaded in turn to make room for the next job (the second to the other board, the first
    one's being full), and once the queue has been empty for a second they come back one by
    one. Class W (~45 s on an idle host's board KVM) leaves each EP far more work than the
    ~10 s a recall takes to reach a board, so neither ends there first."""
    import json
    import signal as sig
    from test_schedd_live import start_daemon, wait_all_done
    from npb_reference import check
    ep, is_ = images.get("npb-ep", "W"), images.get("npb-is", "S")
    cfg = board_cluster(boards, tmp_path, idle_after_s=1)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        p = run([HEXO, "submit", ep, ep, is_, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        st = wait_all_done(state_dir, 1500, "every job to end")
    finally:
        daemon.send_signal(sig.SIGTERM)
        daemon.wait(60)
    moves = []
    for j in st["jobs"]:
        out = Path(j["output"]).read_text()
        check(*(("ep", "W") if "npb-ep" in j["image"] else ("is", "S")), out)
        assert out.count("NAS Parallel Benchmarks") == 1, out
        assert j["outcome"] == "exit 0", j
        moves += [(h["src"], h["dst"]) for h in j["migrations"] if h["outcome"] == "done"]
    offloaded = {dst for src, dst in moves if src == "server"}
    returned = {src for src, dst in moves if dst == "server"}
    assert offloaded == returned == {"b0", "b1"}, (moves, log.read_text()[-3000:])
    print(json.dumps({"moves": moves}))
