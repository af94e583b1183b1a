"""The console's pages (GET): overview, needs-attention queue, approvals, a refund, conflicts,
dead letters, the bulk retry's preview and search. They only read; actions are in ``acts``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from refunds.actions import error_code, retry_many
from refunds.errors import OperatorActionError
from refunds.models import State, now
from refunds.ops.snapshot import gather
from refunds.store.outbox import Outbox
from refunds.web.console import views
from refunds.web.console.auth import NO_SECRET
from refunds.web.console.common import (
    STYLESHEET,
    auth,
    render,
    session_of,
    signed_in,
)
from refunds.web.deps import services

router = APIRouter(prefix="/console", include_in_schema=False)


@router.get("/static/console.css")
def stylesheet() -> Response:
    return Response(STYLESHEET, media_type="text/css", headers={"Cache-Control": "max-age=3600"})


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str = "/console") -> HTMLResponse:
    if not auth(request).enabled:
        return render(request, "refused.html", None, 503, why=NO_SECRET)
    return render(request, "login.html", session_of(request), next=next, error="")


@router.get("", response_class=HTMLResponse)
def overview(request: Request) -> HTMLResponse:
    session = signed_in(request)
    svc = services(request)
    snapshot = gather(
        svc.context.ledger, svc.context.stats, age_alert_after=svc.settings.age_alert_after
    )
    return render(request, "overview.html", session, title="Overview", s=snapshot, states=State)


@router.get("/attention", response_class=HTMLResponse)
def attention(request: Request, code: str = "", min_age: str = "") -> HTMLResponse:
    session = signed_in(request)
    ledger = services(request).context.ledger
    listing = views.needs_attention(ledger, code, min_age)
    return render(
        request,
        "attention.html",
        session,
        title="Needs attention",
        listing=listing,
        codes=listing.codes,
        code=code,
        min_age=min_age,
        ages=views.AGE_CHOICES,
        error_code=error_code,
    )


@router.get("/approvals", response_class=HTMLResponse)
def approvals(request: Request) -> HTMLResponse:
    session = signed_in(request)
    listing = views.in_state(services(request).context.ledger, State.AWAITING_APPROVAL)
    return render(
        request,
        "approvals.html",
        session,
        title="Approvals",
        listing=listing,
        held_since=views.held_since,
    )


@router.get("/refunds/{ref}", response_class=HTMLResponse)
def refund(request: Request, ref: str) -> HTMLResponse:
    session = signed_in(request)
    ledger = services(request).context.ledger
    if ledger.find(ref) is None:
        return render(request, "missing.html", session, 404, title="Not found", ref=ref)
    page = views.refund_page(ledger, ref)
    return render(
        request,
        "refund.html",
        session,
        title=ref,
        page=page,
        r=page.record,
        code=error_code(page.record),
        now=now(),
    )


@router.get("/conflicts", response_class=HTMLResponse)
def conflicts(request: Request) -> HTMLResponse:
    session = signed_in(request)
    listing = views.conflicts(services(request).context.ledger)
    return render(request, "conflicts.html", session, title="Conflicts", listing=listing)


@router.get("/dead-letters", response_class=HTMLResponse)
def dead_letters(request: Request) -> HTMLResponse:
    session = signed_in(request)
    outbox = Outbox.of(services(request).context.ledger)
    letters = outbox.dead_letters(views.LIMIT)
    return render(
        request,
        "dead.html",
        session,
        title="Dead letters",
        letters=letters,
        total=outbox.dead_count(),
    )


@router.get("/bulk-retry", response_class=HTMLResponse)
def bulk_retry_preview(request: Request, code: str = "", min_age: str = "") -> HTMLResponse:
    """Exactly the refunds the retry will take, listed before it acts (the bulk retry's dry run);
    the form sends this list back, and the action retries no refund outside it."""
    session = signed_in(request)
    svc = services(request)
    try:
        records = views.bulk_selection(svc.context.ledger, code, min_age)
        report = retry_many(
            svc.context.ledger,
            svc.settings,
            records,
            actor=session.name,
            reason="preview",
            dry_run=True,
        )
    except OperatorActionError as exc:
        return render(request, "refused.html", session, 422, why=exc.why)
    chosen = [r for r in records if r.client_reference in report.retried]
    return render(
        request,
        "bulk.html",
        session,
        title="Bulk retry",
        records=chosen,
        code=code,
        min_age=min_age,
        ages=views.AGE_CHOICES,
        codes=views.needs_attention(svc.context.ledger).codes,
        error_code=error_code,
    )


@router.get("/search", response_class=HTMLResponse)
def search(request: Request, q: str = "") -> Response:
    session = signed_in(request)
    found = views.search(services(request).context.ledger, q)
    if len(found) == 1 and q.strip():
        return RedirectResponse(f"/console/refunds/{found[0].client_reference}", status_code=303)
    return render(request, "search.html", session, title="Search", q=q, found=found)
