"""`hexo build`: one layout for both ISAs, checked with independent tools; bad input refused."""

import subprocess
import sys

import pytest

from hexo.image import Image
from hexo.toolchain import layout
from hexo.toolchain.build import _PASS1
from hexo.toolchain.sysroot import ensure

from conftest import HEXO, ROOT, UHYVE, run


def _nm(elf_path) -> dict[str, int]:
    """Defined function/object symbols by name, as llvm-nm sees them (globals only, unique)."""
    out = subprocess.run(["llvm-nm", "--defined-only", "-g", elf_path], capture_output=True,
                         text=True, check=True).stdout
    syms = {}
    for line in out.splitlines():
        addr, kind, name = line.split()
        if kind in "TtDdBbRr":
            syms[name] = int(addr, 16)
    return syms


@pytest.mark.parametrize("workload", ["npb-cg", "libc-stdio"])
def test_every_common_symbol_at_the_same_address_per_llvm_nm(images, tmp_path, workload):
    img = Image(images.get(workload, "S" if workload.startswith("npb") else None))
    syms = {}
    for isa in ("x86_64", "aarch64"):
        path = tmp_path / isa
        path.write_bytes(img.elf(isa))
        syms[isa] = _nm(path)
    common = syms["x86_64"].keys() & syms["aarch64"].keys()
    assert {"main", "printf", "_malloc_r", "_start", "hexo_kernel_main"} <= common
    assert len(common) > 100
    moved = {n: (syms["x86_64"][n], syms["aarch64"][n]) for n in common
             if syms["x86_64"][n] != syms["aarch64"][n]}
    assert moved == {}


def test_kernel_and_application_data_on_separate_pages(images, tmp_path):
    img = Image(images.get("npb-is", "S"))
    areas = img.manifest["layout"]["areas"]
    kdata_end = areas["kbss"][1]
    data_start = areas["data"][0]
    assert kdata_end <= data_start and data_start % 4096 == 0
    assert areas["kdata"][0] % 4096 == 0
    path = tmp_path / "x86"
    path.write_bytes(img.elf("x86_64"))
    syms = _nm(path)
    assert areas["kdata"][0] <= syms["hexo_boot"] < kdata_end          # library OS state
    assert data_start <= syms["_impure_ptr"] < areas["bss"][1]        # C library state


@pytest.mark.parametrize("code,message", [
    ("int main(void) { __asm__ volatile(\"nop\"); return 0; }", "contains inline assembly"),
    ("int main(void) { return undefined_function(); }", "undefined_function"),
])
def test_unportable_or_broken_code_is_refused_at_build_time(tmp_path, code, message):
    src = tmp_path / "bad.c"
    src.write_text(code)
    p = run([HEXO, "build", src, "-o", tmp_path / "bad.hexo"])
    assert p.returncode == 1
    assert message in p.stderr
    assert not (tmp_path / "bad.hexo").exists()


def test_missing_source(tmp_path):
    p = run([HEXO, "build", tmp_path / "nope.c", "-o", tmp_path / "x.hexo"])
    assert p.returncode == 1 and "nope.c: no such source file" in p.stderr


def _per_isa_maps(tmp_path, code: str) -> dict:
    """Link a program compiled separately per ISA (not through one IR), as plan() sees it."""
    src = tmp_path / "app.c"
    src.write_text(code)
    maps = {}
    for isa in ("x86_64", "aarch64"):
        sr = ensure(isa)
        d = tmp_path / isa
        d.mkdir()
        subprocess.run(["clang", *sr.cflags(), "-c", src, "-o", d / "app.o"], check=True)
        script = d / "pass1.ld"
        script.write_text(_PASS1 % (0x800000, " ".join(f"*({x}*)" for x in layout.DISCARD)))
        subprocess.run(["ld.lld", "-O0", "--gc-sections", "-T", script, "-Map", d / "m",
                        "-o", d / "a.elf", d / "app.o", "--start-group", *sr.libs,
                        "--end-group"], check=True, capture_output=True)
        maps[isa] = layout.parse_map((d / "m").read_text())
    return maps


def test_layout_flags_symbols_only_one_isa_has(tmp_path):
    maps = _per_isa_maps(tmp_path, """
        #ifdef __aarch64__
        int only_on_arm[4] = {1, 2, 3, 4};
        int use(void) { return only_on_arm[1]; }
        #else
        int use(void) { return 2; }
        #endif
        int main(void) { return use(); }""")
    problems = layout.plan(maps).app_mismatches()
    assert len(problems) == 1 and "aarch64: only this ISA has" in problems[0]
    assert "only_on_arm" in problems[0]


STR_NAMED = r"""
#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) static int str_format(int c, int x) {
  switch (c) {
  case 0: return x + 1;   case 1: return x * 3;   case 2: return x - 7;  case 3: return x ^ 5;
  case 4: return x << 2;  case 5: return x / 3;   case 6: return -x;     case 7: return x % 11;
  default: return 0;
  }
}
int main(int argc, char **argv) {
  int x = argc > 1 ? atoi(argv[1]) : 1;
  for (int i = 0; i < 24; i++) x = str_format(i % 9, x) + i;
  printf("%d\n", x);
  return 0;
}
"""


def test_a_function_named_str_something_is_no_string_pool(tmp_path):
    """str_format's jump table lands in .rodata.str_format, whose bytes differ between the ISAs
    (absolute addresses vs. relative offsets): only .rodata.strN.M sections are string pools
    that must be equal (Lua's string library was refused)."""
    (tmp_path / "s.c").write_text(STR_NAMED)
    p = run([HEXO, "build", tmp_path / "s.c", "-o", tmp_path / "s.hexo"])
    assert p.returncode == 0, p.stderr
    p = run([HEXO, "build", tmp_path / "s.c", "--native", "-o", tmp_path / "s.native"])
    assert p.returncode == 0, p.stderr
    native = run([tmp_path / "s.native", "5"]).stdout
    out = run([UHYVE, "run", tmp_path / "s.hexo", "--isa", "aarch64", "--", "5"])
    assert (out.stdout, out.returncode) == (native, 0), out.stderr


def test_verify_reports_symbols_that_moved():
    units = {"x86_64": [layout.Unit("app.o", ".text.f", "app.o", 0x1000, 16)],
             "aarch64": [layout.Unit("app.o", ".text.f", "app.o", 0x1000, 16)]}
    planned = {isa: {("app.o", ".text.f"): 0x1000} for isa in units}
    syms = {"x86_64": {("", "f"): 0x1000}, "aarch64": {("", "f"): 0x1010}}
    strings = {"x86_64": {}, "aarch64": {}}
    assert layout.verify(units, planned, syms, strings) == [
        "symbol f (global) at 0x1000 on x86_64 but 0x1010 on aarch64"]
    planned["aarch64"][("app.o", ".text.f")] = 0x2000
    assert any("landed at 0x1000" in p for p in layout.verify(units, planned, syms, strings))


def test_newlib_builds_define_the_same_symbols():
    """Both ISAs' C libraries: same globals, same data object sizes, one symbol per section."""
    roots = [ensure(isa).root / "newlib" for isa in ("x86_64", "aarch64")]
    p = run([sys.executable, ROOT / "kernel-images" / "newlib" / "check_symbols.py",
             *roots])
    assert p.returncode == 0, p.stdout + p.stderr
    assert "OK: builds match" in p.stdout
