"""/docs and /redoc load nothing from outside (their assets are served from the package), `/` sends people to
the console and the docs, and the console's files are served from the package."""

from __future__ import annotations

import re

import httpx
import pytest

from api.app import create_app

APP = create_app()
REFERENCE = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")


@pytest.fixture
async def client():
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=APP), base_url="http://agentmem.test") as c:
        yield c


def references(html: str) -> list[str]:
    return [a or b for a, b in REFERENCE.findall(html)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_name_no_outside_url_and_every_asset_they_load_is_served(client, page):
    response = await client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "http://" not in response.text and "https://" not in response.text, response.text
    loaded = references(response.text)
    assert "/openapi.json" in loaded
    scripts = [url for url in loaded if url.endswith(".js")]
    assert scripts, response.text
    for url in loaded:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, (url, asset.status_code)
        assert len(asset.content) > 1000, url  # the real builds, not an error page


async def test_swagger_ui_is_a_build_that_reads_openapi_3_1(client):
    # FastAPI writes OpenAPI 3.1, which Swagger UI renders from version 5 on (4.x shows "no valid version field").
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")
    bundle = (await client.get("/docs-assets/swagger-ui-bundle.js")).text
    assert "OpenAPI 3.1" in bundle or "3.1.0" in bundle


async def test_the_oauth2_redirect_page_of_the_authorize_button_is_served(client):
    response = await client.get("/docs/oauth2-redirect")
    assert response.status_code == 200 and "oauth2" in response.text.lower()


async def test_home_page_links_the_console_and_the_docs(client):
    response = await client.get("/")
    assert response.status_code == 200
    assert {"/console/", "/docs", "/redoc", "/openapi.json"} <= set(references(response.text))


async def test_the_console_is_served_from_the_package_with_no_outside_url(client):
    assert (await client.get("/console", follow_redirects=False)).status_code in (307, 308)
    page = await client.get("/console/")
    assert page.status_code == 200 and "<title>AgentMem console</title>" in page.text
    for name in ("console.js", "console.css"):
        asset = await client.get(f"/console/{name}")
        assert asset.status_code == 200 and name in references(page.text)
        assert "http://" not in asset.text and "https://" not in asset.text
    script = (await client.get("/console/console.js")).text
    # Keys go in the Authorization header only; streams get stream tokens.
    assert "/stream-tokens" in script and "?token=" in script and "Authorization" in script
    assert (await client.get("/console/missing.js")).status_code == 404
    # Only the console's own scripts and styles run, against this origin only, and nobody frames it.
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "connect-src 'self'" in policy
    assert "style=" not in page.text and "<script>" not in page.text and not re.search(r"\son[a-z]+=", page.text)


def test_whoami_is_documented():
    operation = APP.openapi()["paths"]["/api/v1/auth/whoami"]["get"]
    assert "permissions" in operation["description"] and operation["x-permission"] == "signed-in"


def test_a_non_editable_install_ships_the_console_files():
    # setuptools copies only what package-data names: every console file must match a pattern of `api`'s.
    import fnmatch
    import tomllib

    from api.console import CONSOLE

    patterns = tomllib.loads((CONSOLE.parents[2] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["api"]
    files = [p.relative_to(CONSOLE.parents[1]).as_posix() for p in CONSOLE.rglob("*") if p.is_file()]
    assert {"static/console/index.html", "static/console/console.js", "static/console/console.css"} <= set(files)
    assert all(any(fnmatch.fnmatch(f, pattern) for pattern in patterns) for f in files), (files, patterns)
