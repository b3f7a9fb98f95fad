"""The target's half of a handover with real CRIU: `hexo container restore --held` restores a
job parked at its point (on its own ISA, and recoded there and back, where it starts in
hexo_linux_resume), lets it continue on `go` and ends it when its input ends; the job's
output is the unmigrated run's, once."""

import json
import subprocess
from pathlib import Path

from uhyve_ctl.container import checkpoint as ckpt, criu_images, process

from conftest import HEXO
from test_container import finish, migratable, pytestmark, reaper, start, unmigrated

__all__ = ["migratable", "pytestmark", "reaper"]      # the fixtures and marks this module uses


def held_restore(directory: Path, record: Path) -> tuple[subprocess.Popen, int]:
    """`hexo container restore --held` of `directory`, once it reports the job held; the
    command and the job's pid."""
    p = subprocess.Popen([HEXO, "container", "restore", str(directory), "--held", str(record)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith("restored process ")
    line = p.stdout.readline()
    assert line.startswith("held process "), line
    pid = int(line.split()[-1])
    assert record.read_text() == line
    with open(f"/proc/{pid}/mem", "rb") as mem:
        assert process._at_point(mem)                  # parked: the page says stopped
    return p, pid


def checkpointed(image, tmp: Path, to_isa=None) -> tuple[Path, str, Path]:
    """A run of `image` dumped at a point (the source ended by CRIU); the checkpoint, the
    unmigrated output, the run's output file."""
    want = unmigrated(image, ["40000"], tmp)
    src = start(image, ["40000"], tmp / "run.out")
    state = ckpt.checkpoint(src.pid, tmp / "ck", to_isa=to_isa)
    src.wait()
    return tmp / "ck", want, state


def test_held_restore_runs_on_go(migratable, tmp_path):
    ck, want, _ = checkpointed(migratable, tmp_path)
    p, pid = held_restore(ck, tmp_path / "record")
    before = (tmp_path / "run.out").read_text()
    assert len(before) < len(want)                     # it stopped halfway
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.stdout.readline() == f"running process {pid}\n"
    assert p.wait() == 0
    assert (tmp_path / "record").read_text() == f"running process {pid}\n"
    assert finish(pid) == 0
    assert (tmp_path / "run.out").read_text() == want


def test_held_restore_is_ended_when_its_input_ends(migratable, tmp_path):
    ck, want, _ = checkpointed(migratable, tmp_path)
    p, pid = held_restore(ck, tmp_path / "record")
    p.stdin.close()                                    # the mover's connection is gone
    assert p.stdout.readline() == f"discarded process {pid}\n"
    assert p.wait() == 1
    assert finish(pid) == -9
    assert (tmp_path / "record").read_text() == f"discarded process {pid}\n"
    assert len((tmp_path / "run.out").read_text()) < len(want)     # it never went on


def test_held_recoded_process_waits_in_hexo_linux_resume(migratable, tmp_path):
    ck, want, state = checkpointed(migratable, tmp_path, to_isa="aarch64")
    back = criu_images.recode(ck, state, migratable, "x86_64")
    (ck / ckpt.STATE_FILE).write_text(json.dumps(back))
    p, pid = held_restore(ck, tmp_path / "record")
    resume = criu_images.symbol(migratable, "x86_64", "hexo_linux_resume")
    with open(f"/proc/{pid}/stat") as f:
        assert f.read().rsplit(")", 1)[1].split()[0] == "S"      # napping, not spinning
    p.stdin.write("nothing\n")                         # not a go: ended
    p.stdin.flush()
    assert p.stdout.readline() == f"discarded process {pid}\n"
    assert p.wait() == 1 and finish(pid) == -9
    assert len((tmp_path / "run.out").read_text()) < len(want)
    assert criu_images.summary(ck)["thread_pc"] == resume
    p, pid = held_restore(ck, tmp_path / "record2")     # the same checkpoint, this time a go
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.wait() == 0 and finish(pid) == 0
    assert (tmp_path / "run.out").read_text() == want
    assert (tmp_path / "record2").read_text() == f"running process {pid}\n"
