"""The dashboard in a real browser (Debian's chromium through Playwright) against the running system
after a real rebalance: what a person checks on the page equals what the API says. Saves a screenshot; with
REBAL_SCREENSHOT=docs/dashboard.png it refreshes the one the README shows."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.e2e.operators import TOKEN, OperatorSystem, operator_system

pytestmark = [pytest.mark.timeout(180)]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
BAND = "0.01"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory, postgres_admin_dsn: str) -> Iterator[OperatorSystem]:
    with operator_system(tmp_path_factory.mktemp("dashboard"), postgres_admin_dsn) as running:
        yield running


def finished_run(system: OperatorSystem, run_id: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        runs = system.get("/portfolio/history", limit=20)["runs"]
        run = next((r for r in runs if r["run_id"] == run_id), None)
        if run is not None and run["finished_at"]:
            return run
        assert time.monotonic() < deadline, f"run {run_id} not finished after {timeout} s: {run}"
        time.sleep(0.3)


def pct(value: Any) -> str:
    return f"{float(value) * 100:.2f}%"


def plotly_data(page: Page, element: str) -> Any:
    return page.evaluate(f"() => document.getElementById({element!r}).data[0]")


@pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"
)
def test_the_dashboard_shows_the_real_run_and_the_numbers_of_the_api(
    system: OperatorSystem, tmp_path: Path
) -> None:
    # A real run: a preview through the API, approved, executed on the paper exchange.
    plan = system.post("/portfolio/rebalance", {"dry_run": True, "band": BAND})
    assert plan["orders"], "the demo portfolio starts outside the band: the plan should trade"
    approved = system.post(f"/portfolio/plans/{plan['plan_id']}/approve")
    run = finished_run(system, approved["approval_run_id"])
    assert run["status"] == "completed", run

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh user-data-dir
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            page = context.pages[0] if context.pages else context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

            # Signing in: a wrong token is refused and said so; the right one shows the board.
            page.goto(f"{system.api_url}/?refresh=1")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", "not-the-token")
            page.click("#login button[type=submit]")
            expect(page.locator("#problem")).to_contain_text("wrong bearer token")
            expect(page.locator("#login")).to_be_visible()
            page.fill("#token", TOKEN)
            page.click("#login button[type=submit]")
            expect(page.locator("#board")).to_be_visible()
            page.wait_for_function("() => Number(document.body.dataset.loaded || 0) >= 1")
            errors.clear()  # the refused token's 401 is logged by the browser: expected

            # Read the API after the page has loaded (the numbers the page must show).
            weights = system.get("/portfolio/weights")
            performance = system.get("/portfolio/performance")
            equity = system.get("/portfolio/equity")
            history = system.get("/portfolio/history", limit=20, include_previews="false")
            page.wait_for_function("() => Number(document.body.dataset.loaded || 0) >= 2")

            # The pie: the strategies and the sector holding none (cash), with the API's shares; the
            # table lists every sector and strategy (crypto holds the three strategies).
            nodes = weights["nodes"]
            listed = [n for n in nodes if n["kind"] in ("sector", "strategy")]
            assert [(n["name"], n["kind"]) for n in listed] == [
                ("crypto", "sector"),
                ("trend", "strategy"),
                ("meanrev", "strategy"),
                ("arb", "strategy"),
                ("cash", "sector"),
            ]
            slices = [n for n in listed if n["name"] != "crypto"]
            pie = plotly_data(page, "weights-chart")
            assert pie["labels"] == [n["name"] for n in slices]
            assert pie["values"] == pytest.approx([float(n["actual_share"]) for n in slices])
            assert sum(pie["values"]) == pytest.approx(1.0)
            legend = page.locator("#weights-chart .legendtext").evaluate_all(
                "els => els.map(e => e.textContent)"
            )
            assert sorted(legend) == ["arb", "cash", "meanrev", "trend"]
            weights_rows = page.locator("#weights-table tbody tr").all_inner_texts()
            assert len(weights_rows) == len(listed)
            for node in listed:
                assert any(node["path"] in row and pct(node["actual_share"]) in row for row in weights_rows)

            # Live Sharpe and max drawdown: the API's combined figures; the curve has every point.
            combined = performance["combined"]
            assert {s["strategy_id"] for s in performance["strategies"]} == {"trend", "meanrev", "arb"}
            expect(page.locator("#kpi-sharpe")).to_have_text(f"{combined['sharpe']:.2f}")
            expect(page.locator("#kpi-drawdown")).to_have_text(pct(combined["max_drawdown"]))
            expect(page.locator("#kpi-value")).to_contain_text(f"{float(weights['total_value']):,.2f}")
            assert equity["max_drawdown"] == pytest.approx(combined["max_drawdown"], rel=1e-9)
            curve = plotly_data(page, "equity-chart")
            assert len(curve["y"]) == len(equity["points"]) > 1
            assert curve["y"][-1] == pytest.approx(1 + combined["cumulative_return"], rel=1e-9)
            strategy_rows = page.locator("#strategies-table tbody tr").all_inner_texts()
            assert sorted(row.split("\t")[0] for row in strategy_rows) == ["arb", "meanrev", "trend"]

            # The history has the run, with the API's status and counts.
            row = page.locator(f"#history tr[data-run-id='{run['run_id']}']")
            expect(row).to_contain_text("completed")
            cells = row.locator("td").all_inner_texts()
            counts = run["counts"]
            assert cells[3:7] == [str(counts[k]) for k in ("orders", "filled", "skipped", "failed")]
            assert len(page.locator("#history tbody tr").all()) == len(history["runs"])

            # The last plan: its orders, and the diff tree of what is sold and bought where.
            last_plan = system.get("/portfolio/plans", limit=1)["plans"][0]
            expect(page.locator("#plan-summary")).to_contain_text(last_plan["plan_id"])
            assert len(page.locator("#plan-orders tbody tr").all()) == len(last_plan["orders"])
            diff = system.get("/portfolio/trees/diff", band=last_plan["band"])["diff"]
            btc = _node(diff, "demo/paper/spot/crypto/trend/btc")
            expect(page.locator("li[data-path='demo/paper/spot/crypto/trend/btc'] > .op").first).to_have_text(
                "hold"
                if btc["operation"] == "hold"
                else f"{btc['operation']} {abs(float(btc['diff_value'])):,.2f}"
            )

            # Live: a halt shows up without reloading, and goes again on resume.
            system.post("/halt", {"reason": "dashboard test"})
            expect(page.locator("#trading")).to_have_text("HALTED: dashboard test", timeout=15_000)
            page.screenshot(path=str(tmp_path / "halted.png"))
            system.post("/resume", {})
            expect(page.locator("#trading")).to_have_text("trading", timeout=15_000)

            page.mouse.move(0, 0)  # no hover label in the picture
            shot = os.environ.get("REBAL_SCREENSHOT") or str(tmp_path / "dashboard.png")
            page.screenshot(path=shot, full_page=True)
            assert Path(shot).stat().st_size > 10_000
            assert errors == [], errors
        finally:
            context.close()


def _node(node: dict[str, Any], path: str) -> dict[str, Any]:
    if node["path"] == path:
        return node
    for child in node["children"]:
        if path.startswith(child["path"]):
            return _node(child, path)
    raise AssertionError(f"no node {path}")


# -- without a browser: the equity series and what the router serves ------------------------------


def test_the_equity_curve_compounds_the_equal_mix_at_shared_timestamps() -> None:
    from rebal_monitor.dashboard import equity_points

    series = {
        "a": ([1.0, 2.0, 3.0], [0.1, -0.2, 0.05]),
        "b": ([1.0, 2.0, 3.0, 4.0], [0.1, 0.0, 0.05, 0.3]),  # 4.0 is not shared: left out
    }
    points, drawdown = equity_points(series)
    # mix: 0.1, -0.1, 0.05 -> 1.1, 0.99, 1.0395; the fall from 1.1 to 0.99 is 10 %
    assert [p["equity"] for p in points] == pytest.approx([1.1, 0.99, 1.0395])
    assert [p["t"] for p in points] == [
        "1970-01-01T00:00:01+00:00",
        "1970-01-01T00:00:02+00:00",
        "1970-01-01T00:00:03+00:00",
    ]
    assert drawdown == pytest.approx(0.1)
    assert equity_points({}) == ([], None)


def test_a_long_curve_is_thinned_and_keeps_its_last_point() -> None:
    from rebal_monitor.dashboard import EQUITY_MAX_POINTS, equity_points

    n = 2500
    points, _ = equity_points({"a": ([float(i) for i in range(n)], [0.001] * n)})
    assert len(points) <= EQUITY_MAX_POINTS + 1
    assert points[-1]["equity"] == pytest.approx(1.001**n)


def test_the_router_serves_the_page_plotly_and_nothing_else() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from rebal_monitor import dashboard

    app = FastAPI()
    app.include_router(dashboard.router)
    client = TestClient(app)
    page = client.get("/")
    assert page.status_code == 200 and "<title>Rebal dashboard</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    plotly = client.get("/static/plotly.min.js")
    assert plotly.status_code == 200 and plotly.content == dashboard.plotly_js().read_bytes()
    assert plotly.headers["content-type"].startswith("text/javascript")
    assert client.get("/static/dashboard.js").status_code == 200
    for path in ("/static/index.html", "/static/..%2Fdashboard.py", "/static/nothing.js"):
        assert client.get(path).status_code == 404, path
    assert client.get("/portfolio/equity").status_code == 404  # data is the API's (token required)
