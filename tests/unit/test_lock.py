"""The lock holds: `scripts/lock --check` (a CI step) fails when pyproject.toml's ranges and the
lock disagree, or when a pin in the pip export was edited by hand, and passes on the tree as
committed. Runs the real script and uv on a copy of the files, so the checkout is never touched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"
FILES = ("pyproject.toml", "uv.lock", "requirements.lock", "requirements-prod.lock", "README.md")

pytestmark = pytest.mark.skipif(not UV.exists(), reason="uv is not installed in this venv")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for name in FILES:
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts" / "lock", tmp_path / "scripts" / "lock")
    return tmp_path


def check(tree: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "UV": str(UV)}
    return subprocess.run(
        ["bash", str(tree / "scripts" / "lock"), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def test_the_committed_lock_is_consistent(tree: Path) -> None:
    done = check(tree)
    assert done.returncode == 0, done.stderr
    assert "lock is consistent" in done.stdout


def test_a_loosened_range_without_a_refreshed_lock_fails(tree: Path) -> None:
    pyproject = tree / "pyproject.toml"
    text = pyproject.read_text()
    loosened = re.sub(r'"redis>=[0-9.]+"', '"redis>=4"', text, count=1)
    assert loosened != text
    pyproject.write_text(loosened)
    done = check(tree)
    assert done.returncode == 1
    assert "uv.lock does not match pyproject.toml" in done.stderr


def test_a_pin_edited_by_hand_in_the_pip_export_fails(tree: Path) -> None:
    lock = tree / "requirements.lock"
    text = lock.read_text()
    edited = re.sub(r"^redis==[0-9.]+", "redis>=5", text, count=1, flags=re.MULTILINE)
    assert edited != text
    lock.write_text(edited)
    done = check(tree)
    assert done.returncode == 1
    assert "requirements.lock is not the export of uv.lock" in done.stderr
