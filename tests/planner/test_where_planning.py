"""The running planner plans where to trade: a snapshot with per-venue prices and the planner's network
file (`planning.network_file`) give the plan of docs/formats.md's worked example, its sell waiting for
the transfer (`after_transfer`) and the transfer's network and fee, inline and by reference alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from rebal.events import BalanceSnapshotTaken, PayloadRef, RebalancePlanned, TargetWeightsComputed, new_event
from rebal.payloads import ENCODING, decode, digest_of, hydrate, slim
from rebal.settings import EXIT_CONFIGURATION
from rebal_planner.inputs import snapshot_cache
from rebal_planner.planning import parse_target, plan_with_weights
from rebal_planner.settings import load_networks
from tests.cli.test_where_cli import BLOCKS

NOW = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)
D = Decimal


def snapshot(prices: Any = None) -> BalanceSnapshotTaken:
    return new_event(
        BalanceSnapshotTaken,
        key="where",
        now=NOW,
        portfolio_id="alice",
        tree=BLOCKS["real"],
        prices=BLOCKS["prices"] if prices is None else prices,
        markets=BLOCKS["markets"],
    )


async def planned(
    tmp_path: Path, network: object | None, prices: Any = None, tree: Any = None
) -> tuple[RebalancePlanned, object]:
    path = None
    if network is not None:
        path = tmp_path / "network.json"
        path.write_text(json.dumps(network))
    snap = snapshot(prices)
    known = await snapshot_cache(load_networks(path)).add(snap)
    tree = BLOCKS["target"] if tree is None else tree
    target = new_event(TargetWeightsComputed, key="t", now=NOW, portfolio_id="alice", tree=tree)
    made = plan_with_weights(
        snap,
        snapshot_id=snap.event_id,
        target_id=target.event_id,
        snapshot=known.parsed,
        target=parse_target(target),
        band=D(0),
        dry_run=False,
        now=NOW,
    )
    event = made.whole()
    assert isinstance(event, RebalancePlanned)
    return event, made.body


async def test_with_the_network_file_the_plan_moves_btc_and_its_sell_waits_for_the_transfer(
    tmp_path: Path,
) -> None:
    event, body = await planned(tmp_path, BLOCKS["network"])
    documented = BLOCKS["plan"]
    [sell] = event.orders
    assert (sell.account, sell.symbol, sell.side, str(sell.amount), sell.after_transfer) == (
        "alice/coinbase",
        "BTC/USDT",
        "sell",
        documented["orders"][0]["amount"],
        0,
    )
    [move] = event.transfers
    assert (move.asset, move.from_account, move.to_account, move.amount, move.network, move.fee) == (
        "BTC",
        "alice/binance",
        "alice/coinbase",
        D("0.5"),
        "BTC",
        D("0.0002"),
    )
    # The same plan by reference (a large plan's orders travel as columns): nothing is lost.
    data = body.encode(RebalancePlanned)  # type: ignore[attr-defined]
    ref = PayloadRef(bucket="plans", name="p", digest=digest_of(data), size=len(data), encoding=ENCODING)
    travelled = hydrate(slim(event, ref), decode(RebalancePlanned, data, ref))
    assert travelled.orders == event.orders
    assert travelled.transfers == event.transfers


async def test_the_running_plan_says_why_what_it_saves_and_what_it_costs_as_rebal_plan_json_does(
    tmp_path: Path,
) -> None:
    """The event (and so the API's plan document and `rebal plan --portfolio`) lacked `reason`,
    `est_saving` and `costs`: they are the documented example's, inline and by reference alike."""
    event, body = await planned(tmp_path, BLOCKS["network"])
    documented = BLOCKS["plan"]
    [sell], [move] = event.orders, event.transfers
    [doc_sell], [doc_move] = documented["orders"], documented["transfers"]
    assert (sell.reason, str(sell.est_saving)) == (doc_sell["reason"], doc_sell["est_saving"])
    assert (move.reason, str(move.est_saving)) == (doc_move["reason"], doc_move["est_saving"])
    assert event.costs is not None
    assert event.costs.model_dump(mode="json") == documented["costs"]
    data = body.encode(RebalancePlanned)  # type: ignore[attr-defined]
    ref = PayloadRef(bucket="plans", name="p", digest=digest_of(data), size=len(data), encoding=ENCODING)
    travelled = hydrate(slim(event, ref), decode(RebalancePlanned, data, ref))
    assert (travelled.orders, travelled.transfers, travelled.costs) == (
        event.orders,
        event.transfers,
        event.costs,
    )
    # Any other plan (no venue prices, network file or pool) has none of them.
    weights = {
        "name": "alice",
        "children": [{"name": "binance", "weight": "100%"}, {"name": "coinbase", "weight": "0%"}],
    }
    reference = {key: value for key, value in BLOCKS["prices"].items() if key != "venues"}
    plain, _ = await planned(tmp_path, None, prices=reference, tree=weights)
    assert plain.orders and plain.costs is None
    assert {(o.reason, o.est_saving) for o in (*plain.orders, *plain.transfers)} == {(None, None)}


async def test_without_a_network_file_nothing_but_money_moves_and_no_order_waits(tmp_path: Path) -> None:
    event, _ = await planned(tmp_path, None)
    assert event.transfers == ()
    # Each venue sells where the BTC sits (coinbase at the better bid first).
    assert {o.after_transfer for o in event.orders} == {None}
    assert sorted((o.account, str(o.amount)) for o in event.orders) == [
        ("alice/binance", "0.5"),
        ("alice/coinbase", "0.5"),
    ]


def test_a_bad_network_file_is_refused_in_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "network.json"
    path.write_text(json.dumps({"withdrawals": {}, "deposit": {}}))
    with pytest.raises(ValueError, match=r"^.*network\.json: unknown key\(s\) deposit$"):
        load_networks(path)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(None, "file not found"), ('{"withdrawals": {', "malformed JSON"), ('{"deposit": {}}', "unknown key")],
)
def test_a_missing_or_bad_network_file_stops_the_planner_with_one_line_and_exit_4(
    tmp_path: Path, content: str | None, problem: str
) -> None:
    path = tmp_path / "network.json"
    if content is not None:
        path.write_text(content)
    env = {k: v for k, v in os.environ.items() if not k.startswith("REBAL")}
    env["REBAL__PLANNING__NETWORK_FILE"] = str(path)
    done = subprocess.run(
        [sys.executable, "-m", "rebal_planner"],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == EXIT_CONFIGURATION, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(
        f"rebal-planner: configuration error: planning.network_file: Value error, {path}: "
    )
    assert problem in lines[0]


async def test_held_usd_is_sold_on_the_inverse_market_and_a_dear_one_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """500 USD in an account trading against USDT, only USDT/USD listed, at a 5% fee: the plan buys
    500 / 1.05 = 476.19 USDT with it (500 USD its budget there, docs/execution.md) and the planner logs
    that 23.8095 of 499.9995 USD (4.76%) go to the fee (docs/formats.md, "A dear conversion is named")."""
    fee = {"min_amount": "0", "min_cost": "0"}
    snap = new_event(
        BalanceSnapshotTaken,
        key="inverse",
        now=NOW,
        portfolio_id="alice",
        tree={
            "name": "alice",
            "children": [
                {
                    "name": "binance",
                    "kind": "account",
                    "exchange": "binance",
                    "quote": "USDT",
                    "children": [
                        {"name": "usd", "asset": "USD", "amount": "500"},
                        {"name": "btc", "asset": "BTC", "amount": "0"},
                    ],
                }
            ],
        },
        prices={"quote": "USD", "prices": {"BTC": "50000", "USDT": "1"}},
        markets={
            "binance": {
                "BTC/USDT": {"amount_step": "0.00001", "fee_rate": "0.001", **fee},
                "USDT/USD": {"amount_step": "0.01", "fee_rate": "0.05", **fee},
            }
        },
    )
    known = await snapshot_cache(load_networks(None)).add(snap)
    tree = {
        "name": "alice",
        "children": [
            {
                "name": "binance",
                "weight": "100%",
                "children": [{"name": "btc", "asset": "BTC", "weight": "100%"}],
            }
        ],
    }
    target = new_event(TargetWeightsComputed, key="t", now=NOW, portfolio_id="alice", tree=tree)
    with caplog.at_level("WARNING", logger="rebal.planner"):
        made = plan_with_weights(
            snap,
            snapshot_id=snap.event_id,
            target_id=target.event_id,
            snapshot=known.parsed,
            target=parse_target(target),
            band=D(0),
            dry_run=False,
            now=NOW,
        )
    event = made.whole()
    assert isinstance(event, RebalancePlanned)
    first = event.orders[0]
    assert (first.symbol, first.side, first.amount, first.phase) == ("USDT/USD", "buy", D("476.19"), 2)
    assert [(b.asset, b.amount) for b in event.budgets] == [("USD", D(500)), ("USDT", D(0))]
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "alice/binance: converting 499.9995 USD into 476.19 USDT (USDT/USD buy) loses 23.8095 USD to fees "
        "and spread, 4.76% of it (more than 1%): check the markets' fee_rate and the venues' prices"
    ]
