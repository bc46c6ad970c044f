"""The dashboard in a real browser (Debian's chromium through Playwright) against the running system
after a real rebalance: what a person reads on the page equals what the API says, no number carries float
noise, the controls act (each asked first) for an operator and are absent for a viewer, and the page fits
a 420 px phone. Saves screenshots, wide and narrow; with REBAL_SCREENSHOT_DIR=docs/screenshots it
refreshes the ones kept there (dashboard-wide.png, dashboard-narrow.png) and docs/dashboard.png."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import BrowserContext, Page, Playwright, expect, sync_playwright

from tests.e2e.operators import TOKEN, VIEWER_TOKEN, OperatorSystem, operator_system

pytestmark = [pytest.mark.timeout(240)]
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
WIDE = {"width": 1400, "height": 1100}
NARROW = {"width": 420, "height": 900}
# Float noise: a number with more decimals than any money, amount or weight is shown with.
NOISE = re.compile(r"\d\.\d{9,}")
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="Debian's chromium is not installed (make test installs it)"
)


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


def money(value: Any) -> str:
    return f"{float(value):,.2f}"


def plotly_data(page: Page, element: str) -> Any:
    return page.evaluate(f"() => document.getElementById({element!r}).data[0]")


def browser(playwright: Playwright, profile: Path, viewport: dict[str, int]) -> BrowserContext:
    return playwright.chromium.launch_persistent_context(
        str(profile),  # a fresh user-data-dir
        executable_path=str(CHROMIUM),
        headless=True,
        args=CHROMIUM_ARGS,
        viewport=viewport,
    )


def loaded(page: Page, times: int = 1) -> None:
    start = int(page.evaluate("() => Number(document.body.dataset.loaded || 0)"))
    page.wait_for_function(f"() => Number(document.body.dataset.loaded || 0) >= {start + times}")


def screenshot(page: Page, name: str, tmp_path: Path) -> Path:
    page.mouse.move(0, 0)  # no hover label in the picture
    shot = tmp_path / f"dashboard-{name}.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("REBAL_SCREENSHOT_DIR")
    if keep:
        shutil.copy(shot, Path(keep) / f"dashboard-{name}.png")
        if name == "wide":
            shutil.copy(shot, Path(keep).parent / "dashboard.png")
    return shot


@needs_chromium
def test_the_dashboard_shows_the_api_s_numbers_and_its_controls_act(
    system: OperatorSystem, tmp_path: Path
) -> None:
    # A real run: a preview through the API, approved, executed on the paper exchange; then a preview
    # waiting for approval.
    plan = system.post("/portfolio/rebalance", {"dry_run": True, "band": BAND})
    assert plan["orders"], "the demo portfolio starts outside the band: the plan should trade"
    approved = system.post(f"/portfolio/plans/{plan['plan_id']}/approve")
    run = finished_run(system, approved["approval_run_id"])
    assert run["status"] == "completed", run
    waiting = system.post("/portfolio/rebalance", {"dry_run": True, "band": "0.0001"})

    with sync_playwright() as playwright:
        context = browser(playwright, tmp_path / "profile", WIDE)
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
            page.fill("#token", TOKEN)
            page.click("#login button[type=submit]")
            expect(page.locator("#board")).to_be_visible()
            page.wait_for_function("() => Number(document.body.dataset.loaded || 0) >= 1")
            errors.clear()  # the refused token's 401 is logged by the browser: expected

            # Prices stand still in these tests and snapshots are taken on demand: the API's numbers
            # read after a refresh are the page's.
            loaded(page)
            weights = system.get("/portfolio/weights")
            performance = system.get("/portfolio/performance")
            equity = system.get("/portfolio/equity")
            history = system.get("/portfolio/history", limit=20, include_previews="false")
            loaded(page)

            # The portfolio's own figures, from its snapshots; not annualised from minutes of data.
            own = performance["portfolio"]
            expect(page.locator("#scope")).to_have_text("operator")
            expect(page.locator("#kpi-value")).to_have_text(f"{money(weights['total_value'])} USDT")
            expect(page.locator("#kpi-return")).to_have_text(pct(own["time_weighted_return"]))
            expect(page.locator("#kpi-drawdown")).to_have_text(pct(own["max_drawdown"]))
            assert own["annualised"] is None
            for kpi in ("#kpi-volatility", "#kpi-sharpe", "#kpi-sortino"):
                expect(page.locator(kpi)).to_have_text("n/a")
            expect(page.locator("#kpi-note")).to_contain_text(own["not_annualised"])
            expect(page.locator("#kpi-note")).to_contain_text(f" of {own['frequency']['step']} (the last")
            curve = plotly_data(page, "equity-chart")
            assert curve["y"] == pytest.approx([float(p["value"]) for p in equity["points"]])
            strategy_rows = page.locator("#strategies-table tbody tr").all_inner_texts()
            assert sorted(row.split("\t")[0] for row in strategy_rows) == ["arb", "meanrev", "trend"]
            for strategy in performance["strategies"]:
                row = next(r for r in strategy_rows if r.startswith(strategy["strategy_id"]))
                assert pct(strategy["cumulative_return"]) in row
                # The total return is shown with the span it covers, beside the annualised one.
                cells = row.split("\t")
                assert strategy["frequency"] == "intraday (every 1 hour)"
                hours = strategy["observations"]
                assert cells[3] == (
                    f"{hours // 24} days" if hours >= 48 and hours % 24 == 0 else f"{hours} hours"
                )
                annual = strategy["annualised_return"]
                assert cells[1] == ("n/a" if annual is None else pct(annual)), cells

            # The pie and the table: the API's shares.
            listed = [n for n in weights["nodes"] if n["kind"] in ("sector", "strategy")]
            slices = [n for n in listed if n["name"] != "crypto"]
            pie = plotly_data(page, "weights-chart")
            assert pie["labels"] == [n["name"] for n in slices]
            assert pie["values"] == pytest.approx([float(n["actual_share"]) for n in slices])
            weights_rows = page.locator("#weights-table tbody tr").all_inner_texts()
            for node in listed:
                assert any(node["path"] in r and pct(node["actual_share"]) in r for r in weights_rows)

            # The plan waiting for approval, the last real run (not the newer preview), the history.
            expect(page.locator("#waiting-summary")).to_contain_text(waiting["plan_id"])
            assert len(page.locator("#waiting-orders tbody tr").all()) == len(waiting["orders"])
            last = history["runs"][0]
            assert last["run_id"] == run["run_id"]
            expect(page.locator("#last-run")).to_contain_text(run["run_id"])
            expect(page.locator("#last-run")).to_contain_text(f"{run['counts']['filled']} filled")
            assert len(page.locator("#last-run-orders tbody tr").all()) == len(last["orders"])
            row = page.locator(f"#history tr[data-run-id='{run['run_id']}']")
            cells = row.locator("td").all_inner_texts()
            counts = run["counts"]
            assert cells[3:7] == [str(counts[k]) for k in ("orders", "filled", "skipped", "failed")]
            btc = system.get("/portfolio/trees/diff")["diff"]
            node = _node(btc, "demo/paper/spot/crypto/trend/btc")
            op = page.locator("li[data-path='demo/paper/spot/crypto/trend/btc'] > .op").first
            expect(op).to_have_text(
                "hold"
                if node["operation"] == "hold"
                else f"{node['operation']} {money(abs(float(node['diff_value'])))}"
            )

            # No float noise anywhere on the page; money to cents.
            text = page.locator("body").inner_text()
            assert NOISE.findall(text) == [], NOISE.findall(text)
            assert re.fullmatch(r"[\d,]+\.\d{2} USDT", page.locator("#kpi-value").inner_text())
            screenshot(page, "wide", tmp_path)

            # The controls: each asks first (accepted here), and acts.
            asked: list[str] = []

            def answer(dialog: Any) -> None:
                asked.append(dialog.message)
                dialog.accept("dashboard test" if dialog.type == "prompt" else None)

            page.on("dialog", answer)
            page.click("#halt")
            expect(page.locator("#trading")).to_have_text("HALTED: dashboard test", timeout=15_000)
            page.click("#resume")
            expect(page.locator("#trading")).to_have_text("trading", timeout=15_000)
            page.click("#preview")
            expect(page.locator("#notice")).to_contain_text("preview ", timeout=15_000)
            fresh = page.locator("#notice").inner_text().split()[1].rstrip(":")
            expect(page.locator("#waiting-summary")).to_contain_text(fresh, timeout=15_000)
            page.click("#approve")
            expect(page.locator("#notice")).to_contain_text(f"plan {fresh} approved", timeout=30_000)
            assert len(asked) == 5 and any("Halt trading" in q for q in asked), asked
            assert errors == [], errors
        finally:
            context.close()

        # A viewer reads the same board and has no control; the API refuses it one all the same.
        viewer = browser(playwright, tmp_path / "viewer", NARROW)
        try:
            page = viewer.pages[0] if viewer.pages else viewer.new_page()
            page.goto(f"{system.api_url}/?refresh=1&token={VIEWER_TOKEN}")
            page.wait_for_function("() => Number(document.body.dataset.loaded || 0) >= 1")
            expect(page.locator("#scope")).to_have_text("viewer (read only)")
            expect(page.locator("#controls")).to_be_hidden()
            expect(page.locator("#approve")).to_be_hidden()
            refused = page.evaluate(
                """async (token) => (await fetch('/halt', {method: 'POST', body: '{"reason": "x"}',
                headers: {Authorization: 'Bearer ' + token, 'Content-Type': 'application/json'}})).status""",
                VIEWER_TOKEN,
            )
            assert refused == 403
        finally:
            viewer.close()

        # A 420 px phone: nothing wider than the screen, every figure there.
        narrow = browser(playwright, tmp_path / "narrow", NARROW)
        try:
            page = narrow.pages[0] if narrow.pages else narrow.new_page()
            page.goto(f"{system.api_url}/?refresh=1&token={TOKEN}")
            page.wait_for_function("() => Number(document.body.dataset.loaded || 0) >= 1")
            widths = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
            assert widths[0] <= widths[1] == 420, widths
            # Amounts to their market's step; less than one step as it is, never a "sell 0.00" of dust.
            shown = page.evaluate(
                """() => { amountSteps = {...amountSteps, DUST: "0.01"};
                return [amount("13.604", "DUST"), amount("0.004", "DUST"), amount("0", "DUST")]; }"""
            )
            assert shown == ["13.60", "0.004", "0.00"], shown
            newest = system.get("/portfolio/history", limit=1, include_previews="false")["runs"][0]
            expect(page.locator("#history tbody tr").first).to_contain_text(newest["run_id"])
            assert NOISE.findall(page.locator("body").inner_text()) == []
            # Each of the plan's skips once, from the plan (the run's reasons do not repeat them).
            lines = page.locator("#last-run-skips li").all_inner_texts()
            assert newest["skips"], newest
            for skip in newest["skips"]:
                assert sum(skip["path"] in line for line in lines) == 1, lines
            screenshot(page, "narrow", tmp_path)
        finally:
            narrow.close()


@needs_chromium
def test_the_autopilot_card_shows_the_policy_the_drift_against_each_band_and_the_last_decision(
    system: OperatorSystem, tmp_path: Path
) -> None:
    import asyncio

    import httpx

    from tests.e2e.flow import take_snapshot

    # A band every node is inside of but one, in notify mode (nothing is traded): a decision with a reason.
    policy = {"drift_absolute": "0.0001", "schedule": "0 0 * * MON", "mode": "notify", "cooldown": "1h"}
    stored = httpx.put(
        f"{system.api_url}/portfolio/policy",
        json={"policy": policy, "author": "dashboard-test"},
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=30,
    )
    assert stored.status_code == 201, stored.text
    asyncio.run(take_snapshot(system.nats_url))  # the autopilot decides on it
    deadline = time.monotonic() + 30
    while (shown := system.get("/portfolio/policy"))["last_decision"] is None:
        assert time.monotonic() < deadline, "no decision after 30 s"
        time.sleep(0.3)
    with sync_playwright() as playwright:
        context = browser(playwright, tmp_path / "autopilot", WIDE)
        try:
            page = context.pages[0] if context.pages else context.new_page()
            page.goto(f"{system.api_url}/?refresh=1&token={TOKEN}")
            page.wait_for_function("() => Number(document.body.dataset.loaded || 0) >= 1")
            loaded(page)
            shown = system.get("/portfolio/policy")
            version = stored.json()["version"]
            expect(page.locator("#autopilot-policy")).to_contain_text(
                f"policy v{version} (set by dashboard-test"
            )
            expect(page.locator("#autopilot-policy")).to_contain_text("mode notify")
            expect(page.locator("#autopilot-next")).to_have_text(
                "next scheduled check: "
                + shown["status"]["next_scheduled"].replace("T", " ").rstrip("Z")
                + " UTC"
            )
            decision = shown["last_decision"]
            expect(page.locator("#autopilot-decision")).to_contain_text("last decision, ")
            expect(page.locator("#autopilot-decision")).to_contain_text(decision["summary"].split(":")[0])
            # The reasons are shown as the API gives them; a drift reason's percents are not converted twice,
            # and the fractions of decisions journaled by older versions are shown as percents.
            for reason in decision["reasons"]:
                expect(page.locator("#autopilot-reasons")).to_contain_text(reason)
            now, older = page.evaluate(
                """() => [readable("weight 14.90% for a target of 20.00%, absolute limit 5.00%"),
                readable("weight 0.149 for a target of 0.2, absolute limit 0.05")]"""
            )
            assert now == "weight 14.90% for a target of 20.00%, absolute limit 5.00%", now
            assert older == now, older
            rows = page.locator("#autopilot-bands tbody tr").all_inner_texts()
            assert len(rows) == len(shown["status"]["drift"]) > 0
            top = shown["status"]["drift"][0]
            assert top["path"] in rows[0] and pct(top["limit"]) in rows[0]
            assert NOISE.findall(page.locator("#autopilot").inner_text()) == []
        finally:
            context.close()


def _node(node: dict[str, Any], path: str) -> dict[str, Any]:
    if node["path"] == path:
        return node
    for child in node["children"]:
        if path.startswith(child["path"]):
            return _node(child, path)
    raise AssertionError(f"no node {path}")


# -- without a browser: what the router serves ------------------------------------------------------


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
