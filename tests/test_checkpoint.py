"""Checkpoint/restore at migration points: the job keeps its progress; nothing is lost."""

import json
import os
import subprocess
import time

import pytest

from hexo import abi, checkpoint
from hexo.checkpoint import Checkpoint, CheckpointError

from conftest import HEXO, UHYVE, run
from npb_reference import check

ROUNDS = {"x86_64": "80000", "aarch64": "4000"}     # ~2 s and ~2.4 s of work here


@pytest.fixture(scope="module")
def image(images):
    return images.program("migratable", migratable=True)


@pytest.fixture
def env(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(run_dir))


def _expected(image, isa):
    p = run([UHYVE, "run", image, "--isa", isa, "--", ROUNDS[isa]])
    assert p.returncode == 0, p.stderr
    return p.stdout


def _wait_running(env, name, proc):
    state = os.path.join(env["HEXO_RUN_DIR"], f"{name}.json")
    for _ in range(500):
        if proc.poll() is not None:
            raise AssertionError(f"job ended early: {proc.communicate()}")
        if os.path.exists(state) and json.load(open(state))["state"] == "running":
            return
        time.sleep(0.01)
    raise AssertionError("job did not start")


def _checkpoint(image, isa, env, out, delay):
    proc = subprocess.Popen([UHYVE, "run", image, "--isa", isa, "--name", "job", "--",
                             ROUNDS[isa]],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "job", proc)
    time.sleep(delay)
    ck = run([UHYVE, "checkpoint", "job", "-o", out], env=env)
    src_out, src_err = proc.communicate(timeout=120)
    return proc.returncode, src_out, src_err, ck


@pytest.mark.parametrize("isa,delay", [("x86_64", 0.0), ("x86_64", 0.5), ("x86_64", 1.0),
                                       ("aarch64", 0.2), ("aarch64", 1.5)])
def test_same_isa_checkpoint_restore_continues_the_job(image, env, tmp_path, isa, delay):
    out = tmp_path / "ckpt"
    rc, src_out, src_err, ck = _checkpoint(image, isa, env, out, delay)
    assert ck.returncode == 0, ck.stderr
    assert rc == 0 and "checkpointed to" in src_err
    assert src_out == ""                          # stopped before it could finish
    ps = run([UHYVE, "ps"], env=env)
    assert "checkpointed" in ps.stdout
    restored = run([UHYVE, "restore", out, "--isa", isa], env=env)
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == _expected(image, isa)


def test_checkpoint_contents(image, env, tmp_path):
    out = tmp_path / "ckpt"
    _checkpoint(image, "x86_64", env, out, 0.1)
    ck = Checkpoint(out)
    kinds = [a.kind for a in ck.areas]
    assert kinds == ["data", "heap", "stack"]
    assert ck.meta["isa"] == "x86_64" and ck.meta["context"]["pc"] > 0x800000
    stack = next(a for a in ck.areas if a.kind == "stack")
    assert stack.start + stack.size == 0x800000 and stack.size < 64 * 1024
    inspect = run([HEXO, "inspect", out])
    assert inspect.returncode == 0 and "stack" in inspect.stdout


def _damage(path, offset=10):
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def _forge(d, change):
    """Edit the manifest and sign it again: right checksum, wrong content."""
    meta = json.loads((d / "checkpoint.json").read_text())
    change(meta)
    meta["manifest_crc32"] = checkpoint._manifest_crc(meta)
    (d / "checkpoint.json").write_text(json.dumps(meta))


def _link_to_dev_zero(d):
    (d / "area-1.bin").unlink()
    os.symlink("/dev/zero", d / "area-1.bin")


@pytest.fixture
def saved(image, env, tmp_path):
    out = tmp_path / "ckpt"
    rc, _, _, ck = _checkpoint(image, "x86_64", env, out, 0.1)
    assert rc == 0 and ck.returncode == 0
    return out


@pytest.mark.parametrize("damage,message", [
    (lambda d: _damage(d / "area-0.bin"), "checksum mismatch in the data area"),
    (lambda d: (d / "area-2.bin").write_bytes((d / "area-2.bin").read_bytes()[:-8]),
     "truncated"),
    (lambda d: (d / "area-1.bin").unlink(), "cannot read area"),
    (lambda d: _damage(d / "checkpoint.json", 40), "checkpoint"),
    (lambda d: (d / "checkpoint.json").write_text(
        (d / "checkpoint.json").read_text().replace('"version": [\n  1,', '"version": [\n  9,')),
     "format 9.x is not readable"),
    (lambda d: (d / "area-2.bin").write_bytes((d / "area-2.bin").read_bytes() + b"x"),
     "longer than"),
    (_link_to_dev_zero, "symbolic link"),
    (lambda d: _forge(d, lambda m: m.pop("context")), "'context' is a required property"),
    (lambda d: _forge(d, lambda m: m["context"].update(pc=-1)), "context.pc"),
    (lambda d: _forge(d, lambda m: m["kernel"].update(brk="0x800000")), "kernel.brk"),
    (lambda d: _forge(d, lambda m: m["areas"][0].update(compression="lz4")),
     "areas.0.compression"),
    (lambda d: _forge(d, lambda m: m["areas"][0].update(file="../../etc/passwd")),
     "areas.0.file"),
    (lambda d: _forge(d, lambda m: m.update(abi_version=9 << 16)), "hypercall ABI 9.0"),
    (lambda d: _forge(d, lambda m: m["output"].update(stdout=-5)), "output.stdout"),
    (lambda d: _forge(d, lambda m: m["context"].update(pc=0x41414141)),
     "pc 0x41414141 is outside the x86_64 code"),
])
def test_bad_checkpoints_are_refused_and_left_intact(image, env, saved, damage, message):
    damage(saved)
    before = _contents(saved)
    p = run([UHYVE, "restore", saved], env=env)
    assert p.returncode == 126 and message in p.stderr, p.stderr
    assert _contents(saved) == before


def _contents(d):
    return {p.name: os.readlink(p) if p.is_symlink() else p.read_bytes() for p in d.iterdir()}


def test_wrong_image_and_wrong_isa_then_retry(image, env, saved, images):
    p = run([UHYVE, "restore", saved, "--image", images.get("hello")], env=env)
    assert p.returncode == 126 and "is a checkpoint of image" in p.stderr
    p = run([UHYVE, "restore", saved, "--isa", "aarch64"], env=env)
    assert p.returncode == 126 and "holds x86_64 registers" in p.stderr
    p = run([UHYVE, "restore", saved], env=env)          # the checkpoint is still good
    assert p.returncode == 0 and p.stdout == _expected(image, "x86_64")


NO_POINTS = r"""
#include <stdio.h>
int main(void) {
    double s = 0;
    for (long i = 1; i < 2000000000; i++)
        s += 1.0 / i;
    printf("sum %.6f\n", s);
    return 0;
}
"""


def test_job_without_migration_points_times_out_and_keeps_running(env, tmp_path):
    (tmp_path / "loop.c").write_text(NO_POINTS)
    assert run([HEXO, "build", tmp_path / "loop.c", "-o", tmp_path / "loop.hexo"]).returncode == 0
    proc = subprocess.Popen([UHYVE, "run", tmp_path / "loop.hexo", "--name", "job"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "job", proc)
    ck = run([UHYVE, "checkpoint", "job", "-o", tmp_path / "ck", "--timeout", "0.3"], env=env)
    assert ck.returncode == 1 and "reached no migration point within 0.3 s" in ck.stderr
    assert "keeps running" in ck.stderr
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0 and out == "sum 21.993629\n"
    assert not (tmp_path / "ck").exists()


def test_control_socket_refuses_other_users(image, env):
    proc = subprocess.Popen([UHYVE, "run", image, "--name", "job", "--", "40000"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_running(env, "job", proc)
        sock = os.path.join(env["HEXO_RUN_DIR"], "job.sock")
        code = ("import socket,sys; s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); "
                "s.sendall(b'{\"op\": \"status\"}\\n'); print(s.recv(999))")
        p = subprocess.run(["/usr/bin/python3", "-c", code, sock], capture_output=True,
                           text=True, user=65534)
        assert "PermissionError" in p.stderr or "permission denied" in p.stdout, p.stderr
        assert "x86_64" not in p.stdout
        ok = subprocess.run(["/usr/bin/python3", "-c", code, sock], capture_output=True,
                            text=True)
        assert "x86_64" in ok.stdout                 # the owner is answered
    finally:
        proc.kill()
        proc.wait()


def test_checkpoint_writer_is_atomic(tmp_path):
    def areas():
        yield ("data", 0x900000, b"x" * 100)
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        checkpoint.write(tmp_path / "ck", {}, areas())
    assert list(tmp_path.iterdir()) == []
    state = {"image": {"path": "/x.hexo", "build_id": "0" * 32, "name": "x"}, "isa": "x86_64",
             "target_isa": "x86_64", "mem_size": 256 << 20, "abi_version": abi.ABI_VERSION,
             "context": {"pc": 0x800000, "sp": 0x7ff000}, "kernel": {"brk": 0x1000000,
                                                                     "monotonic_ns": 1},
             "files": []}
    ck = checkpoint.write(tmp_path / "ck", state, [("heap", 0x1000000, b"y" * 5000)],
                          compress=True)
    assert ck.read(ck.areas[0]) == b"y" * 5000 and ck.stored_bytes < 5000
    with pytest.raises(CheckpointError, match="exists and is not an empty directory"):
        checkpoint.write(tmp_path / "ck", {}, [])


@pytest.mark.parametrize("kernel,klass,isa", [
    ("cg", "W", "x86_64"), ("ep", "S", "x86_64"), ("is", "A", "x86_64"), ("cg", "S", "aarch64"),
])
def test_npb_checkpointed_mid_run_still_verifies(images, env, tmp_path, kernel, klass, isa):
    """Checkpointed at the middle one of the migration points a whole run reaches (counted
    by the guest: a point, not a delay, which a short job on a loaded machine outran), the
    job stops there and its restored run ends with NPB's verification."""
    image = images.get(f"npb-{kernel}", klass)
    counted = run([UHYVE, "time", image, "--isa", isa])
    assert counted.returncode == 0, counted.stderr
    points = json.loads(counted.stdout)["points"]
    assert points >= 2, counted.stdout
    p = run([UHYVE, "run", image, "--isa", isa, "--checkpoint-at", points // 2,
             "--checkpoint-dir", tmp_path / "ck"], env=env)
    assert p.returncode == 0, p.stderr
    assert "Verification" not in p.stdout and "checkpointed to" in p.stderr
    p = run([UHYVE, "restore", tmp_path / "ck"], env=env)
    assert p.returncode == 0, p.stderr
    check(kernel, klass, p.stdout)


def test_a_job_that_ends_answers_the_checkpoint_it_was_asked_for(images, env, tmp_path):
    """The job ends while a checkpoint request waits for its next migration point: the
    requester is told why at once (not after its timeout, nor by a cut connection)."""
    image = images.program("chatty", migratable=True)
    proc = subprocess.Popen([UHYVE, "run", image, "--isa", "x86_64", "--name", "job", "--",
                             "read", "0"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "job", proc)
    ck = subprocess.Popen([UHYVE, "checkpoint", "job", "-o", tmp_path / "ck", "--timeout",
                           "600"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    state = os.path.join(env["HEXO_RUN_DIR"], "job.json")
    while json.load(open(state))["state"] != "checkpointing":    # the request is armed
        assert ck.poll() is None, ck.communicate()
        time.sleep(0.01)
    out, _ = proc.communicate("a line\n", timeout=120)          # no point on its way out
    _, err = ck.communicate(timeout=120)
    assert proc.returncode == 0 and out == "1 a line\ndone\n"
    assert ck.returncode == 1 and "the job has ended (exited, status 0)" in err, err
    assert not (tmp_path / "ck").exists()
