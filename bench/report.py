"""Writing the results: ``latest.json`` (everything), ``latest.md`` (the table, the methods)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.common import Figure, Result


def _value(f: Figure) -> str:
    if f.value is None:
        return "n/a"
    if isinstance(f.value, float) and f.value.is_integer() and abs(f.value) >= 100:
        return f"{int(f.value):,}"
    if isinstance(f.value, int):
        return f"{f.value:,}"
    return f"{f.value:g}" if isinstance(f.value, float) else str(f.value)


def _met(f: Figure) -> str:
    if f.met is None:
        return ""
    return "met" if f.met else "**missed**"


def markdown(meta: dict[str, Any], results: list[Result]) -> str:
    m = meta
    lines = [
        f"# Benchmark results ({m['plan']} run)",
        "",
        f"- Date: {m['date']} (run took {m['seconds']:.0f} s)",
        f"- Machine: {m['cores']} cores ({m['cpu_model']}), {m['memory_gib']:.1f} GiB RAM, "
        f"{m['os']}",
        f"- Python {m['python']}, Redis {m['redis_version']} (private, no AOF), Celery "
        f"{m['celery']}, kombu {m['kombu']}, redis-py {m['redis_py']}",
        f"- Code: commit {m['commit'][:12]}"
        + (
            f", plus {m['dirty_files']} uncommitted files in the work tree"
            if m["dirty_files"]
            else ""
        ),
        f"- Workers: {m['workers_note']}",
        "- Other load on the machine (CPU used by processes outside this benchmark, averaged): "
        + ", ".join(
            f"{r.name} {r.details.get('foreign_load_cores', 0):.2f} cores" for r in results
        ),
        "",
        "| benchmark | figure | value | unit | target | result |",
        "|---|---|---:|---|---|---|",
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.title} | failed: {r.error} | | | | |")
            continue
        for i, f in enumerate(r.figures):
            title = r.title if i == 0 else ""
            name = f.name + (f" ({f.note})" if f.note else "")
            lines.append(f"| {title} | {name} | {_value(f)} | {f.unit} | {f.target} | {_met(f)} |")
    lines += ["", "## How each figure was measured", ""]
    for r in results:
        lines.append(f"### {r.title}")
        lines.append("")
        lines += [f"- {line}" for line in r.method]
        lines.append(f"- Took {r.seconds:.0f} s.")
        lines.append("")
    return "\n".join(lines)


def write(
    outdir: Path, plan: str, meta: dict[str, Any], results: list[Result], full: bool
) -> list[Path]:
    outdir.mkdir(parents=True, exist_ok=True)
    data = {"meta": meta, "results": [r.to_dict() for r in results]}
    text = json.dumps(data, indent=2, default=str) + "\n"
    md = markdown(meta, results) + "\n"
    written = []
    names = ["latest"] + ([plan] if full else [])
    for name in names:
        (outdir / f"{name}.json").write_text(text)
        (outdir / f"{name}.md").write_text(md)
        written += [outdir / f"{name}.json", outdir / f"{name}.md"]
    return written
