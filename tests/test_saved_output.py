"""Output exactly once across a lost machine: a job killed after a live checkpoint, its
output cut at the checkpoint's counts (saved.py) and the job resumed from the checkpoint,
reads as the unbroken job's output to a client that had already been shown more of the dead
run than the checkpoint kept."""

import json
import shutil
import subprocess
import time

from conftest import UHYVE, run
from test_checkpoint import _wait_running

from hexo_sched import relay, saved
from hexo_sched.jobstore import SavedCheckpoint, Segment

ARGS = ("pairs", "60", "60000000")         # ~5 s: a numbered line to each stream per point


def _stream(parts, stream, offset=0):
    data, _ = relay.read(parts, stream, offset)
    return data


def test_a_resumed_job_shows_the_dead_runs_output_once(images, env, tmp_path):
    image = images.program("chatty", migratable=True)
    clean = subprocess.run([str(UHYVE), "run", image, "--", *ARGS], capture_output=True)
    assert clean.returncode == 0
    expected = {"out": clean.stdout, "err": relay.guest_stderr(clean.stderr, True)}

    dead = {st: tmp_path / f"seg1.{st}" for st in relay.STREAMS}
    with open(dead["out"], "wb") as out, open(dead["err"], "wb") as err:
        proc = subprocess.Popen([UHYVE, "run", image, "--name", "job", "--", *ARGS], env=env,
                                stdout=out, stderr=err)
    _wait_running(env, "job", proc)
    keep = tmp_path / "saved-1"
    keep.mkdir()
    ck = run([UHYVE, "checkpoint", "job", "-o", keep / "checkpoint", "--keep-running"],
             env=env)
    assert ck.returncode == 0, ck.stderr
    for st in relay.STREAMS:                   # as the daemon copies them after a checkpoint
        shutil.copy(dead[st], keep / f"seg.{st}")
    counts = json.loads((keep / "checkpoint" / "checkpoint.json").read_text())["output"]
    deadline = time.time() + 120
    while dead["out"].stat().st_size <= counts["stdout"] + 100 and time.time() < deadline:
        time.sleep(0.05)                       # the dead run goes on printing for a while
    live = [relay.Part(lambda fn: fn(relay.LocalFiles()), str(dead[st]), False)
            for st in relay.STREAMS]
    shown = {st: _stream([part], st) for st, part in zip(relay.STREAMS, live)}
    proc.kill()
    proc.wait()
    assert len(shown["out"]) > counts["stdout"] and len(shown["err"]) > counts["stderr"]

    seg = Segment(1, "board0", "run", 0.0)
    cut = saved.cut_output(SavedCheckpoint(str(keep / "checkpoint"), 1, 0.0, counts), seg,
                           tmp_path / "kept")
    assert cut == {"stdout": 0, "stderr": 0}
    resumed = {st: tmp_path / f"seg2.{st}" for st in relay.STREAMS}
    with open(resumed["out"], "wb") as out, open(resumed["err"], "wb") as err:
        r = subprocess.run([UHYVE, "restore", keep / "checkpoint"], stdout=out, stderr=err)
    assert r.returncode == 0
    for st in relay.STREAMS:
        parts = [relay.local_part(str(tmp_path / "kept" / f"seg1.{st}")),
                 relay.local_part(str(resumed[st]))]
        assert shown[st] + _stream(parts, st, len(shown[st])) == expected[st], st
        assert _stream(parts, st) == expected[st], st
