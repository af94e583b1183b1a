"""What every console route shares: the session of a request, the checks before an action, the
templates and the one-shot message carried to the next page.

A GET without a session is sent to the sign-in page; a POST without a session, without the
session's CSRF token, from a viewer, or while the console is read-only is refused with 403 before
the form is acted on, so nothing changes.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape

from refunds.models import iso, now
from refunds.money import format_money
from refunds.web.console.auth import (
    COOKIE,
    COOKIE_PATH,
    CSRF_FIELD,
    NO_SECRET,
    ConsoleAuth,
    Session,
    csrf_ok,
)

log = logging.getLogger("refunds.console")
FORM_TYPE = "application/x-www-form-urlencoded"


class SignInRequired(Exception):  # noqa: N818 - a redirect, not an error
    """A page asked for without a session: answered with a redirect to the sign-in page."""

    def __init__(self, back_to: str) -> None:
        super().__init__(back_to)
        self.back_to = back_to


class Refused(Exception):  # noqa: N818 - an answer (403/415/503 page), not a fault
    """An action refused before anything was read or written; answered as an HTML page."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def _age(seconds: float | None) -> str:
    """A short human age: ``42s``, ``5m``, ``3h 20m``, ``2d 4h``."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60}m".removesuffix(" 0m")
    return f"{s // 86400}d {s % 86400 // 3600}h".removesuffix(" 0h")


def _since(ts: float | None) -> str:
    return "-" if ts is None else _age(now() - ts)


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


TEMPLATES = Environment(
    loader=PackageLoader("refunds.web.console", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)
TEMPLATES.filters.update(
    age=_age, since=_since, when=_when, iso=iso, money=lambda v: format_money(v) or "-"
)
STYLESHEET = (resources.files("refunds.web.console") / "static" / "console.css").read_bytes()


#: Every page: not cached (it shows live state and a CSRF token), never framed by another site (a
#: framed action button could be clicked by a trick), and loading only what this app serves.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def auth(request: Request) -> ConsoleAuth:
    found: ConsoleAuth = request.app.state.console_auth
    return found


def session_of(request: Request) -> Session | None:
    return auth(request).load(request.cookies.get(COOKIE))


def signed_in(request: Request) -> Session:
    """The request's session; raises Refused (503) with the console off, SignInRequired without
    a valid session."""
    if not auth(request).enabled:
        raise Refused(503, NO_SECRET)
    session = session_of(request)
    if session is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return session


async def read_form(request: Request) -> dict[str, list[str]]:
    """The form's fields (each may repeat). Refused (415) for a body that is no plain form."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != FORM_TYPE:
        raise Refused(415, f"the console takes forms ({FORM_TYPE}), not {kind or 'no type'}")
    fields: dict[str, list[str]] = {}
    for key, value in parse_qsl((await request.body()).decode("utf-8", "replace"), True):
        fields.setdefault(key, []).append(value)
    return fields


def first(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


async def checked_action(
    request: Request, *, acting: bool = True
) -> tuple[Session, dict[str, list[str]]]:
    """The session and form of a POST that passed every check, in this order: a session (403),
    its CSRF token (403), an operator (403 for a viewer) and the console not read-only (403).
    ``acting`` False (sign-out) skips the last two."""
    if not auth(request).enabled:
        raise Refused(503, NO_SECRET)
    session = session_of(request)
    if session is None:
        raise Refused(403, "not signed in (or the session expired): sign in again")
    form = await read_form(request)
    if not csrf_ok(session, first(form, CSRF_FIELD)):
        raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
    if acting and not session.can_act:
        raise Refused(403, f"{session.name} signed in as a viewer: viewers cannot act")
    if acting and auth(request).read_only:
        raise Refused(403, "the console is read-only (REFUNDS_CONSOLE_READ_ONLY)")
    return session, form


def set_cookie(request: Request, response: Response, session: Session | None) -> None:
    console = auth(request)
    if session is None:
        response.delete_cookie(
            COOKIE, path=COOKIE_PATH, secure=console.secure_cookie, httponly=True, samesite="strict"
        )
        return
    response.set_cookie(
        COOKIE,
        console.dump(session),
        max_age=int(console.max_age),
        path=COOKIE_PATH,
        secure=console.secure_cookie,
        httponly=True,
        samesite="strict",
    )


def render(
    request: Request, template: str, session: Session | None, status: int = 200, **context: Any
) -> HTMLResponse:
    """The page, with the session's one-shot message shown once (then cleared from the cookie)."""
    console = auth(request)
    body = TEMPLATES.get_template(template).render(
        session=session,
        can_act=session is not None and session.can_act and not console.read_only,
        read_only=console.read_only,
        csrf_field=CSRF_FIELD,
        path=request.url.path,
        **context,
    )
    response = HTMLResponse(body, status_code=status, headers=PAGE_HEADERS)
    if session is not None and session.flash:
        set_cookie(request, response, replace(session, flash="", flash_kind="ok"))
    return response


def back(request: Request, session: Session, to: str, message: str, kind: str = "ok") -> Response:
    """A 303 to ``to`` (a console path only: never a redirect out of the console) that shows
    ``message`` once."""
    target = to if to.startswith("/console") and "//" not in to and "\\" not in to else "/console"
    response = RedirectResponse(target, status_code=303)
    set_cookie(request, response, replace(session, flash=message[:500], flash_kind=kind))
    return response


def sign_in_redirect(back_to: str) -> RedirectResponse:
    return RedirectResponse(f"/console/login?next={quote(back_to)}", status_code=303)
