"""The classic CPL0 x86-64 entry (`--x86-entry kernel`, what VT-x servers use), forced on a
small C program with doubles. The library OS drops to CPL3 in its first instructions, so the
job runs natively even where KVM emulates CPL0 guests (PVM hosts, whose emulator cannot run
`ldmxcsr`); a checkpoint taken after that entry restores on either ISA."""

import os

import pytest

from hexo.image import Image
from uhyve_ctl.backends import Exited
from uhyve_ctl.vm import VirtualMachine

from conftest import UHYVE, needs_kvm, run

pytestmark = needs_kvm

ROUNDS = "300"          # two migration points per round


@pytest.fixture(scope="module")
def image(images):
    return images.program("migratable", migratable=True)


@pytest.fixture(scope="module")
def reference(image):
    p = run([UHYVE, "run", image, "--isa", "x86_64", "--x86-entry", "user", "--", ROUNDS])
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_kernel_entry_runs_the_job_natively(image, reference, tmp_path):
    """Same output as the CPL3 entry, and KVM emulated no more than the few boot instructions
    before sysret (a PVM host emulating the whole job would count millions)."""
    p = run([UHYVE, "run", image, "--isa", "x86_64", "--x86-entry", "kernel", "--", ROUNDS])
    assert p.returncode == 0, p.stderr
    assert p.stdout == reference
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    vm = VirtualMachine(Image(image), "x86_64", backend="kvm", x86_entry="kernel",
                        argv=[ROUNDS], stdio=(0, out, out))
    try:
        assert vm.run(60) == Exited(0)
        assert vm.backend.mode == "kernel"
        stats = vm.backend.vcpu.stats().read("exits", "insn_emulation")
    finally:
        vm.close()
        os.close(out)
    assert (tmp_path / "out").read_text() == reference
    assert stats["insn_emulation"] <= 2 * stats["exits"] + 32, stats


@pytest.mark.parametrize("legs", [
    [("x86_64", "kernel", 50), ("x86_64", "kernel", None)],
    [("x86_64", "kernel", 50), ("aarch64", None, None)],
    [("aarch64", None, 120), ("x86_64", "kernel", None)],
], ids=["same-isa", "to-aarch64", "from-aarch64"])
def test_checkpoint_after_a_kernel_entry_resumes(image, reference, env, tmp_path, legs):
    """Checkpointed at a chosen migration point, restored (entered at CPL0 again where the
    leg says so): the job's whole output equals the uninterrupted run's."""
    out, ck = "", None
    for n, (isa, entry, point) in enumerate(legs):
        cmd = ([UHYVE, "restore", ck] if ck else [UHYVE, "run", image]) + ["--isa", isa]
        cmd += ["--x86-entry", entry] if entry else []
        if point is not None:
            ck = tmp_path / f"ck{n}"
            cmd += ["--checkpoint-at", str(point), "--checkpoint-dir", ck,
                    "--to", legs[n + 1][0]]
        p = run(cmd + ([] if n else ["--", ROUNDS]), env=env, timeout=300)
        assert p.returncode == 0, f"leg {n}: {p.stderr}"
        assert point is None or f"checkpointed to {ck}" in p.stderr, p.stderr
        out += p.stdout
    assert out == reference
