"""File attribute calls of the library OS (lstat, chmod, fchmod, chown, fchown, utime): what
bzip2 and other tools that copy attributes to the file they write need to link and to run.
The guest sees no symbolic links (the host resolves them) and cannot change what the host
records of a file, so these succeed on an existing file and change nothing, and fail as
natively on a missing file or a closed descriptor."""

from __future__ import annotations

import pytest

from conftest import HEXO, ROOT, UHYVE, needs_kvm, run

PROGRAM = ROOT / "tests" / "programs" / "file_attrs.c"
EXPECT = """stat: ok
lstat: ok
same size: yes
fchmod: ok
fchown: ok
utime: ok
chmod: ok
chown: ok
lstat missing: No such file or directory
utime missing: No such file or directory
fchmod closed: Bad file number
"""


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    d = tmp_path_factory.mktemp("file_attrs")
    p = run([HEXO, "build", PROGRAM, "-o", d / "file_attrs.hexo"])
    assert p.returncode == 0, p.stderr
    return d / "file_attrs.hexo"


@pytest.mark.parametrize("isa", [pytest.param("x86_64", marks=needs_kvm), "aarch64"])
def test_attributes_copied_to_a_written_file(image, isa, tmp_path):
    (tmp_path / "in").write_bytes(b"input\n")
    p = run([UHYVE, "run", image, "--isa", isa, "--mount", f"{tmp_path}:/data", "--",
             "/data/in", "/data/out"], timeout=120)
    assert p.stdout == EXPECT and p.returncode == 0, p.stderr
    assert (tmp_path / "out").read_bytes() == b"copied\n"
