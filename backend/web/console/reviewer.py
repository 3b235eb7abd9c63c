"""The township reviewer's screens: the enrolment review queue and its bulk confirm, void and refund
approvals, a collector's day (remittances, close), and sync conflicts and quarantined work.

Every handler carries the guards of the API route whose service it calls; every write runs in
`attempt` (a savepoint), so a refusal — approving one's own request, a day already closed — is a
message on the page and writes nothing.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Redirect, Template

from backend.actor import Role
from backend.clock import local_today
from backend.deps import CurrentActor, Tx
from backend.enrollment import enrollments
from backend.errors import InvalidInput
from backend.guards import require_roles
from backend.i18n import _, ngettext
from backend.premiums import adjustments, remittance
from backend.premiums import reports as premium_reports
from backend.sync import review as quarantine
from backend.sync.conflicts import review as conflicts
from backend.web.pages import attempt, page, parse_day

REVIEWER = require_roles(Role.TOWNSHIP_REVIEWER)  # confirm, decide, close, settle: the API's guards
STATUSES = ("paid", "subsidised", "registered", "confirmed", "cancelled")
PAGE_SIZE = 100


def _uuid(value: object) -> UUID | None:
    try:
        return UUID(str(value))
    except ValueError:
        return None


def _fen(value: object, field: str) -> int:
    """An amount typed in yuan (`400` or `400.50`) as integer fen."""
    text = str(value or "").strip().replace(",", "")
    whole, _dot, cents = text.partition(".")
    if not whole.isdigit() or (cents and (not cents.isdigit() or len(cents) > 2)):
        raise InvalidInput(field, _("must be an amount in yuan, such as 400 or 400.50"))
    return int(whole) * 100 + int(cents.ljust(2, "0") or 0)


# The enrolment review queue ------------------------------------------------------------------------


async def _queue_page(
    request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor, state: State, **extra: Any
) -> Template:
    query = request.query_params
    today = local_today(state.settings.timezone)
    year = int(query["year"]) if str(query.get("year", "")).isdigit() else today.year
    status = query.get("status") if query.get("status") in STATUSES else "paid"
    village = query.get("village_code") or None
    if village is not None and not (len(village) == 12 and village.isdigit()):
        village = None
    after = _uuid(query.get("after")) if query.get("after") else None
    found = await enrollments.queue(
        tx,
        actor,
        year=year,
        status=status,
        village_code=village,
        household_id=None,
        after=after,
        limit=PAGE_SIZE,
    )
    return page(
        request,
        "console/enrollments.html",
        title=_("Enrolment review"),
        year=year,
        status=status,
        village_code=village or "",
        statuses=STATUSES,
        items=found.items,
        people=await enrollments.queue_people(tx, actor, {e.person_id for e in found.items}),
        next_cursor=found.next_cursor,
        **extra,
    )


@get("/enrollments", guards=[REVIEWER], include_in_schema=False)
async def enrollment_queue(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    return await _queue_page(request, tx, actor, state)


@post("/enrollments/confirm", guards=[REVIEWER], include_in_schema=False)
async def confirm_enrollments(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    """Bulk confirm of the ticked enrolments: all or nothing, as `POST /enrollments/confirm`."""
    form = await request.form()
    ids = [u for u in (_uuid(v) for v in form.getall("ids", [])) if u is not None]
    if not ids:
        return await _queue_page(request, tx, actor, state, error=_("Tick the enrolments to confirm."))
    done, error = await attempt(tx, lambda: enrollments.confirm(tx, actor, ids))
    flash = None
    if done is not None:
        flash = ngettext("{n} enrolment confirmed.", "{n} enrolments confirmed.", len(done))
    return await _queue_page(request, tx, actor, state, flash=flash, error=error)


# Voids and refunds ---------------------------------------------------------------------------------


async def _adjustments_page(request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor, **extra: Any) -> Template:
    pending = await adjustments.pending_requests(tx, actor)
    return page(
        request,
        "console/adjustments.html",
        title=_("Void and refund approvals"),
        items=pending.items,
        **extra,
    )


@get("/adjustments", guards=[REVIEWER], include_in_schema=False)
async def adjustment_queue(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    return await _adjustments_page(request, tx, actor)


@post("/adjustments/{request_id:uuid}/decide", guards=[REVIEWER], include_in_schema=False)
async def decide_adjustment(
    request_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    """Approve or reject another's request (`POST /payment-adjustments/{id}/decision`): the service
    refuses one's own, and the page says so."""
    form = await request.form()
    decision = adjustments.Decision(approve=form.get("approve") == "yes", note=str(form.get("note") or "")[:500])
    today = local_today(state.settings.timezone)
    done, error = await attempt(tx, lambda: adjustments.decide_adjustment(tx, actor, request_id, decision, today))
    flash = None
    if done is not None:
        flash = _("Approved.") if decision.approve else _("Rejected.")
    return await _adjustments_page(request, tx, actor, flash=flash, error=error)


# A collector's day ---------------------------------------------------------------------------------


async def _day_page(
    request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor, state: State, **extra: Any
) -> Template:
    query = request.query_params
    today = local_today(state.settings.timezone)
    day = parse_day(query.get("day"), today)
    collector = _uuid(query.get("collector_id")) if query.get("collector_id") else None
    by_collector = await premium_reports.collections(tx, actor, "collector", day, day)
    current = await remittance.collector_day(tx, actor, collector, day) if collector is not None else None
    return page(
        request,
        "console/collector_day.html",
        title=_("Collectors' days"),
        day=day,
        collector_id=collector,
        collectors=by_collector.rows,
        current=current,
        **extra,
    )


@get("/collector-days", guards=[REVIEWER], include_in_schema=False)
async def collector_day(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    return await _day_page(request, tx, actor, state)


@post("/collector-days/{collector_id:uuid}/{day:date}/remittances", guards=[REVIEWER], include_in_schema=False)
async def record_remittance(
    collector_id: FromPath[UUID], day: FromPath[date], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Redirect | Template:
    form = await request.form()

    async def remit() -> remittance.CollectorDay:
        data = remittance.RemittanceIn(
            collector_id=collector_id,
            business_date=day,
            amount_fen=_fen(form.get("amount"), "amount"),
            bank_reference=str(form.get("bank_reference") or "").strip()[:64] or "-",
        )
        return await remittance.record_remittance(tx, actor, data)

    done, error = await attempt(tx, remit)
    return await _after_day(request, tx, actor, collector_id, day, done, error, _("Remittance recorded."))


@post("/collector-days/{collector_id:uuid}/{day:date}/close", guards=[REVIEWER], include_in_schema=False)
async def close_day(
    collector_id: FromPath[UUID], day: FromPath[date], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Redirect | Template:
    done, error = await attempt(tx, lambda: remittance.close_day(tx, actor, collector_id, day))
    return await _after_day(request, tx, actor, collector_id, day, done, error, _("The day is closed."))


async def _after_day(
    request: Request[Any, Any, Any],
    tx: Tx,
    actor: CurrentActor,
    collector_id: UUID,
    day: date,
    done: object,
    error: str | None,
    flash: str,
) -> Template:
    by_collector = await premium_reports.collections(tx, actor, "collector", day, day)
    current = await remittance.collector_day(tx, actor, collector_id, day)
    return page(
        request,
        "console/collector_day.html",
        title=_("Collectors' days"),
        day=day,
        collector_id=collector_id,
        collectors=by_collector.rows,
        current=current,
        flash=flash if done is not None else None,
        error=error,
    )


# Sync conflicts and quarantine ---------------------------------------------------------------------


async def _sync_page(request: Request[Any, Any, Any], tx: Tx, actor: CurrentActor, **extra: Any) -> Template:
    open_conflicts = await conflicts.conflicts(tx, actor, None, None, True, None, 50)
    held = await quarantine.queue(tx, actor, "open", None, 50)
    rows = []
    for item in open_conflicts.items:
        names = sorted(set(item.fields) | set(item.base_values) | set(item.server_values) | set(item.tablet_values))
        rows.append(
            {
                "item": item,
                "fields": names,
                "choices": sorted(conflicts.CHOICES.get(item.kind, ())),
            }
        )
    return page(
        request,
        "console/sync.html",
        title=_("Sync conflicts and quarantine"),
        conflicts=rows,
        quarantined=held.items,
        **extra,
    )


@get("/sync", guards=[REVIEWER], include_in_schema=False)
async def sync_queue(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    return await _sync_page(request, tx, actor)


@post("/sync/conflicts/{conflict_id:uuid}/resolve", guards=[REVIEWER], include_in_schema=False)
async def resolve_conflict(
    conflict_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    form = await request.form()
    choice = str(form.get("resolution") or "")
    note = str(form.get("note") or "").strip()[:500]
    if choice not in ("kept", "restored", "applied", "discarded") or not note:
        return await _sync_page(request, tx, actor, error=_("Choose how to settle it and write a note."))
    resolution = conflicts.Resolution(resolution=choice, note=note)  # type: ignore[arg-type]
    done, error = await attempt(
        tx,
        lambda: conflicts.resolve(
            tx, actor, conflict_id, resolution, timezone=state.settings.timezone, code_key=state.key.secret
        ),
    )
    return await _sync_page(request, tx, actor, flash=_("Conflict settled.") if done else None, error=error)


@post("/sync/quarantine/{quarantine_id:uuid}/settle", guards=[REVIEWER], include_in_schema=False)
async def settle_quarantine(
    quarantine_id: FromPath[UUID], tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    form = await request.form()
    choice = str(form.get("resolution") or "")
    note = str(form.get("note") or "").strip()[:500]
    if choice not in ("apply", "dismiss") or not note:
        return await _sync_page(request, tx, actor, error=_("Choose how to settle it and write a note."))
    settlement = quarantine.Settlement(resolution=choice, note=note)  # type: ignore[arg-type]
    done, error = await attempt(
        tx,
        lambda: quarantine.settle(
            tx, actor, quarantine_id, settlement, timezone=state.settings.timezone, code_key=state.key.secret
        ),
    )
    return await _sync_page(request, tx, actor, flash=_("Item settled.") if done else None, error=error)


HANDLERS = [
    enrollment_queue,
    confirm_enrollments,
    adjustment_queue,
    decide_adjustment,
    collector_day,
    record_remittance,
    close_day,
    sync_queue,
    resolve_conflict,
    settle_quarantine,
]
