"""The layering of the tree (core <- runtimes <- scheduler): no package imports one above it."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOORS = {"hexo": 0, "uhyve_ctl": 1, "hexo_sched": 2}
PACKAGES = {"hexo": ROOT / "hexo", "uhyve_ctl": ROOT / "uhyve-ctl" / "uhyve_ctl",
            "hexo_sched": ROOT / "scheduler" / "hexo_sched"}


def _imported(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


def test_no_import_points_up():
    upward = []
    for pkg, path in PACKAGES.items():
        for f in sorted(path.rglob("*.py")):
            for line, mod in _imported(ast.parse(f.read_text(), str(f))):
                if FLOORS.get(mod, -1) > FLOORS[pkg]:
                    upward.append(f"{f.relative_to(ROOT)}:{line} imports {mod}")
    assert not upward, "imports from a lower floor to a higher one:\n" + "\n".join(upward)


def test_the_check_sees_an_upward_import():
    tree = ast.parse("import os\nfrom uhyve_ctl.vm import VM\n")
    assert [m for _, m in _imported(tree) if FLOORS.get(m, -1) > FLOORS["hexo"]] == ["uhyve_ctl"]


def test_plug_in_commands_are_found_and_the_list_is_cached(tmp_path, monkeypatch):
    """The core lists the `hexo.commands` entry points of what is installed; the list is
    kept between commands, and a cache written for another set of installed packages (another
    key) is not used."""
    from importlib.metadata import entry_points

    from hexo import cli
    monkeypatch.setenv("HEXO_HOME", str(tmp_path / "hexo"))
    installed = sorted(ep.value for ep in entry_points(group=cli.PLUGIN_GROUP))
    assert "hexo_sched.commands:register" in installed
    assert sorted(cli._plugin_entries()) == installed
    [cache] = (tmp_path / "hexo").iterdir()
    assert sorted(cli._plugin_entries()) == installed          # read back from the cache
    cache.write_text("another key\n\nnowhere:register")
    assert sorted(cli._plugin_entries()) == installed
    head, _, body = cache.read_text().partition("\n\n")
    cache.write_text(f"{head}\n\nsomewhere:register")
    assert cli._plugin_entries() == {"somewhere:register": []}  # the same key: the cache


def test_the_cache_learns_which_plug_in_owns_which_command(tmp_path, monkeypatch):
    """After the full parser has run once, the cache names the module behind `status`, so
    that `hexo status` imports only that one (hexo.cli._quick_plugin)."""
    import argparse

    from hexo import cli
    monkeypatch.setenv("HEXO_HOME", str(tmp_path / "hexo"))
    assert cli._quick_plugin(["status"]) is None              # nothing learned yet
    cli._plugins(argparse.ArgumentParser().add_subparsers())
    owners = cli._plugin_entries()
    assert "status" in owners["hexo_sched.commands:register"]
    assert "certify" in owners["uhyve_ctl.certify:register"]
    assert cli._quick_plugin(["status", "--json"]).json is True
    assert cli._quick_plugin(["certify", "x.hexo"]) is None   # no quick path: the full parser
