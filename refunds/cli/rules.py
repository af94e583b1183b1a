"""``refunds rules``: check a KYT rules file, and replay stored payment webhooks through rules.

``check FILE`` validates a file as the web app does at start (exit 0, or 2 with every problem,
one per line, each naming its rule). ``backtest --since ...`` reads the payment webhooks kept in
Redis (30 days), runs each through the detector and the rules (the configured file, or
``--file``) exactly as the receiver does, and prints what would have happened, one line each,
then totals. It writes nothing: no intent, no counter, no mark on an event.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import click
from pydantic import ValidationError

from config.settings import parse_duration
from config.settings.kyt import KytSettings
from refunds.cli.common import EXIT_USAGE, fail, ledger, print_json, settings
from refunds.kyt.detector import Readings, detect, parse_body
from refunds.kyt.intake import rules_from_settings
from refunds.kyt.rules import RulesError, RuleSet, decide, load_rules
from refunds.models import iso
from refunds.store.kyt import KytStore


@click.group()
def rules() -> None:
    """Check KYT rules files and backtest them on stored payment webhooks."""


def _load(path: Path, s: KytSettings) -> RuleSet:
    return load_rules(path, s.kyt_results.values(), s.kyt_results.keys())


def _kyt_settings() -> KytSettings:
    """Only the REFUNDS_KYT_* settings: checking a file needs no Redis, provider or secrets."""
    names = {f.validation_alias for f in KytSettings.model_fields.values()}
    given = {k: v for k, v in os.environ.items() if k in names}
    try:
        return KytSettings.model_validate(given)
    except ValidationError as exc:
        problems = "; ".join(
            f"{err['loc'][0] if err['loc'] else 'settings'}: {err['msg']}" for err in exc.errors()
        )
        fail(f"invalid configuration: {problems}", EXIT_USAGE)


@rules.command()
@click.argument("file", type=click.Path(path_type=Path))
def check(file: Path) -> None:
    """Validate a rules file: exit 0, or 2 listing every problem (reads only REFUNDS_KYT_*)."""
    s = _kyt_settings()
    try:
        loaded = _load(file, s)
    except RulesError as exc:
        click.echo(f"refunds: invalid KYT rules file {file}:", err=True)
        for problem in exc.problems:
            click.echo(f"  - {problem}", err=True)
        raise click.exceptions.Exit(EXIT_USAGE) from None
    click.echo(
        f"{file}: {len(loaded.rules)} rules ({', '.join(loaded.ids) or 'none'}), "
        f"deny {sorted(loaded.deny_results | loaded.deny_types) or 'nothing'}, "
        f"sha256 {loaded.digest}"
    )


def _since(text: str) -> float:
    """Epoch seconds from a duration back from now (``24h``) or an ISO 8601 time."""
    try:
        return time.time() - parse_duration(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        fail(f"--since: {text!r} is neither a duration (24h, 90m) nor an ISO 8601 time", EXIT_USAGE)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@rules.command()
@click.option("--since", "since_text", required=True, help="24h, 2d, or an ISO 8601 time (UTC).")
@click.option(
    "--file",
    "file",
    type=click.Path(path_type=Path),
    help="Rules to try (default: REFUNDS_KYT_RULES_FILE).",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object instead of text.")
def backtest(since_text: str, file: Path | None, as_json: bool) -> None:
    """Replay stored payment webhooks through the rules; prints what would have happened.

    Changes nothing. Each line: time received, notificationId, family, payment, kytResult
    (category), then the decision (effect, rule, action, mode, reference); a decision that
    differs from the one the live run recorded says so.
    """
    s = settings()
    try:
        ruleset = _load(file, s) if file is not None else rules_from_settings(s)
    except RulesError as exc:
        fail(str(exc), EXIT_USAGE)
    if ruleset is None:
        fail("no rules: set REFUNDS_KYT_RULES_FILE or pass --file", EXIT_USAGE)
    store = KytStore(ledger(s).redis)
    readings = Readings.from_settings(s)
    rows, totals, differ = [], Counter[str](), 0
    for nid, at in store.since(_since(since_text)):
        body = store.body(nid)
        event = parse_body(body) if body is not None else None
        payment = detect(readings, event) if event is not None else None
        if payment is None:
            totals["gone"] += 1
            continue
        decision = decide(ruleset, payment).to_dict()
        live = store.decision(nid)
        same = live is None or all(live.get(k) == decision[k] for k in decision)
        differ += 0 if same else 1
        totals[decision["effect"]] += 1
        rows.append(
            {
                "at": iso(at),
                "notificationId": nid,
                **payment.details(),
                "decision": decision,
                "live": live,
                "same": same,
            }
        )
    if as_json:
        print_json(
            {"rows": rows, "totals": dict(totals), "differ": differ, "rulesSha256": ruleset.digest}
        )
        return
    for row in rows:
        d = row["decision"]
        line = (
            f"{row['at']} {row['notificationId']} {row.get('family')} "
            f"{row.get('originalTransactionType')}/{row.get('originalTransactionId')} "
            f"{row.get('amount', '-')} {row.get('currency', '-')} "
            f"kyt={row.get('kytResult', '-')}({row.get('kytCategory')}) -> {d['effect']}"
        )
        if d["rule"]:
            line += f" rule={d['rule']} action={d['action']} mode={d['mode']}"
        if d["reference"]:
            line += f" ref={d['reference']}"
        if not row["same"]:
            line += f" (live: {row['live'].get('effect')} rule={row['live'].get('rule')})"
        click.echo(line)
    summary = ", ".join(f"{k}={v}" for k, v in sorted(totals.items())) or "nothing stored"
    click.echo(f"total {len(rows)}: {summary}; differ from live: {differ}")
