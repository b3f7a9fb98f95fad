"""Live checkpoints (`uhyve-ctl checkpoint --keep-running`): the job goes on from its migration
point and finishes as if nothing happened, and every checkpoint taken on the way resumes, on
either ISA, to the same final output; the checkpoint's output counts say which output the
resumed job produces again."""

import json
import subprocess
import time

import pytest

from conftest import UHYVE, run
from npb_reference import check, untimed
from test_checkpoint import _wait_running

WORK = {"x86_64": "60000000", "aarch64": "300000"}    # ~5 s of chatty pairs 60 on each


def _start(image, env, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    proc = subprocess.Popen([UHYVE, "run", image, "--name", "job", *args], env=env,
                            stdout=stdout, stderr=stderr)
    _wait_running(env, "job", proc)
    return proc


def _live_checkpoints(proc, env, tmp_path, count, *args):
    """`count` live checkpoints one after another; each must be taken while the job runs."""
    taken = []
    for i in range(count):
        out = tmp_path / f"ck{i}"
        ck = run([UHYVE, "checkpoint", "job", "-o", out, "--keep-running", "--timeout", "120",
                  *args], env=env)
        assert ck.returncode == 0, ck.stderr
        assert "the job goes on" in ck.stdout
        assert proc.poll() is None, "the job stopped at a live checkpoint"
        taken.append(out)
    return taken


def _counts(ck) -> dict:
    return json.loads((ck / "checkpoint.json").read_text())["output"]


def test_npb_goes_on_after_live_checkpoints_and_each_resumes_on_both_isas(images, env,
                                                                          tmp_path):
    image = images.get("npb-cg", "S")
    proc = _start(image, env, "--isa", "aarch64")
    taken = _live_checkpoints(proc, env, tmp_path, 3, "--to", "x86_64")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    full = out.decode()
    check("cg", "S", full)
    for ck in taken:
        done = _counts(ck)["stdout"]
        for how in (["--isa", "x86_64"], ["--source-copy"]):
            r = run([UHYVE, "restore", ck, *how], env=env)
            assert r.returncode == 0, r.stderr
            assert untimed(full[:done] + r.stdout) == untimed(full), (ck, how)
            check("cg", "S", full[:done] + r.stdout)


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_output_counts_mark_what_a_resumed_job_prints_again(images, env, tmp_path, isa):
    """chatty flushes a numbered stdout line and writes a stderr line before each migration
    point: the counts are past the start, and a restore prints exactly the rest of both."""
    image = images.program("chatty", migratable=True)
    files = tmp_path / "out", tmp_path / "err"
    with open(files[0], "wb") as o, open(files[1], "wb") as e:
        proc = _start(image, env, "--isa", isa, "--", "pairs", "60", WORK[isa], stdout=o,
                      stderr=e)
    while files[0].stat().st_size == 0 and proc.poll() is None:
        time.sleep(0.01)                       # the first line is out before the first point
    taken = _live_checkpoints(proc, env, tmp_path, 2)
    assert proc.wait(600) == 0
    out, err = (f.read_bytes() for f in files)
    stderr = b"".join(line for line in err.splitlines(True) if not line.startswith(b"uhyve-ctl"))
    assert out.count(b"\n") == 61 and stderr.count(b"\n") == 60     # and "done"
    counts = [_counts(ck) for ck in taken]
    assert 0 < counts[0]["stdout"] <= counts[1]["stdout"] < len(out)
    for ck, c in zip(taken, counts):
        r = subprocess.run([str(UHYVE), "restore", str(ck)], env=env, capture_output=True)
        assert r.returncode == 0, r.stderr
        assert out[:c["stdout"]] + r.stdout == out
        resumed_err = b"".join(line for line in r.stderr.splitlines(True)
                               if not line.startswith(b"uhyve-ctl"))
        assert stderr[:c["stderr"]] + resumed_err == stderr

