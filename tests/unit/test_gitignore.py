"""The local env file, which holds the MCE secrets, can never be committed by accident."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _ignored(path: str) -> bool:
    # --no-index: the rules of .gitignore alone decide, whether the file exists or is tracked.
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed")
    proc = subprocess.run(
        [git, "-C", str(ROOT), "check-ignore", "-q", "--no-index", path],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr  # 128: not a git checkout, or a git error
    return proc.returncode == 0


@pytest.mark.parametrize("path", [".env", ".env.local", ".env.production", "deploy/.env"])
def test_env_files_are_ignored_by_git(path: str) -> None:
    assert _ignored(path)


def test_the_env_template_is_not_ignored() -> None:
    assert (ROOT / ".env.example").exists()
    assert not _ignored(".env.example")
