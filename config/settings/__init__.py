"""The one Settings object, read from the environment once at start and passed down.

Grouped by concern, one module each: ``provider`` (MCE, credentials, timeouts, the token),
``redis`` (URL, Sentinels, replicas), ``timing`` (polls, retries, tick, leases, time limits),
``approvals``, ``notifications`` and ``web``; ``model`` composes them into ``Settings`` and
``loading`` builds it, reporting every broken rule in one message. This package's names are the
interface the rest of the code imports.
"""

from config.settings.approvals import parse_currency_amounts
from config.settings.common import (
    PLACEHOLDER_SECRETS,
    SANDBOX_BASE_URL,
    SANDBOX_CLIENT_ID,
    SANDBOX_CLIENT_SECRET,
    SANDBOX_REDIS_URL,
    SANDBOX_WEBHOOK_SECRET,
    parse_duration,
)
from config.settings.loading import get_settings, implicit_redis_notice, load_settings
from config.settings.model import Settings, env_names, groups
from config.settings.notifications import DEFAULT_NOTIFY_QUEUE, PIPELINE_QUEUES

__all__ = [
    "DEFAULT_NOTIFY_QUEUE",
    "PIPELINE_QUEUES",
    "PLACEHOLDER_SECRETS",
    "SANDBOX_BASE_URL",
    "SANDBOX_CLIENT_ID",
    "SANDBOX_CLIENT_SECRET",
    "SANDBOX_REDIS_URL",
    "SANDBOX_WEBHOOK_SECRET",
    "Settings",
    "env_names",
    "get_settings",
    "groups",
    "implicit_redis_notice",
    "load_settings",
    "parse_currency_amounts",
    "parse_duration",
]
