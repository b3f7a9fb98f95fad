"""Built-in workloads, built by `hexo build`, verified on KVM, on the emulated CPUs and natively."""

import pytest

from conftest import UHYVE, needs_kvm, run
from npb_reference import check

KERNELS = ["ep", "is", "cg"]


@needs_kvm
@pytest.mark.parametrize("klass", ["S", "W"])
@pytest.mark.parametrize("kernel", KERNELS)
def test_npb_on_kvm_x86_64(images, kernel, klass):
    p = run([UHYVE, "run", images.get(f"npb-{kernel}", klass), "--isa", "x86_64",
             "--backend", "kvm"])
    assert p.returncode == 0, p.stderr
    check(kernel, klass, p.stdout)


# On the emulated aarch64 CPU: tests/test_corpus.py (class S, verified and equal to native).


@pytest.mark.parametrize("kernel", ["is", "cg"])
def test_npb_on_emulated_x86_64(images, kernel):
    p = run([UHYVE, "run", images.get(f"npb-{kernel}", "S"), "--isa", "x86_64",
             "--backend", "emu"])
    assert p.returncode == 0, p.stderr
    check(kernel, "S", p.stdout)


@pytest.mark.parametrize("kernel", KERNELS)
def test_npb_native(images, kernel):
    p = run([images.native(f"npb-{kernel}", "S")])
    assert p.returncode == 0, p.stderr
    check(kernel, "S", p.stdout)


LIBC = ["libc-stdio", "libc-stdlib", "libc-string", "libc-math", "libc-posix"]


def _native_output(images, workload, args=()):
    p = run([images.native(workload), *args])
    assert p.returncode == 0, p.stderr
    return p.stdout


@needs_kvm
@pytest.mark.parametrize("workload", LIBC)
def test_libc_programs_match_native_on_kvm(images, workload):
    p = run([UHYVE, "run", images.get(workload), "--isa", "x86_64", "--backend", "kvm"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == _native_output(images, workload)


@pytest.mark.slow
@pytest.mark.parametrize("workload", LIBC)
def test_libc_programs_match_native_on_emulated_aarch64(images, workload):
    p = run([UHYVE, "run", images.get(workload), "--isa", "aarch64"])
    assert p.returncode == 0, p.stderr
    assert p.stdout == _native_output(images, workload)


@pytest.mark.parametrize("isa", ["x86_64", "aarch64"])
def test_file_io_through_a_mounted_directory(images, tmp_path, isa):
    data = tmp_path / "data"
    data.mkdir()
    native_dir = tmp_path / "native"
    native_dir.mkdir()
    p = run([UHYVE, "run", images.get("libc-fileio"), "--isa", isa,
             "--mount", f"{data}:/data", "--", "/data"])
    assert p.returncode == 0, p.stdout + p.stderr
    assert p.stdout.replace("/data", "DIR") == \
        _native_output(images, "libc-fileio", [native_dir]).replace(str(native_dir), "DIR")
    assert list(data.iterdir()) == []       # the program removed its file


def test_hello_arguments_reach_the_guest(images):
    p = run([UHYVE, "run", images.get("hello"), "--", "one", "two words"])
    assert p.returncode == 0, p.stderr
    native = run([images.native("hello"), "one", "two words"]).stdout

    def without_argv0(text):
        return [line for line in text.splitlines() if not line.startswith("argv[0]")]
    assert "argc = 3" in p.stdout
    assert without_argv0(p.stdout) == without_argv0(native)
