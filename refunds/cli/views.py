"""How the CLI shows things to a human: one record, a list of records, the ops snapshot.

The fields of a record and their order come from ``refunds.models.PublicRefund`` (the same shape
as ``--json`` and the HTTP API), so a field added there shows up here too; amounts arrive already
in plain decimal notation (``refunds.money.format_money``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from refunds.cli.progress import STATE_ORDER, state_text
from refunds.models import PublicRefund, RefundRecord, State, iso
from refunds.ops.snapshot import ARCHIVE_LAG_WARN, OpsStats

# Shown in their own sections below the fields.
_SECTIONS = frozenset({"lastError", "history"})
RECORD_FIELDS = tuple(
    f.alias or name for name, f in PublicRefund.model_fields.items() if f.alias not in _SECTIONS
)
ERROR_FIELDS = ("type", "message", "operation", "status", "code", "logId")


def record_view(record: RefundRecord) -> RenderableType:
    """The human view of one record: fields (empty ones left out), last error, history."""
    pub = record.to_public()
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="bold")
    fields.add_column()
    for key in RECORD_FIELDS:
        value = pub.get(key)
        if value is None:
            continue
        if isinstance(value, dict | list):  # a rule-made refund's payment and notificationIds
            value = json.dumps(value, ensure_ascii=False)
        fields.add_row(key, state_text(record.state) if key == "state" else str(value))
    parts: list[RenderableType] = [fields]
    if record.last_error:
        e = record.last_error
        error = Table.grid(padding=(0, 2))
        error.add_column(style="bold red")
        error.add_column()
        for key in ERROR_FIELDS:
            if e.get(key) not in (None, ""):
                error.add_row(f"lastError.{key}", str(e[key]))
        parts.append(error)
    history = Table("at", "from", "to", "reason", "actor", title="history", title_justify="left")
    for h in pub["history"]:
        history.add_row(
            h["at"] or "", h["from"] or "", state_text(h["to"]), h["reason"], h["actor"]
        )
    parts.append(history)
    return Group(*parts)


def records_table(records: Sequence[RefundRecord]) -> Table:
    """One line per record: what an operator scans for in ``refunds list``."""
    table = Table(
        "clientReference",
        "state",
        "type",
        "originalTransactionId",
        "cryptoRefundId",
        "attempts",
        "updated",
        "last error",
        title=None,
    )
    for r in records:
        error = (r.last_error or {}).get("code") or (r.last_error or {}).get("type") or ""
        if r.conflict:
            error = f"conflict: {r.conflict.get('kind')}"
        table.add_row(
            r.client_reference,
            state_text(r.state),
            str(r.original_transaction_type),
            r.original_transaction_id,
            r.crypto_refund_id or "",
            str(r.attempts),
            iso(r.updated_at) or "",
            str(error),
        )
    return table


def age(seconds: float) -> str:
    """A duration the way a person says it: 90s, 45m, 3h 05m, 2d 4h."""
    seconds = int(seconds)
    if seconds < 120:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 120:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def stats_view(s: OpsStats) -> RenderableType:
    """``refunds stats``: counts and oldest by state, timers, provider errors and calls."""
    states = Table(
        "state", "count", "oldest", "age", title="refunds by state", title_justify="left"
    )
    for state in STATE_ORDER:
        n = s.counts.get(state.value, 0)
        o = s.oldest_by_state.get(state.value)
        states.add_row(
            state_text(state),
            str(n),
            o.client_reference if o else "",
            age(o.age(s.at)) if o else "",
            style="" if n else "dim",
        )
    states.add_row("total", str(s.total), "", "", style="bold")
    parts: list[RenderableType] = [states]
    if s.oldest is not None:
        o = s.oldest
        parts.append(
            Text.assemble(
                "oldest not final: ",
                (o.client_reference, "bold"),
                " (",
                state_text(o.state),
                f"), created {iso(o.created_at)}, {age(o.age(s.at))} ago",
            )
        )
    else:
        parts.append(Text("nothing in flight: every refund is final"))
    tick = "never" if s.since_last_tick is None else f"{s.since_last_tick:.1f} s ago"
    parts.append(
        Text(
            f"timers: {s.timer_count} pending, lag {s.timer_lag:.1f} s, last scheduler tick {tick}"
        )
    )
    window = "hour" if s.error_window == 3600 else age(s.error_window)
    errors = Table("code", "count", title=f"provider errors, last {window}", title_justify="left")
    for code, n in s.errors.items():
        errors.add_row(code, str(n))
    parts.append(errors if s.errors else Text(f"provider errors, last {window}: none"))
    calls = Table("operation", "outcome", "count", title="provider calls", title_justify="left")
    for operation, outcomes in s.calls.items():
        for outcome, n in outcomes.items():
            ok = outcome.isdigit() and 200 <= int(outcome) < 300
            calls.add_row(operation, Text(outcome, style="" if ok else "yellow"), str(n))
    parts.append(calls if s.calls else Text("provider calls: none recorded"))
    parts.append(Text(f"token fetches: {s.token_fetches}"))
    parts.append(
        Text(
            f"outcome notifications: {s.notifications_pending} pending, "
            f"{s.notifications_dead} dead"
            + (" (refunds notifications dead / replay)" if s.notifications_dead else ""),
            style="red" if s.notifications_dead else "",
        )
    )
    lag = s.archive_lag
    parts.append(
        Text(
            f"archive: {lag.length} changes queued, oldest {lag.oldest_age:.1f}s; "
            f"{s.archived_out} final refunds only in the archive",
            style="yellow" if lag.oldest_age > ARCHIVE_LAG_WARN else "",
        )
    )
    if s.conflicts:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(s.conflict_kinds.items()))
        parts.append(
            Text(
                f"{s.conflicts} with a provider conflict ({kinds}): refunds list --conflicts",
                style="red",
            )
        )
    if s.credentials_refused_since is not None:
        parts.append(
            Text(
                f"MCE refuses our credentials since {iso(s.credentials_refused_since)}: "
                "provider calls paused (check MCE_CLIENT_ID / MCE_CLIENT_SECRET)",
                style="bold red",
            )
        )
    if s.age_alert and s.in_flight_oldest is not None:
        o = s.in_flight_oldest
        parts.append(
            Text(
                f"age alert: {o.client_reference} in flight for {age(o.age(s.at))} "
                f"(REFUNDS_AGE_ALERT_AFTER {age(s.age_alert_after)})",
                style="bold red",
            )
        )
    held = s.counts.get(State.NEEDS_ATTENTION.value, 0)
    if held:
        parts.append(
            Text(f"{held} need a human: refunds list --state needs_attention", style="magenta")
        )
    return Group(*parts)
