"""The metrics of a PSP deployment (a registry file), labelled by participant or credential.

Labels are bounded to the configured set: the registry's participantCodes and credential ids
(a count kept for a participant no longer in the registry is reported as ``other``), so a
merchant cannot grow the series by sending codes. Without a registry file there are none.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from refunds.context import Context
from refunds.store.pacing import credentials_refused_since
from refunds.store.participants import ParticipantPauses

OTHER = "other"


def participant_families(p: Context) -> Iterator[Metric]:
    """Submitted refunds and pauses per participant; refusals per credential."""
    if p.participants is None or not p.participants.registry.from_file:
        return
    registry = p.participants.registry
    store = ParticipantPauses.of(p.ledger)
    submitted = CounterMetricFamily(
        "refunds_participant_submitted",
        "Refunds submitted per participant (a registry file's participantCodes)",
        labels=["participant"],
    )
    counts = dict.fromkeys(registry.codes, 0)
    for code, n in store.submitted().items():
        key = code if code in counts else OTHER
        counts[key] = counts.get(key, 0) + n
    for code, n in sorted(counts.items()):
        submitted.add_metric([code], n)
    yield submitted
    paused = GaugeMetricFamily(
        "refunds_participant_paused",
        "1 while an operator has paused the participant's provider calls",
        labels=["participant"],
    )
    held = store.all()
    for code in registry.codes:
        paused.add_metric([code], 1.0 if code in held else 0.0)
    yield paused
    refused = GaugeMetricFamily(
        "refunds_credential_refused",
        "1 while MCE's token endpoint refuses the credential (its participants paused)",
        labels=["credential"],
    )
    for cred in sorted(str(c) for c in registry.credentials if c is not None):
        since = credentials_refused_since(p.ledger.redis, cred)
        refused.add_metric([cred], 0.0 if since is None else 1.0)
    yield refused
