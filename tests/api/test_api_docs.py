"""The API documentation works without internet: the page and everything it loads come from the app."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from backend import api_docs

# Any URL naming a host: http://, https://, or protocol-relative //host (as in src="//cdn…").
EXTERNAL = re.compile(r"""(?:\bhttps?:)?//[a-z0-9][a-z0-9.-]*""", re.IGNORECASE)
CSS_URL = re.compile(r"""url\(\s*(['"]?)(.*?)\1\s*\)""")
SOURCE_MAP = re.compile(r"""sourceMappingURL=([^\s*]+)""")
SCRIPT_PATH = re.compile(r""""(/[^"\s]*)\"""")  # absolute paths quoted in an inline script


class References(HTMLParser):
    """The src and href of every element, and the text of inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]
        self._in_script = tag == "script" and not dict(attrs).get("src")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.inline_scripts.append(data)


def references(page: str) -> tuple[list[str], list[str]]:
    parser = References()
    parser.feed(page)
    script_paths = [m for script in parser.inline_scripts for m in SCRIPT_PATH.findall(script)]
    return parser.urls, script_paths


def test_the_reference_finder_catches_a_cdn() -> None:
    """The checks below fail if a viewer is ever loaded from a CDN again."""
    page = (
        '<link href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css" rel="stylesheet">'
        '<script src="//unpkg.com/x.js"></script><script>SwaggerUIBundle({"url": "/schema/openapi.json"})</script>'
    )
    assert EXTERNAL.findall(page) == ["https://cdn.jsdelivr.net", "//unpkg.com"]
    urls, script_paths = references(page)
    assert urls == ["https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css", "//unpkg.com/x.js"]
    assert script_paths == ["/schema/openapi.json"]


async def test_root_leads_to_the_console_login_and_the_docs_stay_at_schema(client: AsyncTestClient[Litestar]) -> None:
    first = await client.get("/", follow_redirects=False)
    assert first.status_code in {302, 307}
    assert first.headers["location"] == "/console/login"

    docs = await client.get("/schema")
    assert docs.status_code == 200
    assert docs.headers["content-type"].startswith("text/html")
    assert f"<title>{api_docs.PAGE_TITLE}</title>" in docs.text


async def test_the_docs_page_and_everything_it_loads_come_from_the_app(client: AsyncTestClient[Litestar]) -> None:
    page = (await client.get("/schema")).text
    assert '<html lang="zh-CN">' in page
    assert "SwaggerUIBundle(" in page
    assert '"validatorUrl": null' in page
    assert EXTERNAL.findall(page) == [], "the docs page names another host"

    urls, script_paths = references(page)
    assert "/schema/openapi.json" in script_paths, "Swagger UI reads the schema from the app"
    to_fetch = [urljoin("/schema", url) for url in [*urls, *script_paths]]
    assert any(url.endswith(".js") for url in to_fetch) and any(url.endswith(".css") for url in to_fetch)

    fetched: set[str] = set()
    while to_fetch:
        url = to_fetch.pop()
        if url in fetched:
            continue
        fetched.add(url)
        assert not urlsplit(url).netloc, url
        response = await client.get(url)
        assert response.status_code == 200, url
        assert response.content, url
        if url.endswith(".css"):
            css = response.text
            for _, target in CSS_URL.findall(css):
                if target.startswith("data:"):  # inline (the SVG namespace inside is no request)
                    continue
                assert not EXTERNAL.match(target), f"{url} loads {target}"
                to_fetch.append(urljoin(url, target))
        if url.endswith((".css", ".js")):
            to_fetch += [urljoin(url, target) for target in SOURCE_MAP.findall(response.text[-300:])]
    assert "/schema/openapi.json" in fetched
    assert "/schema/assets/swagger-ui-bundle.js" in fetched


async def test_the_schema_names_itself_in_chinese(client: AsyncTestClient[Litestar]) -> None:
    info = (await client.get("/schema/openapi.json")).json()["info"]
    assert info["title"] == "参保 Canbao API"
    assert "城乡居民基本医疗保险" in info["description"]


@pytest.mark.parametrize(
    "path",
    [
        "/schema",
        "/schema/",
        "/schema/swagger",
        "/schema/redoc",
        "/schema/elements",
        "/schema/rapidoc",
        "/schema/scalar",
        "/schema/oauth2-redirect.html",
        "/schema/openapi.yaml",
        "/schema/openapi.json",
    ],
)
async def test_no_page_under_schema_names_another_host(client: AsyncTestClient[Litestar], path: str) -> None:
    """Litestar's other viewers (ReDoc, Elements, RapiDoc, Scalar) load from CDNs: none is served."""
    response = await client.get(path)
    assert response.status_code in {200, 404}, path
    if response.headers.get("content-type", "").startswith("text/html"):
        assert EXTERNAL.findall(response.text) == [], path
    if path in {"/schema/redoc", "/schema/elements", "/schema/rapidoc", "/schema/scalar"}:
        assert response.status_code == 404


async def test_only_the_pages_own_files_are_served(client: AsyncTestClient[Litestar]) -> None:
    """The package's folder also holds a demo index.html pointing at an online petstore: not served."""
    for name in ["index.html", "swagger-initializer.js", "../__init__.py", "swagger-ui-standalone-preset.js"]:
        response = await client.get(f"/schema/assets/{name}")
        assert response.status_code == 404, name
    css = await client.get("/schema/assets/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    assert "max-age=86400" in css.headers["cache-control"]


def test_the_served_notices_are_for_the_installed_swagger_ui() -> None:
    """backend/api_docs/swagger-ui-* are copied from that version's swagger-ui-dist (the wheel lacks them)."""
    assert api_docs.swagger_ui_version() == "5.31.0", (
        "Swagger UI was upgraded: copy LICENSE, NOTICE and swagger-ui-bundle.js.LICENSE.txt of the same "
        "swagger-ui-dist version into backend/api_docs/ and update this version"
    )
