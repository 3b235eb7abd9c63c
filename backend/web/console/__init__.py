"""The office console at /console/: one Router, its session middleware and its error pages.

Each screen is a module of this package with its handlers in a `HANDLERS` list, added to
`MODULES` below; its templates live in `backend/web/templates/console/`, its menu entry in
`backend.web.pages.MENU`. See backend/web/README.md.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, Router
from litestar.response import Redirect

from backend.errors import DomainError, NotAuthenticated
from backend.i18n import _
from backend.web.console import admin, civil, home, household, reports, reviewer, session_pages
from backend.web.pages import page, problem_text
from backend.web.session import LOGIN_PATH, SESSION_SCOPE_KEY, console_session

CONSOLE_PATH = "/console"

MODULES: list[list[Any]] = [
    [session_pages.login_page, session_pages.login, session_pages.logout],
    home.HANDLERS,
    reviewer.HANDLERS,
    household.HANDLERS,
    reports.HANDLERS,
    civil.HANDLERS,
    admin.HANDLERS,
]


def error_page(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """A refusal the handler did not turn into a message itself, as a page (the API answers problem+json)."""
    if isinstance(exc, NotAuthenticated) or SESSION_SCOPE_KEY not in request.scope:
        return Redirect(LOGIN_PATH, status_code=303)
    assert isinstance(exc, DomainError)
    titles = {403: _("Not allowed"), 404: _("Not found")}
    return page(
        request,
        "console/error.html",
        title=titles.get(exc.status, _("Could not be done")),
        status_code=exc.status,
        message=problem_text(exc),
    )


def console_router() -> Router:
    return Router(
        path=CONSOLE_PATH,
        route_handlers=[handler for module in MODULES for handler in module],
        middleware=[console_session],
        opt={"exclude_from_auth": True},  # the bearer header is the API's; the console has its cookie
        exception_handlers={DomainError: error_page},
        include_in_schema=False,
    )
