"""Commands run once after an upgrade: ``refunds index-payments``, ``refunds index-inflight``."""

from __future__ import annotations

import click

from refunds.cli import common
from refunds.cli.common import EXIT_PROBLEM, out, print_json
from refunds.store.connection import redis_client
from refunds.store.inflight import InFlight
from refunds.store.payments import index_payments as fill_index


@click.command("index-payments")
@click.option("--json", "as_json", is_flag=True, help="The report as a JSON object.")
def index_payments(as_json: bool) -> None:
    """Index the payment of every refund submitted before the one-payment-one-reference rule.

    Safe to run any time, and again (it only adds missing entries). Exit 1 when two references
    already refund one payment: those are listed for a human (cancel one if it was a mistake).
    """
    report = fill_index(redis_client(common.settings()))
    shared = dict(sorted(report.shared.items()))
    if as_json:
        print_json({"indexed": report.indexed, "present": report.present, "shared": shared})
    else:
        out.print(f"indexed {report.indexed}, already indexed {report.present}", highlight=False)
        for payment, refs in shared.items():
            out.print(f"payment {payment} is refunded under: {', '.join(refs)}", highlight=False)
    if shared:
        raise click.exceptions.Exit(EXIT_PROBLEM)


@click.command("index-inflight")
@click.option("--json", "as_json", is_flag=True, help="The report as a JSON object.")
def index_inflight(as_json: bool) -> None:
    """Index every refund in flight that was submitted before the in-flight index existed.

    ``/metrics`` reads the oldest refund in flight from that index (one look-up per scrape);
    ``refunds_in_flight_unindexed`` counts the refunds it misses. Safe to run any time, and again:
    each refund is indexed as its record stands, by one script, so a transition meanwhile is kept.
    """
    added, removed = InFlight(redis_client(common.settings())).rebuild()
    if as_json:
        print_json({"added": added, "removed": removed})
    else:
        out.print(f"indexed {added}, removed {removed} no longer in flight", highlight=False)
