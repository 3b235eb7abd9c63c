"""The web surfaces on the same service: the office console (/console/) and, beside it, the
residents' page (/r/). Pages are rendered on the server (Jinja2 through Litestar's templates),
updated in part with htmx (vendored in static/vendor/ with its licence), and call the same service
functions as the API routes, under the same guards: this package has no SQL of its own. How to add
a page: README.md in this folder.
"""

from __future__ import annotations

from litestar import get
from litestar.datastructures import CacheControlHeader
from litestar.response import Redirect
from litestar.router import Router
from litestar.static_files import create_static_files_router

from backend.web.console import console_router
from backend.web.pages import STATIC, STATIC_PATH, template_config
from backend.web.resident import resident_router
from backend.web.session import LOGIN_PATH

__all__ = ["route_handlers", "template_config"]


@get("/", exclude_from_auth=True, include_in_schema=False, sync_to_thread=False)
def root() -> Redirect:
    """A browser opening the server lands on the console's login (the API is described at /schema)."""
    return Redirect(LOGIN_PATH)


def static_router() -> Router:
    """Styles, scripts and the vendored htmx, served by the app itself: nothing from another host."""
    return create_static_files_router(
        path=STATIC_PATH,
        directories=[STATIC],
        opt={"exclude_from_auth": True},
        cache_control=CacheControlHeader(public=True, max_age=3600),
        include_in_schema=False,
    )


def route_handlers() -> list[object]:
    return [root, static_router(), console_router(), resident_router()]
