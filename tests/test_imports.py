"""The import contracts in pyproject.toml hold, and the check would catch a cycle (it is not a check that cannot
fail)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("cluster", "trainables", "search_spaces")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else ["lint-imports"]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120, env=env)


def _copy(tmp_path: Path) -> Path:
    root = tmp_path / "tree"
    root.mkdir()
    for pkg in PACKAGES:
        shutil.copytree(REPO / pkg, root / pkg, ignore=shutil.ignore_patterns("__pycache__", "datasets", "presets"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_contracts_hold_on_this_tree(tmp_path: Path) -> None:
    done = _lint_imports(_copy(tmp_path))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_a_cycle_between_sibling_modules_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    # The cycle this layout removed: the data-parallel helper importing the training loop that uses it.
    with (root / "trainables" / "ddp.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _cycle() -> None:\n    from trainables.loop import run_trial  # noqa: F401\n")
    done = _lint_imports(root)
    assert done.returncode != 0
    assert "no import cycles" in done.stdout and "BROKEN" in done.stdout
    assert "No cycles are allowed in trainables" in done.stdout and ".loop -> .ddp" in done.stdout, done.stdout


def test_a_lower_layer_importing_the_cli_is_caught(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    with (root / "cluster" / "plan" / "storage.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _upward() -> None:\n    from cluster.cli.run import run_options  # noqa: F401\n")
    done = _lint_imports(root)
    assert done.returncode != 0
    assert "cluster.plan is not allowed to import cluster.cli" in done.stdout, done.stdout
