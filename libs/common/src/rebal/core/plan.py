"""The order plan: what to sell and buy, where, in which order, and what money must move between accounts.

Per account, wallet differences of the same asset are netted (a move inside an account needs no order)
into one order against the account's quote asset: sells first (phase 1), then buys (phase 2) funded by the
free quote plus the net sale proceeds (after fees) and any transfer in. Amounts are whole amount steps,
truncated, and a sell never exceeds the free (unlocked) amount; orders under a market's minimums are not
emitted but listed as skipped with a reason. An asset without a direct market is routed through one
intermediate market. Value that must move between accounts becomes transfers.

Given per-venue prices, a network file or pools, `rebal.core.where` plans through the same code with a
`rebal.core.trading.Trading`: sells at the venue's bid and buys at its ask, the cheapest route of up to
three markets, transfers over the cheapest open network (fee and minimum), and assets moved between
accounts (`Move`) instead of round trips.

The hot path is columnar (numpy); exact decimals are made once, when the plan is read.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from decimal import Context, Decimal
from functools import cached_property
from itertools import compress
from typing import Literal, NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt

from rebal.core.bulk import Decimals, multiply, times
from rebal.core.diff import BUY, HOLD, SELL, SMALL_NODES, DiffTree
from rebal.core.errors import InputError
from rebal.core.market import Market, Markets, Prices, Route
from rebal.core.networks import (
    BELOW_NETWORK_MIN,
    NETWORK_DISABLED,
    NO_NETWORK,
    NOT_ABOVE_FEE,
    Networks,
    Way,
)
from rebal.core.numbers import (
    AMOUNT_PLACES,
    BUDGET_SAFETY,
    DEFAULT_AMOUNT_STEP,
    MAX_STEPS,
    MIN_TOLERANCE,
    MONEY_PLACES,
    NEAR_WHOLE,
    STEP_EPSILON,
    STEP_RELATIVE,
    VALUE_EPSILON,
    floor_steps,
    money_str,
    shown_str,
)
from rebal.core.trading import Move, Trading
from rebal.core.tree import BANK, BoolArray, FloatArray, IntArray, assembled, contains

Side = Literal["buy", "sell"]
SkipSide = Literal["buy", "sell", "transfer"]
SELL_PHASE, BUY_PHASE = 1, 2
# A skipped transfer's side (orders' are `SELL` and `BUY`).
TRANSFER = 0
# Reasons an order is not emitted.
BELOW_STEP = "below_step"
BELOW_MIN_AMOUNT = "below_min_amount"
BELOW_MIN_COST = "below_min_cost"
NO_MARKET = "no_market"
INSUFFICIENT_QUOTE = "insufficient_quote"
BELOW_MIN_TRADE_VALUE = "below_min_trade_value"  # worth less than the caller's min_trade_value
# A transfer (with a network file) whose money is not the destination's quote, and no market of the
# destination's exchange converts it (`_conversion`): it is not planned.
NEEDS_CONVERSION = "needs_conversion"
# A conversion leg's group (`_Leg.group`, `Plan.ordered`): CONVERTING - the index of the transfer it
# converts (-1, a routed or direct order's unknown group, stays apart).
CONVERTING = -2
# Derived decimals (est. price, cost, fee) keep this many significant digits.
DERIVED = Context(prec=18)
# A conversion (money a transfer brings, or an asset sold on an inverse market) losing more than this
# share of what it converts to fees and spread is named (`dear_conversions`): exchanging one currency or
# stablecoin for another costs a venue some 0.1-0.5% (fee and spread); 1% is already dear, and a fee or a
# quote far beyond it (a 90% fee typed for 0.09%) would otherwise be planned in silence.
DEAR_CONVERSION = Decimal("0.01")
# What a buy may spend is checked in exact arithmetic (`spend_steps`): digits enough for any input.
SPEND = Context(prec=60)


class Order(NamedTuple):
    account: str
    exchange: str
    symbol: str
    side: Side
    amount: Decimal
    est_price: Decimal
    est_cost: Decimal
    est_fee: Decimal
    phase: int
    # The index of the transfer whose arrival the order waits for (where mode), or None.
    after_transfer: int | None = None
    # Why it trades there and what that saves against the plain choice (where mode), or None.
    reason: str | None = None
    est_saving: Decimal | None = None


class DearConversion(NamedTuple):
    """A conversion losing more than `DEAR_CONVERSION` of its value: on `account`, `spent` of
    `spent_asset` becomes `received` of `received_asset` (`symbol` bought or sold), `lost` (valuation
    currency, against the reference prices: its fee and spread) being `share` of what it spends."""

    account: str
    symbol: str
    side: Side
    spent: Decimal
    spent_asset: str
    received: Decimal
    received_asset: str
    lost: Decimal
    share: Decimal

    def line(self, valuation: str, limit: Decimal = DEAR_CONVERSION) -> str:
        """How a user is told (`rebal plan`'s stderr, the planner's log)."""
        percent = (self.share * 100).quantize(Decimal("0.01"))
        return (
            f"{self.account}: converting {self.spent} {self.spent_asset} into {self.received} "
            f"{self.received_asset} ({self.symbol} {self.side}) loses {self.lost} {valuation} to fees and "
            f"spread, {percent}% of it (more than {(limit * 100).normalize()}%): check the markets' fee_rate "
            "and the venues' prices"
        )


class Skip(NamedTuple):
    path: str
    symbol: str
    side: SkipSide
    amount: Decimal
    reason: str


class Transfer(NamedTuple):
    """`amount` of `asset` withdrawn from account `source`; `destination` receives ``amount - fee`` (the
    network's fee, in the asset: `network` None and fee 0 without a network file)."""

    asset: str
    source: str
    destination: str
    amount: Decimal
    value: Decimal
    network: str | None = None
    fee: Decimal = Decimal(0)


class Budget(NamedTuple):
    """What a run may spend of `asset` on an account: its free, unlocked amount in the real tree, with the
    plan's transfers in and out (the executor adds what the run's own fills yield)."""

    exchange: str
    account: str
    asset: str
    amount: Decimal


@dataclass(frozen=True)
class _Leg:
    """One leg of a routed order, still in steps: made exact when the plan is read."""

    account: int
    market: Market
    side: int
    steps: int
    phase: int
    sort_key: tuple[int, int, int, int]
    group: int = -1
    # An inverse sell's: the exact free amount of the asset it spends (the account's budget of it).
    held: Decimal | None = None


@dataclass(frozen=True, eq=False)
class Skips:
    """Orders not emitted, one row per (account, asset) group, in output order."""

    node: IntArray
    asset: IntArray
    account: IntArray
    side: IntArray
    amount: FloatArray
    code: IntArray
    symbol: dict[int, str]  # rows whose symbol is a routed leg's, not ASSET/QUOTE

    def __len__(self) -> int:
        return len(self.code)

    def with_transfers(self, skipped: list[TransferSkip], diff: DiffTree) -> Skips:
        """These skips, then the transfers that could not be planned (their symbol is the asset)."""
        ids = {name: i for i, name in enumerate(diff.asset_names)}
        rows = len(self.code)
        return Skips(
            node=np.concatenate((self.node, [skip.source for skip in skipped])).astype(np.int64),
            asset=np.concatenate((self.asset, [ids[skip.asset] for skip in skipped])).astype(np.int64),
            account=np.concatenate((self.account, [skip.source for skip in skipped])).astype(np.int64),
            side=np.concatenate((self.side, [TRANSFER] * len(skipped))).astype(np.int64),
            amount=np.concatenate((self.amount, [skip.amount for skip in skipped])),
            code=np.concatenate((self.code, [REASON_CODES[skip.reason] for skip in skipped])).astype(
                np.int64
            ),
            symbol={**self.symbol, **{rows + i: skip.asset for i, skip in enumerate(skipped)}},
        )


_Rows = TypeVar("_Rows", IntArray, FloatArray)


def _read_only(rows: _Rows) -> _Rows:
    rows.flags.writeable = False
    return rows


# The skips of a plan that skips nothing (most plans of a replay): one, read-only.
NO_SKIPS = Skips(
    node=_read_only(np.zeros(0, dtype=np.int64)),
    asset=_read_only(np.zeros(0, dtype=np.int64)),
    account=_read_only(np.zeros(0, dtype=np.int64)),
    side=_read_only(np.zeros(0, dtype=np.int64)),
    amount=_read_only(np.zeros(0, dtype=np.float64)),
    code=_read_only(np.zeros(0, dtype=np.int64)),
    symbol={},
)


class TransferSkip(NamedTuple):
    """A transfer that could not be planned: from account node `source`, `amount` of `asset`, and why."""

    source: int
    asset: str
    amount: float
    reason: str


@dataclass(frozen=True, eq=False)
class OrderColumns:
    """Every order as columns, in output order: what `Plan.orders()` lists, for a million orders at once."""

    account: IntArray  # the account's node
    market: IntArray  # index into `markets`
    markets: tuple[Market, ...]
    sell: BoolArray
    amount: Decimals
    est_price: Decimals  # one per market and side: row ``2 * market + sell``
    est_cost: Decimals
    est_fee: Decimals

    @property
    def price_row(self) -> IntArray:
        """Each order's row of `est_price`."""
        row: IntArray = 2 * self.market + self.sell
        return row

    def __len__(self) -> int:
        return len(self.account)


class ShownCosts(NamedTuple):
    """A plan's estimated costs (valuation currency, exact): trading fees, spreads against the reference
    prices, and the transfers' network fees (`Plan.shown_costs`)."""

    fees: Decimal
    spread: Decimal
    withdrawal_fees: Decimal


@dataclass(frozen=True, eq=False)
class Plan:
    """The orders, transfers and skips that bring the real tree to the desired one.

    Direct orders (the bulk) are columnar, in output order: account node, market index, side, steps.
    """

    diff: DiffTree
    legs: tuple[_Leg, ...]
    transfers: tuple[Transfer, ...]
    skips: Skips
    direct_account: IntArray
    direct_market: IntArray
    direct_side: IntArray
    direct_steps: IntArray
    direct_order: IntArray
    direct_markets: tuple[Market, ...]
    # Where-mode plans (`rebal.core.where`): how they traded, each direct order's group, and the notes.
    trading: Trading | None = None
    direct_group: IntArray | None = None
    notes: Notes | None = None

    def __len__(self) -> int:
        return len(self.direct_account) + len(self.legs)

    def orders(self) -> list[Order]:
        """Every order, exact: sells (phase 1) before buys (phase 2), then by account, asset and leg."""
        columns = self.order_columns()
        tree = self.diff.tree
        accounts = {node: (tree.path(node), exchange) for node, (exchange, _) in tree.accounts.items()}
        market = columns.market.tolist()
        prices = columns.est_price.values()
        return [
            Order(
                *accounts[node],
                columns.markets[m].symbol,
                "sell" if sell else "buy",
                amount.normalize(),
                prices[2 * m + sell],
                cost,
                fee,
                SELL_PHASE if sell else BUY_PHASE,
                after,
                reason,
                saving,
            )
            for node, m, sell, amount, cost, fee, after, reason, saving in zip(
                columns.account.tolist(),
                market,
                columns.sell.tolist(),
                columns.amount.values(),
                columns.est_cost.values(),
                columns.est_fee.values(),
                self.waits_for(),
                *self.why(),
                strict=True,
            )
        ]

    def why(self) -> tuple[list[str | None], list[Decimal | None]]:
        """Per order (in the order of `orders()`), its reason and estimated saving (valuation currency, to
        `MONEY_PLACES`, as computed numbers are shown: `shown_str`), or None (every order outside where
        mode)."""
        notes = self.notes
        if notes is None:
            return [None] * len(self), [None] * len(self)
        reasons = [notes.reasons[code] for code in notes.order_reason.tolist()]
        return reasons, [Decimal(shown_str(saving, MONEY_PLACES)) for saving in notes.order_saving.tolist()]

    def waits_for(self) -> list[int | None]:
        """Per order (in the order of `orders()`), the index of the transfer whose arrival it waits for, or
        None (every order outside where mode)."""
        if self.notes is None:
            return [None] * len(self)
        return [None if index < 0 else index for index in self.notes.order_after.tolist()]

    def ordered(self) -> tuple[IntArray, IntArray, BoolArray, IntArray, IntArray, list[Market]]:
        """Every order's account, market (an index into the returned markets), side, steps and group (-1
        where unknown), in the order of `orders()`."""
        index = self.direct_order
        account = self.direct_account[index]
        market = self.direct_market[index]
        sell = self.direct_side[index] == SELL
        steps = self.direct_steps[index]
        group = (
            self.direct_group[index] if self.direct_group is not None else np.full(len(index), -1, np.int64)
        )
        markets = list(self.direct_markets)
        if self.legs:
            account, market, sell, steps, group = self._with_legs(
                account, market, sell, steps, group, markets
            )
        return account, market, sell, steps, group, markets

    def order_columns(self) -> OrderColumns:
        """Every order as columns, in the order of `orders()`: amounts are whole steps of the market's
        exact step; est. price, cost and fee keep 18 significant digits. (Made once: the costs and the
        orders' text both read them.)"""
        return self._order_columns

    def shown_costs(self) -> ShownCosts:
        """The plan's estimated costs in the valuation currency, exactly from what it shows: each order's
        est. fee, and its est. cost against its amount at the reference prices (the spread: what a sell
        fetches below, a buy pays above, the reference), valued at the reference price of the market's
        quote; each transfer's network fee at its asset's reference price."""
        columns = self.order_columns()
        # Sums per (market, side) first: a few markets, many orders.
        sums: dict[tuple[int, bool], list[Decimal]] = {}
        for market, sell, amount, cost, fee in zip(
            columns.market.tolist(),
            columns.sell.tolist(),
            columns.amount.values(),
            columns.est_cost.values(),
            columns.est_fee.values(),
            strict=True,
        ):
            found = sums.setdefault((market, sell), [Decimal(0)] * 3)
            found[0] += amount
            found[1] += cost
            found[2] += fee
        prices = self.diff.prices
        fees = spread = withdrawal_fees = Decimal(0)
        for (market, sell), (amount, cost, fee) in sorted(sums.items()):
            base, quote = prices.get(columns.markets[market].base), prices.get(columns.markets[market].quote)
            assert base is not None and quote is not None, "prices are checked by diff_trees"
            fees += fee * quote
            spread += amount * base - cost * quote if sell else cost * quote - amount * base
        for transfer in self.transfers:
            price = prices.get(transfer.asset)
            if transfer.fee and price is not None:
                withdrawal_fees += transfer.fee * price
        return ShownCosts(fees, spread, withdrawal_fees)

    @cached_property
    def _order_columns(self) -> OrderColumns:
        account, market, sell, steps, _, markets = self.ordered()
        rows = 2 * market + sell
        # Only the rows used are priced; a where-mode price depends on the exchange (of any order using it).
        used: dict[int, int] = (
            dict.fromkeys(rows.tolist(), -1)
            if self.trading is None
            else dict(zip(rows.tolist(), account.tolist(), strict=True))
        )
        zero = Decimal(0)
        step = _decimals([m.amount_step for m in markets])
        fee = _decimals([m.fee_rate for m in markets])
        exchanges = self.diff.tree.accounts
        # Markets of several exchanges share a pair (and, at the reference prices, both sides its price).
        known: dict[tuple[str | bool, ...], Decimal] = {}
        by_row = []
        for row in range(2 * len(markets)):
            if row not in used:
                by_row.append(zero)
                continue
            priced, selling = markets[row // 2], row % 2 == 1
            exchange = exchanges.get(used[row], ("", ""))[0]
            key: tuple[str | bool, ...] = (
                (priced.base, priced.quote, selling, exchange)
                if self.trading
                else (priced.base, priced.quote)
            )
            found = known.get(key)
            if found is None:
                found = known[key] = self._est_price(priced, selling, exchange)
            by_row.append(found)
        price = _decimals(by_row)
        amount = times(step.take(market), steps)
        cost = multiply(amount, price.take(rows))
        return OrderColumns(
            account=account,
            market=market,
            markets=tuple(markets),
            sell=sell,
            amount=amount,
            est_price=price,
            est_cost=cost,
            est_fee=multiply(cost, fee.take(market)),
        )

    def _with_legs(
        self,
        account: IntArray,
        market: IntArray,
        sell: BoolArray,
        steps: IntArray,
        group: IntArray,
        markets: list[Market],
    ) -> tuple[IntArray, IntArray, BoolArray, IntArray, IntArray]:
        """The direct orders and the routed legs merged: by phase, account, asset, then leg (`markets`
        grows by the legs' markets)."""
        position = {id(m): i for i, m in enumerate(markets)}
        for leg in self.legs:
            if id(leg.market) not in position:
                position[id(leg.market)] = len(markets)
                markets.append(leg.market)
        rank = _account_rank(self.diff.tree.accounts)
        asset_rank = {name: i for i, name in enumerate(self.diff.asset_names)}
        base_rank = np.array([asset_rank.get(m.base, -1) for m in markets], dtype=np.int64)
        direct_rank = np.array([rank[node] for node in account.tolist()], dtype=np.int64)
        keys = np.array([leg.sort_key for leg in self.legs], dtype=np.int64).reshape(-1, 4)
        phase = np.concatenate((np.where(sell, SELL_PHASE, BUY_PHASE), keys[:, 0]))
        ranks = np.concatenate((direct_rank, keys[:, 1]))
        assets = np.concatenate((base_rank[market], keys[:, 2]))
        number = np.concatenate((np.zeros(len(account), dtype=np.int64), keys[:, 3]))
        order = np.lexsort((number, assets, ranks, phase))
        leg_columns = (
            np.array([leg.account for leg in self.legs], dtype=np.int64),
            np.array([position[id(leg.market)] for leg in self.legs], dtype=np.int64),
            np.array([leg.side == SELL for leg in self.legs], dtype=np.bool_),
            np.array([leg.steps for leg in self.legs], dtype=np.int64),
            np.array([leg.group for leg in self.legs], dtype=np.int64),
        )
        merged = [
            np.concatenate((direct, legs))[order]
            for direct, legs in zip((account, market, sell, steps, group), leg_columns, strict=True)
        ]
        return merged[0], merged[1], merged[2], merged[3], merged[4]

    def _est_price(self, market: Market, sell: bool, exchange: str) -> Decimal:
        return _shown_price(self.diff, self.trading, market, sell, exchange)

    def dear_conversions(self, limit: Decimal = DEAR_CONVERSION) -> list[DearConversion]:
        """The plan's conversions (of a transfer's money into the account's quote, and sells on an
        inverse market) whose fee and spread against the reference prices take more than `limit` of the
        value they spend, in output order."""
        tree, prices = self.diff.tree, self.diff.prices
        found: list[DearConversion] = []
        for leg in sorted(self.legs, key=lambda leg: leg.sort_key):
            if leg.held is None and leg.group > CONVERTING:
                continue
            market, sell = leg.market, leg.side == SELL
            exchange = tree.accounts[leg.account][0]
            amount = market.amount_step * leg.steps
            cost = DERIVED.multiply(amount, self._est_price(market, sell, exchange))
            fee = DERIVED.multiply(cost, market.fee_rate)
            base, quote = prices.get(market.base), prices.get(market.quote)
            assert base is not None and quote is not None, "prices are checked by diff_trees"
            if sell:
                spent, spent_asset, received, received_asset = amount, market.base, cost - fee, market.quote
                spent_value, received_value = amount * base, (cost - fee) * quote
            else:
                spent, spent_asset, received, received_asset = cost + fee, market.quote, amount, market.base
                spent_value, received_value = (cost + fee) * quote, amount * base
            lost = spent_value - received_value
            if spent_value > 0 and lost > spent_value * limit:
                found.append(
                    DearConversion(
                        tree.path(leg.account),
                        market.symbol,
                        "sell" if sell else "buy",
                        spent.normalize(),
                        spent_asset,
                        received.normalize(),
                        received_asset,
                        DERIVED.plus(lost).normalize(),
                        DERIVED.divide(lost, spent_value),
                    )
                )
        return found

    def manual(self) -> tuple[bool, ...]:
        """Per transfer, whether it is an operator's task: one of its sides is a bank account (no API)."""
        tree = self.diff.tree
        banks = {tree.path(node) for node in tree.accounts if tree.kinds[node] == BANK}
        return tuple(t.source in banks or t.destination in banks for t in self.transfers)

    def budgets(self) -> list[Budget]:
        """Per account (in tree order), the budget of its quote, of any other asset a transfer brings it,
        and of an asset an inverse sell spends: the exact free (unlocked) amount of the quote's (or that
        asset's) wallets, plus transfers in, less transfers out (below zero when a transfer out is to be
        paid from the account's sells)."""
        tree, diff = self.diff.tree, self.diff
        amounts: dict[tuple[int, str], Decimal] = {
            (node, quote): Decimal(0) for node, (_, quote) in tree.accounts.items()
        }
        # The real wallets holding their account's quote (every other wallet was a loop turn for nothing).
        held = diff.cash & (tree.account_of >= 0) & (diff.asset_id >= 0) & (tree.real_index >= 0)
        for account, asset_id, index in zip(
            tree.account_of[held].tolist(),
            diff.asset_id[held].tolist(),
            tree.real_index[held].tolist(),
            strict=True,
        ):
            asset = diff.asset_names[asset_id]
            amounts[(account, asset)] += tree.real.exact_amount(index) - tree.real.exact_locked(index)
        for leg in self.legs:
            if leg.held is not None:  # an inverse sell spends an asset the account holds
                key = (leg.account, leg.market.quote)
                amounts[key] = amounts.get(key, Decimal(0)) + leg.held
        by_path = {tree.path(node): node for node in tree.accounts}
        for transfer in self.transfers:
            source, destination = by_path[transfer.source], by_path[transfer.destination]
            amounts[(source, transfer.asset)] = (
                amounts.get((source, transfer.asset), Decimal(0)) - transfer.amount
            )
            # What arrives: the amount less the network's fee.
            amounts[(destination, transfer.asset)] = (
                amounts.get((destination, transfer.asset), Decimal(0)) + transfer.amount - transfer.fee
            )
        rank = _account_rank(tree.accounts)
        return [
            Budget(tree.accounts[node][0], tree.path(node), asset, amount)
            for (node, asset), amount in sorted(
                amounts.items(), key=lambda item: (rank[item[0][0]], item[0][1])
            )
        ]

    def skipped(self) -> list[Skip]:
        """Orders not emitted, with the reason: the wallet's path, or the account's when netted."""
        tree = self.diff.tree
        skips = self.skips
        names = self.diff.asset_names
        quotes = {node: quote for node, (_, quote) in tree.accounts.items()}
        return [
            Skip(
                tree.path(node),
                skips.symbol.get(row) or f"{names[asset]}/{quotes[account]}",
                SKIP_SIDES[side],
                Decimal(money_str(amount) if side == TRANSFER else shown_str(amount, AMOUNT_PLACES)),
                REASONS[code] or "",
            )
            for row, (node, asset, account, side, amount, code) in enumerate(
                zip(
                    skips.node.tolist(),
                    skips.asset.tolist(),
                    skips.account.tolist(),
                    skips.side.tolist(),
                    skips.amount.tolist(),
                    skips.code.tolist(),
                    strict=True,
                )
            )
        ]


SKIP_SIDES: dict[int, SkipSide] = {SELL: "sell", BUY: "buy", TRANSFER: "transfer"}


@dataclass(frozen=True, eq=False)
class Notes:
    """What a where-mode plan says of itself (docs/formats.md): per order, in output order, its reason,
    its estimated saving against the plain choice (valuation currency) and the index of the transfer whose
    arrival it needs (-1: none); per transfer its reason and saving; and the plan's estimated costs."""

    order_reason: IntArray  # index into `reasons`
    order_saving: FloatArray
    order_after: IntArray
    transfer_reason: tuple[str, ...]
    transfer_saving: tuple[float, ...]
    reasons: tuple[str, ...]
    fees: float
    spread: float
    withdrawal_fees: float

    @property
    def total(self) -> float:
        return self.fees + self.spread + self.withdrawal_fees


@dataclass(frozen=True, eq=False)
class Flows:
    """Per account node, what its buys wanted, the cash it had before transfers (free quote and sale
    proceeds, less what routes reserve) and the first transfer into it (-1: none): which buys wait; and what
    the transfers' network fees are worth (valuation currency, summed in transfer order). Laid out per
    node when read (where mode reads them; `plan_rebalance` does not)."""

    first_in: dict[int, int]
    withdrawal_fees: float
    accounts: IntArray  # the account nodes, one per slot
    count: int  # nodes
    wanted_by_slot: FloatArray
    cash_by_slot: FloatArray

    @cached_property
    def wanted(self) -> FloatArray:
        return self._by_node(self.wanted_by_slot)

    @cached_property
    def cash(self) -> FloatArray:
        return self._by_node(self.cash_by_slot)

    def _by_node(self, values: FloatArray) -> FloatArray:
        out = np.zeros(self.count)
        out[self.accounts] = values
        return out


def reference_price(diff: DiffTree, market: Market) -> Decimal:
    """A market's price (quote per base) at the reference prices, as the plan states it."""
    base, quote = diff.prices.get(market.base), diff.prices.get(market.quote)
    assert base is not None and quote is not None, "prices are checked by diff_trees"
    return DERIVED.divide(base, quote)


def _decimals(values: list[Decimal]) -> Decimals:
    """`Decimals.of` made once per distinct value as written (its text): a plan's steps, fees and prices
    repeat across its markets."""
    index: dict[str, int] = {}
    codes = [index.setdefault(text, len(index)) for text in map(str, values)]
    return Decimals.of([Decimal(text) for text in index]).take(np.array(codes, dtype=np.int64))


def _account_rank(accounts: dict[int, tuple[str, str]]) -> dict[int, int]:
    return {node: rank for rank, node in enumerate(sorted(accounts))}


def plan_rebalance(
    diff: DiffTree, markets: Markets, *, networks: Networks | None = None, min_trade_value: float = 0.0
) -> Plan:
    """Orders, transfers and skips for a diff tree. Pure and deterministic.

    Given per-venue prices (the prices' `venues`), a network file or pools in the target, the plan is made
    by `rebal.core.where` (where to trade, moves instead of round trips, the cheapest routes and networks;
    reasons, savings and costs); otherwise exactly as without them.

    An order worth less than `min_trade_value` (in the valuation currency: amount x the asset's price) is
    not emitted but skipped ``below_min_trade_value`` (an autopilot policy's small-trade floor), and a small
    buy is raised to a market's minimum only when that minimum is worth at least as much.

    Raises `InputError` (source ``target``) when the target asks for a new position in an asset no market
    path reaches from the account's quote on its exchange: it could never be bought, and the plan would
    sell other holdings to pay for it. (A held asset without a market is skipped ``no_market``.)"""
    if networks is not None or diff.prices.venues or diff.tree.target.pools:
        from rebal.core.where import plan_where  # it builds on this module

        return plan_where(diff, markets, networks, min_trade_value=min_trade_value)
    small = _SmallGroups.of(diff, markets, min_trade_value)
    if small is not None:
        made = _plan_one_account(diff, small)
        if made is not None:
            return made.plan
    return plan_trading(diff, markets, None, min_trade_value, small=small is None)[0]


def plan_trading(
    diff: DiffTree,
    markets: Markets,
    trading: Trading | None,
    min_trade_value: float = 0.0,
    *,
    made: bool = True,
    small: bool = True,
    groups: _Groups | None = None,
) -> tuple[Plan, _Groups, Flows]:
    """The plan (`plan_rebalance`), trading as `trading` says (None: the reference prices, the first
    route, transfers without networks), with its (account, asset) groups and money flows. `made` False:
    a plan only to be costed (`rebal.core.where`'s plain candidate): its transfers are planned and count
    (budgets, fees) but are not made (none in the plan, no first transfer in). `small` False: the
    one-account path already declined this plan (`plan_rebalance`). `groups`: this diff's, already built
    with these markets, trading and minimum (`cost_floor`'s)."""
    if groups is None:
        groups = _Groups.build(diff, markets, trading, min_trade_value)
    _refuse_unreachable(diff, groups)
    if (
        small
        and trading is None
        and groups.all_direct
        and groups.accounts.size == 1
        and groups.size <= SMALL_GROUPS
    ):
        one = _plan_one_account(diff, _SmallGroups.of_groups(groups))
        if one is not None:
            return one.plan, groups, one.flows(diff)
    if trading is None and groups.all_direct and groups.accounts.size == 1:
        return _plan_one_direct(diff, groups)
    return _plan_groups(diff, groups, trading, made)


def _plan_one_direct(diff: DiffTree, groups: _Groups) -> tuple[Plan, _Groups, Flows]:
    """`_plan_groups` of one account whose groups all trade directly, at the reference prices: the same
    operations on the same arrays, without the passes that cannot apply (routes, conversions, transfers
    between accounts; its one budget in Python floats, as `_plan_groups` takes it). A replay plans such a
    portfolio of a hundred wallets thousands of times, and numpy's cost per call is most of a plan there."""
    steps, cost = groups.size_direct()
    skip_code = groups.reasons(steps, cost)
    emitted = skip_code == 0
    sells = groups.sells
    slot = groups.slot  # every group's slot is 0
    emitted_sells = emitted & sells
    proceeds = float(
        np.bincount(slot[emitted_sells], weights=(cost * groups.sell_keep)[emitted_sells], minlength=1)[0]
    )
    buys = emitted & ~sells
    wanted = float(np.bincount(slot[buys], weights=(cost * groups.buy_pay)[buys], minlength=1)[0])
    cash = float(groups.free_quote[0]) + proceeds
    node = int(groups.accounts[0])
    money_in, money_out = _one_account_money(
        diff, node, float(diff.asset_price[groups.quote_id[node]]), VALUE_EPSILON * diff.scale
    )
    usable, scale, exact_scale = _one_budget(cash + money_in - money_out, wanted)
    if scale[0] < 1.0 and np.count_nonzero(buys):
        squeezed = buys
        steps[squeezed] = _squeezed_steps(groups, steps, squeezed, scale, exact_scale, usable)
        cost = steps * groups.step * groups.price
        dropped = squeezed & (groups.reasons(steps, cost) != 0)
        skip_code[dropped] = INSUFFICIENT_QUOTE_CODE
        emitted &= ~dropped
    raised = _raise_small_buys(groups, steps, cost, emitted, skip_code, usable, _NO_SPENT)
    if raised is not None:
        emitted |= raised
        skip_code[raised] = 0
        steps[raised] = groups.min_steps()[raised]
    chosen = emitted.nonzero()[0]
    selling = sells[chosen]
    order = np.concatenate((selling.nonzero()[0], (~selling).nonzero()[0]))
    skipped = skip_code.nonzero()[0]
    skips = NO_SKIPS
    if skipped.size:
        rows = skipped[np.lexsort((groups.asset[skipped], groups.path_node[skipped]))]
        skips = _skips_of(groups, rows, skip_code[rows], {})
    plan = assembled(
        Plan,
        diff=diff,
        legs=(),
        transfers=(),
        skips=skips,
        direct_account=groups.account[chosen],
        direct_market=groups.combo[chosen],
        direct_side=np.where(selling, SELL, BUY),
        direct_steps=steps[chosen],
        direct_order=order,
        direct_markets=groups.direct_markets,
        trading=None,
        direct_group=None,
        notes=None,
    )
    flows = Flows({}, 0.0, groups.accounts, len(diff.tree), np.array([wanted]), np.array([cash]) + 0.0)
    return plan, groups, flows


_NO_SPENT = np.zeros(1)  # (read only) what routed buys spent: none


def _plan_groups(
    diff: DiffTree, groups: _Groups, trading: Trading | None, made: bool = True
) -> tuple[Plan, _Groups, Flows]:
    """`plan_trading` of its groups, any plan: arrays per group, phase by phase."""
    legs: list[_Leg] = []
    # Money is counted per account, one slot each in tree order (`groups.slot`), not per node: a few
    # thousand accounts among a million nodes.
    slots = groups.accounts.size
    pricer = _Pricer(diff, trading)
    skip_symbol: dict[int, str] = {}

    # Phase 1: sells. Direct ones in bulk; routed ones leg by leg (rare).
    steps, cost = groups.size_direct()
    reason = groups.reasons(steps, cost)
    if groups.all_direct:  # every group has a direct market: its reason is its code
        skip_code, emitted = reason, reason == 0
    else:
        skip_code = np.where(groups.no_market, NO_MARKET_CODE, 0).astype(np.int64)
        skip_code = np.where(groups.direct, reason, skip_code)
        emitted = groups.direct & (reason == 0)
    routed_sells: list[int] = []
    routed_buys: list[int] = []
    if groups.any_routed:  # rare: a plan of direct orders skips the routed passes
        routed = groups.routed
        if groups.any_inverse:  # a buy takes no inverse market (it would be a sell of the quote)
            unbought = groups.inverse & ~groups.sells
            skip_code[unbought] = NO_MARKET_CODE
            routed = routed & ~unbought
        # A routed order worth less than min_trade_value is not routed at all.
        small = routed & (groups.raw * groups.value_price < groups.min_trade_value)
        skip_code[small] = REASON_CODES[BELOW_MIN_TRADE_VALUE]
        skip_symbol.update({g: groups.route_of(g).legs[0].symbol for g in np.flatnonzero(small).tolist()})
        routed = routed & ~small
        routed_sells = np.flatnonzero(routed & groups.sells).tolist()
        routed_buys = np.flatnonzero(routed & ~groups.sells).tolist()
    emitted_sells = emitted & groups.sells
    # (float64 always: bincount of no weights counts in integers, and a routed sell's proceeds added to
    # them were truncated)
    proceeds = np.bincount(
        groups.slot[emitted_sells], weights=(cost * groups.sell_keep)[emitted_sells], minlength=slots
    ).astype(np.float64)
    # What inverse sells (`_inverse_sell`) yield per account: placed first of its buys, funding them.
    converted = np.zeros(slots)
    for g in routed_sells:
        route, exchange = groups.route_of(g), groups.exchange_of(g)
        if route.inverse:
            spent = _inverse_sell(pricer, exchange, route.legs[0], float(groups.raw[g]), groups.exact_free(g))
            if isinstance(spent, str):
                skip_code[g], skip_symbol[g] = REASON_CODES[spent], route.legs[0].symbol
                continue
            converted[groups.slot[g]] += float(route.legs[0].amount_step * spent)
            legs.append(groups.inverse_leg(g, spent, groups.exact_free(g)))
            continue
        sold = _routed_sell(
            pricer, exchange, route, float(groups.raw[g]), groups.exact_free(g), int(groups.path_node[g])
        )
        if isinstance(sold, str):
            skip_code[g], skip_symbol[g] = REASON_CODES[sold], route.legs[0].symbol
            continue
        proceeds[groups.slot[g]] += sold[1]
        legs.extend(groups.legs(g, SELL, sold[0]))

    # Phase 2: buys, funded by free quote + net sale proceeds + transfers in - transfers out.
    buys = emitted & ~groups.sells
    wanted = np.bincount(groups.slot[buys], weights=(cost * groups.buy_pay)[buys], minlength=slots).astype(
        np.float64
    )
    reserve = np.zeros(slots)  # (subtracted only where a route reserves: x - 0.0 is x, signed zeros too)
    for g in routed_buys:
        route, exchange = groups.route_of(g), groups.exchange_of(g)
        bought = _routed_buy(pricer, exchange, route, float(groups.raw[g]), 1.0, int(groups.path_node[g]))
        if isinstance(bought, str):
            continue
        wanted[groups.slot[g]] += bought[1]
        # Room for the intermediate legs rounding up by one step after scaling.
        reserve[groups.slot[g]] += _route_reserve(pricer, exchange, route)
    cash = groups.free_quote + proceeds
    spare = cash - wanted - reserve if routed_buys else cash - wanted
    converting = converted > 0
    if np.count_nonzero(converting):
        # What an inverse sell yields funds the account's buys, but comes after the transfers: none of it
        # is sent (an account sends at most the cash it has after its sells).
        spare = np.where(converting, np.minimum(spare + converted, cash), spare)
    moved = _transfers(diff, groups.accounts, groups.quote_id, spare, trading, made)
    transfer_in, transfer_out = moved.transfer_in, moved.transfer_out
    budget = cash + transfer_in - transfer_out
    if routed_buys:
        budget -= reserve
    if np.count_nonzero(converting):
        budget = budget + converted
    # Squeeze only buys that exceed the budget, and then to safely below it (float sums vs decimals).
    # Where they do, 0 <= usable < wanted: both scales are in [0, 1), never NaN (a NaN budget or want
    # squeezes nothing).
    if slots == 1:  # one account: the same operations on its one budget, in Python floats
        usable, scale, exact_scale = _one_budget(float(budget[0]), float(wanted[0]))
        squeezed = buys if scale[0] < 1.0 else np.zeros(buys.size, dtype=np.bool_)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            usable = np.maximum(budget, 0.0)
            short = wanted > usable
            scale = np.where(short, usable * (1 - BUDGET_SAFETY) / wanted, 1.0)
            exact_scale = np.where(short, usable / wanted, 1.0)
        squeezed = buys & (scale[groups.slot] < 1.0)
    if np.count_nonzero(squeezed):  # (a count: `any()` costs four times as much on small arrays)
        steps[squeezed] = _squeezed_steps(groups, steps, squeezed, scale, exact_scale, usable)
        cost = steps * groups.step * groups.price
        dropped = squeezed & (groups.reasons(steps, cost) != 0)
        skip_code[dropped] = INSUFFICIENT_QUOTE_CODE
        emitted &= ~dropped
    routed_spent = np.zeros(slots)
    for g in routed_buys:
        route, exchange = groups.route_of(g), groups.exchange_of(g)
        factor = float(scale[groups.slot[g]])
        bought = _routed_buy(pricer, exchange, route, float(groups.raw[g]), factor, int(groups.path_node[g]))
        if isinstance(bought, str):
            skip_code[g] = INSUFFICIENT_QUOTE_CODE if factor < 1.0 else REASON_CODES[bought]
            skip_symbol[g] = route.legs[0].symbol
            continue
        routed_spent[groups.slot[g]] += bought[1]
        legs.extend(groups.legs(g, BUY, bought[0]))
    raised = _raise_small_buys(groups, steps, cost, emitted, skip_code, usable, routed_spent)
    if raised is not None:
        emitted |= raised
        skip_code[raised] = 0
        steps[raised] = groups.min_steps()[raised]
    if trading is not None and groups.moved.any():
        # A group moves left with nothing to trade but float noise, or less than one of their (1e-8) steps
        # each (their rounding), is no skip: the moves did what could be done.
        value = groups.raw * diff.asset_price[groups.asset]
        rounding = groups.move_count() * float(DEFAULT_AMOUNT_STEP) * (1 - STEP_EPSILON)
        skip_code[groups.moved & ((value <= VALUE_EPSILON * diff.scale) | (groups.raw < rounding))] = 0

    chosen = emitted.nonzero()[0]
    selling = groups.sells[chosen]
    # Sells (SELL_PHASE) before buys, then by slot and asset: the groups come in (account, asset) order,
    # and an account's slot is its rank, so within a phase the groups' own order is that order.
    order = np.concatenate((selling.nonzero()[0], (~selling).nonzero()[0]))
    skipped = skip_code.nonzero()[0]
    skips = NO_SKIPS
    if skipped.size:
        rows = skipped[np.lexsort((groups.asset[skipped], groups.path_node[skipped], groups.slot[skipped]))]
        symbols = {int(i): skip_symbol[g] for i, g in enumerate(rows.tolist()) if g in skip_symbol}
        skips = _skips_of(groups, rows, skip_code[rows], symbols)
    legs.extend(moved.conversions)
    plan = Plan(
        diff=diff,
        legs=tuple(sorted(legs, key=lambda leg: leg.sort_key)),
        transfers=tuple(moved.transfers),
        skips=skips.with_transfers(moved.skipped, diff) if moved.skipped else skips,
        direct_account=groups.account[chosen],
        direct_market=groups.combo[chosen],
        direct_side=np.where(selling, SELL, BUY),
        direct_steps=steps[chosen],
        direct_order=order,
        direct_markets=groups.direct_markets,
        trading=trading,
        direct_group=chosen if trading is not None else None,
    )
    flows = Flows(
        moved.first_in,
        moved.withdrawal_fees,
        groups.accounts,
        len(diff.tree),
        wanted.astype(np.float64),
        (cash - reserve if routed_buys else cash) + converted,
    )
    return plan, groups, flows


def cost_floor(diff: DiffTree, groups: _Groups) -> float:
    """A lower bound of the estimated total cost (`Notes.total`: fees, spreads against the reference
    prices, withdrawal fees) of the plan `_plan_groups` makes of `groups` (every group direct, else
    -inf), read from its first phase alone, before any money moves: its sells (their steps and skips
    never depend on budgets or transfers) cost exactly what they cost; a buy costs at least its fewest
    steps' cost (`_fewest_buy_steps`: what the budgets leave it at the least; nothing where it may be
    dropped) where buying costs more than the reference, else, buying below the reference paying more
    than its fee, its largest size's (wanted or raised to its minimum) negative cost; a transfer's fee is
    never negative. Only where every account trades against one quote (else money may arrive in
    another asset and be converted there, `_conversion`: orders the first phase does not know), else
    -inf. Less room for the float sums (1e-8 of every term, far above their rounding)."""
    quotes = {quote for _, quote in diff.tree.accounts.values()}
    if not groups.all_direct or not groups.size or len(quotes) > 1:
        return -math.inf
    steps, cost = groups.size_direct()
    emitted = groups.reasons(steps, cost) == 0
    sold = groups.sells & emitted
    # The largest a buy can be: its wanted steps, or the minimum the small-buy policy raises it to.
    largest = np.where(groups.sells, steps, np.maximum(steps, groups.min_steps()))
    fewest = _fewest_buy_steps(diff, groups, steps, cost, emitted)
    quote_price = diff.asset_price[groups.quote_id[groups.account]]
    fees, spread = _order_costs(groups, np.where(sold | ~groups.sells, largest, 0) * groups.step, quote_price)
    least_fees, least_spread = _order_costs(groups, fewest * groups.step, quote_price)
    each = fees + spread
    # A buy costing more than the reference costs at least its fewest steps' (both positive), one below
    # it at least its largest size's (both negative): the lesser of the two.
    buys = np.minimum(each, least_fees + least_spread)[~groups.sells]
    floor = float(each[sold].sum() + buys.sum())
    room = 1e-8 * float(np.abs(fees).sum() + np.abs(spread).sum())
    return floor - room if math.isfinite(floor) and math.isfinite(room) else -math.inf


def _order_costs(
    groups: _Groups, amount: FloatArray, quote_price: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Per group, the fees and the spread against the reference of an order of `amount`, as
    `rebal.core.where` prices it: at the side's venue price, the reference in the valuation currency."""
    traded = amount * groups.price * quote_price
    reference = amount * groups.value_price
    return traded * groups.fee, np.where(groups.sells, reference - traded, traded - reference)


def _fewest_buy_steps(
    diff: DiffTree, groups: _Groups, steps: IntArray, cost: FloatArray, emitted: BoolArray
) -> IntArray:
    """Per group, the fewest steps `_plan_groups` can leave a buy of `groups` (every group direct, no
    move) emitted at, 0 where it may not emit it: a buy the first phase emits is squeezed (then maybe
    dropped) only by its account's budget, and the budget is at least the account's cash (free quote
    and sale proceeds) less what its transfers can take out (`_transfers`: what the cash spares after
    its own buys, or, where the account's value is above its target, that surplus, whichever is more;
    what comes in, net of fees, is never negative). The steps the scale of that least budget leaves
    are at most the plan's (`_squeezed_steps`: the scale and its whole steps only grow with the budget);
    kept only where they clear every minimum (then the plan's larger order clears them too)."""
    fewest = np.zeros(groups.size, dtype=np.int64)
    accounts = groups.accounts
    quote_price = diff.asset_price[groups.quote_id[accounts]]
    if groups._moved[0] or not np.all((quote_price > 0) & np.isfinite(quote_price)):
        return fewest  # a move shifts the surpluses (`_transfers`): not bounded here
    slots = accounts.size
    buys = emitted & ~groups.sells
    # The first phase's money, as `_plan_groups` counts it.
    sold = emitted & groups.sells
    proceeds = np.bincount(groups.slot[sold], weights=(cost * groups.sell_keep)[sold], minlength=slots)
    wanted = np.bincount(groups.slot[buys], weights=(cost * groups.buy_pay)[buys], minlength=slots)
    cash = groups.free_quote + proceeds
    active = diff.operation[accounts] != HOLD
    surplus = np.where(active, diff.current_value[accounts] - diff.desired_value[accounts], 0.0)
    out = np.maximum(np.maximum(cash - wanted, 0.0), np.maximum(surplus, 0.0) / quote_price)
    # Room for the float sums of the transfers and the budget (1e-9 relative, far above their rounding).
    out = out * (1 + 1e-9)
    least = np.maximum(cash - out - 1e-9 * (np.abs(cash) + out), 0.0)
    if not (np.all(np.isfinite(least)) and np.all(np.isfinite(wanted))):
        return fewest
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(wanted > least, least * (1 - BUDGET_SAFETY) / wanted, 1.0)
    fewest[buys] = np.floor(steps[buys] * np.minimum(scale[groups.slot[buys]], 1.0))
    # Orders grow in amount, cost and value with their steps only at non-negative prices.
    priced = (groups.step > 0) & (groups.price >= 0) & (groups.value_price >= 0)
    clears = buys & priced & (groups.reasons(fewest, fewest * groups.step * groups.price) == 0)
    return np.where(clears, fewest, 0)


def _one_budget(budget: float, wanted: float) -> tuple[FloatArray, FloatArray, FloatArray]:
    """`_plan_groups`' usable budget, scale and exact scale of one account, as its arrays of one."""
    usable = budget if budget > 0.0 or math.isnan(budget) else 0.0  # np.maximum(budget, 0.0)
    short = wanted > usable  # then wanted > 0: no division by zero
    scale = usable * (1 - BUDGET_SAFETY) / wanted if short else 1.0
    exact_scale = usable / wanted if short else 1.0
    return np.array([usable]), np.array([scale]), np.array([exact_scale])


_INTP_IS_INT64 = np.dtype(np.intp) == np.int64

# A plan of one account whose groups all trade directly, at most this many groups, is made by
# `_plan_one_account` (Python floats): numpy's cost per call, not the arithmetic, is what a small plan pays.
SMALL_GROUPS = 48


class _SmallGroups(NamedTuple):
    """The `_Groups` a one-account plan reads, as Python lists (one item per group, in group order):
    made from a `_Groups` (`of_groups`) or, for a small union tree, straight from the diff (`of`) with
    the same operations in the same order, so the same floats."""

    raw: list[float]
    free: list[float]
    sells: list[bool]
    price: list[float]
    value_price: list[float]
    step: list[float]
    fee: list[float]
    least_amount: list[float]  # the markets' minimum amount and cost, less MIN_TOLERANCE
    least_cost: list[float]
    min_trade_value: float  # less MIN_TOLERANCE (`_Groups.min_trade_value`)
    free_quote: float  # the account's free quote
    accounts: IntArray  # the account node (one slot)
    quote_price: float  # the account's quote, valuation price
    asset: list[int]
    account: list[int]
    path_node: list[int]
    combo: list[int]
    direct_markets: tuple[Market, ...]

    @classmethod
    def of_groups(cls, groups: _Groups) -> _SmallGroups:
        """The lists of `groups` (all direct, one account)."""
        tolerance = 1 - MIN_TOLERANCE
        node = int(groups.accounts[0])
        return cls(
            raw=groups.raw.tolist(),
            free=groups.free.tolist(),
            sells=groups.sells.tolist(),
            price=groups.price.tolist(),
            value_price=groups.value_price.tolist(),
            step=groups.step.tolist(),
            fee=groups.fee.tolist(),
            least_amount=[m * tolerance for m in groups.min_amount.tolist()],
            least_cost=[m * tolerance for m in groups.min_cost.tolist()],
            min_trade_value=groups.min_trade_value,
            free_quote=float(groups.free_quote[0]),
            accounts=groups.accounts,
            quote_price=float(groups.diff.asset_price[groups.quote_id[node]]),
            asset=groups.asset.tolist(),
            account=groups.account.tolist(),
            path_node=groups.path_node.tolist(),
            combo=groups.combo.tolist(),
            direct_markets=groups.direct_markets,
        )

    @classmethod
    def of(cls, diff: DiffTree, markets: Markets, min_trade_value: float) -> _SmallGroups | None:
        """`of_groups(_Groups.build(diff, markets, None, min_trade_value))` for a union tree of at most
        `SMALL_NODES` nodes and one account whose groups all trade directly (None otherwise), without
        its arrays: what follows from the shape and the groups that trade is kept per shape
        (`_SmallShape`), the rest is summed in Python as `np.bincount` sums it (in wallet order)."""
        tree = diff.tree
        if len(tree) > SMALL_NODES or len(tree.accounts) != 1:
            return None
        shape = _SmallShape.of(diff)
        if len(shape.nodes) > SMALL_GROUPS:
            return None
        operation = diff.operation.tolist()
        present = tuple([operation[node] != HOLD for node in shape.nodes])
        layout = shape.layout(diff, markets, present)
        if layout is None:
            return None
        free_of, want_of = diff.free_amount.tolist(), diff.desired_free_amount.tolist()
        net_all, free_all = [0.0] * shape.keys, [0.0] * shape.keys
        for node, key, active in zip(shape.nodes, shape.member_of, present, strict=True):
            net_all[key] += (want_of[node] - free_of[node]) * (1.0 if active else 0.0)
            free_all[key] += free_of[node]
        net = [net_all[key] for key in layout.groups]
        free_quote = 0.0
        for node in shape.cash:
            free_quote += free_of[node]
        asset_price = diff.asset_price.tolist()
        return cls(
            raw=[abs(value) for value in net],
            free=[free_all[key] for key in layout.groups],
            sells=[value < 0 for value in net],
            price=[asset_price[a] / asset_price[q] for a, q in zip(layout.asset, layout.quote, strict=True)],
            value_price=[asset_price[a] for a in layout.asset],
            step=layout.step,
            fee=layout.fee,
            least_amount=layout.least_amount,
            least_cost=layout.least_cost,
            min_trade_value=min_trade_value * (1 - MIN_TOLERANCE),
            free_quote=free_quote,
            accounts=shape.group_shape.accounts,
            quote_price=asset_price[shape.quote],
            asset=layout.asset,
            account=layout.account,
            path_node=layout.path_node,
            combo=layout.combo,
            direct_markets=layout.direct_markets,
        )


class _SmallLayout(NamedTuple):
    """`_GroupLayout` of a small one-account plan whose groups all trade directly, as Python lists."""

    groups: list[int]  # the keys of `_GroupShape.grouped` that trade
    asset: list[int]
    account: list[int]
    quote: list[int]  # the account's quote (asset id)
    path_node: list[int]
    combo: list[int]
    step: list[float]
    fee: list[float]
    least_amount: list[float]
    least_cost: list[float]
    direct_markets: tuple[Market, ...]


@dataclass(frozen=True, eq=False)
class _SmallShape:
    """What `_SmallGroups.of` reads of a small union shape (kept in its `shape_memo`): the tradable
    wallets and their groups as lists, the cash wallets, the account's quote, and the layouts of the
    sets of groups that trade (at most GROUP_LAYOUTS)."""

    group_shape: _GroupShape
    nodes: list[int]
    member_of: list[int]
    keys: int
    cash: list[int]
    quote: int
    layouts: dict[tuple[bool, ...], tuple[Markets, _SmallLayout | None]]

    @classmethod
    def of(cls, diff: DiffTree) -> _SmallShape:
        tree = diff.tree
        group_shape = _GroupShape.of(diff)
        known = tree.shape_memo.get("small groups")
        if isinstance(known, _SmallShape) and known.group_shape is group_shape:
            return known
        node = int(group_shape.accounts[0])
        made = cls(
            group_shape=group_shape,
            nodes=group_shape.nodes.tolist(),
            member_of=group_shape.grouped[1].tolist(),
            keys=int(group_shape.grouped[0].size),
            cash=np.flatnonzero(diff.cash).tolist(),
            quote=int(diff.account_quote[node]),
            layouts={},
        )
        tree.shape_memo["small groups"] = made
        return made

    def layout(self, diff: DiffTree, markets: Markets, present: tuple[bool, ...]) -> _SmallLayout | None:
        """The layout of the groups `present` says trade (None: some group has no direct market)."""
        known = self.layouts.get(present)
        if known is not None and known[0] is markets:
            return known[1]
        if len(self.layouts) >= GROUP_LAYOUTS:
            self.layouts.clear()
        active = np.array(present, dtype=np.bool_)
        n_active = np.bincount(self.group_shape.grouped[1], weights=active, minlength=self.keys)
        groups = (n_active > 0).nonzero()[0]
        found = _GroupLayout.known(self.group_shape, markets, active, groups, diff)
        made = None
        if found.all_direct:
            tolerance = 1 - MIN_TOLERANCE
            step, min_amount, min_cost, fee = found.columns
            made = _SmallLayout(
                groups=groups.tolist(),
                asset=found.asset.tolist(),
                account=found.account.tolist(),
                quote=diff.account_quote[found.account].tolist(),
                path_node=found.path_node.tolist(),
                combo=found.combo.tolist(),
                step=step.tolist(),
                fee=fee.tolist(),
                least_amount=[m * tolerance for m in min_amount.tolist()],
                least_cost=[m * tolerance for m in min_cost.tolist()],
                direct_markets=found.direct_markets,
            )
        self.layouts[present] = (markets, made)  # the markets kept: the layout's routes are theirs
        return made


class _OnePlan(NamedTuple):
    """A one-account plan, and what its buys wanted and its cash before them (its `Flows`, made only
    where read: `plan_rebalance` does not)."""

    plan: Plan
    accounts: IntArray
    wanted: float
    cash: float

    def flows(self, diff: DiffTree) -> Flows:
        return Flows({}, 0.0, self.accounts, len(diff.tree), np.array([self.wanted]), np.array([self.cash]))


def _plan_one_account(diff: DiffTree, groups: _SmallGroups) -> _OnePlan | None:
    """`_plan_groups` of one account whose groups all have a direct market, in Python floats group by
    group: the same operations in the same order (IEEE doubles either way; sums in group order, as
    `np.bincount` adds), so the same plan. None where a rarer step would run (a sell of a whole balance
    counted in exact decimals, a small buy that may be raised to a minimum, an order beyond `MAX_STEPS`,
    a value no float step count can hold): `_plan_groups` makes those plans."""
    try:
        return _one_account_plan(diff, groups)
    except (ArithmeticError, ValueError):  # a zero step, an infinite or NaN count: the general path
        return None


def _one_account_plan(diff: DiffTree, groups: _SmallGroups) -> _OnePlan | None:
    raw, free, step, price = groups.raw, groups.free, groups.step, groups.price
    fee, sells, value_price = groups.fee, groups.sells, groups.value_price
    least_amount, least_cost = groups.least_amount, groups.least_cost
    size = len(raw)
    least = groups.min_trade_value
    floor, scale_up = math.floor, 1 + STEP_RELATIVE

    # Phase 1 (`_Groups.size_direct`): whole steps, truncated (a sell of (nearly) its whole free amount
    # is counted in exact decimals: the general path); the sells' proceeds and the buys' cost, in order.
    # A buy skipped (and wanted) is one the small-buy policy may raise (`_raise_small_buys`): no code is
    # ever cleared here, so the general path makes this plan as soon as one appears.
    steps, cost, code = [0] * size, [0.0] * size, [0] * size
    proceeds = spend = 0.0
    buys: list[int] = []
    for g, (wanted, held, unit, selling) in enumerate(zip(raw, free, step, sells, strict=True)):
        whole = floor(wanted / unit * scale_up + STEP_EPSILON)
        if whole > MAX_STEPS or (selling and whole >= floor(held / unit * scale_up + STEP_EPSILON)):
            return None
        amount = whole * unit
        worth = cost[g] = amount * price[g]
        steps[g] = whole
        if whole <= 0:  # `reason`, inline: every group passes here
            code[g] = 1
        elif amount < least_amount[g]:
            code[g] = 2
        elif worth < least_cost[g]:
            code[g] = 3
        elif amount * value_price[g] < least:
            code[g] = 6
        elif selling:
            proceeds += worth * (1 - fee[g])
        else:  # the buys' cost, in group order
            spend += worth * (1 + fee[g])
            buys.append(g)
        if code[g] and not selling and wanted > 0:
            return None

    # Phase 2: buys, funded by the free quote, the proceeds and what enters or leaves the account.
    cash = groups.free_quote + proceeds
    money_in, money_out = _one_account_money(
        diff, int(groups.accounts[0]), groups.quote_price, VALUE_EPSILON * diff.scale
    )
    budget = cash + money_in - money_out - 0.0
    usable = budget if budget > 0.0 or math.isnan(budget) else 0.0  # np.maximum(budget, 0.0)
    if spend > usable:  # `_squeezed_steps`: scaled down to the budget
        exact = usable / spend
        tight = [floor(steps[g] * exact * scale_up + STEP_EPSILON) for g in buys]
        spent = 0.0
        for g, whole in zip(buys, tight, strict=True):
            spent += whole * step[g] * price[g] * (1 + fee[g])
        if spent <= usable * (1 + STEP_RELATIVE):
            tight = [min(whole, steps[g]) for g, whole in zip(buys, tight, strict=True)]
        else:
            safe = usable * (1 - BUDGET_SAFETY) / spend
            tight = [floor(steps[g] * safe) for g in buys]
        for g, whole in zip(buys, tight, strict=True):
            steps[g] = whole
            amount = whole * step[g]
            if (  # `_Groups.reasons` of the group, inline (its cost whole * step * price: amount * price)
                whole <= 0
                or amount < least_amount[g]
                or amount * price[g] < least_cost[g]
                or amount * value_price[g] < least
            ):
                code[g] = INSUFFICIENT_QUOTE_CODE
                if raw[g] > 0:
                    return None

    # Sells before buys, each by asset (the groups of one account come in asset order); skips by
    # wallet node (a group's path node), then asset.
    asset, account, combo = groups.asset, groups.account, groups.combo
    sides = [SELL if selling else BUY for selling in sells]
    if not any(code):  # every group emits an order (nearly every plan): its columns are the groups'
        chosen, sold = size, sells
        accounts_of, combos, counts = account, combo, steps
    else:
        keep = [not c for c in code]
        sold = list(compress(sells, keep))
        chosen = len(sold)
        accounts_of, combos = list(compress(account, keep)), list(compress(combo, keep))
        sides, counts = list(compress(sides, keep)), list(compress(steps, keep))
    order = list(compress(range(chosen), sold))
    order += [i for i, selling in enumerate(sold) if not selling]
    skips = NO_SKIPS
    if chosen < size:
        path_node = groups.path_node
        skipped = sorted((g for g in range(size) if code[g]), key=lambda g: (path_node[g], asset[g]))
        skips = Skips(
            node=np.array([path_node[g] for g in skipped], dtype=np.int64),
            asset=np.array([asset[g] for g in skipped], dtype=np.int64),
            account=np.array([account[g] for g in skipped], dtype=np.int64),
            side=np.array([SELL if sells[g] else BUY for g in skipped], dtype=np.int64),
            amount=np.array([raw[g] for g in skipped], dtype=np.float64),
            code=np.array([code[g] for g in skipped], dtype=np.int64),
            symbol={},
        )
    # The order columns as rows of one array (one numpy call; `direct_order`'s intp is int64 here).
    columns = np.array([accounts_of, combos, sides, counts, order], dtype=np.int64).reshape(5, chosen)
    plan = assembled(
        Plan,
        diff=diff,
        legs=(),
        transfers=(),
        skips=skips,
        direct_account=columns[0],
        direct_market=columns[1],
        direct_side=columns[2],
        direct_steps=columns[3],
        direct_order=columns[4] if _INTP_IS_INT64 else columns[4].astype(np.intp),
        direct_markets=groups.direct_markets,
        trading=None,
        direct_group=None,
        notes=None,
    )
    return _OnePlan(plan, groups.accounts, spend, cash)


def _squeezed_steps(
    groups: _Groups,
    steps: IntArray,
    squeezed: npt.NDArray[np.bool_],
    scale: FloatArray,
    exact_scale: FloatArray,
    usable: FloatArray,
) -> IntArray:
    """The squeezed buys' whole steps. Scaled by the budget over what they want, float noise forgiven
    (a budget of exactly 1000 buys 10000 steps of 0.1, not 9999), in each account where what they then
    spend fits its budget; elsewhere by the scale kept safely below the budget."""
    slot = groups.slot[squeezed]
    wanted = steps[squeezed]
    one = len(usable) == 1  # one account: its scales and its fit broadcast
    tight = _whole_steps(wanted * (exact_scale if one else exact_scale[slot])).astype(np.int64)
    spend = np.bincount(
        slot,
        weights=tight * groups.step[squeezed] * groups.price[squeezed] * groups.buy_pay[squeezed],
        minlength=len(usable),
    )
    fits = spend <= usable * (1 + STEP_RELATIVE)
    if not one:
        fits = fits[slot]
    if np.count_nonzero(fits) == fits.size:  # (nearly always)
        return np.minimum(tight, wanted)
    safe = np.floor(wanted * (scale if one else scale[slot])).astype(np.int64)
    return np.where(fits, np.minimum(tight, wanted), safe)


# Buys under a market's minimum that may be raised to it (the small-buy policy): under one step, under the
# minimum amount or cost, or squeezed out by a short budget.
_SMALL = (1, 2, 3)
_SMALL_CODES = np.array(_SMALL, dtype=np.int64)


def _raise_small_buys(
    groups: _Groups,
    steps: IntArray,
    cost: FloatArray,
    emitted: npt.NDArray[np.bool_],
    skip_code: IntArray,
    usable: FloatArray,
    routed_spent: FloatArray,
) -> npt.NDArray[np.bool_] | None:
    """The small-buy policy: per account, the direct buys skipped as under a minimum (or squeezed out)
    become orders of the market's minimum size, by descending target value (then asset), while what the
    target asks the account to spend on its buys lasts (never more than its budget); the rest stays cash,
    reported as skipped. Five assets at 20% with 45 to invest and a minimum cost of 10: four buys of 10,
    5 stays cash. Returns the groups raised (None: none)."""
    candidates = (groups.raw > 0) & ~(groups.sells | emitted)
    if not groups.all_direct:
        candidates &= groups.direct
    if not np.count_nonzero(candidates):  # every buy emitted (nearly every plan): no code to read
        return None
    candidates &= (skip_code[:, None] == _SMALL_CODES).any(axis=1) | (skip_code == INSUFFICIENT_QUOTE_CODE)
    if not candidates.any():
        return None
    candidates &= groups.min_steps() * groups.step * groups.value_price >= groups.min_trade_value
    if not candidates.any():
        return None
    slots = len(usable)
    buys = groups.direct & ~groups.sells & (groups.raw > 0)
    asked = np.bincount(
        groups.slot[buys], weights=(groups.raw * groups.price * (1 + groups.fee))[buys], minlength=slots
    )
    spent = routed_spent + np.bincount(
        groups.slot[emitted & ~groups.sells],
        weights=(cost * (1 + groups.fee))[emitted & ~groups.sells],
        minlength=slots,
    )
    room = np.minimum(usable * (1 - BUDGET_SAFETY), asked) - spent
    chosen = np.flatnonzero(candidates)
    minimum = (
        groups.min_steps()[chosen] * groups.step[chosen] * groups.price[chosen] * (1 + groups.fee[chosen])
    )
    order = np.lexsort((groups.asset[chosen], -groups.desired[chosen], groups.slot[chosen]))
    chosen, minimum = chosen[order], minimum[order]
    accounts = groups.slot[chosen]
    total = np.cumsum(minimum)
    starts = np.flatnonzero(np.r_[True, accounts[1:] != accounts[:-1]])
    before = np.repeat(np.r_[0.0, total][starts], np.diff(np.r_[starts, len(chosen)]))
    within = total - before
    # "While the budget lasts": an account's raises stop at the first that no longer fits.
    misses = np.cumsum(within > room[accounts])
    missed_before = np.repeat(np.r_[0, misses][starts], np.diff(np.r_[starts, len(chosen)]))
    ok = misses - missed_before == 0
    if not ok.any():
        return None
    raised = np.zeros(groups.size, dtype=np.bool_)
    raised[chosen[ok]] = True
    return raised


def _refuse_unreachable(diff: DiffTree, groups: _Groups) -> None:
    if not groups.any_no_market and not groups.any_inverse:
        return
    unreachable = np.flatnonzero((groups.no_market | groups.inverse) & ~groups.sells & groups.new)
    if not unreachable.size:
        return
    g = int(unreachable[0])
    tree = diff.tree
    account = int(groups.account[g])
    exchange, quote = tree.accounts[account]
    asset = diff.asset_names[int(groups.asset[g])]
    if tree.kinds[account] == BANK:
        raise InputError(
            tree.path(int(groups.path_node[g])),
            f"account {tree.path(account)} is a bank (kind 'bank'): nothing is bought there, so it can never "
            f"hold new {asset} (leave it out of the account's target; its {quote} moves by transfer)",
            source="target",
        )
    raise InputError(
        tree.path(int(groups.path_node[g])),
        f"no market path for {asset} from {quote} on {exchange}: account {tree.path(account)} can never "
        f"buy it (list a market for it, or leave it out of the target)",
        source="target",
    )


class _Groups:
    """Per (account, asset): the net wallet difference, the free amount, and the market to trade it on.

    Trading (`rebal.core.trading`): routes and prices are the side's (a sell's bid, a buy's ask), and each
    move shifts its two groups (the source sells that much less, the destination buys that much less or
    sells what arrives)."""

    def __init__(
        self, diff: DiffTree, markets: Markets, trading: Trading | None = None, min_trade_value: float = 0.0
    ) -> None:
        n_assets = max(len(diff.asset_names), 1)
        self.diff = diff
        shape = _GroupShape.of(diff)
        self.rank = shape.rank
        # The account nodes in tree order: an account's slot (its rank) indexes the per-account money.
        self.accounts = shape.accounts
        self.quote_id = diff.account_quote
        own_quote = diff.cash
        self.free_quote = np.bincount(
            shape.cash_slot, weights=diff.free_amount[own_quote], minlength=self.accounts.size
        ).astype(np.float64)

        # One stable sort groups every tradable wallet by (account, asset); wallets come in tree order,
        # so the keys are nearly sorted already. Groups with no active (non-hold) wallet trade nothing.
        nodes, wallet_keys = shape.nodes, shape.wallet_keys
        all_keys, member_of, _, bounds = shape.grouped
        active = diff.operation[nodes] != HOLD
        moves = trading.moves if trading is not None else ()
        ids = {name: i for i, name in enumerate(diff.asset_names)} if moves else {}
        moved_keys = sorted(
            {node * n_assets + ids[m.asset] for m in moves for node in (m.source, m.destination)}
        )
        # A group a move touches trades even when its wallets hold (what the move changes).
        present = active | contains(np.array(moved_keys, np.int64), wallet_keys) if moves else active
        n_active = np.bincount(member_of, weights=present, minlength=all_keys.size)
        groups = (n_active > 0).nonzero()[0]
        self.size = groups.size
        self.net = np.bincount(member_of, weights=diff.diff_amount[nodes] * active, minlength=all_keys.size)[
            groups
        ]
        keys = all_keys[groups] if moves else groups  # (read only with moves)
        self.moved = (
            contains(np.array(moved_keys, np.int64), keys) if moves else np.zeros(groups.size, np.bool_)
        )
        self._moved: tuple[tuple[Move, ...], list[int], list[int]] = ((), [], [])  # `_apply`'s, for `_extra`
        free_all = np.bincount(member_of, weights=diff.free_amount[nodes], minlength=all_keys.size)
        self.free = free_all[groups]
        self._position = groups
        if moves:
            self._apply(moves, keys, ids, n_assets)
        self.raw = np.abs(self.net)
        self.sells = self.net < 0
        self._grouping = (member_of, nodes, groups, all_keys.size)  # `desired`, when read
        self._members = _Members(diff, shape.grouped_nodes, bounds)
        self.exchanges = shape.exchanges
        # Per account node (where.py reads it by node), the account's exchange.
        self.account_exchange = shape.account_exchange
        if trading is None:  # what follows from the groups alone, kept per shape for the same groups
            layout = _GroupLayout.known(shape, markets, present, groups, diff)
        else:
            layout = _GroupLayout.made(shape, markets, trading, present, groups, diff, self.sells)
        self.account, self.slot, self.asset = layout.account, layout.slot, layout.asset
        # A skip names the wallet when one wallet makes the group, else the account.
        self.path_node = layout.path_node
        # A group none of whose wallets the real tree holds: a new position the target asks for.
        self.new = layout.new
        self.combo, self.routes = layout.combo, layout.routes
        self.direct, self.routed, self.no_market = layout.direct, layout.routed, layout.no_market
        self.any_routed, self.any_no_market = layout.any_routed, layout.any_no_market
        self.direct_markets = layout.direct_markets
        self.step, self.min_amount, self.min_cost, self.fee = layout.columns
        self.least_amount, self.least_cost = layout.least
        self.sell_keep, self.buy_pay = layout.fee_factors
        self.all_direct = layout.all_direct
        if trading is None:
            self.price = diff.asset_price[self.asset] / diff.asset_price[layout.quote_id]
        else:  # the side's price on the group's exchange
            combo_price = np.array(
                [
                    trading.prices.shown(
                        self.exchanges[(value // 2) // (n_assets * n_assets)],
                        Market(
                            diff.asset_names[(value // 2) % n_assets],
                            diff.asset_names[(value // 2 // n_assets) % n_assets],
                        ),
                        bool(value % 2),
                    )
                    for value in layout.combos.tolist()
                ],
                dtype=np.float64,
            )
            self.price = combo_price[self.combo] if self.size else np.zeros(0)

        self.value_price = diff.asset_price[self.asset]  # in the valuation currency
        self.min_trade_value = min_trade_value * (1 - MIN_TOLERANCE)
        # `reasons` of a plain layout at the reference prices: no negative price, no min_trade_value (a
        # count of whole steps, a positive step: no other reason can hold where the count is positive).
        self.plain = (
            layout.plain
            and trading is None
            and self.min_trade_value == 0.0
            and not np.count_nonzero(diff.asset_price < 0)
        )

    @cached_property
    def desired(self) -> FloatArray:
        """The group's value in the target: its buys are raised to a minimum in this order (largest
        first). Read only by the small-buy policy (rare): made when read."""
        member_of, nodes, groups, count = self._grouping
        weights = self.diff.desired_value[nodes]
        desired = np.bincount(member_of, weights=weights, minlength=count)[groups]
        return np.asarray(desired, dtype=np.float64)

    @classmethod
    def build(
        cls, diff: DiffTree, markets: Markets, trading: Trading | None = None, min_trade_value: float = 0.0
    ) -> _Groups:
        return cls(diff, markets, trading, min_trade_value)

    def _apply(self, moves: tuple[Move, ...], keys: IntArray, ids: dict[str, int], n_assets: int) -> None:
        """Each move shifts its two groups (`keys`: the groups', sorted): the source trades `amount` less
        (it leaves as the asset), the destination buys `amount` less (a round trip avoided: the fee is
        lost) or sells what arrives."""
        # One add per move and side, in the moves' order (a group several moves touch sums them in turn).
        asset = [ids[move.asset] for move in moves]
        source_key = np.array([move.source for move in moves], dtype=np.int64) * n_assets + asset
        destination_key = np.array([move.destination for move in moves], dtype=np.int64) * n_assets + asset
        at = np.searchsorted(keys, np.concatenate((source_key, destination_key)))
        assert (keys[at] == np.concatenate((source_key, destination_key))).all(), "a move's group"
        source, destination = at[: len(moves)].tolist(), at[len(moves) :].tolist()
        amount = [float(move.amount) for move in moves]
        received = [float(move.received) for move in moves]
        arriving = [amount[i] if move.kind == "round_trip" else received[i] for i, move in enumerate(moves)]
        both = np.ravel(np.column_stack((source, destination)))
        np.add.at(self.net, both, np.ravel(np.column_stack((amount, np.negative(arriving)))))
        np.add.at(self.free, both, np.ravel(np.column_stack((np.negative(amount), received))))
        self._moved = (moves, source, destination)

    def _extra(self, groups: list[int]) -> dict[int, Decimal]:
        """Per group of `groups` the moves touch, what they change of its exact free amount, in the moves'
        order: asked for by the sells of (nearly) a whole balance (thousands of moves, a few such sells,
        so only the moves touching them are read)."""
        moves, sources, destinations = self._moved
        wanted = set(groups)
        extra: dict[int, Decimal] = {}
        asked = np.array(groups, dtype=np.int64)
        touching = np.isin(np.array(sources, dtype=np.int64), asked) | np.isin(
            np.array(destinations, dtype=np.int64), asked
        )
        for i in np.flatnonzero(touching).tolist():
            src, dst, move = sources[i], destinations[i], moves[i]
            if src in wanted:
                extra[src] = extra.get(src, Decimal(0)) - move.amount
            if dst in wanted:
                extra[dst] = extra.get(dst, Decimal(0)) + move.received
        return extra

    def move_count(self) -> FloatArray:
        """Per group, how many moves send from or to it."""
        _, source, destination = self._moved
        counts: FloatArray = np.bincount(
            np.array([*source, *destination], dtype=np.int64), minlength=self.size
        ).astype(np.float64)
        return counts

    def exchange_of(self, g: int) -> str:
        return self.exchanges[int(self.account_exchange[self.account[g]])]

    def size_direct(self) -> tuple[IntArray, FloatArray]:
        """Whole steps for the direct groups: truncated; a sell never exceeds the exact free amount."""
        if self.plain:  # positive finite steps: no division by zero, no inf / inf
            wanted = _whole_steps(self.raw / self.step)
            free_steps = _whole_steps(self.free / self.step)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                wanted = _whole_steps(self.raw / self.step)
                free_steps = _whole_steps(self.free / self.step)
        over = ((wanted > MAX_STEPS) if self.all_direct else self.direct & (wanted > MAX_STEPS)).nonzero()[0]
        if over.size:
            g = int(over[0])
            raise _too_many_steps(
                self.diff, int(self.path_node[g]), float(self.raw[g]), self.direct_markets[int(self.combo[g])]
            )
        if self.all_direct:
            steps = wanted.astype(np.int64)
            capped = self.sells & (wanted >= free_steps)
        else:
            steps = np.zeros(self.size, dtype=np.int64)
            steps[self.direct] = wanted[self.direct].astype(np.int64)
            capped = self.direct & self.sells & (wanted >= free_steps)
        if not np.count_nonzero(capped):  # no sell of (nearly) a whole balance: nothing to count exactly
            return steps, steps * self.step * self.price
        steps[capped] = free_steps[capped]
        # Where the free amount is (nearly) a whole number of steps, floats cannot tell k steps from
        # k - 1e-12: count the steps in exact decimals there, so a sell never exceeds the balance.
        counts = self.free / self.step
        near = np.abs(counts - np.round(counts)) <= np.maximum(NEAR_WHOLE, counts * STEP_RELATIVE * 10)
        exact = np.flatnonzero(capped & near)
        for g, combo, most, free in zip(
            exact.tolist(),
            self.combo[exact].tolist(),
            wanted[exact].tolist(),
            self.exact_frees(exact),
            strict=True,
        ):
            steps[g] = min(int(most), floor_steps(free, self.direct_markets[combo].amount_step))
        return steps, steps * self.step * self.price

    def min_steps(self) -> IntArray:
        """The fewest whole steps an order must have to meet the market's minimum amount and cost."""
        with np.errstate(divide="ignore", invalid="ignore"):
            by_amount = self.min_amount * (1 - MIN_TOLERANCE) / self.step
            by_cost = self.min_cost * (1 - MIN_TOLERANCE) / (self.step * self.price)
        need = np.maximum(by_amount, by_cost)
        need = np.where(np.isnan(need) | (need == np.inf), 1.0, need)
        return np.maximum(np.ceil(need - STEP_EPSILON), 1).astype(np.int64)

    def reasons(self, steps: IntArray, cost: FloatArray) -> IntArray:
        """Per group, the first reason (`REASONS`) its order of `steps` is not emitted, 0 where none:
        under a step, under the minimum amount, under the minimum cost, worth under min_trade_value.

        Plain groups (`plain`): where the count is positive, the amount, its cost and its value are
        positive or NaN, never under a minimum of 0: only the count decides."""
        if self.plain:
            plain: IntArray = (steps <= 0).astype(np.int64)
            return plain
        amount = steps * self.step
        reason: IntArray = (amount * self.value_price < self.min_trade_value) * 6
        reason[cost < self.least_cost] = 3
        reason[amount < self.least_amount] = 2
        reason[steps <= 0] = 1
        return reason

    def exact_free(self, g: int) -> Decimal:
        return self._members.exact_free(int(self._position[g])) + self._extra([g]).get(g, Decimal(0))

    def exact_frees(self, groups: IntArray) -> list[Decimal]:
        """`exact_free` of each of `groups` (a sell of every wallet's whole amount asks for thousands)."""
        frees = self._members.exact_frees(self._position[groups])
        if groups.size and self._moved[0]:
            asked = groups.tolist()
            extra = self._extra(asked)
            frees = [free + extra.get(g, Decimal(0)) for g, free in zip(asked, frees, strict=True)]
        return frees

    def route_of(self, g: int) -> Route:
        route = self.routes[int(self.combo[g])]
        assert route is not None, "only routed groups are asked for their route"
        return route

    @cached_property
    def inverse(self) -> BoolArray:
        """Per group, whether its route is an inverse market (``QUOTE/ASSET``: only a sell takes it)."""
        if not self.any_inverse:
            return np.zeros(self.size, dtype=np.bool_)
        inverse = np.array([r is not None and r.inverse for r in self.routes], dtype=np.bool_)
        return np.asarray(inverse[self.combo], dtype=np.bool_)

    @property
    def any_inverse(self) -> bool:
        return self.any_routed and any(r is not None and r.inverse for r in self.routes)

    def inverse_leg(self, g: int, steps: int, held: Decimal) -> _Leg:
        """The buy of the account's quote with the asset of group `g` (an inverse sell; `held` of it
        free): a buy, so placed with the buys (phase 2), first of the account's (after a conversion), as
        its proceeds pay them."""
        account = int(self.account[g])
        market = self.route_of(g).legs[0]
        key = (BUY_PHASE, self.rank[account], -1, 1 + int(self.asset[g]))
        return _Leg(account, market, BUY, steps, BUY_PHASE, key, g, held)

    def legs(self, g: int, side: int, ordered: tuple[tuple[Market, int], ...]) -> list[_Leg]:
        """Routed legs in execution order; they sort right after the group's place."""
        account = int(self.account[g])
        phase = SELL_PHASE if side == SELL else BUY_PHASE
        return [
            _Leg(
                account,
                market,
                side,
                steps,
                phase,
                (phase, self.rank[account], int(self.asset[g]), number),
                g,
            )
            for number, (market, steps) in enumerate(ordered, 1)
        ]


class _GroupShape(NamedTuple):
    """What `_Groups` reads of a diff's nodes alone (accounts, exchanges, the tradable wallets grouped by
    (account, asset)): the same for every diff of one union shape, kept in its `shape_memo` (a replay
    plans one shape at hundreds of rows)."""

    asset_id: IntArray  # what it was made for (the shape's asset ids)
    rank: dict[int, int]
    accounts: IntArray
    cash_slot: IntArray  # per cash wallet (tree order), its account's slot
    nodes: IntArray  # the tradable wallets (not their account's quote), tree order
    wallet_keys: IntArray
    grouped: tuple[IntArray, IntArray, IntArray, IntArray]  # `_group(wallet_keys)`
    grouped_nodes: IntArray
    held: FloatArray  # per key of `grouped`: wallets the real tree holds
    exchanges: list[str]
    account_exchange: IntArray
    banks: IntArray
    layouts: dict[bytes, tuple[Markets, _GroupLayout]]  # `_GroupLayout.known`

    @classmethod
    def of(cls, diff: DiffTree) -> _GroupShape:
        tree = diff.tree
        known = tree.shape_memo.get("group shape")
        if isinstance(known, _GroupShape) and known.asset_id is diff.asset_id:
            return known
        n_assets = max(len(diff.asset_names), 1)
        accounts = np.array(sorted(tree.accounts), dtype=np.int64)
        own_quote = diff.cash
        nodes = np.flatnonzero(tree.wallet & ~own_quote)
        wallet_keys = tree.account_of[nodes] * n_assets + diff.asset_id[nodes]
        grouped = _group(wallet_keys)
        exchanges = sorted({exchange for exchange, _ in tree.accounts.values()})
        exchange_id = {name: i for i, name in enumerate(exchanges)}
        account_exchange = np.full(len(tree), -1, dtype=np.int64)
        for node, (exchange, _) in tree.accounts.items():
            account_exchange[node] = exchange_id[exchange]
        shape = cls(
            asset_id=diff.asset_id,
            rank=_account_rank(tree.accounts),
            accounts=accounts,
            cash_slot=np.searchsorted(accounts, tree.account_of[own_quote]),
            nodes=nodes,
            wallet_keys=wallet_keys,
            grouped=grouped,
            grouped_nodes=nodes[grouped[2]],
            held=np.bincount(
                grouped[1], weights=tree.real_index[nodes] >= 0, minlength=grouped[0].size
            ).astype(np.float64),
            exchanges=exchanges,
            account_exchange=account_exchange,
            banks=tree.bank_accounts,
            layouts={},
        )
        tree.shape_memo["group shape"] = shape
        return shape


# Group layouts a shape remembers (one per set of groups that trade); then it starts again. Only of
# portfolios of at most LAYOUT_WALLETS tradable wallets: a replay's, planned hundreds of times; a large
# portfolio is planned once, and its layout is freed with the plan.
GROUP_LAYOUTS = 16
LAYOUT_WALLETS = 16_384


class _GroupLayout(NamedTuple):
    """What `_Groups` takes from which groups trade alone (not from amounts or prices): their accounts,
    slots, assets and the nodes a skip names, which are new positions, their markets and those markets'
    columns. Without a trading view the same for every plan of one shape whose groups trade: kept by the
    shape (a replay plans one shape at hundreds of rows, mostly with every group trading)."""

    account: IntArray
    slot: IntArray
    asset: IntArray
    path_node: IntArray
    new: BoolArray
    combos: IntArray
    combo: IntArray
    routes: list[Route | None]
    direct: BoolArray
    routed: BoolArray
    no_market: BoolArray
    any_routed: bool
    any_no_market: bool
    direct_markets: tuple[Market, ...]
    columns: tuple[FloatArray, FloatArray, FloatArray, FloatArray]  # step, min amount, min cost, fee rate
    all_direct: bool
    least: tuple[FloatArray, FloatArray]  # the minimum amount and cost less MIN_TOLERANCE (`reasons`)
    fee_factors: tuple[FloatArray, FloatArray]  # 1 - fee rate (a sell's proceeds), 1 + fee rate (a buy's)
    quote_id: IntArray  # per group, its account's quote asset
    # Every group direct, on a market of a positive finite step and no minimum amount or cost: sizing
    # divides by no zero, and only a count of no steps keeps an order from being emitted (see `reasons`).
    plain: bool

    @classmethod
    def known(
        cls,
        shape: _GroupShape,
        markets: Markets,
        present: BoolArray,
        groups: IntArray,
        diff: DiffTree,
    ) -> _GroupLayout:
        """`made` without a trading view, remembered by the shape for these groups and `markets`."""
        if present.size > LAYOUT_WALLETS:
            return cls.made(shape, markets, None, present, groups, diff, None)
        key = present.tobytes()
        known = shape.layouts.get(key)
        if known is not None and known[0] is markets:
            return known[1]
        if len(shape.layouts) >= GROUP_LAYOUTS:
            shape.layouts.clear()
        layout = cls.made(shape, markets, None, present, groups, diff, None)
        shape.layouts[key] = (markets, layout)  # the markets kept: the layout's routes are theirs
        return layout

    @classmethod
    def made(
        cls,
        shape: _GroupShape,
        markets: Markets,
        trading: Trading | None,
        present: BoolArray,
        groups: IntArray,
        diff: DiffTree,
        sells: BoolArray | None,
    ) -> _GroupLayout:
        """The layout of `groups` (their wallets that trade: `present`); with a trading view, `sells`
        says each group's side (a sell's route is not a buy's)."""
        n_assets = max(len(diff.asset_names), 1)
        all_keys, member_of, _, _ = shape.grouped
        n_active = np.bincount(member_of, weights=present, minlength=all_keys.size)
        keys = all_keys[groups]
        account = keys // n_assets
        # The keys are sorted, so the groups come account by account: each account's run of groups.
        runs = np.searchsorted(account, shape.accounts, side="right") - np.searchsorted(
            account, shape.accounts
        )
        asset = keys % n_assets
        nodes = shape.nodes
        first = np.full(all_keys.size, -1, dtype=np.int64)
        first[member_of[present][::-1]] = nodes[present][::-1]
        quote_id = diff.account_quote
        combo_keys = (shape.account_exchange[account] * n_assets + quote_id[account]) * n_assets + asset
        if (
            trading is not None and sells is not None
        ):  # the side is part of the route: a sell's is not a buy's
            combo_keys = combo_keys * 2 + sells
        combos, combo = _unique_combos(diff.tree.shape_memo, combo_keys)
        routes = _Routes.of(markets, trading, combos, shape.exchanges, diff.asset_names)
        legs = routes.legs[combo]
        # Nothing trades in a bank account (no API: its money only moves, by an operator).
        if shape.banks.size:
            legs = np.where(np.isin(account, shape.banks), 0, legs)
        columns: FloatArray = routes.table[combo].T.copy() if keys.size else np.zeros((4, 0))
        step, min_amount, min_cost, fee = columns[0], columns[1], columns[2], columns[3]
        routed, no_market = legs >= 2, legs == 0
        all_direct = bool((legs == 1).all())
        return cls(
            account=account,
            slot=np.repeat(np.arange(shape.accounts.size), runs),
            asset=asset,
            path_node=np.where(n_active[groups] == 1, first[groups], account),
            new=shape.held[groups] == 0,
            combos=combos,
            combo=combo,
            routes=routes.routes,
            direct=legs == 1,
            routed=routed,
            no_market=no_market,
            any_routed=bool(routed.any()),
            any_no_market=bool(no_market.any()),
            direct_markets=routes.direct,
            columns=(step, min_amount, min_cost, fee),
            all_direct=all_direct,
            least=(min_amount * (1 - MIN_TOLERANCE), min_cost * (1 - MIN_TOLERANCE)),
            fee_factors=(1 - fee, 1 + fee),
            quote_id=quote_id[account],
            plain=all_direct
            and bool(np.all((step > 0) & (step < np.inf)))
            and not np.count_nonzero(min_amount)
            and not np.count_nonzero(min_cost),
        )


_NONE = Market(base="", quote="")
REASONS = (
    None,
    BELOW_STEP,
    BELOW_MIN_AMOUNT,
    BELOW_MIN_COST,
    NO_MARKET,
    INSUFFICIENT_QUOTE,
    BELOW_MIN_TRADE_VALUE,
    NO_NETWORK,
    NETWORK_DISABLED,
    BELOW_NETWORK_MIN,
    NOT_ABOVE_FEE,
    NEEDS_CONVERSION,
)
REASON_CODES = {reason: code for code, reason in enumerate(REASONS) if reason is not None}
NO_MARKET_CODE = REASON_CODES[NO_MARKET]
INSUFFICIENT_QUOTE_CODE = REASON_CODES[INSUFFICIENT_QUOTE]


# Route tables a `Markets` remembers (one per set of combos planned with it); then it starts again.
ROUTE_TABLES = 64


class _Routes(NamedTuple):
    """Per combo of a plan's groups ((exchange x quote x asset) key, x 2 + sell with a `Trading`): its
    route, its number of legs, its direct market (`_NONE` when routed or unreachable) and that market's
    (step, minimum amount, minimum cost, fee rate) as floats."""

    routes: list[Route | None]
    legs: IntArray
    direct: tuple[Market, ...]
    table: FloatArray

    @classmethod
    def of(
        cls,
        markets: Markets,
        trading: Trading | None,
        combos: IntArray,
        exchanges: list[str],
        names: list[str],
    ) -> _Routes:
        """The routes of `combos`; without a trading view, remembered by `markets` (a replay plans the same
        portfolio with the same markets hundreds of times)."""
        if trading is not None:
            return cls.found(markets, trading, combos, exchanges, names)
        key = (tuple(exchanges), tuple(names), combos.tobytes())
        known = markets.tables.get(key)
        if not isinstance(known, _Routes):
            if len(markets.tables) >= ROUTE_TABLES:
                markets.tables.clear()
            known = markets.tables[key] = cls.found(markets, None, combos, exchanges, names)
        return known

    @classmethod
    def found(
        cls,
        markets: Markets,
        trading: Trading | None,
        combos: IntArray,
        exchanges: list[str],
        names: list[str],
    ) -> _Routes:
        n_assets = max(len(names), 1)
        routes: list[Route | None] = []
        for value in combos.tolist():
            sell = bool(value % 2) if trading is not None else False
            value = value // 2 if trading is not None else value  # noqa: PLW2901 - the key without its side
            exchange = exchanges[value // (n_assets * n_assets)]
            asset = names[value % n_assets]
            quote = names[(value // n_assets) % n_assets]
            routes.append(
                trading.route(exchange, asset, quote, sell)
                if trading is not None
                else markets.route(exchange, asset, quote)
            )
        # An inverse route's one leg is planned as a routed one (its amount is in the quote, not the asset).
        legs = np.array([0 if r is None else len(r.legs) + r.inverse for r in routes], dtype=np.int64)
        direct = tuple(
            r.legs[0] if r is not None and len(r.legs) == 1 and not r.inverse else _NONE for r in routes
        )
        table = np.array([m.floats for m in direct], dtype=np.float64).reshape(-1, 4)
        return cls(routes, legs, direct, table)


def _unique_combos(memo: dict[Hashable, object], keys: IntArray) -> tuple[IntArray, IntArray]:
    """`np.unique(keys, return_inverse=True)`, the last answer kept per union shape (`memo`): a replay
    plans the same groups of one shape again and again."""
    text = keys.tobytes()
    known = memo.get("combos")
    if isinstance(known, tuple) and known[0] == text:
        return known[1], known[2]
    combos, inverse = np.unique(keys, return_inverse=True)
    memo["combos"] = (text, combos, inverse)
    return combos, inverse


def _group(keys: IntArray) -> tuple[IntArray, IntArray, IntArray, IntArray]:
    """`np.unique` with a stable sort: the distinct keys, each input's group, the inputs in group order
    and the group bounds in that order (group k is ``order[bounds[k]:bounds[k + 1]]``)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    starts = np.empty(ordered.size, dtype=np.bool_)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    member_of = np.empty(keys.size, dtype=np.int64)
    member_of[order] = np.cumsum(starts) - 1
    bounds = np.append(np.flatnonzero(starts), keys.size)
    return ordered[starts], member_of, order, bounds


def _too_many_steps(diff: DiffTree, node: int, amount: float, market: Market) -> InputError:
    """An order no float can count in whole steps: the inputs are beyond anything a venue trades."""
    return InputError(
        diff.tree.path(node),
        f"an order of {amount:.6g} {market.base} is more than 2**53 steps of {market.amount_step} "
        f"({market.symbol}): too large to size exactly; check the amounts, prices and --invest",
    )


def _leg_steps(diff: DiffTree, node: int, amount: float, market: Market) -> int:
    """Whole steps of a routed leg's market in `amount` (truncated, float noise forgiven)."""
    count = amount / float(market.amount_step)
    if count > MAX_STEPS:
        raise _too_many_steps(diff, node, amount, market)
    return math.floor(count * (1 + STEP_RELATIVE) + STEP_EPSILON)


def _whole_steps(counts: FloatArray) -> FloatArray:
    """Whole steps in float step counts: 430045999.99999994 steps of an exact 430046000 is 430046000."""
    return np.floor(counts * (1 + STEP_RELATIVE) + STEP_EPSILON)


def _market_price(diff: DiffTree, market: Market) -> float:
    base, quote = diff.prices.get(market.base), diff.prices.get(market.quote)
    if base is None or quote is None:
        return math.nan
    return float(base) / float(quote)


class _Pricer:
    """Prices of markets for routed legs: the venue's side of the book in a where-mode plan, else the
    reference prices; as the plan shows them (`exact`, the orders' est. price) and as floats of those."""

    def __init__(self, diff: DiffTree, trading: Trading | None) -> None:
        self.diff = diff
        self.trading = trading

    def price(self, exchange: str, market: Market, side: int) -> float:
        if self.trading is not None:
            return self.trading.prices.shown(exchange, market, side == SELL)
        return _market_price(self.diff, market)

    def exact(self, exchange: str, market: Market, side: int) -> Decimal:
        return _shown_price(self.diff, self.trading, market, side == SELL, exchange)


def _shown_price(
    diff: DiffTree, trading: Trading | None, market: Market, sell: bool, exchange: str
) -> Decimal:
    """An order's estimated price as the plan shows it: the venue's side (`VenuePrices.exact`) in a
    where-mode plan, else the reference prices' ratio to 18 significant digits."""
    if trading is not None:
        return trading.prices.exact(exchange, market, sell)
    return reference_price(diff, market)


class _Members:
    """The wallets of each (account, asset) group, to sum their exact free amounts when a sell is capped."""

    def __init__(self, diff: DiffTree, grouped_nodes: IntArray, bounds: IntArray) -> None:
        self._nodes = grouped_nodes
        self._bounds = bounds
        self._diff = diff

    def exact_frees(self, groups: IntArray) -> list[Decimal]:
        """`exact_free` of each of `groups`: a group of one wallet (nearly all) read at once."""
        tree = self._diff.tree
        starts, ends = self._bounds[groups], self._bounds[groups + 1]
        single = ends - starts == 1
        index = np.where(single, tree.real_index[self._nodes[np.where(single, starts, 0)]], -1)
        real, zero = tree.real, Decimal(0)
        return [
            (real.exact_amount(i) - real.exact_locked(i) if i >= 0 else zero)
            if one
            else self.exact_free(group)
            for group, one, i in zip(groups.tolist(), single.tolist(), index.tolist(), strict=True)
        ]

    def exact_free(self, group: int) -> Decimal:
        """The exact free amount, from the decimal texts of the real tree."""
        tree = self._diff.tree
        total = Decimal(0)
        for node in self._nodes[self._bounds[group] : self._bounds[group + 1]].tolist():
            index = int(tree.real_index[node])
            if index >= 0:
                total += tree.real.exact_amount(index) - tree.real.exact_locked(index)
        return total


_Routed = tuple[tuple[tuple[Market, int], ...], float]


def _routed_sell(
    pricer: _Pricer, exchange: str, route: Route, raw: float, exact_free: Decimal, node: int
) -> _Routed | str:
    """Sell `raw` of the asset for the first intermediate, then what each leg yields after fees, as the
    plan shows it (`_shown_net`), on the next, down to the quote (two or three legs): a leg never sells
    more than the previous one is shown to yield.

    Returns the legs in execution order and the quote received, or the reason it cannot be done.
    """
    diff = pricer.diff
    first = route.legs[0]
    steps = min(_leg_steps(diff, node, raw, first), floor_steps(exact_free, first.amount_step))
    made: list[tuple[Market, int]] = []
    for position, market in enumerate(route.legs):
        if position:
            yielded = _shown_net(pricer, exchange, made[-1][0], made[-1][1], SELL)
            steps = _exact_steps(diff, node, yielded, market, ceiling=False)
        reason = _leg_reason(pricer, exchange, market, steps, SELL)
        if reason:
            return reason
        made.append((market, steps))
    return tuple(made), float(_shown_net(pricer, exchange, made[-1][0], made[-1][1], SELL))


def _routed_buy(
    pricer: _Pricer, exchange: str, route: Route, raw: float, factor: float, node: int
) -> _Routed | str:
    """Buy enough of each intermediate (rounded up to its step), from the quote's side, to pay for the
    next leg's cost and fee as the plan shows them (`_shown_net`), down to `raw` of the asset on its own
    market at the end.

    `factor` scales the asset amount down when the account's budget is short.
    """
    diff = pricer.diff
    asset_leg = route.legs[0]
    steps = math.floor(_leg_steps(diff, node, raw, asset_leg) * factor)
    reason = _leg_reason(pricer, exchange, asset_leg, steps, BUY)
    if reason:
        return reason
    made: list[tuple[Market, int]] = [(asset_leg, steps)]
    for market in route.legs[1:]:
        needed = _shown_net(pricer, exchange, made[-1][0], made[-1][1], BUY)
        middle_steps = _exact_steps(diff, node, needed, market, ceiling=True)
        reason = _leg_reason(pricer, exchange, market, middle_steps, BUY)
        if reason:
            return reason
        made.append((market, middle_steps))
    return tuple(reversed(made)), float(_shown_net(pricer, exchange, made[-1][0], made[-1][1], BUY))


def _shown_net(pricer: _Pricer, exchange: str, market: Market, steps: int, side: int) -> Decimal:
    """What an order of `steps` yields (a sell: est. cost less est. fee) or pays (a buy: cost plus fee),
    in the market's quote, exactly as the plan shows its est. cost and fee (`Plan.order_columns`)."""
    cost = DERIVED.multiply(market.amount_step * steps, pricer.exact(exchange, market, side))
    fee = DERIVED.multiply(cost, market.fee_rate)
    return cost + fee if side == BUY else cost - fee


def _exact_steps(diff: DiffTree, node: int, amount: Decimal, market: Market, *, ceiling: bool) -> int:
    """Whole steps of `market` in an exact `amount`: truncated, or rounded up (`ceiling`)."""
    if amount / market.amount_step > MAX_STEPS:
        raise _too_many_steps(diff, node, float(amount), market)
    if amount <= 0:
        return 0
    whole, rest = divmod(amount, market.amount_step)
    return int(whole) + (1 if ceiling and rest else 0)


def _inverse_sell(
    pricer: _Pricer, exchange: str, market: Market, raw: float, exact_free: Decimal
) -> int | str:
    """Sell `raw` of an asset on the inverse market ``QUOTE/ASSET`` (the account's quote is its base): the
    steps of the quote bought with it, at the ask, cost and fee (in the asset) within `raw` and never
    above the exact free amount; or the reason it cannot be done."""
    price = pricer.exact(exchange, market, BUY)
    wanted = Decimal(raw)
    available = exact_free if wanted * (1 + Decimal(STEP_RELATIVE)) >= exact_free else wanted
    steps = spend_steps(price, market, available)
    return _leg_reason(pricer, exchange, market, steps, BUY) or steps


def spend_steps(price: Decimal, market: Market, available: Decimal) -> int:
    """The most whole steps of `market`'s base a buy at `price` may take with its cost and fee (in the
    quote) within `available` of the quote: exact, so it never spends a hair more."""
    unit = SPEND.multiply(price, 1 + market.fee_rate)  # what one of the base costs, with the fee
    if unit <= 0 or available <= 0:
        return 0
    steps = floor_steps(SPEND.divide(available, unit), market.amount_step)
    if steps > 0 and SPEND.multiply(market.amount_step * steps, unit) > available:
        steps -= 1  # the quotient's last digit rounded up onto a step: one fewer
    return steps


def _route_reserve(pricer: _Pricer, exchange: str, route: Route) -> float:
    """Room, in the quote, for each intermediate leg of a routed buy rounding up by one step."""
    total = 0.0
    for position in range(1, len(route.legs)):
        room = _cost_of(pricer, exchange, route.legs[position], 1, BUY)
        for later in route.legs[position + 1 :]:
            room *= pricer.price(exchange, later, BUY) * (1 + float(later.fee_rate))
        total += room
    return total


def _cost_of(pricer: _Pricer, exchange: str, market: Market, steps: int, side: int) -> float:
    fee = float(market.fee_rate)
    return (
        steps
        * float(market.amount_step)
        * pricer.price(exchange, market, side)
        * (1 + fee if side == BUY else 1 - fee)
    )


def _leg_reason(pricer: _Pricer, exchange: str, market: Market, steps: int, side: int) -> str:
    amount = steps * float(market.amount_step)
    if steps <= 0:
        return BELOW_STEP
    if amount < float(market.min_amount) * (1 - MIN_TOLERANCE):
        return BELOW_MIN_AMOUNT
    if amount * pricer.price(exchange, market, side) < float(market.min_cost) * (1 - MIN_TOLERANCE):
        return BELOW_MIN_COST
    return ""


@dataclass(frozen=True, eq=False)
class _Moved:
    """The plan's transfers (moves first, then money), per account what comes in and goes out in its
    quote, the transfers that could not be planned, each account's first transfer in (its index), and
    what the transfers' network fees are worth (`Flows`)."""

    transfers: list[Transfer]
    transfer_in: FloatArray
    transfer_out: FloatArray
    skipped: list[TransferSkip]
    first_in: dict[int, int]
    withdrawal_fees: float
    conversions: tuple[_Leg, ...] = ()


def _transfers(
    diff: DiffTree,
    accounts: IntArray,
    quote_id: IntArray,
    spare: FloatArray,
    trading: Trading | None,
    made: bool = True,
) -> _Moved:
    """Accounts given more or less than they hold: match surpluses to deficits, largest first.

    A transfer carries the source account's quote asset and never exceeds `spare`: the quote the source
    will hold after its sells (net of fees) and its own buys. What is left unmatched is money entering
    (`invest`) or leaving (`withdraw`) the portfolio: it counts toward the account's budget but is no
    transfer. Returns the transfers and, per account in its quote units, what comes in and goes out
    (`spare` and these are per slot: the account's place in `accounts`, its nodes in tree order).

    Trading with moves, each move is a transfer of its asset (listed first) whose value no longer needs
    money to follow it. With a network file a money transfer takes the cheapest open network its amount
    clears (the destination receives the amount less the fee); one that none allows is not made, and is
    reported skipped. `made` False: planned and counted (`plan_trading`), not made.
    """
    account_nodes = accounts.tolist()
    tolerance = VALUE_EPSILON * diff.scale
    moves = trading.moves if trading is not None else ()
    if len(account_nodes) == 1 and not moves:
        return _one_account(
            diff, account_nodes[0], float(diff.asset_price[quote_id[account_nodes[0]]]), tolerance
        )
    slot = {node: i for i, node in enumerate(account_nodes)}
    # Python floats, summed in the same order as numpy's would be (a numpy scalar per += cost more).
    transfer_in = [0.0] * len(account_nodes)
    transfer_out = [0.0] * len(account_nodes)
    shift: dict[int, float] = defaultdict(float)
    # Thousands of transfers (a where plan's moves, then money), a few assets: each priced once.
    path, price_of = diff.tree.path, _PriceOf(diff.prices)
    fee_value = _FeeValue(price_of)
    withdrawal_fees = 0.0
    transfers: list[Transfer] = []
    for move in moves:
        price, float_price = price_of[move.asset]
        if made:
            transfers.append(
                Transfer(
                    move.asset,
                    path(move.source),
                    path(move.destination),
                    move.amount.normalize(),
                    DERIVED.multiply(move.amount, price).normalize(),
                    move.network,
                    move.fee,
                )
            )
        withdrawal_fees += fee_value[move.asset, move.fee]
        value = float(move.amount) * float_price
        shift[move.source] -= value
        shift[move.destination] += value
    # Read per account at once (a numpy scalar per account and column took more than the matching).
    gaps = (diff.current_value[accounts] - diff.desired_value[accounts]).tolist()
    active = (diff.operation[accounts] != HOLD).tolist()
    # An account that holds (its value at its target, or within the band) keeps its gap, but what a move
    # brings or takes is money it gains or owes all the same (an asset it need not buy frees its cash).
    excess = {
        node: (gap if trades else 0.0) + shift.get(node, 0.0)
        for node, gap, trades in zip(account_nodes, gaps, active, strict=True)
        if trades or node in shift
    }
    sources = sorted(((v, n) for n, v in excess.items() if v > tolerance), key=lambda x: (-x[0], x[1]))
    sinks = sorted(((-v, n) for n, v in excess.items() if v < -tolerance), key=lambda x: (-x[0], x[1]))
    quotes = quote_id[accounts]
    quote_price = dict(zip(account_nodes, diff.asset_price[quotes].tolist(), strict=True))
    quote_name = dict(zip(account_nodes, [diff.asset_names[q] for q in quotes.tolist()], strict=True))
    # A move is of whole steps: what it leaves of its accounts' gaps (under a step's worth) is no money
    # to wire. A bank sends its whole surplus to a sink that leaves less than that of it, and any source
    # a sink's whole deficit when what it lacks is that rounding.
    rounding: dict[int, float] = defaultdict(float)
    default_step = float(DEFAULT_AMOUNT_STEP)
    for move in moves:
        step_value = default_step * price_of[move.asset][1]
        rounding[move.source] += step_value
        rounding[move.destination] += step_value
    if rounding:
        sources = [(v, n) for v, n in sources if v > rounding.get(n, 0.0)]
        sinks = [(v, n) for v, n in sinks if v > rounding.get(n, 0.0)]
    remaining_out = {n: v for v, n in sources}
    remaining_in = {n: v for v, n in sinks}
    matched: list[tuple[int, int, float]] = []
    i = j = 0
    while i < len(sources) and j < len(sinks):
        source, sink = sources[i][1], sinks[j][1]
        value = min(remaining_out[source], remaining_in[sink])
        banked = rounding and trading is not None and source in trading.banks
        if banked and remaining_out[source] - value <= rounding.get(sink, 0.0):
            value = remaining_out[source]
        elif remaining_in[sink] - value <= rounding.get(source, 0.0):
            value = remaining_in[sink]
        matched.append((source, sink, value))
        remaining_out[source] -= value
        remaining_in[sink] -= value
        if remaining_out[source] <= tolerance:
            i += 1
        if remaining_in[sink] <= tolerance:
            j += 1
    # Fees make the cash a source really frees smaller than its surplus in value: send only that.
    planned: dict[int, float] = defaultdict(float)
    for source, _, value in matched:
        planned[source] += value
    spare_of = spare.tolist()
    ratio = {
        source: min(1.0, max(spare_of[slot[source]], 0.0) * quote_price[source] / value) if value > 0 else 0.0
        for source, value in planned.items()
    }
    networks = trading.networks if trading is not None else None
    skipped: list[TransferSkip] = []
    first_in: dict[int, int] = {}
    exchange_of = diff.tree.accounts
    # The amounts in bulk (exact decimals only where floats cannot tell the whole steps), each pair's
    # money then counted in order.
    steps = _money_steps(
        np.array([value * ratio[source] for source, _, value in matched], dtype=np.float64),
        [quote_name[source] for source, _, _ in matched],
        price_of,
    )
    worth = _MoneyWorth(price_of)
    rows = [i for i, count in enumerate(steps) if count > 0]
    senders = [matched[i][0] for i in rows]
    receivers = [matched[i][1] for i in rows]
    counts = [steps[i] for i in rows]
    assets = [quote_name[source] for source in senders]
    # Money arriving in another asset than the destination's quote, where a market there converts it.
    converts = (
        [False] * len(rows)
        if networks is None or trading is None
        else [
            asset != quote_name[sink]
            and _converts(trading, exchange_of[sink][0], asset, quote_name[sink], sink)
            for sink, asset in zip(receivers, assets, strict=True)
        ]
    )
    ways: Sequence[Way | str | None] = (
        [None] * len(rows)
        if networks is None
        else _money_ways(
            networks,
            [exchange_of[source][0] for source in senders],
            [exchange_of[sink][0] for sink in receivers],
            assets,
            assets,  # the network's answer also where no conversion is possible: its refusal wins
            counts,
        )
    )
    conversions: list[_Leg] = []
    rank: dict[int, int] = {}
    # What moves (in the asset's value) out of each source and into each sink, in matching order.
    out_slot: list[int] = []
    in_slot: list[int] = []
    out_value: list[float] = []
    in_value: list[float] = []
    for source, sink, count, asset, way, convert in zip(
        senders, receivers, counts, assets, ways, converts, strict=True
    ):
        converted = None
        if convert and trading is not None and not isinstance(way, str) and way is not None:
            arrived = DEFAULT_AMOUNT_STEP * count - way.fee
            converted = _conversion(trading, exchange_of[sink][0], asset, quote_name[sink], arrived)
        # Money in another asset than the destination's quote: the network's refusal wins, but where only
        # the destination's deposit refuses it (it takes its quote) or nothing converts it there.
        foreign = networks is not None and asset != quote_name[sink]
        if isinstance(way, str) or (foreign and converted is None):
            why = way if isinstance(way, str) else NEEDS_CONVERSION
            if isinstance(way, str) and foreign and networks is not None:
                amount = DEFAULT_AMOUNT_STEP * count
                if networks.refused_at_deposit(exchange_of[source][0], exchange_of[sink][0], asset, amount):
                    why = NEEDS_CONVERSION
            skipped.append(TransferSkip(source, asset, float(DEFAULT_AMOUNT_STEP * count), why))
            continue
        network, fee, lost = None, Decimal(0), 0.0
        if way is not None:
            network, fee = way.network, way.fee
            withdrawal_fees += fee_value[asset, fee]
            lost = worth.of_fee(asset, fee)
        if converted is not None:
            rank = rank or _account_rank(exchange_of)
            # First of the account's orders of its phase: what the buys there spend comes from it.
            group = CONVERTING - len(transfers) if made else -1
            key = (converted.phase, rank[sink], -1, 0)
            conversions.append(
                _Leg(sink, converted.market, converted.side, converted.steps, converted.phase, key, group)
            )
        if made:
            amount = DEFAULT_AMOUNT_STEP * count
            first_in.setdefault(sink, len(transfers))
            transfers.append(
                Transfer(
                    asset=asset,
                    source=path(source),
                    destination=path(sink),
                    amount=amount.normalize(),
                    value=DERIVED.multiply(amount, price_of[asset][0]).normalize(),
                    network=network,
                    fee=fee,
                )
            )
        moved = worth.of_steps(asset, count)
        out_slot.append(slot[source])
        out_value.append(moved / quote_price[source])
        in_slot.append(slot[sink])
        in_value.append(
            (moved - lost) / quote_price[sink] if converted is None else float(converted.proceeds)
        )
    # Added in order, one at a time (as a loop would: each account's sum in the same order).
    outgoing, incoming = np.array(transfer_out), np.array(transfer_in)
    np.add.at(outgoing, np.array(out_slot, dtype=np.int64), np.array(out_value, dtype=np.float64))
    np.add.at(incoming, np.array(in_slot, dtype=np.int64), np.array(in_value, dtype=np.float64))
    transfer_out, transfer_in = outgoing.tolist(), incoming.tolist()
    # Unmatched deficits are funded by new money (invest), never by more than is invested (what holding
    # accounts keep of their gaps is no money), largest deficit first; unmatched surpluses leave (withdraw).
    invested = max(float(diff.desired_value[0] - diff.current_value[0]), 0.0)
    for _, node in sinks:
        funded = min(max(remaining_in[node], 0.0), invested)
        invested -= funded
        transfer_in[slot[node]] += funded / quote_price[node]
    for node, value in remaining_out.items():
        transfer_out[slot[node]] += max(value, 0.0) / quote_price[node]
    return _Moved(
        transfers,
        np.array(transfer_in),
        np.array(transfer_out),
        skipped,
        first_in,
        withdrawal_fees,
        tuple(conversions),
    )


class _Conversion(NamedTuple):
    """An order converting money that arrived into the account's quote: `steps` of `market` on `side`,
    yielding `proceeds` of the quote net of the market's fee."""

    market: Market
    side: int
    steps: int
    phase: int
    proceeds: Decimal


def _converts(trading: Trading, exchange: str, asset: str, quote: str, account: int) -> bool:
    """Whether the markets file lists a market of `exchange` converting `asset` into `quote` (an account
    that trades: not a bank)."""
    known = trading.markets.exchanges.get(exchange)
    if known is None or account in trading.banks:
        return False
    return f"{quote}/{asset}" in known or f"{asset}/{quote}" in known


def _conversion(
    trading: Trading, exchange: str, asset: str, quote: str, arrived: Decimal
) -> _Conversion | None:
    """The order converting `arrived` of `asset` into `quote` on `exchange`, spending at most it: a buy of
    ``QUOTE/ASSET`` at its ask (its cost and fee within what arrived) or a sell of ``ASSET/QUOTE`` at its
    bid, whichever the markets list (both: the one yielding more, the buy on a tie); None when neither
    clears the market's step and minimums."""
    known = trading.markets.exchanges.get(exchange, {})
    exact = SPEND
    found: list[_Conversion] = []
    buying = known.get(f"{quote}/{asset}")
    if buying is not None:
        price = trading.prices.exact(exchange, buying, False)
        steps = spend_steps(price, buying, arrived)
        amount = buying.amount_step * steps
        if steps > 0 and amount >= buying.min_amount and amount * price >= buying.min_cost:
            found.append(_Conversion(buying, BUY, steps, BUY_PHASE, amount))
    selling = known.get(f"{asset}/{quote}")
    if selling is not None:
        price = trading.prices.exact(exchange, selling, True)
        steps = floor_steps(arrived, selling.amount_step)
        amount = selling.amount_step * steps
        cost = exact.multiply(amount, price)
        if steps > 0 and amount >= selling.min_amount and cost >= selling.min_cost:
            proceeds = exact.multiply(cost, 1 - selling.fee_rate)
            found.append(_Conversion(selling, SELL, steps, SELL_PHASE, proceeds))
    return max(found, key=lambda conversion: (conversion.proceeds, conversion.side == BUY), default=None)


def _one_account(diff: DiffTree, node: int, quote_price: float, tolerance: float) -> _Moved:
    """`_transfers` of a portfolio of one account: no transfer, only what enters or leaves it."""
    money_in, money_out = _one_account_money(diff, node, quote_price, tolerance)
    return _Moved([], np.array([money_in]), np.array([money_out]), [], {}, 0.0)


def _one_account_money(
    diff: DiffTree, node: int, quote_price: float, tolerance: float
) -> tuple[float, float]:
    """What enters and what leaves the one account `node` (in its quote)."""
    excess = float(diff.current_value[node]) - float(diff.desired_value[node])
    active = int(diff.operation[node]) != HOLD
    money_in = -excess / quote_price if active and excess < -tolerance else 0.0
    money_out = excess / quote_price if active and excess > tolerance else 0.0
    return money_in, money_out


class _PriceOf(dict[str, tuple[Decimal, float]]):
    """Per asset name its price and the price as a float, looked up once (`_transfers`)."""

    def __init__(self, prices: Prices) -> None:
        super().__init__()
        self.prices = prices

    def __missing__(self, asset: str) -> tuple[Decimal, float]:
        price = self.prices.get(asset)
        assert price is not None, "prices are checked by diff_trees"
        self[asset] = found = (price, float(price))
        return found


class _FeeValue(dict[tuple[str, Decimal], float]):
    """Per (asset, fee) what the fee is worth (valuation currency), found once (`_transfers`)."""

    def __init__(self, price_of: _PriceOf) -> None:
        super().__init__()
        self.price_of = price_of

    def __missing__(self, key: tuple[str, Decimal]) -> float:
        asset, fee = key
        self[key] = value = float(fee) * self.price_of[asset][1]
        return value


# A money transfer's amount in whole default steps (satoshis): a float count this far (relative) from a
# whole number decides it (its error is under 4e-16 relative: three float roundings, two decimal ones to
# 18 digits); nearer, or past what a float holds whole, the exact decimals do.
_SATOSHIS = 10**8  # per unit: DEFAULT_AMOUNT_STEP is 1e-8
_MONEY_NOISE = 1e-14
_FLOAT_WHOLE = 2**52


def _money_steps(value: FloatArray, asset: list[str], price_of: _PriceOf) -> list[int]:
    """Per money transfer worth `value` (valuation currency) of `asset`, its whole default steps: truncated
    where the float count decides, the nearest whole count where it is within float noise of one, and
    past what a float counts whole as `_exact_money_steps` (thousands of transfers, a few assets)."""
    steps = np.zeros(value.size, dtype=np.int64)
    unsure = np.zeros(value.size, dtype=np.bool_)
    names = np.array(asset, dtype=object)
    for name in sorted(set(asset)):
        rows = np.flatnonzero(names == name)
        price = price_of[name][1]
        wanted = value[rows]
        with np.errstate(all="ignore"):
            count = wanted / price * _SATOSHIS
            clear = (wanted <= 0) | (
                (wanted > 0)
                & (count < _FLOAT_WHOLE)
                & (np.abs(count - np.rint(count)) > np.maximum(count, 1.0) * _MONEY_NOISE)
            )
        if not (0 < price < math.inf):
            clear[:] = False
        steps[rows[clear]] = np.where(wanted[clear] > 0, np.floor(count[clear]), 0)
        # Within float noise of a whole count, the count is that whole number: an account's spare money
        # is a float sum (29900 - 29.9 is 29870.099999999998 there), not 29870.09999999 to send.
        with np.errstate(invalid="ignore"):
            near = ~clear & (count < _FLOAT_WHOLE) & (wanted > 0)
        steps[rows[near]] = np.rint(count[near])
        unsure[rows[~clear & ~near]] = True
    out: list[int] = steps.tolist()
    for i in np.flatnonzero(unsure).tolist():
        out[i] = _exact_money_steps(float(value[i]), price_of[asset[i]][0])
    return out


def _exact_money_steps(value: float, price: Decimal) -> int:
    """The whole default steps in `value` (valuation currency) of an asset at `price`, in exact decimals."""
    return floor_steps(DERIVED.divide(DERIVED.create_decimal_from_float(value), price), DEFAULT_AMOUNT_STEP)


def _money_ways(
    networks: Networks,
    out_of: list[str],
    into: list[str],
    asset: list[str],
    received_as: list[str],
    steps: list[int],
) -> list[Way | str]:
    """Per money transfer of `steps` default steps of `asset` from exchange `out_of` to `into`, the way
    `Networks.choose` takes, or why none (``needs_conversion`` where the destination trades against
    another asset `received_as`): per (exchanges, asset) at once, the amount against each way's minimum
    and fee counted in whole steps (exactly: ``steps >= ceil(min / step)``, ``steps > floor(fee / step)``)."""
    chosen: list[Way | str] = [NEEDS_CONVERSION] * len(steps)
    groups: dict[tuple[str, str, str], list[int]] = defaultdict(list)
    for i, key in enumerate(zip(out_of, into, asset, strict=True)):
        if asset[i] == received_as[i]:
            groups[key].append(i)
    huge = max(steps, default=0) >= _INT_STEPS
    for (source, destination, name), rows in groups.items():
        ways = networks.ways(source, destination, name)
        if isinstance(ways, str) or huge:
            for i in rows:
                chosen[i] = networks.choose(source, destination, name, DEFAULT_AMOUNT_STEP * steps[i])
            continue
        count = np.array([steps[i] for i in rows], dtype=np.int64)
        way_of = np.full(count.size, -1, dtype=np.int64)
        below_all = np.ones(count.size, dtype=np.bool_)
        for k, way in enumerate(ways):
            least = min(max(_whole_steps_at_least(way.min_amount), 0), _INT_STEPS)
            fee = min(max(_whole_steps_at_most(way.fee), -1), _INT_STEPS)
            clears = count >= least
            below_all &= ~clears
            way_of[(way_of < 0) & clears & (count > fee)] = k
        for i, k, below in zip(rows, way_of.tolist(), below_all.tolist(), strict=True):
            chosen[i] = ways[k] if k >= 0 else BELOW_NETWORK_MIN if below else NOT_ABOVE_FEE
    return chosen


# Step counts at or past this are not compared in int64 (`_money_ways` asks `Networks.choose`).
_INT_STEPS = 2**62


def _whole_steps_at_least(value: Decimal) -> int:
    """The fewest whole default steps worth at least `value`."""
    numerator, denominator = value.as_integer_ratio()
    return -((-numerator * _SATOSHIS) // denominator)


def _whole_steps_at_most(value: Decimal) -> int:
    """The most whole default steps worth at most `value`."""
    numerator, denominator = value.as_integer_ratio()
    return (numerator * _SATOSHIS) // denominator


class _MoneyWorth:
    """What money transfers are worth as floats, each exactly ``float(exact decimal product)``: `steps`
    default steps of an asset (an integer product over a power of ten where a float holds both whole,
    which one division rounds as the decimal's conversion does), and a fee (found once per asset and fee)."""

    def __init__(self, price_of: _PriceOf) -> None:
        self.price_of = price_of
        self._scaled: dict[str, tuple[int, float, bool] | None] = {}
        self._fees: dict[tuple[str, Decimal], float] = {}

    def of_steps(self, asset: str, steps: int) -> float:
        if asset not in self._scaled:
            self._scaled[asset] = self._scale(self.price_of[asset][0])
        scaled = self._scaled[asset]
        if scaled is not None:
            digits, power, divide = scaled
            whole = steps * digits
            if whole < _FLOAT_WHOLE:
                return whole / power if divide else whole * power
        return float(DEFAULT_AMOUNT_STEP * steps * self.price_of[asset][0])

    @staticmethod
    def _scale(price: Decimal) -> tuple[int, float, bool] | None:
        """The price as whole digits and the power of ten that scales a step count by them (both held
        whole by a float), or None."""
        if not price.is_finite():
            return None
        sign, digits, exponent = price.as_tuple()
        assert isinstance(exponent, int)
        shift = exponent - 8  # a step is 1e-8
        if sign or abs(shift) > 22:  # 10**22 is the largest power of ten a float holds whole
            return None
        return int("".join(map(str, digits)) or "0"), float(10 ** abs(shift)), shift < 0

    def of_fee(self, asset: str, fee: Decimal) -> float:
        key = (asset, fee)
        if key not in self._fees:
            self._fees[key] = float(fee * self.price_of[asset][0])
        return self._fees[key]


def _skips_of(groups: _Groups, rows: IntArray, code: IntArray, symbol: dict[int, str]) -> Skips:
    """The skipped groups `rows` (in output order) as `Skips`, with their reasons' codes."""
    return Skips(
        node=groups.path_node[rows],
        asset=groups.asset[rows],
        account=groups.account[rows],
        side=np.where(groups.sells[rows], SELL, BUY),
        amount=groups.raw[rows],
        code=code,
        symbol=symbol,
    )
