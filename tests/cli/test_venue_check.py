"""`rebal venue check --venue NAME` (issue 11): the conformance check users run before trusting a venue,
through the configuration as the services read it, against the fake Binance in ccxt's sandbox mode (the
testnet's urls, pointed at the fake): each assumption pass/fail, exit 1 when one fails, a live account
refused before anything is sent unless --allow-live, a venue that is not configured exit 2."""

from __future__ import annotations

import asyncio
import json
import os
from decimal import Decimal

import pytest
from typer.testing import CliRunner, Result

from rebal_cli.app import app
from tests.fake_exchange import FakeBook, serving
from tests.venues.support import ACCOUNT, KEY, SECRET, fake_book

pytestmark = [pytest.mark.asyncio(loop_scope="session"), pytest.mark.timeout(120)]


def venue_env(origin: str, **more: str) -> dict[str, str]:
    return {
        "REBAL__VENUES__BINANCE__KIND": "ccxt",
        "REBAL__VENUES__BINANCE__ACCOUNT": ACCOUNT,
        "REBAL__VENUES__BINANCE__API_KEY": KEY,
        "REBAL__VENUES__BINANCE__SECRET": SECRET,
        "REBAL__VENUES__BINANCE__API_BASE_URL": origin,
        "REBAL__VENUES__BINANCE__TIMEOUT_MS": "3000",
        **more,
    }


async def rebal(*args: str, env: dict[str, str]) -> Result:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("REBAL__", "REBAL_CONFIG"))}
    return await asyncio.to_thread(
        CliRunner().invoke, app, list(args), env={**unset, "COLUMNS": "200", "REBAL_CONTEXT": "none", **env}
    )


def funded() -> FakeBook:
    book = fake_book()
    book.accounts[KEY].update({"USDT": Decimal("1000")})
    book.faults.not_found_seconds = 0.3  # it shows new orders late, as Binance may
    return book


async def test_the_sandboxed_fake_binance_keeps_every_assumption() -> None:
    book = funded()
    async with serving(book) as origin:
        ran = await rebal(
            "venue", "check", "--venue", "binance", "--lookup-window", "5", env=venue_env(origin)
        )
        assert ran.exit_code == 0, ran.output
        lines = ran.stdout.strip().splitlines()
        assert [line.split(":")[0] for line in lines[:-1]] == [
            "pass precision and minimums",
            "pass client-id look-up",
            "pass fee currency",
            "pass open id refused, cancel by id",
            "pass reused id of a closed order",
            "pass sell fills",
            "pass rate-limit headers",
        ]
        assert lines[-1] == f"binance {ACCOUNT} on BTC/USDT: 7 of 7 assumptions hold"
        assert book.open_orders(KEY, None) == []

        as_json = await rebal(
            "venue", "check", "--venue", "binance", "--symbol", "ETH/USDT", "--json", env=venue_env(origin)
        )
        assert as_json.exit_code == 0, as_json.output
        report = json.loads(as_json.stdout)
        assert report["passed"] is True and report["symbol"] == "ETH/USDT"
        assert {
            "name": "fee currency",
            "passed": True,
            "detail": "fees in ETH (the asset received)",
        } in report["assumptions"]


async def test_a_failing_assumption_exits_1() -> None:
    book = funded()
    book.faults.not_found_seconds = 30  # hides new orders longer than the look-up window
    async with serving(book) as origin:
        ran = await rebal(
            "venue", "check", "--venue", "binance", "--lookup-window", "0.6", env=venue_env(origin)
        )
    assert ran.exit_code == 1, ran.output
    assert "FAIL client-id look-up: a market buy not found by its client id within 0.6 s" in ran.stdout
    summary = ran.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"binance {ACCOUNT} on BTC/USDT: ") and not summary.endswith(
        ": 7 of 7 assumptions hold"
    )


async def test_a_live_account_is_refused_before_anything_is_sent_unless_allowed() -> None:
    book = funded()
    async with serving(book) as origin:
        live = venue_env(origin, REBAL__VENUES__BINANCE__SANDBOX="false")
        refused = await rebal("venue", "check", "--venue", "binance", env=live)
        assert refused.exit_code == 2, refused.output
        assert refused.stderr.startswith(
            f"error: --venue binance: account {ACCOUNT} is LIVE (sandbox = false)"
        )
        assert book.requests_of("create") == []
        allowed = await rebal(
            "venue", "check", "--venue", "binance", "--allow-live", "--lookup-window", "5", env=live
        )
        assert allowed.exit_code == 0, allowed.output


async def test_a_venue_that_is_not_configured_exits_2_naming_it() -> None:
    ran = await rebal("venue", "check", "--venue", "kraken", env={})
    assert ran.exit_code == 2
    assert ran.stderr.strip() == (
        "error: --venue kraken: no ccxt venue of that name in the configuration"
        ' ([venues.kraken] kind = "ccxt"); configured: none'
    )
