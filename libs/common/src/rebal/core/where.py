"""Where to trade: plans made with per-venue prices, a network file or pools (docs/formats.md).

`plan_where` plans through `rebal.core.plan` with a `Trading` that prices a sell at the venue's bid and a
buy at its ask and takes the cheapest route (up to three markets), then:

- **pools** (`rebal.core.pools`) decide in which accounts a pool's assets are held; the accounts a pool
  decides to hold an asset in without a wallet of it get an empty one. The plan made is compared with the
  plain plan (trade where the asset sits) on the same input, and the cheaper of the two by estimated
  total cost is kept: with pools the plan never costs more than the plain one. With a network file the
  pools' variants (`pools.variants`: the money in the fewest transfers, buys with each account's own
  money where moving it is dear) are planned too, and the first that costs less is kept;
- **moves** (with a network file): an asset one account sells and another buys is moved between them
  instead, when the network's withdrawal fee is below the round trip's fees and spreads (on the cheapest
  open network the amount clears: never below its minimum, never over a disabled one);
- **notes**: per order and transfer a `reason` and an `est_saving` against the plain choice (valuation
  currency), the transfer each order waits for (`after_transfer`), and the plan's estimated `costs`.

Reasons: orders ``best_bid`` (sold where the bid net of fees is highest among the pool's accounts),
``best_ask`` (bought where the ask plus fees is lowest), ``cheapest_route`` (a leg of the cheapest route),
``in_place`` (where the target or the asset puts it); transfers ``cheaper_than_round_trip``,
``to_best_bid`` (moved to be sold where the bid is better), ``to_best_ask`` (money sent to buy where the
ask is lower) and ``funding`` (money the target gives another account).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from decimal import Decimal
from functools import cached_property
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from rebal.core import collector, pools
from rebal.core.diff import HOLD, DiffTree, diff_again, roll_up, with_desired
from rebal.core.errors import InputError
from rebal.core.market import Market, Markets, Route
from rebal.core.networks import NO_NETWORK, Networks, Way
from rebal.core.numbers import VALUE_EPSILON, default_steps_of
from rebal.core.plan import (
    CONVERTING,
    Flows,
    Notes,
    Plan,
    _FeeValue,
    _Groups,
    _PriceOf,
    _refuse_unreachable,
    cost_floor,
    plan_trading,
)
from rebal.core.trading import Move, Trading, VenuePrices
from rebal.core.tree import BoolArray, FloatArray, IntArray, contains, unique_keys, with_wallets
from rebal.core.union import UnionTree

BEST_BID = "best_bid"
BEST_ASK = "best_ask"
CHEAPEST_ROUTE = "cheapest_route"
IN_PLACE = "in_place"
# An order converting money a transfer brought in another asset into the account's quote.
CONVERSION = "conversion"
ORDER_REASONS = (IN_PLACE, BEST_BID, BEST_ASK, CHEAPEST_ROUTE, CONVERSION)
CHEAPER_THAN_ROUND_TRIP = "cheaper_than_round_trip"
TO_BEST_BID = "to_best_bid"
TO_BEST_ASK = "to_best_ask"
FUNDING = "funding"
G = TypeVar("G", bound=np.generic)
# An amount printed to 12 places is at most this far above the float; float products this far off.
ROUNDING = 1e-12
# The least a cost shows (8 places): a variant of the pools is kept only where it saves at least this.
SHOWN_UNIT = 1e-8
FLOAT_ROOM = 1e-9


def plan_where(
    diff: DiffTree, markets: Markets, networks: Networks | None, *, min_trade_value: float = 0.0
) -> Plan:
    """The plan of `diff` traded where it is cheapest (see the module). Pure and deterministic."""
    # Thousands of moves, transfers and orders for two plans, none in a cycle (`collector`).
    with collector.paused():
        return _plan_where(diff, markets, networks, min_trade_value)


def _plan_where(diff: DiffTree, markets: Markets, networks: Networks | None, min_trade_value: float) -> Plan:
    banks = frozenset(diff.tree.bank_accounts.tolist())
    trading = Trading(
        VenuePrices(diff.prices), markets, networks, banks=banks, min_trade_value=min_trade_value
    )
    if not diff.tree.target.pools:
        return _Made.of(diff, markets, trading, None).noted()
    found = pools.candidates(diff, trading)
    chosen = _cheapest_variant(
        diff, markets, trading, found, _pooled(diff, markets, trading, found, plain=False)
    )
    if not chosen.optimised and not any(move.kind == "round_trip" for move in chosen.trading.moves):
        # Every pool as plain and no round trip made a move: the plain plan itself. (A move can still
        # cost more than its round trip: the money that must follow it may pay a withdrawal fee.)
        return chosen.noted()
    # The plain candidate is only costed: its transfers and notes are made when it is the plan kept; and
    # not planned at all when what its first phase fixes already costs at least the chosen plan.
    plain = _costed_plain(diff, markets, trading, found, chosen.total())
    if plain is None or chosen.total() <= plain.total():
        return chosen.noted()
    return _Made.of(plain.plan.diff, markets, plain.trading, plain.resolved, plain=True).noted()


def plain_plan(diff: DiffTree, markets: Markets, networks: Networks | None) -> Plan:
    """The plain plan of the same input, with its notes: every pool trades where its assets sit (holders
    sell in proportion to their holdings, accounts buy with the money they have), and nothing is moved
    instead of a round trip. `plan_where` never costs more than it (its estimated total)."""
    banks = frozenset(diff.tree.bank_accounts.tolist())
    trading = Trading(VenuePrices(diff.prices), markets, networks, banks=banks)
    if not diff.tree.target.pools:
        return _Made.of(diff, markets, trading, None, plain=True).noted()
    return _pooled(diff, markets, trading, pools.candidates(diff, trading), plain=True).noted()


@dataclass(frozen=True, eq=False)
class _Pools:
    """What the pools decided, per (account node, asset id) as the key ``account * assets + asset`` (sorted),
    for the notes: the best places to sell and buy, and the plain choice's net bid and gross ask."""

    best_sell: IntArray
    best_buy: IntArray
    plain_keys: IntArray
    plain_bid: FloatArray
    plain_ask: FloatArray

    @classmethod
    def of(cls, resolved: pools.Resolved | None, n_assets: int) -> _Pools:
        if resolved is None:
            none = np.zeros(0, dtype=np.int64)
            return cls(none, none, none, np.zeros(0), np.zeros(0))
        cells = resolved.cells
        keys = cells.account * n_assets + cells.asset
        # A key on several cells (pools inside one account): the last cell's rates, as a mapping would.
        plain_keys, last = np.unique(keys[::-1], return_index=True)
        return cls(
            unique_keys(keys[resolved.best_sell]),
            unique_keys(keys[resolved.best_buy]),
            plain_keys,
            resolved.plain_bid[::-1][last],
            resolved.plain_ask[::-1][last],
        )


@dataclass(frozen=True, eq=False)
class _Made:
    """A plan made, before its notes: what they need, so a candidate that loses is never annotated
    (`made` False: its transfers not made either, `plan_trading`)."""

    plan: Plan
    groups: _Groups
    flows: Flows
    trading: Trading
    resolved: pools.Resolved | None
    optimised: bool = False
    made: bool = True

    @classmethod
    def of(
        cls,
        diff: DiffTree,
        markets: Markets,
        trading: Trading,
        resolved: pools.Resolved | None,
        plain: bool = False,
        made: bool = True,
        groups: _Groups | None = None,
        rounded: bool = False,
    ) -> _Made:
        """Plan with the pools' moves, then the round trips a network makes cheaper as moves (`groups`:
        the plain candidate's, when built already; `rounded`: `trading` has the round trips already)."""
        if trading.networks is not None and not plain and not rounded:
            trading = replace(trading, moves=round_trips(diff, trading))
        plan, groups, flows = plan_trading(
            diff, markets, trading, trading.min_trade_value, made=made, groups=groups
        )
        optimised = resolved is not None and bool(resolved.optimised.any())
        return cls(plan, groups, flows, trading, resolved, optimised, made)

    @cached_property
    def priced(self) -> _Priced:
        return _priced(self.plan, self.groups, self.flows, self.trading)

    def total(self) -> float:
        """The plan's estimated total cost (`Notes.total`)."""
        return self.priced.total

    def noted(self) -> Plan:
        assert self.made, "a candidate only costed is made before its notes"
        decided = _Pools.of(self.resolved, len(self.plan.diff.asset_names))
        notes = _notes(self.plan, self.priced, self.groups, self.flows, self.trading, decided)
        return replace(self.plan, notes=notes)


def _pooled(
    diff: DiffTree,
    markets: Markets,
    trading: Trading,
    found: pools.Candidates,
    plain: bool,
    made: bool = True,
) -> _Made:
    """The plan with the pools resolved (`plain`: every pool trades where its assets sit)."""
    resolved, placed, trading = _placed(diff, trading, found, plain)
    return _Made.of(placed, markets, trading, resolved, plain, made)


def _cheapest_variant(
    diff: DiffTree, markets: Markets, trading: Trading, found: pools.Candidates, chosen: _Made
) -> _Made:
    """`chosen`, or the plan of the first variant of the pools (`pools.variants`: buys with each account's
    own money where moving it is dear, the pools' money in the fewest transfers) that costs less by at
    least a shown unit (1e-8) and skips no more: every variant is planned as a whole (the transfers
    between pools are matched after the pools decide, so only the plan tells its cost), and today's is
    kept on a tie, so no plan costs more than today's (issue 14's review)."""
    ceiling = chosen.total()
    skips = len(chosen.plan.skips)
    for _, other in pools.variants(diff, trading, found):
        resolved, placed, moved = _placed(diff, trading, other, plain=False)
        if _same_resolved(resolved, chosen.resolved):
            continue
        try:
            moved = replace(moved, moves=round_trips(placed, moved))
            groups = _Groups.build(placed, markets, moved, moved.min_trade_value)
            _refuse_unreachable(placed, groups)
            if ceiling - SHOWN_UNIT <= cost_floor(placed, groups):
                continue
            made = _Made.of(placed, markets, moved, resolved, groups=groups, rounded=True)
        except InputError:  # a variant its plan would refuse is no candidate
            continue
        if made.total() < ceiling - SHOWN_UNIT and len(made.plan.skips) <= skips:
            return made
    return chosen


def _same_resolved(one: pools.Resolved, other: pools.Resolved | None) -> bool:
    return (
        other is not None
        and np.array_equal(one.desired, other.desired)
        and np.array_equal(one.money, other.money)
        and one.moves == other.moves
        and np.array_equal(one.optimised, other.optimised)
    )


def _costed_plain(
    diff: DiffTree, markets: Markets, trading: Trading, found: pools.Candidates, ceiling: float
) -> _Made | None:
    """The plain candidate, costed only (`_Made` not `made`); None where what its plan's first phase
    fixes already costs at least `ceiling` (`cost_floor`), so it cannot cost less."""
    resolved, placed, trading = _placed(diff, trading, found, plain=True)
    groups = _Groups.build(placed, markets, trading, trading.min_trade_value)
    _refuse_unreachable(placed, groups)  # refused as its plan would be
    if ceiling <= cost_floor(placed, groups):
        return None
    return _Made.of(placed, markets, trading, resolved, plain=True, made=False, groups=groups)


def _placed(
    diff: DiffTree, trading: Trading, found: pools.Candidates, plain: bool
) -> tuple[pools.Resolved, DiffTree, Trading]:
    """The pools resolved, the diff placed as they decided, and the trading with their moves."""
    resolved = pools.resolve(diff, trading, plain=plain, found=found)
    placed = _place(diff, resolved, found.nodes, found.member)
    resolved = _unheld(placed, resolved)
    return resolved, placed, replace(trading, moves=resolved.moves)


def _unheld(diff: DiffTree, resolved: pools.Resolved) -> pools.Resolved:
    """`resolved` without the relocations out of an (account, asset) whose wallets all hold once placed
    (a difference within the band): a held wallet trades nothing, so none of it moves (it would be bought
    back where it left)."""
    if not resolved.moves:
        return resolved
    tree = diff.tree
    n_assets = len(diff.asset_names)
    wallets = np.flatnonzero(tree.wallet & (tree.account_of >= 0) & (diff.asset_id >= 0))
    trading = wallets[diff.operation[wallets] != HOLD]
    active = tree.account_of[trading] * n_assets + diff.asset_id[trading]
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    keys = np.array([move.source * n_assets + ids[move.asset] for move in resolved.moves], dtype=np.int64)
    kept = _hit(keys, active)
    if kept.all():
        return resolved
    return replace(
        resolved, moves=tuple(m for m, keep in zip(resolved.moves, kept.tolist(), strict=True) if keep)
    )


# -- pools: their decisions put into the diff tree --------------------------------------------------------


def _place(
    diff: DiffTree,
    resolved: pools.Resolved,
    pool_node: IntArray | None = None,
    member: IntArray | None = None,
) -> DiffTree:
    """The diff with each pool's wallets desired as the pool decided; an account the pool holds an asset
    in (or sends one to) without a wallet of it gets an empty one (the diff is made again with it).
    `pool_node`, `member`: the diff's pool nodes and each node's pool, when known (`pools.Candidates`)."""
    tree = diff.tree
    if pool_node is None or member is None:
        pool_node = pools.pool_nodes(diff)
        member = pools.pool_of(diff, pool_node)
    cells, accounts = resolved.cells, resolved.accounts
    n_assets, size = len(diff.asset_names), len(tree)
    wallets = np.flatnonzero(tree.wallet & (member >= 0) & (tree.account_of >= 0))
    held = (member[wallets] * size + tree.account_of[wallets]) * n_assets + diff.asset_id[wallets]
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    moved_to = np.array([move.destination * n_assets + ids[move.asset] for move in resolved.moves], np.int64)
    # Wanted: the cells held or moved to, then each account's money; new where no wallet holds it yet,
    # each once (at its first place).
    cell = (resolved.desired > 0) | contains(moved_to, cells.account * n_assets + cells.asset)
    money = resolved.money > 0
    pool = np.concatenate((cells.pool[cell], accounts.pool[money]))
    account = np.concatenate((cells.account[cell], accounts.account[money]))
    asset = np.concatenate((cells.asset[cell], diff.account_quote[accounts.account[money]]))
    keys = (pool * size + account) * n_assets + asset
    new = np.flatnonzero(~contains(held, keys))
    new = new[np.sort(np.unique(keys[new], return_index=True)[1])]
    if not new.size:
        return with_desired(diff, _desired(diff, resolved, member, wallets, pool_node))
    parent = np.where(member[account[new]] == pool[new], account[new], pool_node[pool[new]])
    names = [diff.asset_names[asset_id] for asset_id in asset[new].tolist()]
    lower = [name.lower() for name in names]
    additions = list(
        zip(tree.real_index[parent].tolist(), _free_names(tree, parent, lower), names, strict=True)
    )
    delta = float(diff.desired_value[0] - diff.current_value[0])
    before = diff
    diff = diff_again(
        diff, with_wallets(tree.real, additions), invest=max(delta, 0.0), withdraw=max(-delta, 0.0)
    )
    if before.buy_only:
        diff = _kept_desired(before, diff)
    tree = diff.tree
    pool_node = pools.pool_nodes(diff)
    member = pools.pool_of(diff, pool_node)
    wallets = np.flatnonzero(tree.wallet & (member >= 0) & (tree.account_of >= 0))
    return with_desired(diff, _desired(diff, resolved, member, wallets, pool_node))


def _kept_desired(before: DiffTree, after: DiffTree) -> DiffTree:
    """`after` (the diff made again with new wallets) with the desired values of `before` on the nodes it
    had (the new wallets desired 0 until the pools place them): a buy-only diff stays one outside its
    pools, where a diff made again would sell."""
    old, new = before.tree, after.tree
    by_real = np.full(len(old.real), -1, dtype=np.int64)
    by_target = np.full(len(old.target), -1, dtype=np.int64)
    by_real[old.real_index[old.real_index >= 0]] = np.flatnonzero(old.real_index >= 0)
    by_target[old.target_index[old.target_index >= 0]] = np.flatnonzero(old.target_index >= 0)
    real = new.real_index < len(old.real)
    was = np.where(
        new.real_index >= 0,
        by_real[np.where(real, new.real_index, 0)],
        by_target[np.maximum(new.target_index, 0)],
    )
    was = np.where((new.real_index >= 0) & ~real, -1, was)
    desired = np.where(was >= 0, before.desired_value[np.maximum(was, 0)], 0.0)
    return replace(after, desired_value=desired, buy_only=True)


def _free_names(tree: UnionTree, parent: IntArray, names: list[str]) -> list[str]:
    """Each new wallet's name under its parent: `names`, or with ``-2``, ``-3``, ... where taken (by a
    child of the parent, or by a wallet added there before it)."""
    # Most names are free: none of the parent's children has it, and no other wallet added there.
    vocabulary = tree.name_codes
    index = {name: code for code, name in enumerate(vocabulary.vocabulary)}
    codes = np.array([index.get(name, -1) for name in names], dtype=np.int64)
    size = len(vocabulary.vocabulary) + 1
    children = np.flatnonzero(contains(parent, tree.parent))
    held = tree.parent[children] * size + vocabulary.ids[children]
    clash = (codes >= 0) & contains(held, parent * size + codes)
    # Each (parent, name) once among the added: ids of the few distinct names, no tuple per wallet.
    distinct = {name: i for i, name in enumerate(dict.fromkeys(names))}
    pairs = parent * len(distinct) + np.fromiter(map(distinct.__getitem__, names), np.int64, len(names))
    if not clash.any() and unique_keys(pairs).size == len(names):
        return names
    taken = set(
        zip(tree.parent[children].tolist(), [tree.names[child] for child in children.tolist()], strict=True)
    )
    free: list[str] = []
    for node, name in zip(parent.tolist(), names, strict=True):
        chosen = name
        suffix = 2
        while (node, chosen) in taken:
            chosen = f"{name}-{suffix}"
            suffix += 1
        taken.add((node, chosen))
        free.append(chosen)
    return free


def _desired(
    diff: DiffTree, resolved: pools.Resolved, member: IntArray, wallets: IntArray, pool_node: IntArray
) -> FloatArray:
    """The desired values: the pools' wallets as decided (a cell's amount shared over its wallets in
    proportion to what each holds), the nodes inside a pool (`member`; `pool_node`: the pools') their
    wallets' sums, the rest as they were."""
    tree = diff.tree
    n_assets = len(diff.asset_names)
    cells, accounts = resolved.cells, resolved.accounts
    desired = diff.desired_value.copy()
    cash = diff.cash[wallets]
    keys = np.where(
        cash,
        -1 - (member[wallets] * len(tree) + tree.account_of[wallets]),
        (member[wallets] * len(tree) + tree.account_of[wallets]) * n_assets + diff.asset_id[wallets],
    )
    value = np.concatenate((resolved.desired * cells.price, resolved.money))
    decided = np.concatenate(
        (
            (cells.pool * len(tree) + cells.account) * n_assets + cells.asset,
            -1 - (accounts.pool * len(tree) + accounts.account),
        )
    )
    order = np.argsort(decided)
    at = order[np.minimum(np.searchsorted(decided[order], keys), max(decided.size - 1, 0))]
    found = decided[at] == keys if decided.size else np.zeros(keys.size, np.bool_)
    held = diff.free_amount[wallets] * diff.price[wallets]
    groups, group_of = np.unique(keys, return_inverse=True)
    total = np.bincount(group_of, weights=held, minlength=groups.size)
    first = np.zeros(groups.size, dtype=np.int64)
    first[group_of[::-1]] = np.arange(group_of.size)[::-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(
            total[group_of] > 0,
            held / total[group_of],
            (np.arange(group_of.size) == first[group_of]).astype(np.float64),
        )
    desired[wallets] = np.where(found, np.maximum(value[at], 0.0) * share, 0.0)
    inside = (member >= 0) & ~tree.wallet
    inside[pool_node] = False
    if inside.any():
        rolled = roll_up(tree, np.where(tree.wallet, desired, 0.0))
        desired[inside] = rolled[inside]
    return desired


# -- round trips made moves ---------------------------------------------------------------------------


def round_trips(diff: DiffTree, trading: Trading) -> tuple[Move, ...]:
    """The moves of the plan: the pools' relocations, less what round trips now move from their sources,
    then the moves that replace a sell in one account and a buy of the same asset in another.

    Per asset, sellers and buyers are matched largest first; a pair moves when the network's withdrawal
    fee (the cheapest open network its amount clears) is below the round trip's fees and spreads. A
    seller passes over a buyer it cannot move to (no open way, no gain, a fee not below it) and goes on
    with the next, the buyer left for the sellers after it (a seller passes over, with that buyer, the
    rest of its account kind: same exchange and quote, the same rates and ways). What a pool relocates
    to its best bid is a seller too, at that bid, moved from where it sits: a buyer elsewhere (a sibling
    pool's account) gets it straight from the relocation's source, and the relocation moves the rest."""
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
    relocations = trading.moves
    if relocations:  # each relocation's source trades what it sends less; the hub's sale is a seller below
        shifted = np.array([node * n_assets + ids[m.asset] for m in relocations for node in (m.source,)])
        found, at = _lookup(unique, np.arange(unique.size), shifted)
        np.add.at(net, at[found], np.array([float(m.amount) for m in relocations])[found])
    account, asset = unique // n_assets, unique % n_assets
    ours = ~contains(_nodes(trading.banks), account)
    # Sellers (the accounts', then the relocations': selling at the hub, sent from the source) and buyers
    # of each asset, largest first (then by account: accounts rank in node order).
    own = np.flatnonzero(ours & (net < 0))
    moved_asset = np.array([ids[m.asset] for m in relocations], dtype=np.int64)
    seller_asset = np.concatenate((asset[own], moved_asset))
    seller_size = np.concatenate((-net[own], np.array([float(m.amount) for m in relocations])))
    origin = np.concatenate((account[own], np.array([m.source for m in relocations], dtype=np.int64)))
    rated = np.concatenate((account[own], np.array([m.destination for m in relocations], dtype=np.int64)))
    relocation = np.concatenate(
        (np.full(own.size, -1, np.int64), np.arange(len(relocations), dtype=np.int64))
    )
    sellers = np.lexsort((relocation, origin, -seller_size, seller_asset))
    buyers = np.flatnonzero(ours & (net > 0))
    buyers = buyers[np.lexsort((account[buyers], -net[buyers], asset[buyers]))]
    rates, kind = _Rates(diff, trading), _account_kinds(diff, trading)
    sell_rate, sell_known = _account_rates(rates, kind, rated[sellers], seller_asset[sellers], sell=True)
    buy_rate, buy_known = _account_rates(rates, kind, account[buyers], asset[buyers], sell=False)
    seller_asset, buyer_asset = seller_asset[sellers], asset[buyers]
    seller_bounds = np.searchsorted(seller_asset, np.arange(n_assets + 1))
    buyer_bounds = np.searchsorted(buyer_asset, np.arange(n_assets + 1))
    moves: list[Move] = []
    sent = [Decimal(0)] * len(relocations)  # per relocation, what round trips take from its source
    tolerance = VALUE_EPSILON * diff.scale
    # Read once as lists (tens of thousands of sellers and buyers, each looked at in a Python loop).
    exchange_of = {node: exchange for node, (exchange, _) in tree.accounts.items()}
    seller_origin, seller_left = origin[sellers].tolist(), seller_size[sellers].tolist()
    seller_relocation = relocation[sellers].tolist()
    buyer_account = account[buyers]
    buyer_node, buyer_left = buyer_account.tolist(), net[buyers].tolist()
    buyer_kind = kind[buyer_account].tolist()
    sell_list, sold_list = sell_rate.tolist(), sell_known.tolist()
    buy_list, bought_list = buy_rate.tolist(), buy_known.tolist()
    for asset_id in np.intersect1d(
        unique_keys(seller_asset), unique_keys(buyer_asset), assume_unique=True
    ).tolist():
        price = float(diff.asset_price[asset_id])
        name = diff.asset_names[asset_id]
        s0, s1 = int(seller_bounds[asset_id]), int(seller_bounds[asset_id + 1])
        b0, b1 = int(buyer_bounds[asset_id]), int(buyer_bounds[asset_id + 1])
        source_of, left_s = seller_origin[s0:s1], seller_left[s0:s1]
        relocated = seller_relocation[s0:s1]
        destination_of, left_b = buyer_node[b0:b1], buyer_left[b0:b1]
        sell, sold = sell_list[s0:s1], sold_list[s0:s1]
        buy, bought = buy_list[b0:b1], bought_list[b0:b1]
        # The buyers of each account kind in order: a kind's first open buyer is its only candidate.
        buckets: dict[int, list[int]] = {}
        for j, k in enumerate(buyer_kind[b0:b1]):
            buckets.setdefault(k, []).append(j)
        head = dict.fromkeys(buckets, 0)
        kinds = list(buckets.items())
        # Per pair of exchanges, the cheapest open way's fee (as a float; None: no way), found once; and
        # its open ways with their fees as floats (the exact amount's way, `Networks.choose`).
        first_fee: dict[tuple[str, str], float | None] = {}
        open_ways: dict[tuple[str, str], tuple[tuple[Way, float], ...]] = {}
        for i in range(len(left_s)):
            passed: set[int] = set()
            while left_s[i] * price > tolerance:
                # The open kinds' heads: the first buyer among them (buyers' positions are distinct).
                j = k = -1
                for kind_id, members in kinds:
                    first = head[kind_id]
                    if first < len(members) and kind_id not in passed and (j < 0 or members[first] < j):
                        j, k = members[first], kind_id
                if j < 0:
                    break
                amount = min(left_s[i], left_b[j])
                move = None
                source, destination = source_of[i], destination_of[j]
                if sold[i] and bought[j] and source != destination:
                    gain = (1 - sell[i]) + (buy[j] - 1)
                    exchanges = (exchange_of[source], exchange_of[destination])
                    if exchanges not in first_fee:
                        first_fee[exchanges] = _first_fee(networks, exchanges, name)
                        ways = networks.ways(*exchanges, name)
                        open_ways[exchanges] = (
                            () if isinstance(ways, str) else tuple((way, float(way.fee)) for way in ways)
                        )
                    fee = first_fee[exchanges]
                    # No way is cheaper than the first: a round trip worth less than its fee (with room for
                    # the amount's rounding to 12 places and float noise) is never made a move, and needs
                    # no exact amount.
                    if fee is not None and gain > 0 and fee < (amount + ROUNDING) * (1 + FLOAT_ROOM) * gain:
                        move = _round_trip(
                            open_ways[exchanges], name, price, source, destination, amount, gain
                        )
                if move is None:
                    passed.add(k)
                    continue
                moves.append(move)
                if relocated[i] >= 0:
                    sent[relocated[i]] += move.amount
                left_s[i] -= amount
                left_b[j] -= amount
                if left_b[j] * price <= tolerance:
                    head[k] += 1
    return _relocated_rest(diff, trading, sent) + tuple(moves)


def _relocated_rest(diff: DiffTree, trading: Trading, sent: list[Decimal]) -> tuple[Move, ...]:
    """The relocations less what round trips took from their sources (`sent`): a rest moves on the
    cheapest open way it clears when it still fetches more at the hub after the fee; else it is dropped
    (sold where it sits)."""
    networks = trading.networks
    assert networks is not None
    tree = diff.tree
    rates = _Rates(diff, trading)
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    kept: list[Move] = []
    for move, taken in zip(trading.moves, sent, strict=True):
        if not taken:
            kept.append(move)
            continue
        rest = move.amount - taken
        exchanges = (tree.accounts[move.source][0], tree.accounts[move.destination][0])
        way = networks.choose(*exchanges, move.asset, rest) if rest > 0 else NO_NETWORK
        if isinstance(way, str):
            continue
        here = rates.rate(move.source, ids[move.asset], sell=True)
        there = rates.rate(move.destination, ids[move.asset], sell=True)
        if (
            here is None
            or there is None
            or float(rest - way.fee) * there <= float(rest) * here * (1 + pools.RELOCATION_MARGIN)
        ):
            continue
        price = float(diff.prices.get(move.asset) or 0)
        kept.append(
            move._replace(amount=rest, fee=way.fee, network=way.network, saving=-float(way.fee) * price)
        )
    return tuple(kept)


def _account_kinds(diff: DiffTree, trading: Trading) -> IntArray:
    """Per account node, the first account of its (exchange, quote): few rates, many accounts, each
    account stands for its kind (a bank for none: it has no rate)."""
    kinds: dict[tuple[str, str], int] = {}
    kind = np.zeros(len(diff.tree), dtype=np.int64)
    for node, exchange_quote in diff.tree.accounts.items():
        if node not in trading.banks:
            kind[node] = kinds.setdefault(exchange_quote, node)
    return kind


def _account_rates(
    rates: _Rates, kind: IntArray, account: IntArray, asset: IntArray, sell: bool
) -> tuple[FloatArray, BoolArray]:
    """Per (account, asset) row, the net bid (`sell`) or gross ask of the account's cheapest route as a
    share of the reference price (`_Rates`), and whether there is one (`kind`: `_account_kinds`)."""
    n_assets = len(rates.diff.asset_names)
    combos = kind[account] * n_assets + asset
    unique, inverse = np.unique(combos, return_inverse=True)
    rate, known = np.full(unique.size, np.nan), np.zeros(unique.size, dtype=np.bool_)
    for i, combo in enumerate(unique.tolist()):
        found = rates.rate(combo // n_assets, combo % n_assets, sell=sell)
        if found is not None:
            rate[i], known[i] = found, True
    inverse = inverse.reshape(-1)
    return rate[inverse], known[inverse]


def _first_fee(networks: Networks, exchanges: tuple[str, str], name: str) -> float | None:
    """The fee of the cheapest open way between two exchanges for asset `name`, or None: no way."""
    ways = networks.ways(*exchanges, name)
    return None if isinstance(ways, str) else float(ways[0].fee)


def _round_trip(
    ways: tuple[tuple[Way, float], ...],
    name: str,
    price: float,
    source: int,
    destination: int,
    amount: float,
    gain: float,
) -> Move | None:
    """The move replacing `amount` sold at `source` and bought at `destination`, the round trip costing
    `gain` (net bid's and gross ask's distances from the reference, shares of it), or None where no
    network takes the exact amount or its fee is not strictly below the round trip's cost. `ways`: the
    open ways between the two exchanges, cheapest first, with their fees as floats (the first the exact
    amount clears is taken, as `Networks.choose` takes it)."""
    exact = default_steps_of(amount)
    if exact <= 0:
        return None
    for open_way, open_fee in ways:
        if exact >= open_way.min_amount and exact > open_way.fee:
            way, way_fee = open_way, open_fee
            break
    else:
        return None
    round_trip = float(exact) * price * gain
    fee = way_fee * price
    # Strictly below: a fee equal to the round trip's cost but for the float products' noise (12 against
    # 12.000000000000011) saves nothing, and the round trip stays.
    if fee >= round_trip * (1 - FLOAT_ROOM):
        return None
    return Move(name, source, destination, exact, way.fee, way.network, "round_trip", round_trip - fee)


class _Rates:
    """The net bid and gross ask (shares of the reference price) of an account's cheapest route, and of
    the plain route (`Markets.route`: direct, else the alphabetically first intermediate)."""

    def __init__(self, diff: DiffTree, trading: Trading) -> None:
        self.diff = diff
        self.trading = trading
        self._cache: dict[tuple[str, str, int, bool, bool], float | None] = {}

    def rate(self, account: int, asset_id: int, sell: bool, plain: bool = False) -> float | None:
        if account in self.trading.banks:
            return None
        exchange, quote = self.diff.tree.accounts[account]
        return self.exchange_rate(exchange, quote, asset_id, sell, plain)

    def exchange_rate(
        self, exchange: str, quote: str, asset_id: int, sell: bool, plain: bool
    ) -> float | None:
        """As `rate`, for an account of `exchange` trading against `quote` (not a bank)."""
        key = (exchange, quote, asset_id, sell, plain)
        if key not in self._cache:
            self._cache[key] = self._rate(exchange, quote, asset_id, sell, plain)
        return self._cache[key]

    def _rate(self, exchange: str, quote: str, asset_id: int, sell: bool, plain: bool) -> float | None:
        diff, trading = self.diff, self.trading
        name = diff.asset_names[asset_id]
        route: Route | None = (
            trading.markets.route(exchange, name, quote)
            if plain
            else trading.route(exchange, name, quote, sell)
        )
        quote_price = diff.prices.get(quote)
        if route is None or quote_price is None:
            return None
        return (
            trading.prices.route_rate(exchange, route, sell)
            * float(quote_price)
            / float(diff.asset_price[asset_id])
        )


# -- notes: reasons, savings, costs ------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Priced:
    """Every order (in output order, `Plan.ordered`) with its amount, and the plan's estimated fees and
    spreads against the reference prices (valuation currency)."""

    account: IntArray
    market: IntArray
    sell: BoolArray
    group: IntArray
    markets: list[Market]
    amount: FloatArray
    fees: float
    spread: float
    withdrawal_fees: float

    @property
    def total(self) -> float:
        """As `Notes.total`."""
        return self.fees + self.spread + self.withdrawal_fees


def _priced(plan: Plan, groups: _Groups, flows: Flows, trading: Trading) -> _Priced:
    diff = plan.diff
    account, market, sell, steps, group, markets = plan.ordered()
    n = len(account)
    if not n:
        empty = np.zeros(0)
        return _Priced(account, market, sell, group, markets, empty, 0.0, 0.0, flows.withdrawal_fees)
    step = np.array([float(m.amount_step) for m in markets])
    fee_rate = np.array([float(m.fee_rate) for m in markets])
    # A few (venue, market, side) prices, many orders.
    keys = (groups.account_exchange[account] * len(markets) + market) * 2 + sell
    unique, inverse = np.unique(keys, return_inverse=True)
    unit = np.array(
        [
            trading.prices.price(
                groups.exchanges[key // 2 // len(markets)], markets[key // 2 % len(markets)], bool(key % 2)
            )
            for key in unique.tolist()
        ],
        dtype=np.float64,
    )
    prices = unit[inverse.reshape(-1)]
    ref_base = np.array([float(diff.prices.get(m.base) or 0) for m in markets])[market]
    ref_quote = np.array([float(diff.prices.get(m.quote) or 0) for m in markets])[market]
    amount = steps * step[market]
    traded = amount * prices * ref_quote
    fees = traded * fee_rate[market]
    spread = np.where(sell, amount * ref_base - traded, traded - amount * ref_base)
    return _Priced(
        account,
        market,
        sell,
        group,
        markets,
        amount,
        float(fees.sum()),
        float(spread.sum()),
        flows.withdrawal_fees,
    )


def _notes(
    plan: Plan, priced: _Priced, groups: _Groups, flows: Flows, trading: Trading, pooled: _Pools
) -> Notes:
    """Per order its reason, saving and the transfer it waits for; per transfer its reason and saving."""
    diff = plan.diff
    tree = diff.tree
    n_assets = len(diff.asset_names)
    account, sell, group = priced.account, priced.sell, priced.group
    n = len(account)
    valid = group >= 0
    at = np.where(valid, group, 0)
    asset = np.where(valid, groups.asset[at], -1) if groups.size else np.full(n, -1, dtype=np.int64)
    key = account * n_assets + asset
    reason = np.where(
        valid & groups.routed[at] if groups.size else np.zeros(n, dtype=np.bool_),
        ORDER_REASONS.index(CHEAPEST_ROUTE),
        np.where(
            valid & sell & _member(pooled.best_sell, key),
            ORDER_REASONS.index(BEST_BID),
            np.where(valid & ~sell & _member(pooled.best_buy, key), ORDER_REASONS.index(BEST_ASK), 0),
        ),
    ).astype(np.int64)
    # The transfer an order waits for: the relocation bringing what it sells, the money paying its buy.
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    relocations = [i for i, move in enumerate(trading.moves) if move.kind == "relocation"]
    relocated_keys = np.array(
        [trading.moves[i].destination * n_assets + ids[trading.moves[i].asset] for i in relocations],
        dtype=np.int64,
    )
    first_relocated, first = np.unique(relocated_keys, return_index=True)
    found, relocation = _lookup(first_relocated, np.array(relocations, dtype=np.int64)[first], key)
    after = np.where(valid & sell & found, relocation, -1)
    first_in = np.full(len(tree), -1, dtype=np.int64)
    first_in[list(flows.first_in)] = list(flows.first_in.values())
    waits = (
        valid
        & ~sell
        & (flows.wanted[account] > flows.cash[account] * (1 + VALUE_EPSILON))
        & (first_in[account] >= 0)
    )
    after = np.where(waits, first_in[account], after).astype(np.int64)
    # A conversion waits for the transfer it converts (`CONVERTING`).
    converting = group <= CONVERTING
    after = np.where(converting, CONVERTING - group, after)
    reason = np.where(converting, ORDER_REASONS.index(CONVERSION), reason)
    saving = _savings(diff, priced, groups, trading, pooled, valid, asset, key)
    # The moves' transfers come first, one each; then the money.
    transfer_reason = [
        CHEAPER_THAN_ROUND_TRIP if move.kind == "round_trip" else TO_BEST_BID for move in trading.moves
    ]
    transfer_saving = [move.saving for move in trading.moves]
    buying = {
        tree.path(node) for node in set((pooled.best_buy // n_assets).tolist()) if node in tree.accounts
    }
    fee_value = _FeeValue(_PriceOf(diff.prices))
    for transfer in plan.transfers[len(trading.moves) :]:
        transfer_reason.append(TO_BEST_ASK if transfer.destination in buying else FUNDING)
        transfer_saving.append(-fee_value[transfer.asset, transfer.fee])
    return Notes(
        order_reason=reason,
        order_saving=saving,
        order_after=after,
        transfer_reason=tuple(transfer_reason),
        transfer_saving=tuple(transfer_saving),
        reasons=ORDER_REASONS,
        fees=priced.fees,
        spread=priced.spread,
        withdrawal_fees=priced.withdrawal_fees,
    )


def _savings(
    diff: DiffTree,
    priced: _Priced,
    groups: _Groups,
    trading: Trading,
    pooled: _Pools,
    valid: BoolArray,
    asset: IntArray,
    key: IntArray,
) -> FloatArray:
    """Per order, what its own leg (not a route's intermediate one) saves against the plain choice: the
    pool's plain net bid or gross ask where it decided one, else the account's plain route."""
    n_assets = len(diff.asset_names)
    account, sell, market = priced.account, priced.sell, priced.market
    saving = np.zeros(len(account))
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    base = np.array([ids.get(m.base, -1) for m in priced.markets], dtype=np.int64)
    own = np.flatnonzero(valid & (base[market] == asset)) if len(account) else np.zeros(0, np.int64)
    if not own.size:
        return saving
    account, sell, asset, key = account[own], sell[own], asset[own], key[own]
    rates = _Rates(diff, trading)
    combos = (diff.account_quote[account] * n_assets + asset) * 2 + sell
    exchange = groups.account_exchange[account]
    combos = exchange * (n_assets * n_assets * 2) + combos
    unique, inverse = np.unique(combos, return_inverse=True)
    inverse = inverse.reshape(-1)
    here, plain = np.full(unique.size, np.nan), np.full(unique.size, np.nan)
    here_known, plain_known = np.zeros(unique.size, np.bool_), np.zeros(unique.size, np.bool_)
    for i, combo in enumerate(unique.tolist()):
        venue, rest = divmod(combo, n_assets * n_assets * 2)
        quote, rest = divmod(rest, n_assets * 2)
        asset_id, side = divmod(rest, 2)
        for values, known, is_plain in ((here, here_known, False), (plain, plain_known, True)):
            rate = rates.exchange_rate(
                groups.exchanges[venue], diff.asset_names[quote], asset_id, side == 1, is_plain
            )
            if rate is not None:
                values[i], known[i] = rate, True
    bank = contains(_nodes(trading.banks), account)
    found, plain_bid = _lookup(pooled.plain_keys, pooled.plain_bid, key)
    plain_ask = _lookup(pooled.plain_keys, pooled.plain_ask, key)[1]
    decided = np.where(sell, plain_bid, plain_ask)
    fallback = ~found | ~np.isfinite(decided) | (decided == 0)
    plain_rate = np.where(fallback, plain[inverse], decided)
    known = here_known[inverse] & ~bank & np.where(fallback, plain_known[inverse], True)
    here_rate = here[inverse]
    with np.errstate(invalid="ignore", over="ignore"):
        unit = np.where(sell, here_rate - plain_rate, plain_rate - here_rate)
        value = priced.amount[own] * diff.asset_price[asset] * unit
    saving[own] = np.where(known, value, 0.0)
    return saving


def _lookup(keys: IntArray, values: npt.NDArray[G], query: IntArray) -> tuple[BoolArray, npt.NDArray[G]]:
    """Per `query` key, whether the sorted `keys` hold it, and its value there (any value where not)."""
    if not keys.size:
        return np.zeros(query.size, dtype=np.bool_), np.zeros(query.size, dtype=values.dtype)
    at = np.minimum(np.searchsorted(keys, query), keys.size - 1)
    return keys[at] == query, values[at]


def _hit(keys: IntArray, values: IntArray) -> BoolArray:
    """Per key among `keys` (a few, any order, repeats allowed), whether `values` (many) hold it: `contains
    (values, keys)` by a search of the values among the sorted keys, not a sort of the values."""
    ordered = np.sort(keys)
    if not ordered.size:
        return np.zeros(0, dtype=np.bool_)
    at = np.minimum(np.searchsorted(ordered, values), ordered.size - 1)
    found = np.zeros(ordered.size, dtype=np.bool_)
    found[at[ordered[at] == values]] = True
    hit: BoolArray = found[np.searchsorted(ordered, keys)]
    return hit


def _member(keys: IntArray, query: IntArray) -> BoolArray:
    return _lookup(keys, keys, query)[0]


def _nodes(nodes: frozenset[int]) -> IntArray:
    return np.fromiter(nodes, dtype=np.int64, count=len(nodes))
