"""A backtest without a markets file is unconstrained and free: no order of a cheap coin is too many
steps to count, and the dust the replay's own fills leave in the cash wallet it adds does not fire a
relative band. The figures are the review's independent replay (exact amounts, fees on notional):
3 rebalances and 9 orders for a 20% relative band on review/three_assets.csv, fees 3.80 and a final value
of 7,532.60 with a fee of 0.1%. Before: 23 rebalances (69 orders) free, 28 (84 orders, fees 7.45, final
7,452.19) with the fee, and the SHIB history refused ("more than 2**53 steps of 1E-8 ... --invest")."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from rebal.core.backtest.start import quiet_added_cash
from rebal.core.policy import Bands, Policy
from rebal_cli.app import app

REVIEW = Path(__file__).resolve().parent / "review"
NO_CASH = {"name": "p", "children": [
    {"name": "a", "asset": "AAA", "weight": "50%"},
    {"name": "b", "asset": "BBB", "weight": "30%"},
    {"name": "c", "asset": "CCC", "weight": "20%"},
]}  # fmt: skip
SHIB = {"name": "p", "children": [
    {"name": "btc", "asset": "BTC", "weight": "50%"},
    {"name": "shib", "asset": "SHIB", "weight": "40%"},
    {"name": "usd", "asset": "USD", "weight": "10%"},
]}  # fmt: skip


def backtest(tmp_path: Path, history: str, target: object, policy: str, *extra: str) -> tuple[int, str, str]:
    (tmp_path / "target.json").write_bytes(orjson.dumps(target))
    (tmp_path / "policy.toml").write_text(policy)
    args = ["backtest", "--prices", str(REVIEW / history), "--target", str(tmp_path / "target.json")]
    args += ["--policy", str(tmp_path / "policy.toml"), "--json", *extra]
    result = CliRunner().invoke(app, args)
    assert "Traceback" not in result.stdout + result.stderr
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("fee", "expected"),
    [(None, (3, 9, 0.0, 7_535.75)), ("0.001", (3, 9, 3.80, 7_532.60))],
)
def test_dust_in_the_added_cash_wallet_does_not_fire_a_relative_band(
    tmp_path: Path, fee: str | None, expected: tuple[int, int, float, float]
) -> None:
    extra: list[str] = ["--initial", "10000"]
    if fee is not None:
        markets = {"ex": {f"{a}/USD": {"fee_rate": fee} for a in ("AAA", "BBB", "CCC")}}
        (tmp_path / "markets.json").write_bytes(orjson.dumps(markets))
        extra += ["--markets", str(tmp_path / "markets.json")]
    code, stdout, stderr = backtest(tmp_path, "three_assets.csv", NO_CASH, "drift_relative = 0.2\n", *extra)
    assert code == 0, stderr
    (row,) = orjson.loads(stdout)["policies"]
    assert (row["rebalances"], row["orders"], row["fees"], row["final_value"]) == expected


def test_a_cheap_coin_without_markets_trades(tmp_path: Path) -> None:
    """SHIB at 2e-5: an order of 3.5e8 SHIB was 3.5e16 steps of the old default 1e-8."""
    code, stdout, stderr = backtest(
        tmp_path, "shib.csv", SHIB, "drift_absolute = 0.05\n", "--initial", "100000"
    )
    assert code == 0, stderr
    (row,) = orjson.loads(stdout)["policies"]
    assert (row["rebalances"], row["orders"], row["final_value"]) == (2, 4, 96_091.95)


def test_a_markets_step_too_fine_names_the_markets_file_not_invest(tmp_path: Path) -> None:
    (tmp_path / "markets.json").write_text('{"ex": {"SHIB/USD": {"fee_rate": "0.001"}, "BTC/USD": {}}}')
    code, _, stderr = backtest(
        tmp_path, "shib.csv", SHIB, "drift_absolute = 0.05\n", "--initial", "100000",
        "--markets", str(tmp_path / "markets.json"),
    )  # fmt: skip
    assert code == 2 and stderr.count("\n") == 1
    assert (
        f"{tmp_path / 'markets.json'}: p/shib: an order of 3.49685e+08 SHIB is more than 2**53 steps"
        in stderr
    )
    assert "give that market a coarser amount_step" in stderr and "--invest" not in stderr


def test_only_a_relative_band_is_taken_off_the_added_cash_and_the_users_word_wins() -> None:
    relative = Policy(bands=Bands(relative=0.2))
    quiet = quiet_added_cash(relative, ["p/usd"])
    assert quiet.overrides == {"p/usd": {"relative": None}} and quiet.bands == relative.bands
    absolute = Policy(bands=Bands(absolute=0.05))
    assert quiet_added_cash(absolute, ["p/usd"]) is absolute  # no relative band: nothing to take off
    own = Policy(bands=Bands(relative=0.2), overrides={"p/usd": {"relative": 0.5}})
    assert quiet_added_cash(own, ["p/usd"]) is own


ON_BINANCE = {"name": "p", "children": [
    {"name": "spot", "kind": "account", "exchange": "binance", "quote": "USD", "weight": 1,
     "children": NO_CASH["children"]},
]}  # fmt: skip


@pytest.mark.parametrize(("exchanges", "target"), [(("binanse",), ON_BINANCE), (("ex", "ex2"), NO_CASH)])
def test_a_markets_exchange_no_account_is_on_is_a_warning(
    tmp_path: Path, exchanges: tuple[str, ...], target: object
) -> None:
    """Failed before: a misspelt exchange, or a target naming no account with a markets file of two
    exchanges (its account is on `backtest`), replayed free of fees without a word."""
    markets = {name: {f"{a}/USD": {"fee_rate": "0.001"} for a in ("AAA", "BBB", "CCC")} for name in exchanges}
    (tmp_path / "markets.json").write_bytes(orjson.dumps(markets))
    extra = ("--initial", "10000", "--markets", str(tmp_path / "markets.json"))
    code, _, stderr = backtest(tmp_path, "three_assets.csv", target, "drift_relative = 0.2\n", *extra)
    assert code == 0, stderr
    unused = "no account is on this exchange; its markets are not used"
    assert stderr.splitlines() == [
        f"warning: {tmp_path / 'markets.json'}: {name}: {unused}" for name in exchanges
    ]
