"""hexo as an installed package: a wheel built from this tree, installed into a fresh virtual
environment with only its declared dependencies, builds and runs jobs with nothing from the
source tree (its package data is found through importlib.resources)."""

import ast
import os
import re
import shutil
import sys
import tomllib
from importlib import metadata

import pytest

from hexo import resources

from conftest import ROOT, run
from npb_reference import check

PACKAGES = {"hexo": ROOT / "hexo", "uhyve_ctl": ROOT / "uhyve-ctl" / "uhyve_ctl",
            "hexo_sched": ROOT / "scheduler" / "hexo_sched"}
NOT_FROM_PYPI = {"pycriu"}
SHIPPED = ["pyproject.toml", "README.md", "hexo", "uhyve-ctl", "scheduler", "kernel-images"]          # shipped with the CRIU that hexo builds


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _imported_modules() -> set[str]:
    """Top-level modules the packages import, outside the standard library and themselves."""
    found = set()
    for src in PACKAGES.values():
        for f in src.rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text())):
                if isinstance(node, ast.Import):
                    found |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found - set(sys.stdlib_module_names) - set(PACKAGES)


def test_every_imported_library_is_a_declared_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    providers = metadata.packages_distributions()
    undeclared = {}
    for module in _imported_modules() - NOT_FROM_PYPI:
        dists = {d.lower().replace("_", "-") for d in providers.get(module, [module])}
        if not dists & declared:
            undeclared[module] = sorted(dists)
    assert not undeclared, f"imported but not in [project] dependencies: {undeclared}"


@pytest.fixture
def venv(tmp_path):
    """A fresh venv with the wheel and its dependencies (pip's cache makes reruns offline).
    The wheel is built from a copy of the tree (setuptools writes build/ and egg-info where
    it builds), and pip runs without this session's PYTHONPATH, which would show it the
    checkout as an installed hexo."""
    d = tmp_path / "pkg"
    (d / "src").mkdir(parents=True)
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, d / "src" / name, symlinks=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            shutil.copy(ROOT / name, d / "src" / name)
    pip = [sys.executable, "-m", "pip"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    p = run([*pip, "wheel", d / "src", "--no-deps", "-q", "-w", d / "dist"], timeout=300,
            env=env)
    assert p.returncode == 0, p.stderr
    (wheel,) = (d / "dist").glob("hexo-*.whl")
    p = run([*pip, "download", "-q", "-d", d / "wheelhouse", wheel], timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    p = run([sys.executable, "-m", "venv", "--without-pip", d / "venv"])
    assert p.returncode == 0, p.stderr
    p = run([*pip, "--python", d / "venv" / "bin" / "python", "install", "-q", "--no-compile",
             "--no-index", "--find-links", d / "wheelhouse", wheel], timeout=300, env=env)
    assert p.returncode == 0, p.stderr
    return d / "venv"


@pytest.fixture
def installed_env(venv, tmp_path):
    """The environment of a user of the installed package: no source tree on any path; the
    session's hexo home, so that the sysroots built once are reused."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return dict(env, HEXO_HOME=str(resources.home()), HEXO_RUN_DIR=str(tmp_path),
                PATH=f"{venv / 'bin'}:{env['PATH']}")


@pytest.mark.slow
def test_installed_package_builds_and_runs_a_job(venv, installed_env, tmp_path):
    """Every module imports with only the declared dependencies, all from the venv; the
    commands build NPB IS (library OS, workload sources, pass source from the package), run
    it on both ISAs, read the scheduler's data, and hexo-schedd starts."""
    probe = ("import importlib, pkgutil, sys\n"
             "for top in ('hexo', 'uhyve_ctl', 'hexo_sched'):\n"
             "    pkg = importlib.import_module(top)\n"
             "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
             "        importlib.import_module(m.name)\n"
             "from hexo import resources\n"
             "print(sys.modules['hexo'].__file__, resources.KERNEL_IMAGES)\n")
    p = run([venv / "bin" / "python", "-c", probe], env=installed_env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    site = str(venv / "lib")
    assert all(path.startswith(site) for path in p.stdout.split()), p.stdout
    assert str(ROOT) not in p.stdout

    image = tmp_path / "is.hexo"
    p = run(["hexo", "build", "--workload", "npb-is", "--class", "S", "-o", image],
            env=installed_env, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "migratable:" in p.stdout            # the live-value pass came from the package
    for isa in ("x86_64", "aarch64"):
        p = run(["uhyve-ctl", "run", image, "--isa", isa], env=installed_env, cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        check("is", "S", p.stdout)
    p = run(["hexo-sched", "model"], env=installed_env, cwd=tmp_path)  # the scheduler's data
    assert p.returncode == 0 and "potato_npb.csv:" in p.stdout, p.stderr
    p = run(["hexo-schedd", "--config", tmp_path / "missing.toml"], env=installed_env,
            cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.startswith("hexo-schedd: "), p.stderr
