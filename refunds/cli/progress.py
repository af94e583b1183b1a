"""The live progress view shared by ``refunds watch`` and ``refunds demo``.

Counts by state, a final/total bar, throughput and timer lag, refreshed cheaply enough to run every
second against a ledger of 100,000 refunds: final states are sticky, so only the non-final ones
are re-read.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from refunds.models import FINAL_STATES, State
from refunds.store.ledger import Ledger

# Pipeline order, for tables that read top to bottom like the refund's life.
STATE_ORDER = (
    State.RECEIVED,
    State.CREATING,
    State.CREATED,
    State.AWAITING_APPROVAL,
    State.CONFIRMING,
    State.PROCESSING,
    State.NEEDS_ATTENTION,
    State.COMPLETED,
    State.FAILED,
    State.REJECTED,
    State.CANCELLED,
    State.NOT_REFUNDABLE,
)
STATE_STYLE = {
    State.COMPLETED: "green",
    State.FAILED: "red",
    State.REJECTED: "red",
    State.CANCELLED: "yellow",
    State.NOT_REFUNDABLE: "yellow",
    State.NEEDS_ATTENTION: "bold magenta",
    State.AWAITING_APPROVAL: "cyan",
}
FINAL_NAMES = frozenset(s.value for s in FINAL_STATES)


def make_console(*, stderr: bool = False) -> Console:
    """A rich console; piped output gets a wide fixed width so tables are not cut at 80 columns
    (COLUMNS still wins when set)."""
    stream = sys.stderr if stderr else sys.stdout
    wide = not stream.isatty() and not os.environ.get("COLUMNS")
    return Console(stderr=stderr, highlight=False, width=160 if wide else None)


def state_text(state: State | str) -> Text:
    return Text(str(state), style=STATE_STYLE.get(State(state), ""))


# --- watch ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Snapshot:
    """Where the refunds in view stand, at one moment."""

    counts: dict[str, int]
    total: int
    final: int
    rate: float  # refunds reaching a final state per second, over the recent window
    timer_lag: float

    @property
    def done(self) -> bool:
        return self.total > 0 and self.final == self.total


@dataclass
class RefundView:
    """Counts by state of a set of refunds, cheap enough to refresh every second.

    All refunds: one SCARD per state. A prefix or an explicit list: the references are read once
    (again only when the ledger's size changes) and only the non-final ones are re-read, because
    final states are sticky.
    """

    ledger: Ledger
    prefix: str | None = None
    refs: list[str] | None = None
    window: float = 10.0
    _states: dict[str, str] = field(default_factory=dict)
    _known_size: int = -1
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def refresh(self) -> Snapshot:
        if self.prefix is None and self.refs is None:
            counts = {k: v for k, v in self.ledger.counts().items() if v}
        else:
            counts = self._counts_in_view()
        total = sum(counts.values())
        final = sum(n for s, n in counts.items() if s in FINAL_NAMES)
        return Snapshot(counts, total, final, self._rate(final), self.ledger.timer_lag())

    def _counts_in_view(self) -> dict[str, int]:
        if self.refs is not None:
            for ref in self.refs:
                self._states.setdefault(ref, "")
        else:
            size = self.ledger.record_count()
            if size != self._known_size:
                self._known_size = size
                prefix = self.prefix or ""
                for member in self.ledger.iter_references():
                    ref = str(member)
                    if ref.startswith(prefix):
                        self._states.setdefault(ref, "")
        pending = [ref for ref, s in self._states.items() if s not in FINAL_NAMES]
        for start in range(0, len(pending), 5000):
            chunk = pending[start : start + 5000]
            for ref, state in zip(chunk, self.ledger.states_of(chunk), strict=True):
                self._states[ref] = state or ""
        counts: dict[str, int] = {}
        for state in self._states.values():
            if state:  # "" = not (or no longer) in the ledger
                counts[state] = counts.get(state, 0) + 1
        return counts

    def _rate(self, final: int) -> float:
        t = time.monotonic()
        self._samples.append((t, final))
        while len(self._samples) > 2 and t - self._samples[1][0] >= self.window:
            self._samples.popleft()
        t0, f0 = self._samples[0]
        return (final - f0) / (t - t0) if t - t0 >= 0.5 else 0.0

    def not_final(self) -> dict[str, str]:
        """References in view that are not final, with their state ("" = missing)."""
        return {ref: s for ref, s in self._states.items() if s not in FINAL_NAMES}


def render_snapshot(snap: Snapshot, title: str) -> RenderableType:
    """Counts by state, a final/total bar, throughput and timer lag."""
    table = Table("state", "count", title=title, title_justify="left", min_width=30)
    for state in STATE_ORDER:
        n = snap.counts.get(state.value, 0)
        if n or state in (State.RECEIVED, State.PROCESSING, State.COMPLETED):
            table.add_row(state_text(state), str(n), style="" if n else "dim")
    for name, n in snap.counts.items():  # a state this CLI does not know yet: show, not hide
        if name not in {s.value for s in State}:
            table.add_row(name, str(n))
    bar = Table.grid(padding=(0, 1))
    bar.add_row(
        ProgressBar(total=max(snap.total, 1), completed=snap.final, width=40),
        f"{snap.final}/{snap.total} final",
    )
    parts: list[RenderableType] = [
        table,
        bar,
        Text(f"throughput {snap.rate:.1f}/s (last 10 s)   timer lag {snap.timer_lag:.1f} s"),
    ]
    held = snap.counts.get(State.NEEDS_ATTENTION.value, 0)
    if held:
        parts.append(
            Text(f"{held} need a human: refunds list --state needs_attention", style="magenta")
        )
    return Group(*parts)


def follow(
    view: RefundView,
    title: str,
    *,
    interval: float,
    console: Console,
    on_tick: Callable[[Snapshot], None] | None = None,
) -> Snapshot:
    """Refresh ``view`` every ``interval`` s until every refund in it is final; a Live view on a
    terminal, a plain line every few seconds elsewhere (CI logs stay readable). ``on_tick`` may
    raise to stop early (the demo's deadline and dead-child checks)."""
    snap = view.refresh()
    if console.is_terminal:
        with Live(render_snapshot(snap, title), console=console, refresh_per_second=4) as live:
            while not snap.done:
                if on_tick:
                    on_tick(snap)
                time.sleep(interval)
                snap = view.refresh()
                live.update(render_snapshot(snap, title))
        return snap
    last_line = 0.0
    while not snap.done:
        if on_tick:
            on_tick(snap)
        if time.monotonic() - last_line >= 5:
            last_line = time.monotonic()
            console.print(_plain_line(snap))
        time.sleep(interval)
        snap = view.refresh()
    console.print(_plain_line(snap))
    return snap


def _plain_line(snap: Snapshot) -> str:
    counts = " ".join(
        f"{s.value}={snap.counts[s.value]}" for s in STATE_ORDER if snap.counts.get(s.value)
    )
    return f"{snap.final}/{snap.total} final  {counts}  {snap.rate:.1f}/s"
