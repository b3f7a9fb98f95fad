"""The whole C language in hexo images: variadic definitions, va_copy and va_list parameters,
setjmp/longjmp, long double, _Complex, atexit and exit codes, and the types <stdlib.h> brings
along as glibc's does (struct timeval...). Each program prints, and exits
with, what its native clang build does on the same ISA (x86-64 natively, aarch64 under
qemu-user), built --no-migratable ("plain") and migratable (the default); and migrated before, inside (migration then waits for the
first point outside the per-ISA frame) and after the feature's use, it prints what the run
that never moved prints."""

from __future__ import annotations

import os
import re

import pytest

from hexo.checkpoint import Checkpoint
from hexo.image import Image
from hexo.toolchain import stackmaps

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run

PROGRAMS = ROOT / "tests" / "programs"
ISAS = [pytest.param("x86_64", marks=needs_kvm), "aarch64"]

# program: (arguments compared with the native build, arguments of migrated runs,
#           migration points named by what runs there)
CASES = {
    "c_varargs": (["3"], ["3"], {"before": 1, "inside": 2, "after": 3, "inside-late": 8}),
    "c_setjmp": (["4"], ["4"], {"before": 1, "inside": 2, "after": 3, "inside-late": 6}),
    "c_long_double": (["3", "full"], ["2"], {"before": 1, "inside": 3, "after": 4,
                                             "inside-late": 7}),
    "c_complex": (["4"], ["4"], {"before": 1, "in-rotate": 2, "after": 3, "late": 8}),
    "c_exit": (["7", "exit"], ["255", "exit"], {"before": 1, "late": 2}),
    "c_stdlib_types": (["3"], ["3"], {"before": 1, "during": 2, "late": 4}),
}


def _native(src, isa, out, args):
    """What the native clang build of `src` prints and returns on `isa`."""
    stub = out.parent / "stub.c"
    stub.write_text("void hexo_check_migrate(void) {}\n")
    p = run([HEXO, "build", src, stub, "--native", "--native-isa", isa, "-o", out])
    assert p.returncode == 0, p.stderr
    runner = [] if isa == os.uname().machine else [f"qemu-{isa}-static"]
    return run([*runner, out, *args])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """built(name) -> {"plain": image, "migratable": image} of tests/programs/<name>.c."""
    cache = {}

    def get(name):
        if name not in cache:
            d = tmp_path_factory.mktemp(name)
            cache[name] = {}
            for kind, flags in (("plain", ["--no-migratable"]), ("migratable", [])):
                image = cache[name][kind] = d / f"{name}-{kind}.hexo"
                p = run([HEXO, "build", PROGRAMS / f"{name}.c", *flags, "-o", image])
                assert p.returncode == 0, p.stderr
        return cache[name]
    return get


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("kind", ["plain", "migratable"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_prints_and_exits_as_the_native_build(built, name, kind, isa, tmp_path):
    args = CASES[name][0]
    native = _native(PROGRAMS / f"{name}.c", isa, tmp_path / "native", args)
    assert native.stdout
    p = run([UHYVE, "run", built(name)[kind], "--isa", isa, "--", *args], timeout=300)
    assert (p.stdout, p.returncode) == (native.stdout, native.returncode), p.stderr


@needs_kvm
@pytest.mark.kvm
@pytest.mark.parametrize("src,dst", [("x86_64", "aarch64"), ("aarch64", "x86_64")])
@pytest.mark.parametrize("name,where", [(n, w) for n in sorted(CASES) for w in CASES[n][2]])
def test_migrated_run_prints_what_the_unmoved_run_prints(built, name, where, src, dst,
                                                         tmp_path):
    image, point, args = built(name)["migratable"], CASES[name][2][where], CASES[name][1]
    unmoved = run([UHYVE, "run", image, "--isa", dst, "--", *args])
    (tmp_path / "run").mkdir(mode=0o700)
    env = dict(os.environ, HEXO_RUN_DIR=str(tmp_path / "run"))
    ck = tmp_path / "ck"
    p = run([UHYVE, "run", image, "--isa", src, "--checkpoint-at", point, "--checkpoint-dir", ck,
             "--to", dst, "--", *args], env=env)
    assert p.returncode == 0 and f"checkpointed to {ck}" in p.stderr, p.stderr
    if where.startswith("inside"):
        # The request waited: it was taken at main's next point, after the per-ISA frame.
        meta = stackmaps.load(Image(image).payload(f"meta.{dst}"))
        pc = Checkpoint(ck).meta["context"]["pc"]
        assert meta.by_ra[pc]["function"] == "main"
    moved = run([UHYVE, "restore", ck, "--isa", dst], env=env, timeout=300)
    assert (p.stdout + moved.stdout, moved.returncode) == (unmoved.stdout, unmoved.returncode)


PER_ISA = {
    "c_varargs": {"sum_ints": "handles a va_list", "mixed": "handles a va_list",
                  "vformat": "handles a va_list", "log_msg": "handles a va_list"},
    "c_setjmp": {"attempt": "calls setjmp"},
    "c_long_double": {"describe": "uses long double", "series": "uses long double",
                      "one_round": "uses long double"},
    "c_complex": {"show": "passes float _Complex to or from code compiled per ISA or the C "
                          "library"},
    "c_exit": {},
    "c_stdlib_types": {},
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_image_lists_the_functions_compiled_per_isa(built, name):
    source = (PROGRAMS / f"{name}.c").read_text().splitlines()
    per_isa = Image(built(name)["migratable"]).manifest.get("per_isa", {"functions": []})
    assert {f["name"]: f["why"] for f in per_isa["functions"]} == PER_ISA[name]
    for f in per_isa["functions"]:
        file, line = f["where"].rsplit(":", 1)
        assert file.endswith(f"{name}.c") and f" {f['name']}(" in source[int(line) - 1]


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("code", [0, 1, 200, 255])
@pytest.mark.parametrize("how", ["return", "exit"])
def test_exit_codes(built, code, how, isa, tmp_path):
    args = [str(code)] + (["exit"] if how == "exit" else [])
    native = _native(PROGRAMS / "c_exit.c", isa, tmp_path / "native", args)
    assert native.returncode == code
    p = run([UHYVE, "run", built("c_exit")["plain"], "--isa", isa, "--", *args])
    assert (p.stdout, p.returncode) == (native.stdout, code), p.stderr


def test_long_double_global_is_refused_by_migratable_builds_only(tmp_path):
    """A long double global's bytes would reach the other ISA unconverted: a migratable build
    with migration points says so; the --no-migratable build prints what the native build
    prints."""
    src = tmp_path / "prog.c"
    src.write_text("#include <stdio.h>\nvoid hexo_check_migrate(void);\nlong double g = 1.5L;\n"
                   "int main(void) { hexo_check_migrate(); printf(\"%Lg\\n\", g * 3);"
                   " return (int)(g * 2); }\n")
    p = run([HEXO, "build", src, "--migratable", "-o", tmp_path / "m.hexo"])
    assert p.returncode == 1 and "long double globals (g)" in p.stderr, p.stderr
    assert not (tmp_path / "m.hexo").exists()
    p = run([HEXO, "build", src, "--no-migratable", "-o", tmp_path / "p.hexo"])
    assert p.returncode == 0, p.stderr
    native = _native(src, "aarch64", tmp_path / "native", [])
    out = run([UHYVE, "run", tmp_path / "p.hexo", "--isa", "aarch64"])
    assert (out.stdout, out.returncode) == (native.stdout, native.returncode)


HELPER_IR = """
@table = internal {kind} [2 x i32] [i32 1, i32 2]
define internal i32 @helper(i32 %x) {{
  %p = getelementptr [2 x i32], [2 x i32]* @table, i32 0, i32 %x
  %v = load i32, i32* %p
  ret i32 %v
}}
define i32 @va_user(i32 %x) {{
  %r = call i32 @helper(i32 %x)
  ret i32 %r
}}
define i32 @main() {{
  %r = call i32 @va_user(i32 1)
  ret i32 %r
}}
"""


@pytest.mark.parametrize("kind", ["constant", "global"])
def test_a_helper_only_one_isa_kept_joins_that_isas_per_isa_code(tmp_path, kind):
    """One ISA's optimizer kept a static helper (and its table) of a per-ISA function that
    the other inlined, so the shared IR has neither: that ISA's copy takes them along; state
    (a mutable global) that only one ISA has would diverge and is refused."""
    from hexo.toolchain import perisa
    from hexo.toolchain.sysroot import ToolchainError
    src = tmp_path / "own.ll"
    src.write_text(HELPER_IR.format(kind=kind))
    out = tmp_path / "part.ll"
    if kind == "global":
        with pytest.raises(ToolchainError, match="state that only one ISA's compile has: table"):
            perisa._extract_own(src, ["va_user"], [], {"main"}, out)
        return
    part = perisa._extract_own(src, ["va_user"], [], {"main"}, out)
    assert "define i32 @va_user(" in part and re.search(r"define .*@helper\(", part)
    assert re.search(r"^@table = .*constant", part, re.M) and "define i32 @main" not in part
