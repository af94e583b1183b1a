"""The layering rules of issue 12.

Only ``refunds/store/`` spells a Redis key: no string constant (f-strings included) starting with
``rp:`` anywhere else in the application, its tooling, the benchmarks or the tests (they use
``refunds.store.keys``'s builders, so a change of layout cannot leave a test reading a key nothing
writes any more). Checked here on the source tree (ast, no imports executed): it is not an import
rule.

The import rules (``config`` below the domain; the domain free of faces and tooling; no cycle
between the CLI and devstack) are import-linter contracts in ``pyproject.toml``
(``[tool.importlinter]``), run by CI's ``lint-imports`` step and by the tests at the end of this
file, which also prove that each contract fails on a tree that breaks it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
KEY_PREFIX = "rp" + ":"  # spelled apart so this file passes its own rule
CHECKED_FOR_KEYS = ("refunds", "tasks", "worker", "config", "devstack", "bench", "tests")
# Files outside the store allowed to spell a key, each with the reason. None today: the store's
# own tests and the keys tests build keys with keys.py's builders too. The one kind of test that
# would belong here is one that must pin the spelling itself (keys.py's layout is what data
# already in Redis was written with); this file passes without an entry by spelling the prefix
# apart.
KEY_SPELLING_ALLOWED: dict[str, str] = {}


def _files(*dirs: str) -> Iterator[Path]:
    for d in dirs:
        yield from sorted((ROOT / d).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of docstring nodes (prose may mention a key; code may not build one)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                out.add(id(body[0].value))
    return out


def key_literals(source: str) -> list[tuple[int, str]]:
    """``(line, text)`` of every string constant or f-string that starts with the key prefix."""
    tree = ast.parse(source)
    docs = _docstrings(tree)
    in_fstring: set[int] = set()
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            first = node.values[0] if node.values else None
            in_fstring.update(id(v) for v in node.values)
            if isinstance(first, ast.Constant) and str(first.value).startswith(KEY_PREFIX):
                found.append((node.lineno, str(first.value)))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str | bytes)
            and id(node) not in docs
            and id(node) not in in_fstring
        ):
            value = node.value
            text = value.decode(errors="replace") if isinstance(value, bytes) else value
            if text.startswith(KEY_PREFIX):
                found.append((node.lineno, text))
    return found


def test_no_redis_key_is_built_outside_the_store() -> None:
    offenders = [
        f"{_rel(path)}:{line}: {text!r}"
        for path in _files(*CHECKED_FOR_KEYS)
        if not _rel(path).startswith("refunds/store/") and _rel(path) not in KEY_SPELLING_ALLOWED
        for line, text in key_literals(path.read_text())
    ]
    assert offenders == [], "keys belong in refunds/store/keys.py"


# --- the checks themselves can fail --------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        'KEY = "' + KEY_PREFIX + 'all"',
        'def k(ref):\n    return f"' + KEY_PREFIX + 'r:{ref}"',
        "X = b'" + KEY_PREFIX + "x'",
        'client.get("' + KEY_PREFIX + 'tick:last")',
    ],
)
def test_key_literals_are_found(source: str) -> None:
    assert key_literals(source) != []


@pytest.mark.parametrize(
    "source",
    [
        '"""Docs may name ``' + KEY_PREFIX + 'timers``."""',
        'X = "see ' + KEY_PREFIX + 'all"',
        'def k(ref):\n    return f"{ref}' + KEY_PREFIX + '"',
    ],
)
def test_prose_and_other_strings_are_not_keys(source: str) -> None:
    assert key_literals(source) == []


def _importlinter_config(root: Path) -> str:
    """pyproject.toml's ``[tool.importlinter]`` tables, as text (the contracts under test)."""
    lines = (root / "pyproject.toml").read_text().splitlines()
    out: list[str] = []
    inside = False
    for line in lines:
        if line.startswith("["):
            inside = line.strip("[]").startswith("tool.importlinter")
        if inside:
            out.append(line)
    return "\n".join(out) + "\n"


def _lint_imports(cwd: Path, config: Path) -> subprocess.CompletedProcess[str]:
    binary = Path(sys.executable).with_name("lint-imports")
    return subprocess.run(
        [str(binary), str(config), "--no-cache"],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(cwd)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_import_contracts_hold() -> None:
    result = _lint_imports(ROOT, ROOT / "pyproject.toml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 4 kept, 0 broken." in result.stdout


# A tree that breaks every contract once: module -> its source.
BROKEN_TREE = {
    "config/__init__.py": "from refunds import models\n",
    "refunds/__init__.py": "",
    "refunds/models.py": "",
    "refunds/cli/__init__.py": "import click\nimport rich\nimport subprocess\nimport devstack\n",
    # (a protected library must be in the graph: the faces import every one)
    "refunds/web/__init__.py": "import fastapi\nimport starlette\nimport uvicorn\n",
    "refunds/steps.py": "import subprocess\nimport rich\n",
    "refunds/batch.py": "from refunds.web import app\n",
    "refunds/web/app.py": "",
    "refunds/web/deps.py": "",
    "refunds/web/server.py": "",
    # allowed (the ignored imports)
    "refunds/cli/serve.py": "from refunds.web import deps\nfrom refunds.web import server\n",
    "devstack/__init__.py": "from refunds.cli import progress\n",
    "refunds/cli/progress.py": "",
    "worker/__init__.py": "",
    "tasks/__init__.py": "",
    "sandbox/__init__.py": "",
}


def test_each_import_contract_fails_on_a_tree_that_breaks_it(tmp_path: Path) -> None:
    for name, source in BROKEN_TREE.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(source)
    config = tmp_path / "contracts.toml"
    config.write_text(_importlinter_config(ROOT))
    result = _lint_imports(tmp_path, config)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Contracts: 0 kept, 4 broken." in result.stdout
    for offender in (
        "config -> refunds.models",  # config below the domain
        "refunds.steps -> subprocess",  # the domain free of tooling ...
        "refunds.steps -> rich",  # ... and of faces' libraries
        "refunds.batch -> refunds.web.app",  # the domain below the faces
        "devstack -> refunds.cli.progress",  # no CLI <-> devstack cycle
    ):
        assert offender in result.stdout, offender
