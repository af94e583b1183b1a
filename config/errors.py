"""Configuration's own error: ``config/`` sits below the domain and imports nothing from it.

``refunds.errors.ConfigError`` is this same class (re-exported), so ``except ConfigError`` works
whichever module a caller imports it from. It is not a ``RefundsError``: a configuration that
cannot load is a deployment problem, raised before any refund is touched.
"""

from __future__ import annotations


class ConfigError(Exception):
    """The process cannot start: a setting is missing, malformed or a placeholder secret."""
