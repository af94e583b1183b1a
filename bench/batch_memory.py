"""Benchmark 6: peak memory of reading a large batch file (``refunds submit --file``).

Issue 9 measured a 210 MB JSONL file peaking at 1,561 MB when the file was read whole. This writes
a JSONL file of about ``--mb`` megabytes (unique references, an optional address on every other
line) in a temporary directory, then runs, in a fresh child process, what ``submit --file`` does
before it talks to Redis: pass 1 (:func:`refunds.batch.scan_batch`, validating every line) and
pass 2 (:func:`refunds.batch.iter_intents`, building each intent; nothing is sent). The child
reports its own peak RSS (``VmHWM`` from ``/proc/self/status``; not ``ru_maxrss``, which Linux
carries over an ``exec`` from the forking parent, here ``bench.run`` itself) and its peak after
imports, so the figure is the reader's and not another process's. The file is deleted
afterwards. Nothing is asserted.

``python -m bench.batch_memory [--mb 200]`` runs it alone; ``bench.run --only batch`` includes it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Figure, Result, at_most

ROOT = Path(__file__).resolve().parent.parent


def generate(path: Path, target_bytes: int) -> int:
    """Write JSONL intents until the file reaches ``target_bytes``; returns the line count."""
    lines = 0
    written = 0
    with path.open("w", encoding="utf-8", newline="\n") as out:
        while written < target_bytes:
            block = []
            for n in range(lines, lines + 10_000):
                item: dict[str, Any] = {
                    "originalTransactionType": 1 + n % 3,
                    "originalTransactionId": f"txn-{n:012d}-9f3c2a7b",
                    "clientReference": f"batch-bench-{n:010d}",
                }
                if n % 2:
                    item["refundAddress"] = f"TBenchAddress{n:021d}"
                block.append(json.dumps(item) + "\n")
            text = "".join(block)
            out.write(text)
            written += len(text)
            lines += len(block)
    return lines


def _peak_kib() -> int:
    """This process's peak RSS in KiB: VmHWM, or ru_maxrss where there is no /proc."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def child(path: Path) -> dict[str, Any]:
    """Both passes over ``path`` in this process; what the parent prints as JSON."""
    from refunds.batch import iter_intents, scan_batch  # noqa: PLC0415 - after the baseline

    baseline_kib = _peak_kib()
    started = time.perf_counter()
    report = scan_batch(path)
    scan_seconds = time.perf_counter() - started
    after_scan_kib = _peak_kib()
    started = time.perf_counter()
    count = sum(1 for _ in iter_intents(path, report.format, expect=report.stamp))
    iter_seconds = time.perf_counter() - started
    return {
        "ok": report.ok,
        "problems": report.problem_count,
        "intents": report.intents,
        "yielded": count,
        "baseline_kib": baseline_kib,
        "after_scan_kib": after_scan_kib,
        "peak_kib": _peak_kib(),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "scan_seconds": scan_seconds,
        "iter_seconds": iter_seconds,
    }


def measure(megabytes: float) -> dict[str, Any]:
    """Generate the file, run the child on it, delete the file; the figures as a dict."""
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        path = Path(tmp) / "batch.jsonl"
        started = time.perf_counter()
        lines = generate(path, int(megabytes * 1_000_000))
        generate_seconds = time.perf_counter() - started
        size = path.stat().st_size
        started = time.perf_counter()
        done = subprocess.run(  # noqa: S603 - our own module, our own file
            [sys.executable, "-m", "bench.batch_memory", "--child", str(path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        )
        wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"batch_memory child failed: {done.stderr.strip()[-2000:]}")
    figures: dict[str, Any] = json.loads(done.stdout)
    figures.update(
        file_bytes=size, lines=lines, child_seconds=wall, generate_seconds=generate_seconds
    )
    return figures


def batch_memory(megabytes: float = 200.0) -> Result:
    """Benchmark 6 as a :class:`Result` for ``bench.run``."""
    m = measure(megabytes)
    file_mb = m["file_bytes"] / 1e6
    peak_mb = m["peak_kib"] * 1024 / 1e6
    growth_mb = (m["peak_kib"] - m["baseline_kib"]) * 1024 / 1e6
    large = file_mb >= 100  # below that, the interpreter's own ~40 MB dominates the peak
    result = Result("batch", "6. Peak memory reading a large batch file (submit --file)")
    result.figures = [
        Figure("batch file size", round(file_mb, 1), "MB", note=f"{m['lines']:,} JSONL lines"),
        Figure(
            "peak RSS, validate + parse (both passes)",
            round(peak_mb, 1),
            "MB",
            target=f"under the file size ({file_mb:.0f} MB); was 1,561 MB for 210 MB"
            if large
            else "",
            met=at_most(peak_mb, file_mb) if large else None,
        ),
        Figure(
            "peak RSS growth over the baseline",
            round(growth_mb, 1),
            "MB",
            target=f"at most half the file size ({file_mb / 2:.0f} MB)",
            met=at_most(growth_mb, file_mb / 2),
        ),
        Figure(
            "peak RSS after imports (baseline)",
            round(m["baseline_kib"] * 1024 / 1e6, 1),
            "MB",
        ),
        Figure("pass 1 (validate) time", round(m["scan_seconds"], 1), "s"),
        Figure("pass 2 (parse, nothing sent) time", round(m["iter_seconds"], 1), "s"),
        Figure(
            "lines validated per second (pass 1)",
            round(m["lines"] / m["scan_seconds"]),
            "lines/s",
        ),
    ]
    result.method = [
        "A JSONL file of unique intents is written to a temporary directory and deleted after.",
        "A fresh child process runs scan_batch then iter_intents over it (nothing is sent to "
        "Redis) and reports its own peak RSS (VmHWM), after imports and at the end.",
    ]
    result.details = m
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.batch_memory", description=__doc__)
    parser.add_argument("--mb", type=float, default=200.0, help="file size in MB (1e6 bytes)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0
    m = measure(args.mb)
    print(f"file: {m['file_bytes'] / 1e6:,.1f} MB, {m['lines']:,} lines")
    print(
        f"peak RSS: {m['peak_kib'] * 1024 / 1e6:,.1f} MB (after pass 1 "
        f"{m['after_scan_kib'] * 1024 / 1e6:,.1f} MB; baseline after imports "
        f"{m['baseline_kib'] * 1024 / 1e6:,.1f} MB)"
    )
    print(
        f"time: pass 1 {m['scan_seconds']:.1f} s, pass 2 {m['iter_seconds']:.1f} s, child "
        f"{m['child_seconds']:.1f} s (writing the file {m['generate_seconds']:.1f} s)"
    )
    print(f"valid: {m['ok']}, intents: {m['intents']:,}, yielded: {m['yielded']:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
