"""The whole C language in hexo images: variadic definitions, va_copy and va_list parameters,
setjmp/longjmp, long double, _Complex, atexit and exit codes. Each program prints, and exits
with, what its native clang build does on the same ISA (x86-64 natively, aarch64 under
qemu-user), plain and migratable; and migrated before, inside (migration then waits for the
first point outside the per-ISA frame) and after the feature's use, it prints what the run
that never moved prints."""

from __future__ import annotations

import os

import pytest

from hexo.image import Image

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run
from test_transform import _chain

PROGRAMS = ROOT / "tests" / "programs"
ISAS = [pytest.param("x86_64", marks=needs_kvm), "aarch64"]

# program: (arguments compared with the native build, arguments of migrated runs,
#           migration points named by what runs there)
CASES = {
    "c_varargs": (["3"], ["3"], {"before": 1, "inside": 2, "after": 3, "inside-late": 8}),
    "c_setjmp": (["4"], ["4"], {"before": 1, "inside": 2, "after": 3, "inside-late": 6}),
    "c_long_double": (["3", "full"], ["2"], {"before": 1, "inside": 3, "after": 4,
                                             "inside-late": 7}),
    "c_complex": (["4"], ["4"], {"before": 1, "inside": 2, "after": 3, "late": 8}),
    "c_exit": (["7", "exit"], ["255", "exit"], {"before": 1, "late": 2}),
}


def _native(src, isa, out, args):
    """What the native clang build of `src` prints and returns on `isa`."""
    stub = out.parent / "stub.c"
    stub.write_text("void hexo_check_migrate(void) {}\n")
    p = run([HEXO, "build", src, stub, "--native", "--native-isa", isa, "-o", out])
    assert p.returncode == 0, p.stderr
    runner = [] if isa == os.uname().machine else [f"qemu-{isa}-static"]
    return run([*runner, out, *args])


@pytest.fixture(scope="module", params=sorted(CASES))
def program(request, tmp_path_factory):
    name = request.param
    d = tmp_path_factory.mktemp(name)
    images = {}
    for kind, flags in (("plain", ["--no-migratable"]), ("migratable", [])):
        images[kind] = d / f"{name}-{kind}.hexo"
        p = run([HEXO, "build", PROGRAMS / f"{name}.c", *flags, "-o", images[kind]])
        assert p.returncode == 0, p.stderr
    return name, images, d


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", ["plain", "migratable"])
def test_prints_and_exits_as_the_native_build(program, kind, isa, tmp_path):
    name, images, _ = program
    args = CASES[name][0]
    native = _native(PROGRAMS / f"{name}.c", isa, tmp_path / "native", args)
    assert native.stdout
    p = run([UHYVE, "run", images[kind], "--isa", isa, "--", *args], timeout=300)
    assert (p.stdout, p.returncode) == (native.stdout, native.returncode), p.stderr


@needs_kvm
@pytest.mark.kvm
@pytest.mark.parametrize("src,dst", [("x86_64", "aarch64"), ("aarch64", "x86_64")])
@pytest.mark.parametrize("where", ["before", "inside", "after", "inside-late", "late"])
def test_migrated_run_prints_what_the_unmoved_run_prints(program, src, dst, where, tmp_path):
    name, images, _ = program
    points = CASES[name][2]
    if where not in points:
        pytest.skip(f"{name} has no '{where}' point")
    args = CASES[name][1]
    unmoved = run([UHYVE, "run", images["migratable"], "--isa", dst, "--", *args])
    (tmp_path / "run").mkdir(mode=0o700)
    env = dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))
    if name == "c_exit":        # the exit code comes from the last leg
        last = _chain_last(images["migratable"], src, dst, points[where], env, tmp_path, args)
        assert (last.stdout, last.returncode) == (unmoved.stdout, unmoved.returncode)
        return
    moved = _chain(images["migratable"], [(src, points[where]), (dst, None)], env, tmp_path, args)
    assert moved == unmoved.stdout


def _chain_last(image, src, dst, point, env, tmp, args):
    ck = tmp / "ck"
    p = run([UHYVE, "run", image, "--isa", src, "--checkpoint-at", point, "--checkpoint-dir", ck,
             "--to", dst, "--", *args], env=env)
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    return run([UHYVE, "restore", ck, "--isa", dst], env=env, timeout=300)


def test_the_image_lists_the_functions_compiled_per_isa(program):
    name, images, _ = program
    source = (PROGRAMS / f"{name}.c").read_text().splitlines()
    per_isa = Image(images["migratable"]).manifest.get("per_isa", {"functions": []})
    expected = {"c_varargs": {"sum_ints": "handles a va_list", "mixed": "handles a va_list",
                              "vformat": "handles a va_list", "log_msg": "handles a va_list"},
                "c_setjmp": {"attempt": "calls setjmp"},
                "c_long_double": {"series": "uses long double", "one_round": "uses long double"},
                "c_complex": {"show": "passes float _Complex to or from code compiled per ISA or the C library"}, "c_exit": {}}[name]
    assert {f["name"]: f["why"] for f in per_isa["functions"]} == expected
    for f in per_isa["functions"]:
        file, line = f["where"].rsplit(":", 1)
        assert file.endswith(f"{name}.c") and f" {f['name']}(" in source[int(line) - 1]


@pytest.mark.parametrize("code", [0, 1, 200, 255])
@pytest.mark.parametrize("how", ["return", "exit"])
def test_exit_codes(program, code, how, tmp_path):
    name, images, _ = program
    if name != "c_exit":
        pytest.skip("exit codes are c_exit's")
    args = [str(code)] + (["exit"] if how == "exit" else [])
    native = _native(PROGRAMS / "c_exit.c", os.uname().machine, tmp_path / "native", args)
    assert native.returncode == code
    for isa in ("x86_64", "aarch64"):
        p = run([UHYVE, "run", images["plain"], "--isa", isa, "--", *args])
        assert (p.stdout, p.returncode) == (native.stdout, code), p.stderr


REFUSED = {
    "setjmp_in_main": ("#include <setjmp.h>\nvoid hexo_check_migrate(void);\njmp_buf b;\n"
                       "int main(void) {\n  if (setjmp(b)) return 1;\n  hexo_check_migrate();\n"
                       "  return 0;\n}\n",
                       "prog.c:4: function 'main' calls setjmp"),
    "long_double_global": ("void hexo_check_migrate(void);\nlong double g = 1.5L;\n"
                           "int main(void) { hexo_check_migrate(); return (int)(g * 2); }\n",
                           "long double globals (g)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_migratable_build_refuses_what_migration_could_never_reach(tmp_path, case):
    """A migratable build whose only points run under a setjmp frame, or with a long double
    global, is refused with the reason; the plain build of the same program works."""
    code, message = REFUSED[case]
    src = tmp_path / "prog.c"
    src.write_text(code)
    p = run([HEXO, "build", src, "--migratable", "-o", tmp_path / "m.hexo"])
    assert p.returncode == 1 and message in p.stderr, p.stderr
    assert not (tmp_path / "m.hexo").exists()
    p = run([HEXO, "build", src, "-o", tmp_path / "p.hexo"])
    assert p.returncode == 0, p.stderr
    native = _native(src, "aarch64", tmp_path / "native", [])
    out = run([UHYVE, "run", tmp_path / "p.hexo", "--isa", "aarch64"])
    assert (out.stdout, out.returncode) == (native.stdout, native.returncode)
