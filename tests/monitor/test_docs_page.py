"""/docs works on a machine without internet: Swagger UI's scripts and styles come from the monitor."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from rebal.settings import ApiSettings
from rebal_monitor.api import Deps, create_api


class NoBus:
    async def publish(self, event: object) -> bool:
        raise AssertionError("the docs page publishes nothing")


def test_the_docs_page_loads_only_what_the_monitor_serves() -> None:
    api = create_api(
        Deps(pool=lambda: None, publisher=NoBus(), settings=ApiSettings(), portfolios=("demo",), checks={})
    )  # type: ignore[arg-type]
    client = TestClient(api)
    for page in ("/docs", "/redoc"):
        html = client.get(page)
        assert html.status_code == 200, page
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?["']([^"']+)["']""", html.text)
        loaded = [u for pair in urls for u in pair if u]
        assert loaded, html.text
        for url in loaded:
            assert url.startswith("/"), f"{page} loads {url} from elsewhere"
            assert client.get(url).status_code == 200, url
        assert "cdn" not in html.text.lower()
    script = client.get("/static/docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 100_000
    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
