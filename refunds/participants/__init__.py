"""Participants and credentials: who a refund is for, and which MCE login acts for it.

- ``registry``: the registry file (credentials, participants), validated at start;
- ``clients``: one MCE client per participant, sharing its credential's token cache and pace.
"""

from refunds.participants.registry import (
    Credential,
    Participant,
    Registry,
    load_registry,
    parse_registry,
    registry_of,
    single_registry,
)

__all__ = [
    "Credential",
    "Participant",
    "Registry",
    "load_registry",
    "parse_registry",
    "registry_of",
    "single_registry",
]
