"""Jobs moved from one arm64 board VM to another, for real: a unikernel NPB job under
hexo-schedd when an operator drains its board (`hexo drain`), and a podman container with
`hexo board migrate --from --to`, both through this server. A target board that dies during
the move loses the job nothing: it goes on on its source board; one that dies after it loses
the job only the time since the move.

Two boards boot once for the module (prefix bb); two tests kill bb1, the last one booting it
again first."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest

import npb_reference
from conftest import HEXO, run
from test_board import board_state, boards  # noqa: F401 (fixtures)
from test_board import CheckedBoards, board_cluster, boot_side_by_side, qemu_unusable
from test_container import needs_podman
from test_container_board import linux_image, on_board, podman_here, run_container

pytestmark = [pytest.mark.board, pytest.mark.slow, pytest.mark.xdist_group("board"),
              pytest.mark.timeout(900),     # a wedged board kernel: 15 min lost, not an hour
              pytest.mark.skipif(os.geteuid() != 0, reason="CRIU needs root"),
              pytest.mark.skipif(qemu_unusable() is not None, reason=str(qemu_unusable()))]

NAMES = ("bb0", "bb1")


@pytest.fixture(scope="module")
def booted(board_state):  # noqa: F811
    from uhyve_ctl.container import criu
    criu.ensure()
    with CheckedBoards(boot_side_by_side(NAMES)) as boards:
        yield boards


def on(board, script: str) -> tuple[int, str]:
    return on_board(board, ["sh", "-c", script])


@needs_podman
def test_container_moves_board_to_board_and_keeps_its_state(boards, tmp_path):  # noqa: F811
    """An EP.S container parked at a point on bb0 moves to bb1 with `hexo board migrate
    --from bb0 --to bb1` (bb1 had never seen its image: it comes from bb0's store through
    this server, and bb1 keeps it by digest); it finishes there with NPB's verification
    values, its log holding the run once, and nothing of it is left on bb0."""
    from hexo import workloads
    from hexo_sched.boards.migrate import OnBoard, move
    from uhyve_ctl.container import images
    w = workloads.get("npb-ep")
    image = linux_image(tmp_path, "ep", w.paths(), w.defines("S"))
    name = f"hexo-b2b-{os.getpid()}"
    tag = run_container(image, name, [], 2)
    with images.saved(*podman_here("inspect", "--format", "{{.Image}} {{.ImageName}}",
                                   name).split()) as (sha, _):
        stored = {"archive": sha}
    try:
        assert move(name, dst="bb0", until_point=True) == name
        with OnBoard("bb1") as bb1:
            assert not bb1.has_image(stored)
        p = run([HEXO, "board", "migrate", name, "--from", "bb0", "--to", "bb1"], timeout=800)
        assert p.returncode == 0, p.stderr
        assert p.stdout.strip() == f"container {name} of bb0 runs on bb1 as {name}"
        status, log = on(boards["bb1"], f"podman wait {name} >/dev/null && podman logs {name}")
        assert status == 0, log
        npb_reference.check("ep", "S", log)
        assert log.count("NAS Parallel Benchmarks") == 1, log
        assert on(boards["bb0"], f"podman container exists {name}")[0] == 1
        with OnBoard("bb1") as bb1:
            assert bb1.has_image(stored)
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
        for b in boards.values():
            if b.pid() is not None:
                on(b, f"podman rm -f -t 0 {name}")


@needs_podman
def test_a_target_board_that_dies_during_the_move_loses_nothing(boards, tmp_path,
                                                                  monkeypatch):  # noqa: F811
    """bb1's qemu is killed as the checkpoint from bb0 is about to be restored there: the
    move fails in one line saying the job continues on bb0, where it ends with the output of
    a run never moved."""
    from hexo_sched.boards import migrate
    from test_container_board import PROGRAMS, start
    image = linux_image(tmp_path, "migratable", [PROGRAMS / "migratable.c"])
    want = tmp_path / "unmigrated.out"
    assert start(image, ["3000"], want).wait() == 0
    name = f"hexo-b2b-dead-{os.getpid()}"
    tag = run_container(image, name, ["3000"], 5)
    restore = migrate.OnBoard.restore

    def target_dies(self, *args):
        os.kill(self.board.pid(), signal.SIGKILL)
        return restore(self, *args)

    try:
        migrate.move(name, dst="bb0", until_point=True)
        monkeypatch.setattr(migrate.OnBoard, "restore", target_dies)
        with pytest.raises(migrate.MigrationError,
                           match=f"restore on bb1 failed .*; container {name} continues on bb0"):
            migrate.move(name, src="bb0", dst="bb1")
        status, log = on(boards["bb0"], f"podman wait {name} && podman logs {name}")
        assert status == 0 and log == "0\n" + want.read_text(), log
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)
        on(boards["bb0"], f"podman rm -f -t 0 {name}")


def test_drained_unikernel_job_moves_to_the_other_board_and_survives_its_death(
        boards, images, tmp_path):  # noqa: F811
    """hexo-schedd with a one-core server and both boards (bb1 booted again: the test
    before killed it): of two EP.W jobs one is offloaded to bb0; `hexo drain bb0` sends it
    to bb1, not back to the busy server. The checkpoint bb0 wrote becomes its saved state,
    so when bb1's qemu is then killed the job resumes from it on the server, not from its
    start, and ends with NPB's verification values, its output shown once."""
    from hexo_sched.boards import vm
    from test_schedd_live import start_daemon, wait_all_done, wait_for
    boards = {name: vm.up(name) for name in NAMES}
    ep = images.get("npb-ep", "W")
    cfg = board_cluster(boards, tmp_path, idle_after_s=3600, checkpoint_period_s=3600,
                        board_lost_after_s=10)
    state_dir, log = tmp_path / "state", tmp_path / "schedd.log"
    daemon = start_daemon(cfg, log)
    try:
        p = run([HEXO, "submit", ep, ep, "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        first = p.stdout.split()[0]
        wait_for(lambda s: any(j["id"] == first and j["state"] == "running"
                               and j["location"] == "bb0" for j in s["jobs"]),
                 state_dir, 900, f"{first} to run on bb0")
        p = run([HEXO, "drain", "bb0", "--state-dir", state_dir])
        assert p.returncode == 0, p.stderr
        assert p.stdout.split("\n")[0] == f"bb0: draining; leaving: {first}; no room " \
                                          "elsewhere yet: -", p.stdout
        def kept_from_bb0(j: dict) -> bool:
            """The move's source checkpoint became the saved state (recorded once the move
            has finished, which can be just after the job shows as running on bb1)."""
            from_bb0 = max(s["n"] for s in j["segments"] if s["machine"] == "bb0")
            return (j["saved"] or {}).get("kind") == "migration" \
                and j["saved"]["seg"] == from_bb0

        st = wait_for(lambda s: any(j["id"] == first and j["location"] == "bb1"
                                    and (j["state"] == "done" or kept_from_bb0(j))
                                    for j in s["jobs"]),
                      state_dir, 900, f"{first} to run on bb1 with bb0's checkpoint kept")
        job = next(j for j in st["jobs"] if j["id"] == first)
        assert job["state"] == "running", job           # EP.W runs ~1 min on a board
        assert [m["draining"] for m in st["machines"]] == [False, True, False]
        os.kill(boards["bb1"].pid(), signal.SIGKILL)
        st = wait_all_done(state_dir, 1500, "both jobs to end")
    finally:
        daemon.send_signal(signal.SIGTERM)
        daemon.wait(60)
    job = next(j for j in st["jobs"] if j["id"] == first)
    moves = [(h["src"], h["dst"], h["outcome"]) for h in job["migrations"]]
    assert moves == [("server", "bb0", "done"), ("bb0", "bb1", "done")], log.read_text()[-3000:]
    assert "bb0 drains; " in job["migrations"][1]["reason"]
    assert [(x["machine"], x["resumed_from"]) for x in job["losses"]] == [("bb1", "migration")]
    assert job["location"] == "server"
    for j in st["jobs"]:
        out = open(j["output"]).read()
        npb_reference.check("ep", "W", out)
        assert out.count("NAS Parallel Benchmarks") == 1, out
        assert j["outcome"] == "exit 0", j
