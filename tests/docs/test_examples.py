"""Every shell and Python example of the README and of the getting-started page works as copied.

Each document's blocks run in order, as one reader would run them in one terminal, against a real
``refunds demo --serve`` stack of their own (private Redis, sandbox, web, worker and beat), in the
directory the demo runs in. The shell's environment carries from one block to the next (so
``source .demo/env`` in one block serves the blocks after it) and starts bare: no REDIS_URL,
REFUNDS_* or MCE_*, and no venv on PATH. A ``# prints: TEXT`` comment in a block says what its
output contains; the texts must appear in that order. A block preceded by
``<!-- example: skip (why) -->`` is not run, and the test reports it as skipped with that reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from devstack.processes import free_port

REPO = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "docs/index.md")
REFUNDS = Path(sys.executable).parent / "refunds"
FENCE = re.compile(r"^```(\w+)\s*$")
SKIP = re.compile(r"^<!-- example: skip \((.+)\) -->$")
PRINTS = re.compile(r"#\s*prints:\s*(.+?)\s*$")
RUN_LANGUAGES = ("sh", "python")


@dataclass(frozen=True)
class Block:
    document: str
    line: int
    language: str
    code: str
    skip: str | None

    @property
    def expected(self) -> list[str]:
        return [m.group(1) for m in map(PRINTS.search, self.code.splitlines()) if m]


def blocks(document: str) -> list[Block]:
    """The ``sh`` and ``python`` blocks of a Markdown file, with their skip notes."""
    found = []
    lines = (REPO / document).read_text().splitlines()
    i = 0
    while i < len(lines):
        fence = FENCE.match(lines[i])
        if fence is None:
            i += 1
            continue
        start = i
        i += 1
        while not lines[i].startswith("```"):
            i += 1
        if fence.group(1) in RUN_LANGUAGES:
            note = SKIP.match(lines[start - 1]) if start > 0 else None
            found.append(
                Block(
                    document,
                    start + 1,
                    fence.group(1),
                    "\n".join(lines[start + 1 : i]) + "\n",
                    note.group(1) if note else None,
                )
            )
        i += 1
    return found


def bare_environment() -> dict[str, str]:
    """A new terminal's environment: no pipeline settings, no venv on PATH."""
    keep = ("HOME", "LANG", "LC_ALL", "TMPDIR", "USER")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    venv_bin = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join(
        p for p in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if p != venv_bin
    )
    return env


@dataclass
class Session:
    """One demo stack and one reader's shell environment, carried across a document's blocks."""

    directory: Path
    demo: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=bare_environment)

    def run(self, block: Block) -> str:
        if block.language == "python":
            python = shutil.which("python", path=self.env["PATH"])
            assert python, "no `python` on PATH (the page must say how to get one)"
            args = [python, "-"]
            stdin = block.code
        else:
            dump = self.directory / ".env-after-block"
            args = ["bash", "-c", "set -eo pipefail\n" + block.code + f'\nenv -0 > "{dump}"\n']
            stdin = ""
        result = subprocess.run(
            args,
            input=stdin,
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        output = result.stdout + result.stderr
        assert result.returncode == 0, (
            f"{block.document}:{block.line} exited {result.returncode}\n{output}"
        )
        if block.language == "sh":
            pairs = (item.split("=", 1) for item in dump.read_text().split("\0") if "=" in item)
            self.env = {k: v for k, v in pairs if k not in ("SHLVL", "_", "PWD", "OLDPWD")}
        return result.stdout


def start_demo(directory: Path) -> Session:
    """`refunds demo --serve` as the page says, on free ports, until it has written .demo/env."""
    log = (directory / "demo.log").open("wb")
    demo = subprocess.Popen(
        [
            str(REFUNDS),
            "demo",
            "--serve",
            "--count",
            "1",
            "--web-port",
            str(free_port()),
            "--sandbox-port",
            str(free_port()),
        ],
        cwd=directory,
        env=bare_environment(),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not (directory / ".demo" / "env").exists():
        if demo.poll() is not None or time.monotonic() > deadline:
            stop_demo(demo)
            pytest.fail(f"the demo did not start serving:\n{(directory / 'demo.log').read_text()}")
        time.sleep(0.5)
    return Session(directory, demo)


def stop_demo(demo: subprocess.Popen[bytes]) -> None:
    if demo.poll() is None:
        demo.send_signal(signal.SIGTERM)  # the demo's own clean stop (as Ctrl-C)
        try:
            demo.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait(timeout=10)


@pytest.fixture(scope="module")
def sessions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Session]]:
    """One demo per document, started when its first block runs."""
    started: dict[str, Session] = {}
    yield started
    for session in started.values():
        stop_demo(session.demo)
        assert not (session.directory / ".demo" / "env").exists(), "the demo left .demo/env"


ALL_BLOCKS = [b for document in DOCUMENTS for b in blocks(document)]


def test_the_documents_have_runnable_examples_with_expected_output() -> None:
    for document in DOCUMENTS:
        runnable = [b for b in ALL_BLOCKS if b.document == document and b.skip is None]
        assert any(b.language == "python" for b in runnable), document
        assert sum(len(b.expected) for b in runnable) >= 3, document
    readme = (REPO / "README.md").read_text().splitlines()
    assert len(readme) <= 200, f"README.md has {len(readme)} lines"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("block", ALL_BLOCKS, ids=lambda b: f"{b.document}:{b.line}")
def test_example_runs_and_prints_what_the_text_says(
    block: Block, sessions: dict[str, Session], tmp_path_factory: pytest.TempPathFactory
) -> None:
    if block.skip is not None:
        pytest.skip(f"not run, as the page says: {block.skip}")
    session = sessions.get(block.document)
    if session is None:
        session = sessions[block.document] = start_demo(tmp_path_factory.mktemp("demo"))
    output = session.run(block)
    position = 0
    for text in block.expected:
        found = output.find(text, position)
        assert found >= 0, (
            f"{block.document}:{block.line}: expected {text!r} in order in:\n{output}"
        )
        position = found + len(text)
