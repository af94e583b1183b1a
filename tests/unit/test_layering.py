"""The layering rules of issue 12, checked on the source tree (ast, no imports executed).

(a) Only ``refunds/store/`` spells a Redis key: no string constant (f-strings included) starting
    with ``rp:`` anywhere else in the application, its tooling, the benchmarks or the tests (they
    use ``refunds.store.keys``'s builders, so a change of layout cannot leave a test reading a key
    nothing writes any more).
(b) ``config/`` sits below the domain: it imports nothing from ``refunds``.
(c) The domain merchant apps import stays free of faces and tooling: outside ``refunds/cli/`` and
    ``refunds/web/`` no module imports click, rich, fastapi, uvicorn, starlette, subprocess or
    devstack.
"""

from __future__ import annotations

import ast
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
FACES = ("refunds/cli", "refunds/web")
FORBIDDEN_IN_DOMAIN = ("click", "rich", "fastapi", "uvicorn", "starlette", "subprocess", "devstack")


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


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module imported (``import a.b`` and ``from a.b import c`` -> a)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_redis_key_is_built_outside_the_store() -> None:
    offenders = [
        f"{_rel(path)}:{line}: {text!r}"
        for path in _files(*CHECKED_FOR_KEYS)
        if not _rel(path).startswith("refunds/store/") and _rel(path) not in KEY_SPELLING_ALLOWED
        for line, text in key_literals(path.read_text())
    ]
    assert offenders == [], "keys belong in refunds/store/keys.py"


def test_config_imports_nothing_from_refunds() -> None:
    offenders = [
        f"{_rel(path)}: {name}"
        for path in _files("config")
        for name in sorted(imported_modules(path.read_text()))
        if name == "refunds" or name.startswith("refunds.")
    ]
    assert offenders == []


def test_domain_imports_no_faces_or_tooling() -> None:
    offenders = [
        f"{_rel(path)}: {name}"
        for path in _files("refunds")
        if not _rel(path).startswith(FACES)
        for name in sorted(imported_modules(path.read_text()))
        if name.split(".")[0] in FORBIDDEN_IN_DOMAIN
    ]
    assert offenders == []


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


def test_imports_are_found_in_every_form() -> None:
    source = (
        "import subprocess\nfrom click import echo\nimport refunds.errors as e\nfrom . import x\n"
    )
    assert imported_modules(source) == {"subprocess", "click", "refunds.errors"}
