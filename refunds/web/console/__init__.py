"""The operator console at ``/console``: server-rendered pages to see and act on refunds.

Pages (``pages``) read what ``refunds stats|list|status`` read; actions (``acts``) are the
operator actions of the CLI (``refunds.actions``), recorded with who and why. Sign-in, the
session cookie, roles and CSRF are in ``auth`` and ``common``. Templates and the stylesheet ship
in the package and are served by the app (nothing from a CDN). ``install`` wires it into the app.
"""

from __future__ import annotations

from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.responses import Response

from config.settings import Settings
from refunds.web.console import acts, pages
from refunds.web.console.auth import ConsoleAuth
from refunds.web.console.common import Refused, SignInRequired, render, session_of, sign_in_redirect

__all__ = ["install"]


def install(
    app: FastAPI,
    settings: Settings,
    *,
    intake_key: str,
    operator_keys: Mapping[str, str],
    placeholder_keys: frozenset[str],
) -> None:
    """Add the console's routes and answers to ``app``. Raises ConfigError (before serving) for
    malformed viewer keys or one that repeats the intake or an operator key."""
    app.state.console_auth = ConsoleAuth(
        settings,
        intake_key=intake_key,
        operator_keys=operator_keys,
        placeholder_keys=placeholder_keys,
    )
    app.include_router(pages.router)
    app.include_router(acts.router)
    app.add_exception_handler(SignInRequired, _sign_in)
    app.add_exception_handler(Refused, _refused)


async def _sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignInRequired)  # noqa: S101 - registered for this class only
    return sign_in_redirect(exc.back_to)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)  # noqa: S101 - registered for this class only
    return render(
        request, "refused.html", session_of(request), exc.status, title="Refused", why=exc.why
    )
