"""The ccxt venue's pure parts: amount steps and truncation in each ccxt precision mode, and its settings
(keys as secrets, from the environment or files; sandbox by default)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from ccxt.base.decimal_to_precision import DECIMAL_PLACES, SIGNIFICANT_DIGITS, TICK_SIZE
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from rebal_venues.ccxt_settings import CcxtVenueSettings
from rebal_venues.ccxt_venue import RequestBudget, amount_step, open_ccxt_venue, truncate_amount

D = Decimal


def settings(origin: str, **changes: object) -> CcxtVenueSettings:
    return CcxtVenueSettings.model_validate(
        {"api_key": SecretStr("k"), "secret": SecretStr("s"), "sandbox": False, "api_base_url": origin}
        | changes
    )


@pytest.mark.parametrize(
    ("mode", "precision", "min_amount", "step"),
    [
        (TICK_SIZE, 0.001, D(0), D("0.001")),
        (TICK_SIZE, 5, D(0), D("5")),
        (DECIMAL_PLACES, 4, D(0), D("0.0001")),
        (DECIMAL_PLACES, 0, D(0), D("1")),
        (SIGNIFICANT_DIGITS, 3, D("0.0123"), D("0.0001")),  # 3 digits at the minimum: 0.0123
        (SIGNIFICANT_DIGITS, 2, D(0), D("0.1")),  # anchored at 1: 1.0
        (TICK_SIZE, None, D("0.02"), D("0.02")),  # no precision: the minimum
    ],
)
def test_amount_step_from_each_ccxt_precision_mode(
    mode: int, precision: object, min_amount: Decimal, step: Decimal
) -> None:
    assert amount_step(mode, precision, min_amount) == step


@pytest.mark.parametrize(
    ("amount", "mode", "precision", "step", "sent"),
    [
        ("0.123456", TICK_SIZE, 0.00001, "0.00001", "0.12345"),
        ("0.999999", TICK_SIZE, 0.00001, "0.00001", "0.99999"),  # never rounded up to 1
        ("7.9", TICK_SIZE, 5, "5", "5"),
        ("1.23456", DECIMAL_PLACES, 2, "0.01", "1.23"),
        ("123.456", SIGNIFICANT_DIGITS, 3, "0.0001", "123"),  # 3 significant digits at submit
        ("0.0123456", SIGNIFICANT_DIGITS, 3, "0.0001", "0.0123"),
        ("0.000009", TICK_SIZE, 0.00001, "0.00001", "0"),
    ],
)
def test_amounts_are_truncated_to_the_step(
    amount: str, mode: int, precision: object, step: str, sent: str
) -> None:
    assert truncate_amount(D(amount), mode, precision, D(step)) == D(sent)


def test_keys_are_never_in_a_repr(tmp_path: Path) -> None:
    key_file, secret_file = tmp_path / "key", tmp_path / "secret"
    key_file.write_text("file-key-123\n")
    secret_file.write_text("file-secret-456\n")
    loaded = settings("http://127.0.0.1:1", api_key_file=key_file, secret_file=secret_file)
    assert loaded.api_key.get_secret_value() == "file-key-123"
    assert loaded.secret.get_secret_value() == "file-secret-456"
    opened = open_ccxt_venue(loaded)
    for text in (repr(loaded), str(loaded), repr(opened), str(opened), loaded.model_dump_json()):
        assert "file-key-123" not in text
        assert "file-secret-456" not in text


def test_keys_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    class Holder(BaseSettings):
        model_config = SettingsConfigDict(env_prefix="REBAL__", env_nested_delimiter="__")
        venue: CcxtVenueSettings = CcxtVenueSettings()

    monkeypatch.setenv("REBAL__VENUE__API_KEY", "env-key")
    monkeypatch.setenv("REBAL__VENUE__EXCHANGE_ID", "kraken")
    loaded = Holder().venue
    assert (loaded.api_key.get_secret_value(), loaded.exchange_id) == ("env-key", "kraken")
    assert "env-key" not in repr(Holder())


def test_sandbox_is_the_default_and_unknown_exchanges_are_refused() -> None:
    assert CcxtVenueSettings().sandbox
    assert open_ccxt_venue(CcxtVenueSettings(exchange_id="binance")).sandboxed
    assert not open_ccxt_venue(settings("http://127.0.0.1:1")).sandboxed
    with pytest.raises(ValueError, match="no sandbox"):
        open_ccxt_venue(CcxtVenueSettings(exchange_id="bitfinex"))
    with pytest.raises(ValueError, match="no exchange"):
        open_ccxt_venue(CcxtVenueSettings(exchange_id="nowhere"))


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


async def test_the_request_budget_refills_on_the_wall_clock() -> None:
    """10 cost units a second, banking up to 2: a request goes when the bucket is not in debt."""
    time = FakeTime()
    budget = RequestBudget(10, capacity=2, clock=time.clock, sleep=time.sleep)
    await budget(4)  # 2 - 4 = -2: sent at once
    await budget(1)  # waits off the debt: 0.2 s
    assert time.slept == [pytest.approx(0.2)]
    time.now += 0.5  # the caller's own work: refills to the cap of 2 (not 4)
    await budget(1)
    await budget(1)
    await budget(1)  # 2 - 1 - 1 = 0, not in debt: goes; now -1
    await budget(1)  # waits 0.1 s
    assert time.slept == [pytest.approx(0.2), pytest.approx(0.1)]


def test_the_venue_throttles_with_the_request_budget_at_the_configured_rate() -> None:
    opened = open_ccxt_venue(settings("http://127.0.0.1:1", rate_limit_ms=25, rate_limit_burst=4))
    budget = opened.client.throttler
    assert isinstance(budget, RequestBudget)
    assert (budget.per_second, budget.capacity) == (40, 4)
