"""Installed as users install it, from a wheel: the task cards and profiles must be inside, and the
registry must find them in the installed package, not in a checkout beside it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _build_wheel(tmp: Path) -> Path:
    # From a copy of the sources: building in the checkout would reuse (and could ship) a stale build/.
    src = tmp / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("xbench", "tasks"):
        shutil.copytree(REPO / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp / "dist")], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("xbench-*.whl")
    return wheel


def test_wheel_ships_cards_and_profiles_and_runs_list_and_validate(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    builtin = sorted(p.name for p in (REPO / "tasks").glob("*.yaml"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("xbench/_cards/") and n.endswith(".yaml")) == builtin
    assert {"xbench/profiles/smoke.yaml", "xbench/profiles/paper.yaml", "xbench/profiles/cpu.yaml"} <= set(names)

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True, timeout=300)
    outside = tmp_path / "elsewhere"  # not the checkout: `python -m xbench` there would import the repo's xbench
    outside.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("XBENCH_TASKS", "XBENCH_TASKS_DIRS")}
    env["PYTHONPATH"] = str(site)

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, *args], cwd=outside, env=env, capture_output=True, text=True, timeout=120)

    where = run("-c", "import xbench, xbench.cards as r; print(xbench.__file__); print(r.builtin_tasks_dir())")
    package_file, cards_dir = where.stdout.split()
    assert Path(package_file).is_relative_to(site) and Path(cards_dir).is_relative_to(site), where.stdout
    listed = run("-m", "xbench", "list")
    assert listed.returncode == 0, listed.stderr
    for name in builtin:
        assert f"{name[:-5]} v" in listed.stdout, name
    assert "smoke" in listed.stdout and "paper" in listed.stdout
    validated = run("-m", "xbench", "validate")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    assert f"ok: {len(builtin)} task cards, 3 profiles" in validated.stdout and len(builtin) == 6


def test_an_install_without_the_cards_says_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.resources

    from xbench.errors import XbenchError
    from xbench.cards import builtin_tasks_dir

    def missing(name: str):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.delenv("XBENCH_TASKS", raising=False)
    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(XbenchError, match=r"built-in task cards \(package xbench._cards\) are not installed; reinstall"):
        builtin_tasks_dir()
