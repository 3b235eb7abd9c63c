"""The district administrator's screens: users, tablets (suspend, reactivate, revoke), partners,
policy years and their versions (view, edit, publish, with the validation's messages in the
reader's language), and the district dashboard (the funded rate by township, collections by day
and method, persons on the subsidy lists in force by category) with its downloads.

Each handler calls the service its API route calls, under that route's guards (`/users`,
`/devices`, `/partners`, `/policy-years`: district_admin for every write; `/reports/coverage`,
`/reports/collections`, `/eligibility/lists` for the dashboard).
"""

from __future__ import annotations

import json
import re
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import msgspec
from litestar import Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.response import Template

from backend import i18n
from backend.actor import Actor, Role
from backend.admin import service as admin
from backend.admin.service import PartnerCreate, UserCreate, UserUpdate
from backend.clock import local_today
from backend.db import Connection
from backend.deps import CurrentActor, Tx
from backend.eligibility import lists
from backend.enrollment import coverage_report, coverage_trend
from backend.errors import plain_validation_message
from backend.guards import require_roles
from backend.i18n import N_, _, terms
from backend.policy import service as policy
from backend.policy.service import PolicyIn, PolicyVersion
from backend.premiums import reports as premium_reports
from backend.web import charts, stacked
from backend.web.console.home import trend_context
from backend.web.pages import attempt, markup, page, parse_day

ADMIN = require_roles(Role.DISTRICT_ADMIN)
PAGE = 500
ROLES = [role.value for role in Role]
DEVICE_MOVES = {"suspend", "reactivate", "revoke"}
# Names of the codes these screens show (translated when shown: `_(words[code])`).
WORDS = {
    "active": N_("active"),
    "suspended": N_("suspended"),
    "revoked": N_("revoked"),
    "disabled": N_("disabled"),
}
FIELD_NAMES = {
    "username": N_("Username"),
    "password": N_("Password"),
    "role": N_("Role"),
    "division_code": N_("Division code"),
    "full_name": N_("Full name"),
    "name": N_("Name"),
    "effective_from": N_("Effective from"),
    "premium_fen": N_("Premium per person"),
    "window_start": N_("Window opens"),
    "window_end": N_("Window closes"),
    "rules": N_("Rules"),
    "note": N_("Note"),
}


def _field(path: str | None) -> str:
    """A field the validation names, in words (`rules.waiting.fixed_months` stays as it is)."""
    head = (path or "").split(".", 1)[0].split("[", 1)[0]
    return _(FIELD_NAMES[head]) if head in FIELD_NAMES and head == path else (path or _("the form"))


def _invalid(exc: msgspec.ValidationError, root: Any) -> str:
    path, message = plain_validation_message(str(exc), root)
    return _("{field}: {problem}", field=_field(path), problem=message)


def _form_text(value: object, limit: int = 500) -> str:
    return str(value or "").strip()[:limit]


# Users -------------------------------------------------------------------------------------------


async def _users_page(tx: Connection, actor: Actor, request: Request[Any, Any, Any], **context: Any) -> Template:
    found = await admin.list_users(tx, actor, role=None, division_code=None, active=None, after=None, limit=PAGE)
    return page(request, "console/admin/users.html", title=_("Users"), users=found.items, roles=ROLES, **context)


@get("/users", guards=[ADMIN], include_in_schema=False)
async def users_page(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    return await _users_page(tx, actor, request)


@post("/users", guards=[ADMIN], include_in_schema=False)
async def create_user(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    """`POST /users`: the same checks (username, password strength, the division for the role)."""
    form = await request.form()
    raw = {
        "username": _form_text(form.get("username"), 64),
        "password": str(form.get("password") or "")[:256],
        "role": _form_text(form.get("role")),
        "division_code": _form_text(form.get("division_code")),
        "full_name": _form_text(form.get("full_name")),
    }
    typed = {k: v for k, v in raw.items() if k != "password"}
    try:
        data = msgspec.convert(raw, UserCreate)
    except msgspec.ValidationError as exc:
        return await _users_page(tx, actor, request, error=_invalid(exc, UserCreate), typed=typed)
    made, error = await attempt(tx, lambda: admin.create_user(tx, actor, state.passwords, data))
    flash = None if made is None else _("User {username} created.", username=made.username)
    return await _users_page(tx, actor, request, flash=flash, error=error, typed=typed if error else {})


@post("/users/{user_id:uuid}", guards=[ADMIN], include_in_schema=False)
async def update_user(
    user_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    """`PATCH /users/{id}`: role, division, name, active (disabling ends their sessions)."""
    form = await request.form()
    raw = {
        "role": _form_text(form.get("role")),
        "division_code": _form_text(form.get("division_code")),
        "full_name": _form_text(form.get("full_name")),
        "active": form.get("active") == "yes",
    }
    try:
        data = msgspec.convert(raw, UserUpdate)
    except msgspec.ValidationError as exc:
        return await _users_page(tx, actor, request, error=_invalid(exc, UserUpdate))
    done, error = await attempt(tx, lambda: admin.update_user(tx, actor, user_id, data))
    flash = None if done is None else _("User {username} saved.", username=done.username)
    return await _users_page(tx, actor, request, flash=flash, error=error)


# Tablets -----------------------------------------------------------------------------------------


async def _devices_page(tx: Connection, actor: Actor, request: Request[Any, Any, Any], **context: Any) -> Template:
    found = await admin.list_devices(tx, actor, owner_id=None, status=None, after=None, limit=PAGE)
    owners = await admin.list_users(tx, actor, role=None, division_code=None, active=None, after=None, limit=PAGE)
    names = {u.id: f"{u.full_name or u.username}（{u.username}）" for u in owners.items}
    return page(
        request,
        "console/admin/devices.html",
        title=_("Tablets"),
        devices=found.items,
        owners=names,
        words=WORDS,
        **context,
    )


@get("/devices", guards=[ADMIN], include_in_schema=False)
async def devices_page(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    return await _devices_page(tx, actor, request)


@post("/devices/{device_id:uuid}/{move:str}", guards=[ADMIN], include_in_schema=False)
async def device_move(
    device_id: FromPath[UUID], move: FromPath[str], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    """`POST /devices/{id}/suspend`, `/reactivate`, `DELETE /devices/{id}` (revoke: its receipt blocks retire)."""
    if move not in DEVICE_MOVES:
        return await _devices_page(tx, actor, request, error=_("Unknown action."))
    done, error = await attempt(tx, lambda: admin.change_device_status(tx, actor, device_id, move))
    flash = (
        None
        if done is None
        else _(
            "Tablet {label}: {status}.", label=done.label or done.model, status=_(WORDS.get(done.status, done.status))
        )
    )
    return await _devices_page(tx, actor, request, flash=flash, error=error)


# Partners ----------------------------------------------------------------------------------------


async def _partners_page(tx: Connection, actor: Actor, request: Request[Any, Any, Any], **context: Any) -> Template:
    found = await admin.list_partners(tx, actor, None, PAGE)
    return page(request, "console/admin/partners.html", title=_("Partners"), partners=found.items, **context)


@get("/partners", guards=[ADMIN], include_in_schema=False)
async def partners_page(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    return await _partners_page(tx, actor, request)


@post("/partners", guards=[ADMIN], include_in_schema=False)
async def create_partner(tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]) -> Template:
    form = await request.form()
    try:
        data = msgspec.convert({"name": _form_text(form.get("name"), 200)}, PartnerCreate)
    except msgspec.ValidationError as exc:
        return await _partners_page(tx, actor, request, error=_invalid(exc, PartnerCreate))
    made, error = await attempt(tx, lambda: admin.create_partner(tx, actor, data))
    return await _partners_page(tx, actor, request, credential=made, error=error)


@post("/partners/{partner_id:uuid}/rotate", guards=[ADMIN], include_in_schema=False)
async def rotate_partner(
    partner_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    made, error = await attempt(tx, lambda: admin.rotate_partner(tx, actor, partner_id))
    return await _partners_page(tx, actor, request, credential=made, error=error)


@post("/partners/{partner_id:uuid}/disable", guards=[ADMIN], include_in_schema=False)
async def disable_partner(
    partner_id: FromPath[UUID], tx: Tx, actor: CurrentActor, request: Request[Any, Any, Any]
) -> Template:
    done, error = await attempt(tx, lambda: admin.disable_partner(tx, actor, partner_id))
    flash = None if done is None else _("Partner {name} disabled.", name=done.name)
    return await _partners_page(tx, actor, request, flash=flash, error=error)


# Policy ------------------------------------------------------------------------------------------


def _as_form(version: PolicyVersion | None) -> dict[str, str]:
    """A version as the edit form shows it (a new one starts from the version in force)."""
    if version is None:
        return {"effective_from": "", "premium": "", "window_start": "", "window_end": "", "note": "", "rules": "{}"}
    return {
        "effective_from": version.effective_from.isoformat(),
        "premium": f"{version.premium_fen // 100}.{version.premium_fen % 100:02d}",
        "window_start": version.window_start.isoformat(),
        "window_end": version.window_end.isoformat(),
        "note": version.note,
        "rules": json.dumps(msgspec.to_builtins(version.rules), ensure_ascii=False, indent=2),
    }


_YUAN = re.compile(r"^\d{1,7}(\.\d{1,2})?$")


def _policy_in(form: dict[str, str]) -> PolicyIn | str:
    """The form as the API's body (`PolicyIn`), or what is wrong with it in words."""
    premium = form["premium"].replace("¥", "").replace(",", "").strip()
    if not _YUAN.match(premium):
        return _(
            "{field}: {problem}",
            field=_("Premium per person"),
            problem=_("enter an amount in yuan, such as 400 or 400.00"),
        )
    whole, _dot, cents = premium.partition(".")
    try:
        rules = json.loads(form["rules"] or "{}")
    except json.JSONDecodeError as exc:
        return _("{field}: {problem}", field=_("Rules"), problem=_("is not valid JSON ({error})", error=exc))
    raw = {
        "effective_from": form["effective_from"],
        "premium_fen": int(whole) * 100 + int(cents.ljust(2, "0") or 0),
        "window_start": form["window_start"],
        "window_end": form["window_end"],
        "rules": rules,
        "note": form["note"],
    }
    try:
        return msgspec.convert(raw, PolicyIn)
    except msgspec.ValidationError as exc:
        return _invalid(exc, PolicyIn)


async def _policy_page(
    tx: Connection, year: int, today: date, request: Request[Any, Any, Any], **context: Any
) -> Template:
    years = await policy.years(tx)
    found = await policy.versions(tx, year)
    current = await policy.in_force(tx, year, today) if found else None
    collected = await policy.money_collected(tx, year) if found else False
    forms = {v.version: _as_form(v) for v in found}
    edited = context.pop("edited", None)
    if edited is not None:
        forms[edited[0]] = edited[1]  # as typed, with the message beside it
    return page(
        request,
        "console/admin/policy.html",
        title=_("Policy years"),
        years=years,
        year=year,
        versions=found,
        current=current,
        money_collected=collected,
        forms=forms,
        open_version=edited[0] if edited is not None else None,
        new_form=context.pop("new_form", None) or _as_form(current),
        **context,
    )


def _today(state: State) -> date:
    return local_today(state.settings.timezone)


@get("/policy", guards=[ADMIN], include_in_schema=False)
async def policy_page(tx: Tx, state: State, request: Request[Any, Any, Any]) -> Template:
    today = _today(state)
    raw = request.query_params.get("year", "")
    year = int(raw) if raw.isdigit() and 2000 <= int(raw) <= 2100 else today.year
    return await _policy_page(tx, year, today, request)


def _policy_form(form: Any) -> dict[str, str]:
    return {
        "effective_from": _form_text(form.get("effective_from")),
        "premium": _form_text(form.get("premium"), 20),
        "window_start": _form_text(form.get("window_start")),
        "window_end": _form_text(form.get("window_end")),
        "note": _form_text(form.get("note")),
        "rules": str(form.get("rules") or "")[:20_000],
    }


@post("/policy/{year:int}/versions/{version:int}", guards=[ADMIN], include_in_schema=False)
async def edit_version(
    year: FromPath[int],
    version: FromPath[int],
    tx: Tx,
    actor: CurrentActor,
    state: State,
    request: Request[Any, Any, Any],
) -> Template:
    """`PATCH /policy-years/{year}/versions/{version}`: refused once money was collected for the year."""
    typed = _policy_form(await request.form())
    data = _policy_in(typed)
    if isinstance(data, str):
        return await _policy_page(tx, year, _today(state), request, error=data, edited=(version, typed))
    done, error = await attempt(tx, lambda: policy.update_version(tx, actor, year, version, data))
    if done is None:
        return await _policy_page(tx, year, _today(state), request, error=error, edited=(version, typed))
    flash = _("Version {version} of {year} saved.", version=version, year=year)
    return await _policy_page(tx, year, _today(state), request, flash=flash)


@post("/policy/{year:int}/versions", guards=[ADMIN], include_in_schema=False)
async def publish_version(
    year: FromPath[int], tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]
) -> Template:
    """`POST /policy-years/{year}/versions`: a new version, from its effective date on."""
    typed = _policy_form(await request.form())
    data = _policy_in(typed)
    if isinstance(data, str):
        return await _policy_page(tx, year, _today(state), request, error=data, new_form=typed)
    done, error = await attempt(tx, lambda: policy.create_version(tx, actor, year, data))
    if done is None:
        return await _policy_page(tx, year, _today(state), request, error=error, new_form=typed)
    flash = _("Version {version} of {year} published.", version=done.version, year=year)
    return await _policy_page(tx, year, _today(state), request, flash=flash)


# The district dashboard --------------------------------------------------------------------------


class CategoryCount(msgspec.Struct, frozen=True):
    list_type: str
    persons: int
    versions: int


async def _listed_by_category(tx: Connection, actor: Actor, today: date) -> list[CategoryCount]:
    """Persons on the subsidy lists in force today, by category: per list type and area, the newest
    loaded version already effective (`GET /eligibility/lists`)."""
    newest: dict[tuple[str, str], lists.ListVersion] = {}
    after = None
    while True:
        found = await lists.versions(tx, actor, list_type=None, status="loaded", after=after, limit=PAGE)
        for v in found.items:
            key = (v.list_type, v.division_code)
            if (
                v.kind == "subsidy"
                and v.effective_from <= today
                and (
                    key not in newest
                    or (v.effective_from, v.version or 0) > (newest[key].effective_from, newest[key].version or 0)
                )
            ):
                newest[key] = v
        after = found.next_cursor
        if after is None:
            break
    counts: dict[str, list[int]] = {}
    for (list_type, _code), v in newest.items():
        count = counts.setdefault(list_type, [0, 0])
        count[0] += v.rows_loaded
        count[1] += 1
    return [CategoryCount(t, n, k) for t, (n, k) in sorted(counts.items())]


@get("/district", guards=[ADMIN], include_in_schema=False)
async def district_page(tx: Tx, actor: CurrentActor, state: State, request: Request[Any, Any, Any]) -> Template:
    today = _today(state)
    raw = request.query_params.get("year", "")
    year = int(raw) if raw.isdigit() and 2000 <= int(raw) <= 2100 else today.year
    date_to = parse_day(request.query_params.get("to"), today)
    date_from = parse_day(request.query_params.get("from"), date_to - timedelta(days=29))
    if date_from > date_to or (date_to - date_from).days > 92:
        date_from = date_to - timedelta(days=29)
    coverage = await coverage_report.coverage_report(tx, actor, year, "township", today)
    rate_title = _("Funded rate by township, {year}", year=year)
    rate_chart = charts.bar_chart(
        [(row.name or row.division_code, row.rate_percent / 100) for row in coverage.rows],
        title=rate_title,
        value_text=i18n.percent,
        max_value=1.0,
    )
    trend = await coverage_trend.coverage_trend(tx, actor, year, today, "township", coverage)
    collected = await premium_reports.collections(tx, actor, "day", date_from, date_to)
    by_day = {row.key: row for row in collected.rows}
    days = [date_from + timedelta(days=n) for n in range((date_to - date_from).days + 1)]
    columns = []
    for day in days:
        row = by_day.get(day.isoformat())
        columns.append((day.strftime("%m-%d"), (row.cash_fen, row.qr_fen, row.bank_fen) if row else (0, 0, 0)))
    money_title = _("Collections by day and method, {date_from} to {date_to}", date_from=date_from, date_to=date_to)
    money_chart = stacked.stacked_columns(columns, title=money_title, value_text=i18n.yuan)
    categories = await _listed_by_category(tx, actor, today)
    category_title = _("Persons on the subsidy lists in force, by category")
    category_chart = charts.bar_chart(
        [(terms.name("list_type", c.list_type) or c.list_type, float(c.persons)) for c in categories],
        title=category_title,
        value_text=lambda value: i18n.number(int(value)),
    )
    return page(
        request,
        "console/admin/district.html",
        title=_("District dashboard"),
        year=year,
        today=today,
        date_from=date_from,
        date_to=date_to,
        coverage=coverage,
        rate_title=rate_title,
        rate_chart=markup(rate_chart),
        **trend_context(trend),
        collected=collected,
        money_title=money_title,
        money_chart=markup(money_chart),
        categories=categories,
        category_title=category_title,
        category_chart=markup(category_chart),
    )


HANDLERS = [
    users_page,
    create_user,
    update_user,
    devices_page,
    device_move,
    partners_page,
    create_partner,
    rotate_partner,
    disable_partner,
    policy_page,
    edit_version,
    publish_version,
    district_page,
]
