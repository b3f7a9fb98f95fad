"""The aarch64 KVM backend on a real arm64 Linux: a board VM (qemu-system-aarch64 at EL2, so
the board's kernel has KVM), driven over SSH. Outputs are compared with this host's x86-64
KVM runs of the same images; jobs migrate x86-64 KVM -> board KVM -> x86-64 KVM."""

from __future__ import annotations

import io
import re
import shlex
import tarfile
from pathlib import Path

import pytest

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run
from npb_reference import check, untimed
from test_board import board_state, qemu_unusable  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.board, pytest.mark.slow, pytest.mark.xdist_group("board"), needs_kvm,
              pytest.mark.timeout(3600)]

if qemu_unusable():
    pytest.skip(qemu_unusable(), allow_module_level=True)

BOARD = "kvm0"
FAULTS = ROOT / "tests" / "programs" / "faults.c"
ROUNDS = "300"
_BOARD_TIMEOUT = 900            # seconds a board command may take under TCG before it is a hang


class BoardResult:
    def __init__(self, status: int, stdout: str, stderr: str, files: Path):
        self.status, self.stdout, self.stderr, self.files = status, stdout, stderr, files


class BoardShell:
    """One SSH connection to the board for the whole module; each call runs a shell script
    in a fresh directory holding copies of `puts` and brings back the paths named in `get`."""

    def __init__(self, conn, tmp: Path):
        self.conn, self.tmp, self.calls = conn, tmp, 0

    def __call__(self, script: str, puts=(), get=()) -> BoardResult:
        self.calls += 1
        wrapped = (f"timeout {_BOARD_TIMEOUT} sh -c {shlex.quote(script)} >.stdout 2>.stderr; "
                   f"echo $? >.status; tar -czf - .stdout .stderr .status {' '.join(get)}")
        out, err = io.BytesIO(), io.BytesIO()
        rc = self.conn.run(["sh", "-c", wrapped], puts=[Path(p) for p in puts], stdout=out,
                           stderr=err)
        assert rc == 0, f"board {BOARD}: {err.getvalue().decode(errors='replace')}"
        dest = self.tmp / f"call{self.calls}"
        with tarfile.open(fileobj=io.BytesIO(out.getvalue()), mode="r:gz") as tar:
            tar.extractall(dest)
        return BoardResult(int((dest / ".status").read_text()), (dest / ".stdout").read_text(),
                           (dest / ".stderr").read_text(), dest)


@pytest.fixture(scope="module")
def board(board_state, tmp_path_factory):
    from hexo_sched.boards import vm as boards
    with boards.up(BOARD).connect() as conn:
        yield BoardShell(conn, tmp_path_factory.mktemp("board"))


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "faults.hexo"
    p = run([HEXO, "build", FAULTS, "-o", out])
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture(scope="module")
def migratable(images):
    return images.program("migratable", migratable=True)


def x86_kvm(*args: str) -> str:
    p = run([UHYVE, *args, "--isa", "x86_64", "--backend", "kvm"], timeout=600)
    assert p.returncode == 0, p.stderr
    return p.stdout


_ESR = r" \(ESR_EL1 0x[0-9a-f]+\) at pc "
CRASH_REPORTS = {
    "null": r"aarch64 data abort: translation fault, level 3, on a read, address 0x0" + _ESR
            + "0x8",
    "beyond-ram": r"aarch64 data abort: translation fault, level 0, on a read, "
                  r"address 0x8000000000" + _ESR + "0x8",
    "wild-jump": r"aarch64 instruction abort: translation fault, level 3, address 0x0" + _ESR
                 + "0x0",
    "trap": r"aarch64 brk \(breakpoint\) #1" + _ESR + "0x8",
}


@pytest.mark.parametrize("kind", CRASH_REPORTS)
def test_guest_faults_end_as_crash_reports(board, faults, kind):
    r = board(f"uhyve-ctl run {faults.name} --backend kvm -- {kind}", puts=[faults])
    assert r.status == 125, r.stderr
    assert r.stdout == f"about to fault: {kind}\n"
    assert re.search(CRASH_REPORTS[kind], r.stderr), r.stderr


@pytest.mark.parametrize("kernel", ["ep", "is", "cg"])
def test_npb_on_board_kvm_matches_x86_64_kvm(board, images, kernel):
    image = images.get(f"npb-{kernel}", "S")
    r = board(f"uhyve-ctl run {image.name} --backend kvm --stats", puts=[image])
    assert r.status == 0, r.stderr
    assert "aarch64 on kvm:" in r.stderr, r.stderr
    check(kernel, "S", r.stdout)
    assert untimed(r.stdout) == untimed(x86_kvm("run", str(image)))


def test_migration_test_program_on_board_kvm_matches_x86_64_kvm(board, migratable):
    r = board(f"uhyve-ctl run {migratable.name} --backend kvm -- {ROUNDS}", puts=[migratable])
    assert r.status == 0, r.stderr
    assert r.stdout == x86_kvm("run", str(migratable), "--", ROUNDS)


@pytest.mark.parametrize("there,back", [(1, 1), (40, 150)])
def test_x86_64_kvm_to_board_kvm_and_back(board, migratable, tmp_path, there, back):
    """Checkpoint on this host for aarch64 at migration point `there`, restore on the board's
    KVM, checkpoint there for x86-64 `back` points later, restore here: the three legs print
    what one unmigrated run prints."""
    ck1 = tmp_path / "ck1"
    p = run([UHYVE, "run", migratable, "--isa", "x86_64", "--backend", "kvm", "--checkpoint-at",
             there, "--checkpoint-dir", ck1, "--to", "aarch64", "--", ROUNDS])
    assert p.returncode == 0 and f"checkpointed to {ck1}" in p.stderr, p.stderr
    r = board(f"uhyve-ctl restore ck1 --image {migratable.name} --backend kvm "
              f"--checkpoint-at {back} --checkpoint-dir ck2 --to x86_64",
              puts=[migratable, ck1], get=["ck2"])
    assert r.status == 0 and re.search(r"checkpointed to \S*/ck2", r.stderr), r.stderr
    home = run([UHYVE, "restore", r.files / "ck2", "--image", migratable, "--isa", "x86_64",
                "--backend", "kvm"])
    assert home.returncode == 0, home.stderr
    assert p.stdout + r.stdout + home.stdout == x86_kvm("run", str(migratable), "--", ROUNDS)


def test_clocks_on_board_kvm_are_exit_free_and_continue_from_x86_64(board, images, tmp_path):
    """On a board's KVM the library OS reads CNTVCT_EL0 (rate from CNTFRQ_EL0): 300,000 clock
    reads make no exit; restored there from an x86-64 checkpoint, no clock went back."""
    clocks = images.program("clocks", migratable=True)
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", clocks, "--isa", "x86_64", "--backend", "kvm", "--checkpoint-at",
             "50", "--checkpoint-dir", ck, "--to", "aarch64", "--", "100"])
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    r = board(f"uhyve-ctl run {clocks.name} --backend kvm --stats -- 100 && "
              f"uhyve-ctl restore ck --image {clocks.name} --backend kvm",
              puts=[clocks, ck])
    assert r.status == 0, r.stderr
    reads = "300100 clock reads, 0 went back\n"
    assert (p.stdout, r.stdout) == ("", reads + reads)       # the plain run, then the restored
    assert re.search(r"aarch64 on kvm: .* 1 hypercalls", r.stderr), r.stderr   # EXIT only


_WAIT_RUNNING = ("until uhyve-ctl ps | grep -q '^{name} .* running'; do "
                 "kill -0 $! || exit 9; sleep 0.2; done")


def test_named_vm_on_board_kvm_checkpointed_by_name_resumes_on_x86_64(board, images, tmp_path):
    """The operator's path on a board: a named VM, `uhyve-ctl checkpoint NAME --to x86_64`
    (CG class W: class S ends on board KVM before a board command can reach it)."""
    image = images.get("npb-cg", "W")
    r = board(f"uhyve-ctl run {image.name} --backend kvm --name j1 >job.out 2>job.err & "
              + _WAIT_RUNNING.format(name="j1")
              + "; uhyve-ctl checkpoint j1 --to x86_64 -o ck; st=$?; wait $!; exit $st",
              puts=[image], get=["ck", "job.out", "job.err"])
    assert r.status == 0, r.stderr + (r.files / "job.err").read_text()
    first = (r.files / "job.out").read_text()
    assert "Verification" not in first
    p = run([UHYVE, "restore", r.files / "ck", "--image", image, "--isa", "x86_64",
             "--backend", "kvm"])
    assert p.returncode == 0, p.stderr
    check("cg", "W", first + p.stdout)


def test_postcopy_on_board_kvm_pulls_pages_through_userfaultfd(board, images):
    """Post-copy between two VMs on the board's KVM (a board's network reaches only itself
    and its SSH forward): the target's missing pages fault into userfaultfd and are pulled."""
    image = images.get("npb-cg", "W")
    r = board(f"uhyve-ctl run {image.name} --backend kvm --name src >src.out 2>src.err & "
              + _WAIT_RUNNING.format(name="src")
              + "; uhyve-ctl migrate src --to aarch64 --mode postcopy --serve 127.0.0.1:0 "
                "-o ck >&2 && uhyve-ctl restore ck --backend kvm --stats --name dst; st=$?; "
                "wait $!; exit $st",
              puts=[image], get=["src.out", "src.err"])
    assert r.status == 0, r.stderr + (r.files / "src.err").read_text()
    first = (r.files / "src.out").read_text()
    assert "Verification" not in first
    check("cg", "W", first + r.stdout)
    fetched = re.search(r"post-copy: (\d+) of (\d+) pages fetched, (\d+) faults", r.stderr)
    assert fetched and int(fetched[1]) > 0 and int(fetched[3]) > 0, r.stderr
