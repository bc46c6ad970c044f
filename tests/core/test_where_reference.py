"""The where planner's columnar parts against slow per-row references (the loops they replaced): the
round trips made moves and the per-order notes must come out the same, move for move and float for float,
on generated pool inputs (one pool of a few venues) and on the benchmark's generator (hundreds of pools)."""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
from hypothesis import example, given, reject, settings
from hypothesis import strategies as st

from rebal.core import pools
from rebal.core.diff import HOLD, DiffTree, diff_trees
from rebal.core.errors import InputError
from rebal.core.market import Markets, Prices
from rebal.core.networks import Networks
from rebal.core.numbers import DEFAULT_AMOUNT_STEP, VALUE_EPSILON, amount_str, default_steps_of, floor_steps
from rebal.core.plan import Plan, _fewest_buy_steps, _Groups, cost_floor, plan_trading
from rebal.core.trading import Move, Trading, VenuePrices
from rebal.core.tree import BANK, parse_tree
from rebal.core.where import (
    BEST_ASK,
    BEST_BID,
    CHEAPEST_ROUTE,
    ORDER_REASONS,
    _costed_plain,
    _Made,
    _place,
    _placed,
    _pooled,
    _Rates,
    round_trips,
)
from tests.strategies import WhereCase, pool_cases

BENCH = Path(__file__).resolve().parents[2] / "bench"


def reference_round_trips(diff: DiffTree, trading: Trading) -> tuple[Move, ...]:
    """Per asset, sellers (the accounts', then each relocation's: sold at its hub, sent from its source)
    and buyers matched largest first, one seller at a time over every buyer in order: a buyer it cannot
    move to is passed over with the rest of its exchange and quote; then the relocations less what round
    trips sent from their sources (the original loop, made to pass over)."""
    networks = trading.networks
    assert networks is not None
    tree = diff.tree
    n_assets = len(diff.asset_names)
    tradable = np.flatnonzero(
        tree.wallet & ~diff.cash & (diff.operation != HOLD) & (tree.account_of >= 0) & (diff.asset_id >= 0)
    )
    keys = tree.account_of[tradable] * n_assets + diff.asset_id[tradable]
    unique, inverse = np.unique(keys, return_inverse=True)
    net = np.bincount(inverse.reshape(-1), weights=diff.diff_amount[tradable], minlength=unique.size)
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    position = {int(key): i for i, key in enumerate(unique.tolist())}
    for relocation in trading.moves:
        at = position.get(relocation.source * n_assets + ids[relocation.asset])
        if at is not None:
            net[at] += float(relocation.amount)
    account, asset = unique // n_assets, unique % n_assets
    banks = np.isin(account, list(trading.banks))
    rank = {node: i for i, node in enumerate(sorted(tree.accounts))}
    rates = _Rates(diff, trading)
    moves: list[Move] = []
    sent = [Decimal(0)] * len(trading.moves)
    tolerance = VALUE_EPSILON * diff.scale
    for asset_id in np.unique(asset).tolist():
        here = (asset == asset_id) & ~banks
        price = float(diff.asset_price[asset_id])
        name = diff.asset_names[asset_id]
        # (size, rank, origin, the account whose bid it sells at, relocation or -1)
        sellers = [
            (-float(net[i]), rank[int(account[i])], int(account[i]), int(account[i]), -1)
            for i in np.flatnonzero(here & (net < 0))
        ] + [
            (float(m.amount), rank[m.source], m.source, m.destination, index)
            for index, m in enumerate(trading.moves)
            if m.asset == name
        ]
        buyers = [
            (float(net[i]), rank[int(account[i])], int(account[i])) for i in np.flatnonzero(here & (net > 0))
        ]
        if not sellers or not buyers:
            continue
        sellers.sort(key=lambda x: (-x[0], x[1], x[4]))
        buyers.sort(key=lambda x: (-x[0], x[1]))
        left_s, left_b = [s[0] for s in sellers], [b[0] for b in buyers]
        for i, (_, _, source, rated, index) in enumerate(sellers):
            passed: set[tuple[str, str]] = set()
            for j, (_, _, destination) in enumerate(buyers):
                if left_s[i] * price <= tolerance:
                    break
                kind = tree.accounts[destination]
                if left_b[j] * price <= tolerance or kind in passed:
                    continue
                amount = min(left_s[i], left_b[j])
                exact = DEFAULT_AMOUNT_STEP * floor_steps(Decimal(amount_str(amount)), DEFAULT_AMOUNT_STEP)
                way = networks.choose(tree.accounts[source][0], kind[0], name, exact)
                sell = rates.rate(rated, asset_id, sell=True)
                buy = rates.rate(destination, asset_id, sell=False)
                move = None
                if (
                    exact > 0
                    and source != destination
                    and not isinstance(way, str)
                    and sell is not None
                    and buy is not None
                ):
                    round_trip = float(exact) * price * ((1 - sell) + (buy - 1))
                    fee = float(way.fee) * price
                    if fee < round_trip:
                        move = Move(
                            name,
                            source,
                            destination,
                            exact,
                            way.fee,
                            way.network,
                            "round_trip",
                            round_trip - fee,
                        )
                if move is None:
                    passed.add(kind)
                    continue
                moves.append(move)
                if index >= 0:
                    sent[index] += exact
                left_s[i] -= amount
                left_b[j] -= amount
    kept: list[Move] = []
    for m, taken in zip(trading.moves, sent, strict=True):
        if not taken:
            kept.append(m)
            continue
        rest = m.amount - taken
        way = networks.choose(tree.accounts[m.source][0], tree.accounts[m.destination][0], m.asset, rest)
        here_rate = rates.rate(m.source, ids[m.asset], sell=True)
        there_rate = rates.rate(m.destination, ids[m.asset], sell=True)
        if (
            rest > 0
            and not isinstance(way, str)
            and here_rate is not None
            and there_rate is not None
            and float(rest - way.fee) * there_rate > float(rest) * here_rate * (1 + pools.RELOCATION_MARGIN)
        ):
            price = float(diff.prices.get(m.asset) or 0)
            kept.append(
                m._replace(amount=rest, fee=way.fee, network=way.network, saving=-float(way.fee) * price)
            )
    return tuple(kept) + tuple(moves)


def reference_order_notes(made: _Made) -> tuple[list[int], list[float], list[int]]:
    """Per order its reason, saving and the transfer it waits for, one order at a time (the original loop)."""
    plan, groups, flows, trading = made.plan, made.groups, made.flows, made.trading
    diff = plan.diff
    resolved = made.resolved
    keys: list[tuple[int, int]] = []
    best_sell: set[tuple[int, int]] = set()
    best_buy: set[tuple[int, int]] = set()
    plain_bid: dict[tuple[int, int], float] = {}
    plain_ask: dict[tuple[int, int], float] = {}
    if resolved is not None:
        keys = list(zip(resolved.cells.account.tolist(), resolved.cells.asset.tolist(), strict=True))
        best_sell = {key for key, best in zip(keys, resolved.best_sell.tolist(), strict=True) if best}
        best_buy = {key for key, best in zip(keys, resolved.best_buy.tolist(), strict=True) if best}
        plain_bid = dict(zip(keys, resolved.plain_bid.tolist(), strict=True))
        plain_ask = dict(zip(keys, resolved.plain_ask.tolist(), strict=True))
    account, market, sell, steps, group, markets = plan.ordered()
    rates = _Rates(diff, trading)
    step = [float(m.amount_step) for m in markets]
    relocated: dict[tuple[int, str], int] = {}
    for index, move in enumerate(trading.moves):
        if move.kind == "relocation":
            relocated.setdefault((move.destination, move.asset), index)
    reason, saving, after = [0] * len(account), [0.0] * len(account), [-1] * len(account)
    for i, (node, m, side, g) in enumerate(
        zip(account.tolist(), market.tolist(), sell.tolist(), group.tolist(), strict=True)
    ):
        if g < 0:
            continue
        asset_id = int(groups.asset[g])
        name = diff.asset_names[asset_id]
        key = (node, asset_id)
        if bool(groups.routed[g]):
            reason[i] = ORDER_REASONS.index(CHEAPEST_ROUTE)
        elif side and key in best_sell:
            reason[i] = ORDER_REASONS.index(BEST_BID)
        elif not side and key in best_buy:
            reason[i] = ORDER_REASONS.index(BEST_ASK)
        if side and (node, name) in relocated:
            after[i] = relocated[(node, name)]
        if (
            not side
            and flows.wanted[node] > flows.cash[node] * (1 + VALUE_EPSILON)
            and node in flows.first_in
        ):
            after[i] = flows.first_in[node]
        if markets[m].base != name:
            continue
        here = rates.rate(node, asset_id, sell=side)
        plain = (plain_bid if side else plain_ask).get(key)
        if plain is None or not np.isfinite(plain) or plain == 0:
            plain = rates.rate(node, asset_id, sell=side, plain=True)
        if here is None or plain is None:
            continue
        unit = (here - plain) if side else (plain - here)
        saving[i] = float(int(steps[i]) * step[m]) * float(diff.asset_price[asset_id]) * unit
    return reason, saving, after


def reference_withdrawal_fees(plan: Plan) -> float:
    """The transfers' network fees valued at the reference prices, summed in transfer order."""
    total = 0.0
    for transfer in plan.transfers:
        total += float(transfer.fee) * float(plan.diff.prices.get(transfer.asset) or 0)
    return total


def every_candidate(*args: Any) -> np.ndarray[Any, np.dtype[np.bool_]]:
    """`pools._may_relocate` dropping nothing: every candidate goes through the per-seller loop."""
    candidates = args[4]
    return np.ones(candidates.size, dtype=np.bool_)


def check(diff: DiffTree, markets: Markets, networks: Networks | None) -> None:
    """Both candidates a where plan weighs: their notes, and the optimised one's round trips."""
    banks = frozenset(node for node in diff.tree.accounts if diff.tree.kinds[node] == BANK)
    trading = Trading(VenuePrices(diff.prices), markets, networks, banks=banks)
    found = pools.candidates(diff, trading)
    # The relocations' bulk bound drops only sellers the loop would refuse: the same moves without it.
    with mock.patch.object(pools, "_may_relocate", every_candidate):
        unbounded = pools.candidates(diff, trading)
    assert unbounded.optimised.moves == found.optimised.moves
    assert unbounded.optimised.cost.tolist() == found.optimised.cost.tolist()
    for plain in (False, True):
        made = _pooled(diff, markets, trading, found, plain)
        notes = made.noted().notes
        assert notes is not None
        reason, saving, after = reference_order_notes(made)
        assert notes.order_reason.tolist() == reason
        assert notes.order_after.tolist() == after
        assert notes.order_saving.tolist() == saving
        # Only costed (the plain candidate until it is kept): the same orders and costs, no transfers.
        costed = _pooled(diff, markets, trading, found, plain, made=False)
        assert costed.plan.transfers == ()
        assert [column.tolist() for column in costed.plan.ordered()[:5]] == [
            column.tolist() for column in made.plan.ordered()[:5]
        ]
        assert costed.priced.withdrawal_fees == reference_withdrawal_fees(made.plan)
        assert (costed.total(), costed.priced.fees) == (made.total(), made.priced.fees)
    check_cost_floor(diff, markets, trading, found)
    if networks is not None:
        resolved = pools.resolve(diff, trading, found=found)
        placed = _place(diff, resolved)
        moved = replace(trading, moves=resolved.moves)
        assert round_trips(placed, moved) == reference_round_trips(placed, moved)
        check_exact_frees(placed, markets, replace(moved, moves=round_trips(placed, moved)))


def check_exact_frees(diff: DiffTree, markets: Markets, trading: Trading) -> None:
    """The groups' exact free amounts, read only for the moves touching the groups asked for, are every
    move's changes summed per group in the moves' order (the dict of all of them it replaced)."""
    groups = _Groups.build(diff, markets, trading, trading.min_trade_value)
    moves, sources, destinations = groups._moved
    extra: dict[int, Decimal] = {}
    for move, source, destination in zip(moves, sources, destinations, strict=True):
        extra[source] = extra.get(source, Decimal(0)) - move.amount
        extra[destination] = extra.get(destination, Decimal(0)) + move.received
    every = np.arange(groups.size)
    held = groups._members.exact_frees(groups._position[every])
    reference = [free + extra.get(g, Decimal(0)) if moves else free for g, free in enumerate(held)]
    for asked in (every, every[::3], every[every % 7 == 1]):
        frees = groups.exact_frees(asked)
        expected = [reference[g] for g in asked.tolist()]
        assert [str(free) for free in frees] == [str(free) for free in expected]
    for g in every[:: max(1, groups.size // 20)].tolist():
        assert str(groups.exact_free(g)) == str(
            groups._members.exact_free(int(groups._position[g])) + extra.get(g, Decimal(0))
        )


def check_cost_floor(diff: DiffTree, markets: Markets, trading: Trading, found: pools.Candidates) -> float:
    """The plain candidate's cost floor, read before its plan, is never above its plan's cost, and no
    buy's fewest steps above the plan's; the costed candidate is left unplanned exactly where the floor
    reaches the ceiling. Returns the floor."""
    _, placed, moved = _placed(diff, trading, found, plain=True)
    groups = _Groups.build(placed, markets, moved, moved.min_trade_value)
    floor = cost_floor(placed, groups)
    total = _pooled(diff, markets, trading, found, True).total()
    check_fewest_buy_steps(placed, markets, moved, groups)
    assert floor <= total
    if np.isfinite(floor):
        assert _costed_plain(diff, markets, trading, found, floor) is None
        above = _costed_plain(diff, markets, trading, found, float(np.nextafter(floor, np.inf)))
        assert above is not None and above.total() == total
    return floor


def check_fewest_buy_steps(diff: DiffTree, markets: Markets, trading: Trading, groups: _Groups) -> None:
    """Every buy `_fewest_buy_steps` gives steps (where every group trades directly) is emitted by the
    plan at least at those steps, whatever its budget, transfers and squeezes."""
    if not groups.all_direct:
        return
    steps, cost = groups.size_direct()
    fewest = _fewest_buy_steps(diff, groups, steps, cost, groups.reasons(steps, cost) == 0)
    assert not fewest[groups.sells].any()
    plan = plan_trading(diff, markets, trading, trading.min_trade_value, groups=groups)[0]
    assert plan.direct_group is not None
    made = dict(zip(plan.direct_group.tolist(), plan.direct_steps.tolist(), strict=True))
    for g in np.flatnonzero(fewest).tolist():
        assert made.get(g, 0) >= fewest[g], (g, made.get(g), fewest[g])


@settings(max_examples=150, deadline=None)
@given(pool_cases())
def test_the_columnar_notes_and_round_trips_match_the_per_row_references(case: WhereCase) -> None:
    diff = diff_trees(
        parse_tree(case.real, "real"), parse_tree(case.target, "target"), Prices.parse(case.prices)
    )
    networks = Networks.parse(case.network) if case.network is not None else None
    check(diff, Markets.parse(case.markets), networks)


def _bench_where() -> ModuleType:
    """bench/where.py (a script, not a package): its generator of two- and three-venue pools."""
    spec = importlib.util.spec_from_file_location("rebal_bench_where", BENCH / "where.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_the_columnar_parts_match_the_references_on_the_benchmarks_generator() -> None:
    bench = _bench_where()
    for venues in (2, 3):
        docs: dict[str, Any] = bench.generate(600, venues, seed=3)
        diff = diff_trees(
            parse_tree(docs["real"], "real"), parse_tree(docs["pool"], "target"), Prices.parse(docs["venues"])
        )
        check(diff, Markets.parse(docs["markets"]), Networks.parse(docs["network"]))


@example(0.999999999999999)
@example(0.123456789999996)
@example(1e-13)
@example(-0.5)
@example(0.0)
@example(123456789.123456789)
@given(st.floats(min_value=-1.0, max_value=1e15, allow_nan=False))
def test_an_amount_cut_to_whole_satoshis_is_the_printed_amount_floored_in_decimals(value: float) -> None:
    reference = DEFAULT_AMOUNT_STEP * floor_steps(Decimal(amount_str(value)), DEFAULT_AMOUNT_STEP)
    cut = default_steps_of(value)
    assert (cut, str(cut)) == (reference, str(reference))


@settings(max_examples=300, deadline=None)
@given(
    pool_cases(),
    st.sampled_from(("0", "500", "20000")),
    st.sampled_from(("0", "500", "20000")),
    st.sampled_from((0.0, 0.02)),
    st.sampled_from((0.0, 25.0)),
)
def test_the_plain_candidates_cost_floor_holds_with_money_in_and_out_and_small_trades(
    case: WhereCase, invest: str, withdraw: str, band: float, min_trade_value: float
) -> None:
    """With money entering or leaving (budgets below what the buys want, transfers out of surplus
    accounts), a band holding accounts and a small-trade floor: the floor and the buys' fewest steps
    still never exceed the plain candidate's plan."""
    try:
        diff = diff_trees(
            parse_tree(case.real, "real"),
            parse_tree(case.target, "target"),
            Prices.parse(case.prices),
            invest=float(invest),
            withdraw=float(withdraw),
            band=band,
        )
    except InputError:  # more withdrawn than the portfolio holds
        reject()
    networks = Networks.parse(case.network) if case.network is not None else None
    banks = frozenset(node for node in diff.tree.accounts if diff.tree.kinds[node] == BANK)
    markets = Markets.parse(case.markets)
    trading = Trading(
        VenuePrices(diff.prices), markets, networks, banks=banks, min_trade_value=min_trade_value
    )
    check_cost_floor(diff, markets, trading, pools.candidates(diff, trading))
