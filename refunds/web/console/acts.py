"""The console's actions (POST): sign-in and sign-out; approve, reject, retry; bulk retry; replay
of dead letters.

Each refund action is the operator action of the CLI and the HTTP API (``refunds.actions``),
recorded in the history with who (the signed-in key's name, never a typed one) and why (a reason
is required). Every POST but sign-in passes ``common.checked_action`` first: session, CSRF token,
role and the read-only switch, so a refused POST changes nothing.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from refunds import actions
from refunds.errors import OperatorActionError, RefundsError
from refunds.store.outbox import Outbox
from refunds.web.console import views
from refunds.web.console.auth import NO_SECRET
from refunds.web.console.common import (
    Refused,
    auth,
    back,
    checked_action,
    first,
    log,
    read_form,
    render,
    set_cookie,
)
from refunds.web.deps import services

router = APIRouter(prefix="/console", include_in_schema=False)

#: The console's words for the operator actions: "reject" is the cancel action (with a reason).
REFUND_ACTIONS = {"approve": actions.approve, "reject": actions.cancel, "retry": actions.retry}
DONE = {"approve": "approved", "reject": "rejected (cancelled)", "retry": "retried"}


def _next(form: dict[str, list[str]], default: str) -> str:
    return first(form, "next") or default


@router.post("/login")
async def login(request: Request) -> Response:
    console = auth(request)
    if not console.enabled:
        raise Refused(503, NO_SECRET)
    form = await read_form(request)
    session = console.sign_in(first(form, "key"))
    target = _next(form, "/console")
    if session is None:
        log.warning("console sign-in refused: not a console key")
        return render(
            request,
            "login.html",
            None,
            401,
            next=target,
            error="That key is not an operator or viewer key.",
        )
    log.info("console sign-in", extra={"operator": session.name, "role": session.role})
    return back(request, session, target, f"Signed in as {session.name} ({session.role}).")


@router.post("/logout")
async def logout(request: Request) -> Response:
    session, _ = await checked_action(request, acting=False)
    log.info("console sign-out", extra={"operator": session.name})
    response = RedirectResponse("/console/login", status_code=303)
    set_cookie(request, response, None)
    return response


@router.post("/refunds/{ref}/{action}")
async def act(request: Request, ref: str, action: str) -> Response:
    session, form = await checked_action(request)
    perform = REFUND_ACTIONS.get(action)
    if perform is None:
        raise Refused(404, f"no such action: {action!r} (approve, reject or retry)")
    target = _next(form, f"/console/refunds/{ref}")
    reason = first(form, "reason")
    if not reason:
        return back(request, session, target, f"{ref}: say why (a reason is required).", "error")
    svc = services(request)
    try:
        result = await run_in_threadpool(
            perform, svc.context.ledger, svc.settings, ref, actor=session.name, reason=reason
        )
    except OperatorActionError as exc:
        return back(request, session, target, str(exc), "error")
    except RefundsError as exc:  # not found, not durable: said, nothing assumed
        return back(request, session, target, f"{ref}: {exc}", "error")
    if result.next_task is not None:
        svc.producer.nudge(ref, result.next_task, result.fence)
    log.info(
        "console action",
        extra={"operator": session.name, "action": action, "client_reference": ref},
    )
    return back(request, session, target, f"{ref} {DONE[action]}: now {result.record.state}.")


@router.post("/bulk-retry")
async def bulk_retry(request: Request) -> Response:
    """Retry the refunds the preview listed (the form's ``ref`` fields) that still match its
    filters; one that moved or no longer matches is left alone and counted as skipped."""
    session, form = await checked_action(request)
    code, min_age = first(form, "code"), first(form, "min_age")
    preview_url = f"/console/bulk-retry?code={code}&min_age={min_age}"
    reason = first(form, "reason")
    if not reason:
        return back(request, session, preview_url, "Say why (a reason is required).", "error")
    listed = {r.strip() for r in form.get("ref", []) if r.strip()}
    svc = services(request)
    ledger = svc.context.ledger

    def run() -> actions.BulkRetryReport:
        still = [
            r for r in views.bulk_selection(ledger, code, min_age) if r.client_reference in listed
        ]
        return actions.retry_many(ledger, svc.settings, still, actor=session.name, reason=reason)

    report = await run_in_threadpool(run)
    for ref, next_task in report.retried.items():
        if next_task is not None:
            svc.producer.nudge(ref, next_task, report.fences.get(ref))
    gone = len(listed) - len(report.retried) - len(report.skipped)
    log.info("console bulk retry", extra={"operator": session.name, "count": len(report.retried)})
    message = (
        f"Bulk retry: {len(report.retried)} retried, {len(report.skipped)} refused, "
        f"{gone} no longer matching."
    )
    return back(request, session, "/console/attention", message)


@router.post("/dead-letters/replay")
async def replay(request: Request) -> Response:
    """Put the chosen dead letters back into the outbox, due now (``refunds notifications
    replay``); the log records who and why (the outbox keeps no history of its own)."""
    session, form = await checked_action(request)
    members = [m for m in form.get("member", []) if m.strip()]
    reason = first(form, "reason")
    if not members or not reason:
        return back(
            request, session, "/console/dead-letters", "Choose notifications and say why.", "error"
        )
    outbox = Outbox.of(services(request).context.ledger)
    moved = await run_in_threadpool(outbox.replay, members)
    log.info(
        "console replay of dead notifications",
        extra={"operator": session.name, "members": moved, "reason": reason},
    )
    return back(
        request,
        session,
        _next(form, "/console/dead-letters"),
        f"{len(moved)} replayed ({len(members) - len(moved)} were no longer dead letters).",
    )
