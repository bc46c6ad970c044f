"""Venues from configuration: paper by default, ccxt per ``[venues.<name>]`` section (file or environment),
keys as secrets, sandbox by default, urls overridden for the fake exchange."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from rebal.settings import using_config_file
from rebal.venue import VenueAuthError
from rebal_tracker.tracker import Tracker
from rebal_venues.factory import CcxtAccounts, VenuesConfig, open_venues
from rebal_venues.paper import PaperVenue
from rebal_venues.settings import PaperSettings
from tests.fake_exchange import serving
from tests.fakes import RecordingPublisher
from tests.paper_support import MARKETS, PRICES
from tests.venues.support import ACCOUNT, KEY, SECRET, fake_book

pytestmark = pytest.mark.asyncio(loop_scope="session")
D = Decimal


def paper_settings(tmp_path: Path) -> PaperSettings:
    markets, prices = tmp_path / "markets.json", tmp_path / "prices.json"
    markets.write_text(json.dumps(MARKETS))
    prices.write_text(json.dumps(PRICES))
    return PaperSettings(markets_file=markets, prices_file=prices, amplitude=0, noise=0)


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rebal.toml"
    path.write_text(text)
    return path


async def test_every_exchange_is_paper_unless_configured(tmp_path: Path, pool: asyncpg.Pool) -> None:
    venues = open_venues(["paper"], pool, paper_settings(tmp_path), VenuesConfig(venues={}))
    assert list(venues) == ["paper"]
    assert isinstance(venues["paper"], PaperVenue)
    assert venues["paper"].valuation_quote == "USDT"


async def test_a_ccxt_venue_from_the_config_file_trades_on_the_fake_exchange(
    tmp_path: Path, pool: asyncpg.Pool
) -> None:
    (tmp_path / "key").write_text(KEY + "\n")
    (tmp_path / "secret").write_text(SECRET + "\n")
    book = fake_book()
    book.accounts[KEY].update(USDT=D("1000"))
    async with serving(book) as origin:
        path = config_file(
            tmp_path,
            f"""
[venues.binance]
kind = "ccxt"
sandbox = false
api_base_url = "{origin}"
account = "{ACCOUNT}"
api_key_file = "{tmp_path / "key"}"
secret_file = "{tmp_path / "secret"}"
""",
        )
        with using_config_file(path):
            config = VenuesConfig()
        venues = open_venues(["paper", "binance"], pool, paper_settings(tmp_path), config)
        binance = venues["binance"]
        try:
            assert isinstance(binance, CcxtAccounts)
            assert (binance.name, binance.valuation_quote) == ("binance", "USDT")
            assert isinstance(venues["paper"], PaperVenue)
            state = await binance.place_order(ACCOUNT, "f-1", "ETH/USDT", "buy", D("0.1"))
            assert (state.status, state.filled) == ("filled", D("0.1"))
            # 0.1 ETH less the 0.1% fee taken from it; 300 USDT spent.
            assert (await binance.balances(ACCOUNT)).free == {"ETH": D("0.0999"), "USDT": D("700")}
            assert await binance.seed(ACCOUNT, {"BTC": D(1)}) is False  # a real exchange is never seeded
            with pytest.raises(VenueAuthError, match="no keys are configured for account 'demo/other'"):
                await binance.balances("demo/other")
        finally:
            await binance.close()


async def test_ccxt_from_the_environment_is_sandboxed_by_default_and_never_shows_keys(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REBAL__VENUES__BINANCE__KIND", "ccxt")
    monkeypatch.setenv("REBAL__VENUES__BINANCE__ACCOUNT", ACCOUNT)
    monkeypatch.setenv("REBAL__VENUES__BINANCE__API_KEY", "env-key-7f3a")
    monkeypatch.setenv("REBAL__VENUES__BINANCE__SECRET", "env-secret-91c2")
    monkeypatch.setenv("REBAL__VENUES__BINANCE__ACCOUNTS__SAVINGS__ACCOUNT", "demo/binance/savings")
    monkeypatch.setenv("REBAL__VENUES__BINANCE__ACCOUNTS__SAVINGS__API_KEY", "env-key-2-55d0")
    monkeypatch.setenv("REBAL__VENUES__BINANCE__ACCOUNTS__SAVINGS__SECRET", "env-secret-2-e8b1")
    config = VenuesConfig()
    venues = open_venues([], None, paper_settings(tmp_path), config)
    binance = venues["binance"]
    try:
        assert isinstance(binance, CcxtAccounts)
        assert list(binance.accounts) == sorted([ACCOUNT, "demo/binance/savings"])
        assert all(venue.sandboxed for venue in binance.accounts.values())
        texts = [repr(config), str(config), config.model_dump_json(), repr(binance)]
        texts += [repr(venue) for venue in binance.accounts.values()]
        for text in texts:
            for secret in ("env-key-7f3a", "env-secret-91c2", "env-key-2-55d0", "env-secret-2-e8b1"):
                assert secret not in text
    finally:
        await binance.close()


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('kind = "ccxt"\nexchange_id = "nowhere"\napi_key = "k"', "venues.x: ccxt has no exchange 'nowhere'"),
        ('kind = "ccxt"\nexchange_id = "bitfinex"\napi_key = "k"', "venues.x: bitfinex has no sandbox"),
        ('kind = "ccxt"\nexchange_id = "binance"', "venue 'x' is ccxt but no account has keys"),
    ],
)
async def test_a_venue_that_cannot_open_says_which_and_why(
    tmp_path: Path, section: str, message: str
) -> None:
    with using_config_file(config_file(tmp_path, f"[venues.x]\n{section}\n")):
        config = VenuesConfig()
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        open_venues([], None, paper_settings(tmp_path), config)


async def test_paper_venues_need_the_database(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="the paper venues paper need the database"):
        open_venues(["paper"], None, paper_settings(tmp_path), VenuesConfig(venues={}))


async def test_two_sets_of_keys_for_one_account_are_refused(tmp_path: Path) -> None:
    text = '[venues.b]\nkind = "ccxt"\naccount = "a"\napi_key = "k1"\n[venues.b.accounts.a]\napi_key = "k2"\n'
    with using_config_file(config_file(tmp_path, text)), pytest.raises(ValueError, match="accounts a have"):
        VenuesConfig()


LAYOUT = {
    "name": "demo",
    "kind": "user",
    "children": [
        {
            "name": "binance",
            "kind": "exchange",
            "children": [
                {
                    "name": "spot",
                    "kind": "account",
                    "quote": "USDT",
                    "children": [
                        {"name": "btc", "asset": "BTC", "amount": "9"},
                        {"name": "usdt", "asset": "USDT", "amount": "9"},
                    ],
                }
            ],
        }
    ],
}


async def test_the_tracker_reads_a_configured_ccxt_account(tmp_path: Path) -> None:
    """The tracker's snapshot of an account on a ccxt venue: the fake exchange's balances, nothing seeded."""
    book = fake_book()
    book.accounts[KEY].update(BTC=D("0.5"), USDT=D("1000"))
    async with serving(book) as origin:
        config = VenuesConfig.model_validate(
            {
                "venues": {
                    "binance": {
                        "kind": "ccxt",
                        "sandbox": False,
                        "api_base_url": origin,
                        "account": ACCOUNT,
                        "api_key": KEY,
                        "secret": SECRET,
                    }
                }
            }
        )
        venues = open_venues(["binance"], None, paper_settings(tmp_path), config)
        recorder = RecordingPublisher()
        quote = next(iter(venues.values())).valuation_quote
        tracker = Tracker("demo", LAYOUT, quote, venues, recorder)
        try:
            assert await tracker.seed() == []  # a real exchange's balances are never seeded
            facts = await tracker.read()
        finally:
            await venues["binance"].close()
    # With the exchange's own best bid and ask, from its tickers (the fake shows them at the last price).
    assert facts["prices"] == {
        "quote": "USDT",
        "prices": {"BTC": "60000"},
        "venues": {"binance": {"BTC": {"bid": "60000", "ask": "60000"}}},
    }
    assert sorted(facts["markets"]["binance"]) == ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    assert facts["markets"]["binance"]["BTC/USDT"] == {
        "amount_step": "0.00001",
        "min_amount": "0.00001",
        "min_cost": "5",
        "fee_rate": "0.001",
    }
    held = {leaf["asset"]: leaf["amount"] for leaf in _leaves(facts["tree"])}
    assert held == {"BTC": "0.5", "USDT": "1000"}


def _leaves(node: dict[str, Any]) -> list[dict[str, Any]]:
    if "asset" in node:
        return [node]
    return [leaf for child in node.get("children", []) for leaf in _leaves(child)]
