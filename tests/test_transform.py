"""Cross-ISA migration: checkpoint on one ISA, transform the stack, resume on the other."""

import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hexo.transform import TransformError, transform
from hexo.toolchain import stackmaps

from conftest import HEXO, UHYVE, run
from test_checkpoint import _wait_running



@pytest.fixture(scope="module")
def image(images):
    return images.program("migratable", migratable=True)


@pytest.fixture
def env(tmp_path):
    (tmp_path / "run").mkdir(mode=0o700)
    return dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))


def _reference(image, rounds):
    p = run([UHYVE, "run", image, "--", rounds])
    assert p.returncode == 0, p.stderr
    return p.stdout


def _migrate(image, env, out, src, dst, rounds, delay, transform_offline=False):
    proc = subprocess.Popen([UHYVE, "run", image, "--isa", src, "--name", "job", "--", rounds],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "job", proc)
    time.sleep(delay)
    cmd = [UHYVE, "checkpoint", "job", "-o", out]
    ck = run(cmd if transform_offline else cmd + ["--to", dst], env=env)
    src_out, src_err = proc.communicate(timeout=120)
    assert ck.returncode == 0, ck.stderr + src_out
    assert src_out == "" and "checkpointed to" in src_err
    if transform_offline:
        t = run([HEXO, "transform", out, "--to", dst, "-o", f"{out}-{dst}"])
        assert t.returncode == 0, t.stderr
        out = f"{out}-{dst}"
    restored = run([UHYVE, "restore", out, "--isa", dst], env=env, timeout=300)
    assert restored.returncode == 0, restored.stderr
    return restored.stdout


@pytest.mark.parametrize("delay,offline", [(0.05, False), (0.3, False), (0.15, True)])
def test_x86_64_to_aarch64_keeps_progress(image, env, tmp_path, delay, offline):
    rounds = "20000"
    out = _migrate(image, env, tmp_path / "ck", "x86_64", "aarch64", rounds, delay, offline)
    assert out == _reference(image, rounds)


def test_aarch64_to_x86_64_keeps_progress(image, env, tmp_path):
    rounds = "4000"
    out = _migrate(image, env, tmp_path / "ck", "aarch64", "x86_64", rounds, 1.0)
    assert out == _reference(image, rounds)


def _chain(image, legs, env, tmp, args=(), run_options=()) -> str:
    """Run `image` on legs[0][0], checkpoint it at migration point legs[0][1] for the next
    leg's ISA, restore it there, and so on; the last leg runs to the end. Returns everything
    the job printed, across all legs."""
    out, ck = "", None
    for n, (isa, point) in enumerate(legs):
        cmd = ([UHYVE, "restore", ck, "--isa", isa] if ck
               else [UHYVE, "run", image, "--isa", isa, *run_options])
        if point is not None:
            ck = tmp / f"ck{n}"
            cmd += ["--checkpoint-at", point, "--checkpoint-dir", ck, "--to", legs[n + 1][0]]
        p = run(cmd + (["--", *args] if args and n == 0 else []), env=env, timeout=300)
        assert p.returncode == 0, f"leg {n} on {isa}: {p.stderr}"
        assert point is None or f"checkpointed to {ck}" in p.stderr, p.stderr
        out += p.stdout
    return out


# Migration points: EP.S 256 (one per batch), IS.S 10 (one per iteration), CG.S about 400
# (one per iteration and one per conjugate-gradient step). Early, middle and late ones.
@pytest.mark.parametrize("kernel,legs", [
    ("is", [("x86_64", 1), ("aarch64", None)]),
    ("is", [("x86_64", 5), ("aarch64", None)]),
    ("is", [("x86_64", 10), ("aarch64", None)]),
    ("is", [("aarch64", 1), ("x86_64", None)]),
    ("is", [("aarch64", 6), ("x86_64", None)]),
    ("is", [("aarch64", 10), ("x86_64", None)]),
    ("cg", [("x86_64", 3), ("aarch64", None)]),
    ("cg", [("x86_64", 200), ("aarch64", None)]),
    ("cg", [("aarch64", 30), ("x86_64", None)]),
    ("cg", [("aarch64", 380), ("x86_64", None)]),
    ("ep", [("x86_64", 230), ("aarch64", None)]),
    ("ep", [("aarch64", 6), ("x86_64", None)]),
    ("cg", [("x86_64", 100), ("aarch64", 100), ("x86_64", 100), ("aarch64", 60),
            ("x86_64", None)]),
    ("is", [("x86_64", 2), ("aarch64", 2), ("x86_64", 2), ("aarch64", 2), ("x86_64", None)]),
    ("cg", [("x86_64", 150), ("x86_64", None)]),
    ("is", [("aarch64", 4), ("aarch64", None)]),
], ids=lambda v: "-".join(f"{i}@{p}" if p else i for i, p in v) if isinstance(v, list) else v)
def test_npb_migrated_at_chosen_points_still_verifies(images, env, tmp_path, kernel, legs):
    from npb_reference import check
    out = _chain(images.get(f"npb-{kernel}", "S"), legs, env, tmp_path)
    check(kernel, "S", out)


@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
@given(point=st.integers(min_value=1, max_value=2 * 1500),
       src=st.sampled_from(["x86_64", "aarch64"]))
def test_migration_at_random_points_in_either_direction(image, tmp_path_factory, point, src):
    """Wherever the job is stopped, the continuation on the other ISA prints the same result
    as a run that never moved."""
    tmp = tmp_path_factory.mktemp("chain")
    (tmp / "run").mkdir(mode=0o700)
    env = dict(os.environ, HEXO_RUN_DIR=str(tmp / "run"))
    dst = "aarch64" if src == "x86_64" else "x86_64"
    out = _chain(image, [(src, point), (dst, None)], env, tmp, ["1500"])
    assert out == _reference(image, "1500")


def test_transform_refused_for_an_image_without_metadata(images, env, tmp_path):
    """The job is not lost: the checkpoint fails and the job runs to completion."""
    proc = subprocess.Popen([UHYVE, "run", images.plain("npb-cg", "W"), "--name", "job"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "job", proc)
    ck = run([UHYVE, "checkpoint", "job", "-o", tmp_path / "ck", "--to", "aarch64"], env=env)
    out, _ = proc.communicate(timeout=120)
    assert ck.returncode == 1 and "built with --no-migratable" in ck.stderr
    assert proc.returncode == 0 and "SUCCESSFUL" in out
    assert not (tmp_path / "ck").exists()


def test_unknown_return_address_is_a_clear_error(image):
    from hexo.image import Image
    img = Image(image)
    src = stackmaps.load(img.payload("meta.x86_64"))
    dst = stackmaps.load(img.payload("meta.aarch64"))
    with pytest.raises(TransformError, match="0x123456 is not a recorded call site"):
        transform(src, dst, {"pc": 0x123456, "sp": 0x7fff00}, 0x7fff00, bytes(256))


@pytest.mark.parametrize("kernel,klass", [("is", "W"), ("cg", "W")])
def test_npb_checkpointed_by_name_resumes_on_aarch64(images, env, tmp_path, kernel, klass):
    """The operator's path: a running named VM, `uhyve-ctl checkpoint NAME --to aarch64`.
    The x86-64 source runs on the emulated CPU: on KVM these jobs end in 0.11-0.16 s, which
    a checkpoint command starting on a loaded machine could miss (the KVM source's named
    checkpoint is the EP round trip's below)."""
    from npb_reference import check
    image = images.get(f"npb-{kernel}", klass)
    proc = subprocess.Popen([UHYVE, "run", image, "--name", "job", "--isa", "x86_64",
                             "--backend", "emu"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "job", proc)
    ck = run([UHYVE, "checkpoint", "job", "-o", tmp_path / "ck", "--to", "aarch64"], env=env)
    out, err = proc.communicate(timeout=300)
    assert ck.returncode == 0, ck.stderr
    assert "Verification" not in out
    p = run([UHYVE, "restore", tmp_path / "ck"], env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    check(kernel, klass, out + p.stdout)


def test_npb_ep_round_trip_x86_64_aarch64_x86_64(images, env, tmp_path):
    from npb_reference import check
    image = images.get("npb-ep", "S")
    first = subprocess.Popen([UHYVE, "run", image, "--name", "a"], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "a", first)
    time.sleep(0.3)
    ck = run([UHYVE, "checkpoint", "a", "-o", tmp_path / "ck1", "--to", "aarch64"], env=env)
    assert ck.returncode == 0, ck.stderr
    first.communicate(timeout=120)
    second = subprocess.Popen([UHYVE, "restore", tmp_path / "ck1", "--name", "b"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_running(env, "b", second)
    time.sleep(1.5)
    ck = run([UHYVE, "checkpoint", "b", "-o", tmp_path / "ck2", "--to", "x86_64"], env=env)
    out, err = second.communicate(timeout=300)
    assert ck.returncode == 0, ck.stderr + err
    assert "Verification" not in out
    p = run([UHYVE, "restore", tmp_path / "ck2"], env=env)
    assert p.returncode == 0, p.stderr
    check("ep", "S", p.stdout)


def test_rounding_mode_and_flush_to_zero_carry_across_isas():
    from hexo.transform import fp_control
    x86_default, arm_default = (0x37F << 32) | 0x1F80, 0
    assert fp_control("x86_64", x86_default, "aarch64") == arm_default
    assert fp_control("aarch64", arm_default, "x86_64") == x86_default
    # MXCSR.RC: nearest, down, up, toward zero; FPCR.RMode: nearest, up, down, toward zero.
    for rc, rmode in ((0, 0), (1, 2), (2, 1), (3, 3)):
        for ftz in (0, 1):
            x86 = x86_default | rc << 13 | ftz << 15
            arm = fp_control("x86_64", x86, "aarch64")
            assert (arm >> 22) & 3 == rmode and (arm >> 24) & 1 == ftz
            back = fp_control("aarch64", arm, "x86_64")
            assert back == x86 | rc << 42, hex(back)     # the x87 control word follows MXCSR


def test_a_live_migration_reads_no_metadata_once_the_guest_has_stopped(image, tmp_path,
                                                                        monkeypatch):
    """Both ISAs' metadata is loaded while the guest still runs; after the stop only the
    transform itself works (and the checkpoint it makes resumes on the other ISA)."""
    from hexo.image import Image
    from uhyve_ctl.backends import Checkpointed
    from uhyve_ctl.migration import Request
    from uhyve_ctl.vm import VirtualMachine
    real, loads = stackmaps.load, []
    null = os.open(os.devnull, os.O_WRONLY)
    with VirtualMachine(Image(image), "x86_64", argv=["300"], stdio=(0, null, null)) as vm:
        monkeypatch.setattr(stackmaps, "load", lambda blob: loads.append(
            "stopped" in vm.migrator.timings) or real(blob))
        vm.migrator.arm(Request(str(tmp_path / "ck"), "aarch64", False, skip=40))
        stop = vm.run()
        xform = vm.migrator.timings["transform_s"]
    os.close(null)
    assert isinstance(stop, Checkpointed), stop
    assert loads == [False, False] and xform > 0
    restored = run([UHYVE, "restore", tmp_path / "ck"])
    assert restored.returncode == 0, restored.stderr
    assert restored.stdout == _reference(image, "300")
