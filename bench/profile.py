"""Where worker CPU goes: ``python -m bench.profile [--refunds N]`` (needs ``py-spy`` on PATH or in
the venv; it is an investigation tool, not a dependency of the project).

Runs the throughput benchmark's flows (the pipeline, then the bare Celery flow) with ``py-spy
record --subprocesses --gil`` attached to every worker (main process and pool children) and to
beat: only samples of threads holding the GIL, i.e. CPU spent running Python, not waits. Writes
``bench/results/profile.md`` and ``profile.json``: the share of samples per process role, per
task, per library and innermost function, and per pipeline function on the stack (inclusive).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import bare
from bench.common import chunks, intents, refs, txn_id
from bench.stack import PIPELINE_ENV, BenchStack, sandbox_config
from bench.throughput import PROCESSING_SECONDS
from devstack.wait import wait_until
from refunds.producer import Producer
from refunds.store.ledger import Ledger

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
OURS = ("refunds/", "tasks/", "worker/", "config/", "bench/")


def _py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("py-spy not found: `.venv/bin/pip install py-spy` (investigation only)")
    return found


def _record(
    pids: list[int], outdir: Path, tag: str, rate: int
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    spies = []
    for pid in pids:
        out = outdir / f"{tag}-{pid}.txt"
        args = [_py_spy(), "record", "--subprocesses", "--gil", "--nonblocking", "-r", str(rate)]
        args += ["-f", "raw", "-o", str(out), "-p", str(pid)]
        spy = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # noqa: S603
        spies.append((spy, out))
    time.sleep(1.0)  # py-spy attaches
    return spies


def _stop(spies: list[tuple[subprocess.Popen[bytes], Path]]) -> list[Path]:
    for proc, _ in spies:
        proc.send_signal(signal.SIGINT)
    for proc, _ in spies:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return [out for _, out in spies if out.exists()]


def _frame_path(frame: str) -> str:
    if "(" not in frame:
        return ""
    return frame.rsplit("(", 1)[1].split(":", 1)[0]


def _short(frame: str) -> str:
    func = frame.split(" (", 1)[0]
    path = _frame_path(frame)
    return f"{path.removesuffix('.py').replace('/', '.')}:{func}"


def _library(path: str) -> str:
    if path.startswith(OURS):
        return "pipeline code (" + path.split("/", 1)[0] + "/)"
    head = path.split("/", 1)[0].removesuffix(".py")
    return head or "?"


def summarize(files: list[Path]) -> dict[str, Any]:
    total = 0
    by_library: Counter[str] = Counter()
    by_ours: Counter[str] = Counter()
    by_role: Counter[str] = Counter()
    by_task: Counter[str] = Counter()
    by_leaf: Counter[str] = Counter()
    for path in files:
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not count.isdigit():
                continue
            n = int(count)
            frames = stack.split(";")
            total += n
            py_frames = [f for f in frames if "(" in f and not f.startswith("process ")]
            leaf = py_frames[-1] if py_frames else ""
            by_library[_library(_frame_path(leaf))] += n
            by_leaf[_short(leaf)] += n
            role = (
                "beat"
                if any("beat" in f for f in frames[:14])
                else (
                    "pool process (runs tasks)"
                    if any("Worker.workloop" in f for f in frames)
                    else "worker main process (consumer, events, acks)"
                )
            )
            by_role[role] += n
            task = next(
                (_short(f) for f in frames if _frame_path(f).startswith(("tasks/", "bench/bare"))),
                "(no task on the stack)",
            )
            by_task[task] += n
            seen = set()
            for f in py_frames:
                if _frame_path(f).startswith(OURS):
                    key = _short(f)
                    if key not in seen:
                        seen.add(key)
                        by_ours[key] += n

    def share(c: Counter[str], top: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in c.most_common(top)] if total else []

    return {
        "samples": total,
        "by_role": share(by_role, 10),
        "by_task": share(by_task, 15),
        "by_library_of_leaf_frame": share(by_library, 15),
        "leaf_functions": share(by_leaf, 20),
        "pipeline_functions_inclusive": share(by_ours, 30),
    }


def _run_flow(stack: BenchStack, flow: str, n: int, rate: int, outdir: Path) -> dict[str, Any]:
    stack.clean(**sandbox_config(processing_seconds=PROCESSING_SECONDS))
    names = refs(f"{flow}-", n)
    stack.admin.flag(txn_id(r) for r in names)
    if flow == "pipeline":
        stack.start_pipeline_workers(2, 4, stack.pipeline_env(), beat=True)
    else:
        env = stack.bare_env(events=True, poll_schedule=PIPELINE_ENV["REFUNDS_POLL_SCHEDULE"])
        stack.start_bare_workers(2, 4, env)
    time.sleep(1.0)
    spies = _record(stack.celery_pids(), outdir, flow, rate)
    started = time.monotonic()
    if flow == "pipeline":
        producer = Producer(stack.settings())
        for part in chunks(intents(names), 1000):
            producer.submit_many(part)
        ledger = Ledger.from_url(stack.redis_url)
        wait_until(lambda: ledger.counts().get("completed", 0) >= n, 600, what="pipeline final")
    else:
        bare.app.conf.broker_url = stack.redis_url
        for ref in names:
            bare.create.apply_async((ref, txn_id(ref)))
        client = stack.client()
        wait_until(lambda: int(client.get(bare.DONE_KEY) or 0) >= n, 600, what="bare final")
    seconds = time.monotonic() - started
    files = _stop(spies)
    stack.stop_celery()
    return {"flow": flow, "refunds": n, "seconds": round(seconds, 1), **summarize(files)}


def _markdown(runs: list[dict[str, Any]], stamp: str) -> str:
    lines = [
        "# Where worker CPU goes (py-spy --gil: worker and beat threads holding the GIL)",
        "",
        stamp,
        "",
    ]
    for run in runs:
        lines += [
            f"## {run['flow']}: {run['refunds']} refunds in {run['seconds']} s, "
            f"{run['samples']} samples",
            "",
        ]
        for key, title in (
            ("by_role", "process role"),
            ("by_task", "task on the stack"),
            ("by_library_of_leaf_frame", "library the CPU was spent in (innermost frame)"),
            ("leaf_functions", "innermost Python function"),
            ("pipeline_functions_inclusive", "pipeline functions on the stack (inclusive)"),
        ):
            if not run[key]:
                continue
            lines += [f"| {title} | % of samples |", "|---|---:|"]
            lines += [f"| `{name}` | {pct} |" for name, pct in run[key]]
            lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--refunds", type=int, default=1000)
    parser.add_argument("--rate", type=int, default=50, help="samples per second per process")
    args = parser.parse_args(argv)
    _py_spy()
    os.chdir(ROOT)
    stack = BenchStack.start()
    outdir = stack.workdir / "profiles"
    outdir.mkdir()
    try:
        runs = [
            _run_flow(stack, flow, args.refunds, args.rate, outdir) for flow in ("pipeline", "bare")
        ]
    finally:
        stack.close()
    commit = subprocess.run(
        ["git", "--no-optional-locks", "rev-parse", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    stamp = (
        f"{datetime.now(UTC).isoformat(timespec='seconds')}, commit {commit[:12]}, "
        f"{os.cpu_count()} cores; 2 worker processes x concurrency 4, {args.rate} samples/s "
        "per process"
    )
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "profile.json").write_text(
        json.dumps({"stamp": stamp, "runs": runs}, indent=2) + "\n"
    )
    text = _markdown(runs, stamp)
    (RESULTS / "profile.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
