"""What every page shares: the template engine's set-up, the menu, rendering, and running a service
call so that a refusal becomes a message on the page instead of a partial write.

A page handler renders with `page(request, "console/x.html", title=..., **context)`; the template
extends `console/layout.html` and gets `session` (username, csrf), `actor`, `menu` (the entries of
`MENU` the actor's role may open), `_` (the request's language), and the filters `yuan`, `day`,
`moment`, `division` and `label`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import date, datetime
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import msgspec
from litestar import Request
from litestar.datastructures import State
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig
from markupsafe import Markup

from backend import i18n
from backend.actor import Role
from backend.db import Connection
from backend.errors import DomainError
from backend.i18n import N_, _, terms
from backend.web.session import CSRF_FIELD, CSRF_HEADER, dumps, session_of

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
STATIC_PATH = "/static"

T = TypeVar("T")


class MenuItem(msgspec.Struct, frozen=True):
    href: str
    label: str  # an N_() message, translated when shown
    roles: frozenset[Role]


REVIEWERS = frozenset({Role.TOWNSHIP_REVIEWER})
TOWNSHIP = frozenset({Role.TOWNSHIP_STAFF, Role.TOWNSHIP_REVIEWER})
STAFF = frozenset(Role)
CIVIL = frozenset({Role.CIVIL_AFFAIRS})
LIST_READERS = frozenset({Role.CIVIL_AFFAIRS, Role.DISTRICT_ADMIN})
ADMIN = frozenset({Role.DISTRICT_ADMIN})

# The console's menu, in order. A new screen adds its entry here, for the roles whose API routes it
# calls (the guards of those routes still decide; the menu only hides what would be refused).
MENU: list[MenuItem] = [
    MenuItem("/console/", N_("Dashboard"), STAFF),
    MenuItem("/console/enrollments", N_("Enrolment review"), REVIEWERS),
    MenuItem("/console/adjustments", N_("Void and refund approvals"), REVIEWERS),
    MenuItem("/console/collector-days", N_("Collectors' days"), REVIEWERS),
    MenuItem("/console/sync", N_("Sync conflicts and quarantine"), REVIEWERS),
    MenuItem("/console/households", N_("Households"), TOWNSHIP),
    MenuItem("/console/district", N_("District dashboard"), ADMIN),
    MenuItem("/console/lists", N_("Civil-affairs lists"), LIST_READERS),
    MenuItem("/console/claims", N_("Subsidy claims"), CIVIL),
    MenuItem("/console/exclusion-reviews", N_("Exclusion reviews"), CIVIL | REVIEWERS),
    MenuItem("/console/unenrolled", N_("Subsidised persons not enrolled"), STAFF),
    MenuItem("/console/users", N_("Users"), ADMIN),
    MenuItem("/console/devices", N_("Tablets"), ADMIN),
    MenuItem("/console/partners", N_("Partners"), ADMIN),
    MenuItem("/console/policy", N_("Policy years"), ADMIN),
    MenuItem("/console/reports", N_("Reports"), STAFF),
]

# Names of codes shown on pages that `backend.i18n.terms` does not name (the `term` filter names
# those: enrolment statuses, payment methods, …), translated when shown.
LABELS: dict[str, str] = {
    "void": N_("void"),
    "refund": N_("refund"),
    "void_request": N_("void request"),
    "refund_request": N_("refund request"),
    "open": N_("open"),
    "resolved": N_("resolved"),
    "applied": N_("apply the tablet's change"),
    "dismissed": N_("dismissed"),
    "held": N_("held"),
    "kept": N_("keep the tablet's value"),
    "restored": N_("restore the value before"),
    "discarded": N_("discard the tablet's change"),
    "overpayment": N_("paid too much"),
    "double_enrolment": N_("enrolled twice"),
    "employee_insurance": N_("insured under employee medical insurance"),
    "deceased": N_("deceased"),
    "village": N_("village"),
    "township": N_("township"),
    "district": N_("district"),
    "collector": N_("collector"),
    "day": N_("day"),
    "township_staff": N_("township staff"),
    "township_reviewer": N_("township reviewer"),
    "civil_affairs": N_("civil affairs"),
    "district_admin": N_("district administrator"),
    # The audit trail of a household (its actions and entities; others are shown as their code).
    "read": N_("read"),
    "create": N_("created"),
    "update": N_("changed"),
    "add_member": N_("member added"),
    "remove_member": N_("member removed"),
    "enrol": N_("enrolled"),
    "cancel": N_("cancelled"),
    "confirm": N_("confirmed"),
    "record": N_("recorded"),
    "print": N_("printed"),
    "household": N_("household"),
    "enrollment": N_("enrolment"),
    "payment": N_("payment"),
    "premium_quote": N_("premium quote"),
    "resident_coverage": N_("residents' page"),
    "query_code_slip": N_("query code slip"),
    "user": N_("staff"),
    "resident": N_("resident"),
    "device": N_("tablet"),
    "system": N_("system"),
}


def label(code: object) -> str:
    text = str(code)
    return _(LABELS[text]) if text in LABELS else text


def _yuan(fen: int | None) -> str:
    return "" if fen is None else i18n.yuan(fen)


def configure(engine: JinjaTemplateEngine) -> None:
    env = engine.engine
    env.globals["_"] = _
    env.globals["csrf_field"] = CSRF_FIELD
    env.filters["yuan"] = _yuan
    env.filters["label"] = label
    env.filters["term"] = lambda code, vocabulary: terms.name(vocabulary, code) or ""
    env.filters["day"] = lambda value: "" if value is None else value.isoformat()
    env.filters["json_attr"] = dumps
    env.filters["percent"] = lambda value, digits=1: "" if value is None else i18n.percent(value, digits=digits)


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    return TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine, engine_callback=configure)


def local_moment(state: State, moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(ZoneInfo(state.settings.timezone)).strftime("%Y-%m-%d %H:%M")


def page(
    request: Request[Any, Any, Any], template: str, *, title: str, status_code: int = 200, **context: Any
) -> Template:
    """A console page: the layout's context plus the page's own."""
    session = session_of(request)
    actor = session.actor
    menu = [item for item in MENU if actor.role in item.roles]
    return Template(
        template_name=template,
        status_code=status_code,
        context={
            "title": title,
            "session": session,
            "actor": actor,
            "menu": menu,
            "path": request.url.path,
            "lang": i18n.language_tag(),
            "hx_headers": dumps({CSRF_HEADER: session.csrf}),
            "moment": lambda value: local_moment(request.app.state, value),
            **context,
        },
    )


def public_page(template: str, *, title: str, status_code: int = 200, **context: Any) -> Template:
    """A page without a session (the login)."""
    return Template(
        template_name=template,
        status_code=status_code,
        context={"title": title, "lang": i18n.language_tag(), **context},
    )


async def attempt(tx: Connection, call: Callable[[], Awaitable[T]]) -> tuple[T | None, str | None]:
    """Runs a service call in a savepoint of the request's transaction: its result, or — when the
    service refuses (a DomainError: not allowed, a conflict, bad input) — None and the refusal in
    the request's language, with nothing of the call written. The page then shows the message."""
    try:
        async with tx.transaction():
            return await call(), None
    except DomainError as exc:
        return None, problem_text(exc)


def problem_text(exc: DomainError) -> str:
    """A refusal as one line: its detail, and the field messages the API would list."""
    text = exc.detail or _(exc.title())
    errors = exc.extra.get("errors")
    if isinstance(errors, list):
        parts = [f"{e.get('field', '')}: {e.get('message', '')}" for e in errors if isinstance(e, dict)]
        parts = [p for p in parts if p.strip(": ") and p not in text]
        if parts:
            text = f"{text}（{'；'.join(parts)}）"
    return text


def markup(svg: str) -> Markup:
    """Markup built in Python from escaped parts (the charts)."""
    return Markup(svg)  # noqa: S704 (charts.py escapes every text it puts in)


def parse_day(value: str | None, default: date) -> date:
    try:
        return date.fromisoformat(value) if value else default
    except ValueError:
        return default
