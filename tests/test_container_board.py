"""Linux-mode processes and podman containers across ISAs for real: checkpointed by CRIU on
this x86-64 server, recoded, restored inside an arm64 board VM (Debian's criu there, under
podman for a container), run there, and moved back. Outputs are checked against unmigrated
runs and NPB's verification values."""

from __future__ import annotations

import ctypes
import io
import os
import socket
import struct
import subprocess
from pathlib import Path

import pytest

from hexo import workloads
from hexo.image import Image
from hexo.toolchain.build import BuildRequest, build
from test_board import CheckedBoards, qemu_unusable
from test_container import PODMAN, ULIMITS, needs_podman
from uhyve_ctl.container import checkpoint as ckpt, criu, oci, process

import npb_reference

pytestmark = [pytest.mark.board, pytest.mark.slow, pytest.mark.xdist_group("board"),
              pytest.mark.timeout(3600),
              pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root"),
              pytest.mark.skipif(qemu_unusable() is not None, reason=str(qemu_unusable()))]

PROGRAMS = Path(__file__).parent / "programs"
BOARD = "ct-b0"


@pytest.fixture(scope="module")
def booted(tmp_path_factory):
    from hexo_sched.boards import image as board_image, vm
    old = os.environ.get("HEXO_BOARD_STATE")
    os.environ["HEXO_BOARD_STATE"] = str(tmp_path_factory.mktemp("boards"))
    board_image.build()
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)     # PR_SET_CHILD_SUBREAPER
    criu.ensure()
    try:
        with CheckedBoards({BOARD: vm.up(BOARD)}) as boards:
            yield boards
    finally:
        vm.down(BOARD)
        if old is None:
            del os.environ["HEXO_BOARD_STATE"]
        else:
            os.environ["HEXO_BOARD_STATE"] = old


@pytest.fixture
def board(booted):
    with booted.checked() as checked:
        yield checked[BOARD]


def linux_image(tmp: Path, name: str, sources, defines=()) -> Image:
    out = tmp / f"{name}.hexo"
    build(BuildRequest(list(sources), out, name, defines=list(defines), migratable=True,
                       linux=True))
    return process.open_image(out)


def start(image, args, out: Path, stop_at: int | None = None) -> subprocess.Popen:
    env = dict(os.environ)
    if stop_at is not None:
        env[process.STOP_AT_POINT] = str(stop_at)
    with open(out, "w") as f:
        return subprocess.Popen([process.executable(image, process.host_isa()), *args],
                                stdout=f, stdin=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=out.parent)


def on_board(board, cmd: list[str], puts=()) -> tuple[int, str]:
    out = io.BytesIO()
    with board.connect() as conn:
        status = conn.run(cmd, puts=list(puts), stdout=out, stderr=out)
    return status, out.getvalue().decode(errors="replace")


def test_process_finishes_on_the_board(board, tmp_path):
    """x86-64 -> arm64: restored by the board's CRIU, the job runs to its end there."""
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    want = tmp_path / "unmigrated.out"
    assert start(image, ["3000"], want).wait() == 0
    out = tmp_path / "run.out"
    p = start(image, ["3000"], out, stop_at=5)
    ckpt.checkpoint(p.pid, tmp_path / "ck", "aarch64")
    assert p.wait() != 0                                # CRIU ended the source
    status, log = on_board(board, ["sh", "-c", "hexo container restore --wait ck && cat "
                                   + str(out)], puts=[tmp_path / "ck"])
    assert status == 0, log
    assert log.endswith(want.read_text())


@pytest.mark.parametrize("kernel,point", [("ep", 3), ("is", 2), ("cg", 4)])
def test_npb_there_and_back(board, tmp_path, kernel, point):
    """NPB class S: stopped at a chosen point on x86-64, one step on the arm64 board (to its
    next point), back on x86-64 to the end; NPB's own verification must pass."""
    from hexo_sched.boards.migrate import move
    w = workloads.get(f"npb-{kernel}")
    image = linux_image(tmp_path, kernel, w.paths(), w.defines("S"))
    out = tmp_path / "run.out"
    p = start(image, [], out, stop_at=point)
    remote = move(str(p.pid), dst=board.name, until_point=True)
    assert p.wait() != 0                                # ended once the board ran it
    assert on_board(board, ["cat", f"/proc/{remote}/comm"]) == (0, "aarch64\n")
    local = move(remote, src=board.name, reap=True)
    assert ckpt.wait(int(local)) == 0
    npb_reference.check(kernel, "S", out.read_text())
    assert on_board(board, ["test", "-e", f"/proc/{remote}"])[0] != 0


def test_failed_restore_leaves_the_source_running(board, tmp_path):
    """The board's restore fails (its pid is taken there): the source, left stopped at its
    point, continues here and ends as if never touched."""
    from hexo_sched.boards.migrate import MigrationError, move
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    want = tmp_path / "unmigrated.out"
    assert start(image, ["3000"], want).wait() == 0
    out = tmp_path / "run.out"
    p = start(image, ["3000"], out, stop_at=5)
    # A process on the board under the job's pid (ns_last_pid: the next fork gets pid); it
    # goes with the board at the end of the module, so no SSH command has to end it.
    status, log = on_board(board, ["sh", "-c", f"echo {p.pid - 1} > /proc/sys/kernel/"
                                   "ns_last_pid; setsid sleep 600 </dev/null >/dev/null 2>&1 "
                                   "& echo $!"])
    assert status == 0 and log.split()[-1] == str(p.pid), log
    with pytest.raises(MigrationError, match=f"process {p.pid} continues here"):
        move(str(p.pid), dst=board.name)
    assert p.wait() == 0
    assert out.read_text() == want.read_text()


def test_hung_restore_is_ended(board, tmp_path):
    """A damaged checkpoint (its pages cut short, as by a broken transfer) makes the board's
    CRIU 3.17 retry a short read for ever, its half-restored task spinning and its log
    growing until the board starves (SSH then waited minutes to open a channel). The restore
    is ended after --timeout with CRIU and that task; the board keeps nothing of it."""
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    p = start(image, ["3000"], tmp_path / "run.out", stop_at=5)
    d = tmp_path / "ck"
    state = ckpt.checkpoint(p.pid, d, "aarch64")
    assert p.wait() != 0
    pages = next(d.glob("pages-*.img"))
    pages.write_bytes(pages.read_bytes()[:4096])
    status, log = on_board(board, ["hexo", "container", "restore", "ck", "--timeout", "20"],
                           puts=[d])
    assert status == 1 and "did not finish in 20 s" in log, log
    assert on_board(board, ["sh", "-c", f"pgrep -x criu; test -e /proc/{state['pid']} || "
                                        "echo nothing left"]) == (0, "nothing left\n")


def run_container(image: Image, name: str, args, stop_at: int, options=()) -> str:
    """Container `name` of `image` started here, to wait at its (stop_at+1)-th point; the
    tag of its OCI image."""
    tag = f"localhost/hexo-board-test-{image.manifest['name']}-{os.getpid()}"
    oci.build(Path(image.path), tag)
    run_tagged(tag, name, args, stop_at, options)
    return tag


def run_tagged(tag: str, name: str, args, stop_at: int, options=()) -> None:
    subprocess.run([*PODMAN, "run", "-d", *ULIMITS, *options, "-e",
                    f"{process.STOP_AT_POINT}={stop_at}", "--name", name, tag, *args],
                   check=True, capture_output=True)


def podman_here(*args) -> str:
    return subprocess.run(["podman", *args], capture_output=True, text=True,
                          check=True).stdout


def remove_everywhere(board, name: str, tag: str) -> None:
    subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
    subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
    on_board(board, ["podman", "rm", "-f", "-t", "0", name])


@needs_podman
@pytest.mark.parametrize("kernel,point", [("is", 2), ("cg", 4)])   # EP: test_board_to_board
def test_npb_container_there_and_back(board, tmp_path, kernel, point):
    """An x86-64 podman container (podman's default seccomp profile) stopped at a chosen
    point, restored by the board's podman, one step there as an arm64 process, then back to
    this server's podman to the end; NPB's own verification must pass."""
    from hexo_sched.boards.migrate import move
    w = workloads.get(f"npb-{kernel}")
    image = linux_image(tmp_path, kernel, w.paths(), w.defines("S"))
    name = f"hexo-test-{kernel}-{os.getpid()}"
    tag = run_container(image, name, [], point)
    try:
        assert move(name, dst=board.name, until_point=True) == name
        assert subprocess.run(["podman", "container", "exists", name]).returncode == 1
        status, pid = on_board(board, ["podman", "inspect", "--format", "{{.State.Pid}}", name])
        assert status == 0 and on_board(board, ["cat", f"/proc/{pid.strip()}/comm"]) \
            == (0, "aarch64\n")
        assert move(name, src=board.name) == name
        assert podman_here("wait", name).strip() == "0"
        npb_reference.check(kernel, "S", podman_here("logs", name))
        assert on_board(board, ["podman", "container", "exists", name])[0] == 1
    finally:
        remove_everywhere(board, name, tag)


@needs_podman
def test_failed_podman_restore_leaves_the_source_running(board, tmp_path):
    """The board's podman refuses the restore (a container of that name exists there): the
    source container, parked at its point, continues here and ends as if never touched."""
    from hexo_sched.boards.migrate import MigrationError, move
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    want = tmp_path / "unmigrated.out"
    assert start(image, ["3000"], want).wait() == 0
    name = f"hexo-test-taken-{os.getpid()}"
    tag = run_container(image, name, ["3000"], 5)
    try:
        status, log = on_board(board, ["sh", "-c", "hexo container image migratable.hexo -t "
                                       f"localhost/hexo-blocker && podman create --name {name} "
                                       "localhost/hexo-blocker"], puts=[Path(image.path)])
        assert status == 0, log
        with pytest.raises(MigrationError, match=f"container {name} continues here"):
            move(name, dst=board.name)
        assert podman_here("wait", name).strip() == "0"
        assert podman_here("logs", name) == want.read_text()
    finally:
        remove_everywhere(board, name, tag)


@needs_podman
def test_container_finds_its_cgroup_limits_on_both_machines(board, tmp_path):
    """This server's cgroups are v1, the board's v2, and podman shows a container the form of
    its machine. A job that reads its limits at every step (tests/programs/cgroup_limits.c),
    moved to the board for one step and back, reads the values podman was given here in the
    v2 form there and in the v1 form here."""
    from hexo_sched.boards.migrate import move
    image = linux_image(tmp_path, "cgroup_limits", [PROGRAMS / "cgroup_limits.c"])
    name = f"hexo-test-cgroup-{os.getpid()}"
    tag = run_container(image, name, ["6"], 2, ["--memory", "256m", "--cpus", "0.5",
                                                "--pids-limit", "100"])
    try:
        move(name, dst=board.name, until_point=True)
        move(name, src=board.name)
        assert podman_here("wait", name).strip() == "0"
        steps = podman_here("logs", name).splitlines()
    finally:
        remove_everywhere(board, name, tag)
    limits = "memory=268435456 cpu=50000 100000 pids=100"
    assert steps == [f"{i}: cgroup {'v2' if i == 3 else 'v1'} {limits}" for i in range(7)]


@needs_podman
def test_container_image_goes_once_per_board(board, tmp_path):
    """The board keeps the container's image by digest: sent once, asked again it has it; a
    damaged copy there is sent again, never used. A container then moved to the board (its
    archive without the image, the board's podman without it) restores from that copy."""
    from hexo_sched.boards.migrate import Here, OnBoard, copy_image, move
    from uhyve_ctl.container import images
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    want = tmp_path / "unmigrated.out"
    assert start(image, ["3000"], want).wait() == 0
    name = f"hexo-test-image-{os.getpid()}"
    tag = run_container(image, name, ["3000"], 5)
    oci_id, oci_name = podman_here("inspect", "--format", "{{.Image}} {{.ImageName}}",
                                   name).split()
    with images.saved(oci_id, oci_name) as (sha, _):
        pass
    wanted = {"oci_id": oci_id, "oci_name": oci_name, "archive": sha}
    try:
        with Here() as here, OnBoard(board.name) as there:
            assert copy_image(here, there, wanted, tmp_path)
            assert not copy_image(here, there, wanted, tmp_path)
            status, _, err = there.conn.host.sh(f"d={images.STORE_IN_SHELL}; printf x | dd "
                                                f"of=\"$d/{sha}.tar\" bs=1 seek=100 "
                                                "conv=notrunc")
            assert status == 0, err
            assert copy_image(here, there, wanted, tmp_path)
            assert not copy_image(here, there, wanted, tmp_path)
        assert on_board(board, ["podman", "image", "exists", oci_id])[0] == 1
        move(name, dst=board.name)
        assert on_board(board, ["podman", "wait", name]) == (0, "0\n")
        assert on_board(board, ["podman", "logs", name]) == (0, want.read_text())
    finally:
        remove_everywhere(board, name, tag)


def bytes_received(sock) -> int:
    """What the kernel counted as received on TCP socket `sock` (tcp_info's
    tcpi_bytes_received)."""
    return struct.unpack_from("<Q", sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO,
                                                    256), 128)[0]


@needs_podman
def test_container_image_comes_back_only_when_missing(board, tmp_path, monkeypatch):
    """`hexo board migrate CONTAINER --from BOARD`: the board checkpoints without the image,
    which this server fetches only when it has no intact copy. Two containers of one image
    go to the board and back, podman here lacking the image each time: with the stored copy
    here intact, then damaged. The second return receives one image's worth of bytes more
    over its SSH connection (the kernel's count) and leaves an intact copy, so the first
    received none; both jobs finish with the unmigrated output."""
    from hexo_sched.boards import ssh
    from hexo_sched.boards.migrate import move
    from uhyve_ctl.container import images
    received = []
    close = ssh.BoardConnection.__exit__

    def counted(self, *exc):
        received.append(bytes_received(self.host._client.get_transport().sock))
        return close(self, *exc)

    monkeypatch.setattr(ssh.BoardConnection, "__exit__", counted)
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    want = tmp_path / "unmigrated.out"
    assert start(image, ["3000"], want).wait() == 0
    names = [f"hexo-test-back-{i}-{os.getpid()}" for i in range(2)]
    tag = run_container(image, names[0], ["3000"], 5)
    oci_id, oci_name = podman_here("inspect", "--format", "{{.Image}} {{.ImageName}}",
                                   names[0]).split()
    with images.saved(oci_id, oci_name) as (sha, stored):
        size = stored.stat().st_size
    try:
        back = []
        for name in names:
            if name != names[0]:
                run_tagged(tag, name, ["3000"], 5)
            move(name, dst=board.name, until_point=True)
            podman_here("rmi", "--force", oci_id)
            if name != names[0]:
                stored.write_bytes(stored.read_bytes()[:-1] + b"x")
            move(name, src=board.name)
            back.append(received[-1])
            assert podman_here("wait", name).strip() == "0"
            assert podman_here("logs", name) == want.read_text()
        assert 0.8 * size <= back[1] - back[0] <= 1.2 * size, (back, size)
        assert images.digest(stored) == sha
    finally:
        for name in names:
            remove_everywhere(board, name, tag)
