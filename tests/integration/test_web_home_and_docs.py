"""``/`` says where to go, and the API reference works offline: a real ``refunds web`` process.

The pages ``/docs`` and ``/redoc`` must name no other host: every script, style and icon they
load comes from this server (a machine without internet, or a browser that blocks third-party
scripts, used to get a blank page).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from urllib.parse import urljoin, urlparse

import pytest
import requests

from tests.integration.test_web_slow_clients import Web, broker, refunds_web

__all__ = ["broker"]  # the module's private Redis fixture, shared

URL_IN_PAGE = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|url\s*:\s*["']([^"']+)["']""")
ANY_ABSOLUTE_URL = re.compile(r"""["'(]\s*((?:https?:)?//[^"')\s]+)""")


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory, broker: str) -> Iterator[Web]:
    with refunds_web(tmp_path_factory.mktemp("web-home"), broker) as running:
        yield running


def test_home_points_to_the_docs_the_openapi_and_health(web: Web) -> None:
    home = requests.get(web.url + "/", timeout=5)
    assert home.status_code == 200
    links = home.json()["links"]
    assert {"docs", "redoc", "openapi", "healthz", "metrics"} <= set(links)
    assert "console" in links  # the operator console (its sign-in page when signed out)
    for link in links.values():
        assert requests.get(web.url + link["href"], timeout=5).status_code == 200, link


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_api_reference_pages_load_everything_from_this_server(web: Web, page: str) -> None:
    html = requests.get(web.url + page, timeout=5)
    assert html.status_code == 200
    assert "text/html" in html.headers["content-type"]
    absolute = ANY_ABSOLUTE_URL.findall(html.text)
    assert not absolute, f"{page} names another host: {absolute}"
    assets = [a or b for a, b in URL_IN_PAGE.findall(html.text)]
    scripts = [a for a in assets if a.endswith(".js")]
    assert scripts, html.text
    for asset in assets:
        url = urljoin(web.url + page, asset)
        assert urlparse(url).netloc == f"127.0.0.1:{web.port}"
        got = requests.get(url, timeout=10)
        assert got.status_code == 200, asset
        assert len(got.content) > 100, asset
    assert requests.get(web.url + "/openapi.json", timeout=5).json()["info"]["title"]


def test_unknown_paths_are_still_404(web: Web) -> None:
    assert requests.get(web.url + "/nothing-here", timeout=5).status_code == 404


def test_pages_are_listed_nowhere_in_the_openapi(web: Web) -> None:
    paths = requests.get(web.url + "/openapi.json", timeout=5).json()["paths"]
    assert not {"/", "/docs", "/redoc"} & set(paths)
