"""The target's half of a handover with real CRIU: `hexo container restore --held` restores a
job parked at its point (a process on its own ISA and recoded there and back, where it starts
in hexo_linux_resume; a podman container), lets it continue on `go` and ends it when its
input ends or another line comes; the job's output is the unmigrated run's, once."""

import json
import os
import subprocess
import time
from pathlib import Path

from uhyve_ctl.container import checkpoint as ckpt, criu_images

from conftest import HEXO
from test_container import (finish, migratable, needs_podman, oci_tag, parked_container,
                            podman_cli, pytestmark, reaper, start, unmigrated)

__all__ = ["migratable", "oci_tag", "pytestmark", "reaper"]   # fixtures and marks used here


def held_restore(checkpoint: Path, record: Path, kind: str = "process"
                 ) -> tuple[subprocess.Popen, str]:
    """`hexo container restore --held` of `checkpoint`, once it reports the job held and
    `hexo container parked` confirms it; the command and the job's pid or name."""
    p = subprocess.Popen([HEXO, "container", "restore", str(checkpoint), "--held", str(record)],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().startswith(f"restored {kind} ")
    line = p.stdout.readline()
    assert line.startswith(f"held {kind} "), line
    job = line.split()[-1]
    assert record.read_text() == line
    assert subprocess.run([HEXO, "container", "parked", job]).returncode == 0
    return p, job


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
    pid = int(pid)
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
    pid = int(pid)
    p.stdin.close()                                    # the mover's connection is gone
    assert p.stdout.readline() == f"discarded process {pid}\n"
    assert p.wait() == 1
    assert finish(pid) == -9
    assert (tmp_path / "record").read_text() == f"discarded process {pid}\n"
    assert len((tmp_path / "run.out").read_text()) < len(want)     # it never went on


def _cpu_share(pid: int, seconds: float) -> float:
    """The share of one CPU that process `pid` used over `seconds` (a state read from /proc
    can say R for a napping process that a loaded machine has not yet given its CPU)."""
    def ticks() -> int:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])          # utime + stime
    before = ticks()
    time.sleep(seconds)
    return (ticks() - before) / os.sysconf("SC_CLK_TCK") / seconds


def test_held_recoded_process_waits_in_hexo_linux_resume(migratable, tmp_path):
    ck, want, state = checkpointed(migratable, tmp_path, to_isa="aarch64")
    back = criu_images.recode(ck, state, migratable, "x86_64")
    (ck / ckpt.STATE_FILE).write_text(json.dumps(back))
    p, pid = held_restore(ck, tmp_path / "record")
    pid = int(pid)
    resume = criu_images.symbol(migratable, "x86_64", "hexo_linux_resume")
    assert _cpu_share(pid, 1.0) < 0.05                  # napping, not spinning
    p.stdin.write("nothing\n")                         # not a go: ended
    p.stdin.flush()
    assert p.stdout.readline() == f"discarded process {pid}\n"
    assert p.wait() == 1 and finish(pid) == -9
    assert len((tmp_path / "run.out").read_text()) < len(want)
    assert criu_images.summary(ck)["thread_pc"] == resume
    p, pid = held_restore(ck, tmp_path / "record2")     # the same checkpoint, this time a go
    p.stdin.write("go\n")
    p.stdin.flush()
    assert p.wait() == 0 and finish(int(pid)) == 0
    assert (tmp_path / "run.out").read_text() == want
    assert (tmp_path / "record2").read_text() == f"running process {pid}\n"


@needs_podman
def test_held_container_is_ended_or_runs_on_go(migratable, oci_tag, tmp_path):
    name = f"hexo-test-held-{os.getpid()}"
    want = parked_container(migratable, oci_tag, name, tmp_path)
    archive = tmp_path / "ck.tar"
    try:
        assert subprocess.run([HEXO, "container", "checkpoint", name, "-o", str(archive)],
                              capture_output=True).returncode == 0
        podman_cli("rm", name)
        p, job = held_restore(archive, tmp_path / "record", "container")
        assert job == name
        p.stdin.close()
        assert p.stdout.readline() == f"discarded container {name}\n" and p.wait() == 1
        assert subprocess.run(["podman", "container", "exists", name]).returncode == 1
        p, _ = held_restore(archive, tmp_path / "record", "container")
        p.stdin.write("go\n")
        p.stdin.flush()
        assert p.stdout.readline() == f"running container {name}\n" and p.wait() == 0
        assert podman_cli("wait", name).strip() == "0"
        assert podman_cli("logs", name) == want
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True)
