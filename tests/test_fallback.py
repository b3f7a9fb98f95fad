"""Nothing is lost: a cross-ISA checkpoint keeps the untransformed state beside the transformed
one, and a target that dies before its first migration point resumes from that copy."""

import json
import os

import pytest

from hexo import checkpoint
from hexo.checkpoint import Checkpoint

from conftest import HEXO, UHYVE, run

ROUNDS = "300"
OTHER = {"x86_64": "aarch64", "aarch64": "x86_64"}


@pytest.fixture(scope="module")
def image(images):
    return images.program("migratable", migratable=True)


@pytest.fixture(scope="module")
def reference(image):
    p = run([UHYVE, "run", image, "--", ROUNDS])
    assert p.returncode == 0, p.stderr
    return p.stdout


@pytest.fixture
def env(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


def _checkpoint(image, env, ck, src, point=40):
    p = run([UHYVE, "run", image, "--isa", src, "--checkpoint-at", point, "--checkpoint-dir", ck,
             "--to", OTHER[src], "--", ROUNDS], env=env)
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    return p.stdout


def _break_resume_address(ck) -> None:
    """What a transform defect does: a checkpoint that verifies but resumes nowhere (the
    issue's 'data abort at pc 0'): the transformed pc points past the end of guest RAM, which
    the restore refuses before the job starts."""
    path = ck / checkpoint.MANIFEST
    meta = json.loads(path.read_text())
    meta["context"]["pc"] = meta["mem_size"] + 0x10000
    meta["manifest_crc32"] = checkpoint._manifest_crc(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("src", ["x86_64", "aarch64"])
def test_cross_isa_checkpoint_keeps_the_source_state_and_both_resume(image, reference, env,
                                                                     tmp_path, src):
    ck = tmp_path / "ck"
    before = _checkpoint(image, env, ck, src)
    c = Checkpoint(ck)
    assert c.meta["version"] == [1, 1] and c.meta["isa"] == OTHER[src]
    assert c.source_isa == src and c.source_copy().meta["isa"] == src
    stacks = [a for a in c.source_copy().areas if a.kind == "stack"]
    assert len(stacks) == 1 and stacks[0].file.startswith("source-")
    shown = run([HEXO, "inspect", ck])
    assert shown.returncode == 0 and f"kept       the {src} state it was transformed from" \
        in shown.stdout, shown.stdout + shown.stderr
    transformed = run([UHYVE, "restore", ck, "--isa", OTHER[src]], env=env, timeout=300)
    kept = run([UHYVE, "restore", ck, "--source-copy"], env=env, timeout=300)
    assert transformed.returncode == 0, transformed.stderr
    assert kept.returncode == 0, kept.stderr
    assert before + transformed.stdout == reference
    assert before + kept.stdout == reference


@pytest.mark.parametrize("src", ["x86_64", "aarch64"])
def test_target_dying_before_its_first_point_resumes_from_the_kept_copy(image, reference, env,
                                                                       tmp_path, src):
    ck = tmp_path / "ck"
    before = _checkpoint(image, env, ck, src)
    _break_resume_address(ck)
    dead = run([UHYVE, "restore", ck, "--isa", OTHER[src]], env=env, timeout=300)
    assert dead.returncode == 126 and dead.stdout == ""
    assert f"is outside the {OTHER[src]} code" in dead.stderr
    assert "Traceback" not in dead.stderr
    line = [ln for ln in dead.stderr.splitlines() if "before its first migration point" in ln]
    assert len(line) == 1 and f"the {src} state it was transformed from is kept in {ck}" \
        in line[0] and f"uhyve-ctl restore --source-copy {ck}" in line[0], dead.stderr
    saved = run([UHYVE, "restore", ck, "--isa", OTHER[src], "--fallback", "--name", "job"],
                env=env, timeout=300)
    assert saved.returncode == 0, saved.stderr
    assert f"resuming from the kept {src} copy" in saved.stderr
    assert before + saved.stdout == reference          # printed once, nothing lost
    state = json.loads((tmp_path / "run" / "job.json").read_text())
    assert state["isa"] == src and state["state"] == "exited" and state["confirmed"]


def test_a_sound_restore_confirms_and_fallback_changes_nothing(image, reference, env,
                                                               tmp_path):
    ck = tmp_path / "ck"
    before = _checkpoint(image, env, ck, "aarch64", point=10)
    p = run([UHYVE, "restore", ck, "--isa", "x86_64", "--fallback", "--name", "job"], env=env,
            timeout=300)
    assert p.returncode == 0 and "resuming" not in p.stderr, p.stderr
    assert before + p.stdout == reference
    state = json.loads((tmp_path / "run" / "job.json").read_text())
    assert state["isa"] == "x86_64" and state["confirmed"]


def test_fallback_refused_for_a_checkpoint_that_keeps_no_copy(image, env, tmp_path):
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", image, "--checkpoint-at", 5, "--checkpoint-dir", ck, "--", ROUNDS],
            env=env)
    assert p.returncode == 0, p.stderr
    assert Checkpoint(ck).meta["version"] == [1, 0] and Checkpoint(ck).source_isa is None
    for flag in ("--fallback", "--source-copy"):
        r = run([UHYVE, "restore", ck, flag], env=env)
        assert r.returncode == 126 and "keeps no untransformed copy" in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1


def test_offline_transform_keeps_the_source_state(image, reference, env, tmp_path):
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", image, "--checkpoint-at", 7, "--checkpoint-dir", ck, "--", ROUNDS],
            env=env)
    assert p.returncode == 0, p.stderr
    t = run([HEXO, "transform", ck, "--to", "aarch64", "-o", tmp_path / "ck-a"])
    assert t.returncode == 0, t.stderr
    out = Checkpoint(tmp_path / "ck-a")
    assert out.source_isa == "x86_64"
    assert out.source_copy().meta["context"] == Checkpoint(ck).meta["context"]
    kept = run([UHYVE, "restore", tmp_path / "ck-a", "--source-copy"], env=env, timeout=300)
    assert kept.returncode == 0 and p.stdout + kept.stdout == reference, kept.stderr


def test_an_internal_error_is_reported_as_one_sentence(image, monkeypatch, tmp_path):
    """A defect in the transform (here: the OverflowError the issue saw) reaches the user as
    a sentence naming the stage, never as Python's text, and the job runs on."""
    from hexo import retarget
    from uhyve_ctl.backends import Exited
    from uhyve_ctl.migration import Request
    from uhyve_ctl.vm import VirtualMachine

    def broken(*a):
        raise OverflowError("cannot fit 'int' into an index-sized integer")
    monkeypatch.setattr(retarget, "retarget", broken)
    out = open(tmp_path / "out", "w")
    from hexo.image import Image
    with VirtualMachine(Image(str(image)), "x86_64", argv=[ROUNDS],
                        stdio=(0, out.fileno(), 2)) as vm:
        vm.migrator.arm(Request(str(tmp_path / "ck"), "aarch64", False, skip=3))
        stop = vm.run(120)
    out.close()
    assert isinstance(stop, Exited) and stop.status == 0          # it kept running
    why = vm.migrator.outcome()
    assert why == ("the transform for aarch64 failed on an internal error (a hexo defect; "
                   "HEXO_DEBUG=1 shows where)")
    assert not (tmp_path / "ck").exists()
