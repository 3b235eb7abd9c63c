"""The API documentation at /schema: Swagger UI served from the app itself.

Government intranets have no internet, so the page references no other host: its script, style
sheet and icon come from /schema/assets/, the files of the `swagger-ui-bundle-v2` package (the
swagger-ui-dist build, unchanged), and Swagger UI's online validator is turned off. The licence and
notices of that build are in this folder (the wheel lacks them; copied from the same version of
swagger-ui-dist, a test names it) and served beside it.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

from litestar import Request, get
from litestar.datastructures import CacheControlHeader
from litestar.exceptions import NotFoundException
from litestar.openapi.plugins import JsonRenderPlugin, OpenAPIRenderPlugin, YamlRenderPlugin
from litestar.params import FromPath
from litestar.response import File
from litestar.router import Router
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

DOCS_PATH = "/schema"
PAGE_TITLE = "参保 Canbao API 文档"
ASSET_ROUTE = "api-docs-asset"

_SWAGGER_UI = Path(str(swagger_ui_path))
_HERE = Path(__file__).parent
_JS = "text/javascript; charset=utf-8"
_TEXT = "text/plain; charset=utf-8"
# Only what the page uses (and the notices), not the whole folder: its index.html and
# swagger-initializer.js point at an online demo.
_ASSETS: dict[str, tuple[Path, str]] = {
    "swagger-ui-bundle.js": (_SWAGGER_UI / "swagger-ui-bundle.js", _JS),
    "swagger-ui.css": (_SWAGGER_UI / "swagger-ui.css", "text/css; charset=utf-8"),
    "swagger-ui.css.map": (_SWAGGER_UI / "swagger-ui.css.map", "application/json"),
    "favicon-32x32.png": (_SWAGGER_UI / "favicon-32x32.png", "image/png"),
    "swagger-ui-bundle.js.LICENSE.txt": (_HERE / "swagger-ui-bundle.js.LICENSE.txt", _TEXT),
    "LICENSE.txt": (_HERE / "swagger-ui-LICENSE", _TEXT),
    "NOTICE.txt": (_HERE / "swagger-ui-NOTICE", _TEXT),
}


def swagger_ui_version() -> str:
    return _SWAGGER_UI.name.removeprefix("swagger-ui-")


@get(
    "/assets/{file:str}",
    name=ASSET_ROUTE,
    exclude_from_auth=True,
    include_in_schema=False,
    sync_to_thread=False,
    cache_control=CacheControlHeader(public=True, max_age=86400),
)
def asset(file: FromPath[str]) -> File:
    """One of the documentation page's files, from the installed package."""
    if file not in _ASSETS:
        raise NotFoundException()
    path, media_type = _ASSETS[file]
    return File(path, filename=file, media_type=media_type, content_disposition_type="inline")


class SwaggerPage(OpenAPIRenderPlugin):
    """Swagger UI at /schema (and /schema/swagger), everything it loads served by this app."""

    def __init__(self) -> None:
        super().__init__(path=["/", "/swagger"], favicon="", style="")

    def render(self, request: Request[Any, Any, Any], openapi_schema: dict[str, Any]) -> bytes:
        def url(file: str) -> str:
            return html.escape(request.app.route_reverse(ASSET_ROUTE, file=file))

        spec_url = self.get_openapi_json_route(request)
        options = {
            "url": spec_url,
            "dom_id": "#swagger-ui",
            "deepLinking": True,
            "filter": True,
            "displayRequestDuration": True,
            "validatorUrl": None,  # the default sends the schema to validator.swagger.io for a badge
        }
        # JSON is a JavaScript expression; "</" escaped so no value can close the script element.
        config = json.dumps(options, ensure_ascii=False).replace("</", "<\\/")
        version = html.escape(swagger_ui_version())
        page = f"""<!DOCTYPE html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(PAGE_TITLE)}</title>
<link rel="icon" type="image/png" href="{url("favicon-32x32.png")}">
<link rel="stylesheet" href="{url("swagger-ui.css")}">
<style>body {{ margin: 0; }} .canbao-footer {{ margin: 2em; font: 12px sans-serif; color: #666; }}</style>
</head>
<body>
<noscript>本页需要启用 JavaScript 才能显示接口文档。也可以直接下载接口描述：
<a href="{html.escape(spec_url)}">openapi.json</a></noscript>
<div id="swagger-ui"></div>
<p class="canbao-footer">文档界面：Swagger UI {version}，Apache-2.0 许可（<a href="{url("LICENSE.txt")}">许可</a>、
<a href="{url("NOTICE.txt")}">声明</a>、<a href="{url("swagger-ui-bundle.js.LICENSE.txt")}">所含第三方组件</a>）。
接口描述：<a href="{html.escape(spec_url)}">openapi.json</a></p>
<script src="{url("swagger-ui-bundle.js")}"></script>
<script>window.ui = SwaggerUIBundle({config});</script>
</body>
</html>
"""
        return page.encode()

    def receive_router(self, router: Router) -> None:
        router.register(asset)


def render_plugins() -> list[OpenAPIRenderPlugin]:
    """The pages under /schema: Swagger UI at the root, the schema as JSON and YAML. Litestar's
    other viewers (ReDoc, Elements, RapiDoc) load from CDNs, so they are not served."""
    return [SwaggerPage(), JsonRenderPlugin(), YamlRenderPlugin()]
