"""The container image store's bound: archives removed least recently used first, by size
and by age, never one in use (held by another process) or just used, and a damaged one
never handed out. Archives here are stand-ins named by their digest; tests/test_container.py
restores a real container from a pruned store."""

import hashlib
import os
import subprocess
import sys
import time

import pytest

from hexo import cli
from uhyve_ctl.container import commands, images

MIB = 1 << 20
HOUR = 3600


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("HEXO_HOME", str(tmp_path))
    monkeypatch.delenv(images.MAX_BYTES_SETTING, raising=False)
    monkeypatch.delenv(images.MAX_DAYS_SETTING, raising=False)
    monkeypatch.setattr(cli, "_plugins", commands.register)
    images.store().mkdir(parents=True)
    return images.store()


def archive(store, name: str, hours_unused: float, size: int = MIB) -> str:
    """A stored archive of `size` bytes last used `hours_unused` ago, indexed under
    podman image id `name`; its digest."""
    data = hashlib.sha256(name.encode()).digest() * (size // 32)
    sha = hashlib.sha256(data).hexdigest()
    (store / f"{sha}.tar").write_bytes(data)
    (store / f"{name}.digest").write_text(f"{sha} localhost/{name}")
    used = time.time() - hours_unused * HOUR
    os.utime(store / f"{sha}.tar", (used, used))
    return sha


def left(store) -> set[str]:
    return {p.name.removesuffix(".tar") for p in store.glob("*.tar")}


def test_prune_by_size_removes_least_recently_used_but_not_one_in_use(store, tmp_path):
    """Five 1 MiB archives, to be bounded at 2.5 MiB: the oldest is held in use by another
    process, so the next three oldest go and the newest stays; so do their index entries."""
    a, b, c, d, e = (archive(store, n, h) for n, h in
                     (("a", 50), ("b", 40), ("c", 30), ("d", 20), ("e", 10)))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys; f = open(sys.argv[1], 'rb'); "
         "fcntl.flock(f, fcntl.LOCK_SH); print(flush=True); sys.stdin.read()",
         str(store / f"{a}.tar")], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        holder.stdout.readline()
        assert sorted(images.prune(int(2.5 * MIB), 30)) == sorted([b, c, d])
    finally:
        holder.communicate()
    assert left(store) == {a, e}
    assert {p.name for p in store.glob("*.digest")} == {"a.digest", "e.digest"}
    assert images.digest(store / f"{a}.tar") == a
    assert images.prune(int(1.5 * MIB), 30) == [a]      # no longer in use
    assert left(store) == {e} and images.digest(store / f"{e}.tar") == e


def test_prune_by_age_and_never_what_was_just_used(store):
    """Within the size bound only archives unused for longer than the age bound go; one used
    minutes ago stays even over both bounds (a restore may be about to need it)."""
    old, fresh = archive(store, "old", 24 * 40), archive(store, "fresh", 24 * 2)
    just_used = archive(store, "now", 0.05)
    assert images.prune(100 * MIB, 30) == [old]
    assert left(store) == {fresh, just_used}
    assert images.prune(1, 0) == [fresh]
    assert left(store) == {just_used}


def test_using_touches_and_refuses_a_damaged_copy(store):
    """An archive in use becomes the most recently used; a damaged one is removed and not
    handed out."""
    first, second = archive(store, "first", 5), archive(store, "second", 3)
    with images.using(first) as path:
        assert path == store / f"{first}.tar"
    assert [e["digest"] for e in images.listing()] == [second, first]
    (store / f"{second}.tar").write_bytes(b"x" + (store / f"{second}.tar").read_bytes()[1:])
    with images.using(second) as path:
        assert path is None
    assert left(store) == {first}


def test_images_command_lists_and_prunes_by_the_settings(store, monkeypatch, capsys):
    """`hexo container images` lists least recently used first with the images' names;
    `prune` bounds the store by $HEXO_IMAGE_STORE_MAX unless told a size; bad settings are
    refused in one line and remove nothing."""
    big, small = archive(store, "big", 30, 2 * MIB), archive(store, "small", 20, MIB // 2)
    assert cli.main(["container", "images"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == [big, small]
    assert lines[0].split()[-1] == "localhost/big"
    monkeypatch.setenv(images.MAX_BYTES_SETTING, "1G")
    assert cli.main(["container", "images", "prune"]) == 0
    assert left(store) == {big, small}
    for name, value in ((images.MAX_BYTES_SETTING, "lots"), (images.MAX_DAYS_SETTING, "-1")):
        monkeypatch.setenv(name, value)
        assert cli.main(["container", "images", "prune"]) == 1
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and name in err[0]
        monkeypatch.delenv(name)
    assert left(store) == {big, small}
    monkeypatch.setenv(images.MAX_BYTES_SETTING, "1M")
    assert cli.main(["container", "images", "prune"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"removed {big}"
    assert left(store) == {small}
    assert cli.main(["container", "images", "prune", "--max-size", "100K"]) == 0
    assert left(store) == set()
