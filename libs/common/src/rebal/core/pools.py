"""Pools: where the planner decides in which accounts a portfolio's assets are held.

A desired portfolio may say ``"pool": {"BTC": "50%", "USDT": "50%"}`` instead of weighting its children
(docs/formats.md): its value is to be held in these proportions, anywhere in the accounts below it. The
accounts' own quote (which they must share) is the pool's money; every other asset held below the pool
or named by it is a *cell* per (account, asset). Per pool and asset, the excess over the pool's target
is sold and the shortfall bought:

- *optimised*: sells where the bid net of fees (on the cheapest route) is highest, taking each account's
  free holding in turn; an account whose share must be sold moves it instead to the account of the
  pool where, after the network's fee, it fetches the most, when that is more than in place (`Move`,
  "relocation", only with a network file; an account that takes no deposit is passed over). Buys
  happen where the ask plus fees is lowest among the accounts the money can reach (one no other account
  can send money to buys there with its own only); the money follows (the plan's transfers). Where a
  network file makes moving the money dearer than it saves, the buys follow the money instead (in
  proportion to each account's, or, where no network moves it, each account's own at the lowest ask
  first);
- *plain* ("trade where the asset sits"): the excess is sold by every holder in proportion to what it
  holds, the shortfall bought by every account in proportion to the money it has (its cash and what its
  sells bring); nothing moves.

Per pool the candidate with the lower estimated cost (fees and spreads against the reference prices,
withdrawal fees of moves, one network fee per account money must be sent to) is taken. The money each
account ends with is the pool's money target shared in proportion to what its trades leave it, so money
moves only where buys need it (`variants`: in as few transfers as can be, and buys with each account's
own money where moving it is dear, which `rebal.core.where` plans too). All of it is columnar: a pool's
cells are rows of arrays, whatever the number of pools.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from decimal import Decimal

import numpy as np

from rebal.core.diff import DiffTree
from rebal.core.errors import InputError
from rebal.core.networks import Networks
from rebal.core.numbers import VALUE_EPSILON, amount_str, default_steps_of
from rebal.core.trading import Move, Trading
from rebal.core.tree import BoolArray, FloatArray, IntArray, contains, unique_keys

# Rates at which an asset cannot be sold (no route) or bought.
NO_SALE = 0.0
NO_PURCHASE = np.inf
# A relocation must fetch more than selling in place by this share, so float noise never moves an asset.
RELOCATION_MARGIN = 1e-9
# Relative slack of a float bound on a decimal computation (float noise is ~1e-16).
_SLACK = 1e-12


@dataclass(frozen=True, eq=False)
class Cells:
    """One row per (pool, account, asset): the pool (index), the account node, the asset id, the free
    amount held, and the net bid and gross ask as shares of the reference price (the route's effective
    rate: 0.997 fetches 99.7% of the reference value, 1.003 costs 100.3%)."""

    pool: IntArray
    account: IntArray
    asset: IntArray
    held: FloatArray
    bid: FloatArray
    ask: FloatArray
    price: FloatArray  # the asset's reference price


@dataclass(frozen=True, eq=False)
class Accounts:
    """One row per (pool, account): the pool, the account node, its quote (the pool's money) price, and
    the money it holds under the pool (value)."""

    pool: IntArray
    account: IntArray
    cash: FloatArray


@dataclass(frozen=True, eq=False)
class Resolved:
    """What the pools decided: per cell the desired free amount, per (pool, account) the desired money
    value, the moves, and what the notes need (per cell whether it is its pool's best place to sell or
    buy, and the plain choice's net bid and gross ask for its pool and asset)."""

    cells: Cells
    accounts: Accounts
    desired: FloatArray
    money: FloatArray
    moves: tuple[Move, ...]
    best_sell: BoolArray
    best_buy: BoolArray
    plain_bid: FloatArray
    plain_ask: FloatArray
    optimised: BoolArray  # per pool


def pool_nodes(diff: DiffTree) -> IntArray:
    """The union nodes holding a pool (in node order)."""
    tree = diff.tree
    pools = tree.target.pools
    if not pools:
        return np.zeros(0, dtype=np.int64)
    listed = np.fromiter(pools, dtype=np.int64, count=len(pools))
    nodes = np.flatnonzero(contains(listed, tree.target_index) & (tree.target_index >= 0))
    missing = nodes[tree.real_index[nodes] < 0]
    if missing.size:
        where = tree.path(int(missing[0]))
        raise InputError(where, "a pool needs the accounts it holds below it in the real tree", "target")
    return nodes


def pool_of(diff: DiffTree, pools: IntArray) -> IntArray:
    """Per node, the index of the pool it lies in (itself or its nearest ancestor holding one), or -1."""
    tree = diff.tree
    found = np.full(len(tree), -1, dtype=np.int64)
    found[pools] = np.arange(pools.size)
    for level in tree.levels[1:]:
        inherited = found[tree.parent[level]]
        found[level] = np.where(found[level] >= 0, found[level], inherited)
    return found


@dataclass(frozen=True, eq=False)
class Candidates:
    """Both candidates of every pool (see the module), worked out once: `resolve` takes one per pool."""

    cells: Cells
    accounts: Accounts
    optimised: _Candidate
    simple: _Candidate
    # The pool nodes (`pool_nodes`) and each node's pool (`pool_of`) of the diff: placing a candidate
    # (`rebal.core.where`) starts from them.
    nodes: IntArray | None = None
    member: IntArray | None = None
    # What `variants` works them out again from: each pool's value, the groups and the unbuyable parts.
    basis: tuple[FloatArray, tuple[IntArray, int, FloatArray, IntArray], FloatArray] | None = None


def candidates(diff: DiffTree, trading: Trading) -> Candidates:
    """The optimised and the plain candidate of every pool (see the module)."""
    pools = pool_nodes(diff)
    member = pool_of(diff, pools)
    accounts = _accounts(diff, pools, member)
    named, shares = _named(diff, pools)
    cells = _cells(diff, trading, member, accounts, pools.size, named)
    value = diff.desired_value[pools]
    target = _targets(diff, cells, value, named, shares)
    if diff.buy_only:
        target = _buy_only(diff, cells, accounts, pools, target, value)
    # Each cell's (pool, asset) group and what its group must sell or buy, its (pool, account) row:
    # the same for both candidates.
    groups = (*_excess(cells, target), _account_rows(accounts, cells))
    _refuse_unbuyable(diff, member, pools, cells, groups)
    unbuyable = _unbuyable(cells, groups)
    optimised = _optimised(diff, trading, cells, accounts, value, groups, unbuyable)
    simple = _plain(cells, accounts, value, groups, unbuyable)
    return Candidates(cells, accounts, optimised, simple, pools, member, (value, groups, unbuyable))


# The variants `variants` works out, as (own, fewest): buys with each account's own money where the money
# would move dear, the pools' money in as few transfers as can be, and both.
OWN_MONEY = (True, False)
FEWEST = (False, True)
BOTH = (True, True)


def variants(
    diff: DiffTree, trading: Trading, found: Candidates
) -> Iterator[tuple[tuple[bool, bool], Candidates]]:
    """With a network file, the candidates worked out again another way, one at a time (both ways first,
    then each alone), those that differ from `found` only (`where` plans them in turn, keeps the first
    whose plan costs less than today's, so no plan costs more than today's):

    - *own money*: where moving the money to the best ask costs more than it saves, each account buys with
      its own money at its lowest ask plus fees first (as where no network moves the money), not in
      proportion to the money, when that buys all the pool needs: a network moving money dear then never
      makes the buys dearer than no network;
    - *fewest*: where money must leave a pool or flow between its accounts, the account with the most
      sends first, the whole of it where it can (one withdrawal fee, not one per account), and what a
      pool gains goes to one account.
    """
    if trading.networks is None or found.basis is None:
        return
    value, groups, unbuyable = found.basis
    cells, accounts = found.cells, found.accounts
    for own, fewest in (BOTH, FEWEST, OWN_MONEY):
        optimised = _optimised(
            diff, trading, cells, accounts, value, groups, unbuyable, own=own, fewest=fewest
        )
        simple = _plain(cells, accounts, value, groups, unbuyable, fewest=True) if fewest else found.simple
        if _same(optimised, found.optimised) and (simple is found.simple or _same(simple, found.simple)):
            continue
        yield (own, fewest), replace(found, optimised=optimised, simple=simple)


def _same(one: _Candidate, other: _Candidate) -> bool:
    return (
        np.array_equal(one.desired, other.desired)
        and np.array_equal(one.money, other.money)
        and np.array_equal(one.cost, other.cost)
        and one.moves == other.moves
    )


def _refuse_unbuyable(
    diff: DiffTree,
    member: IntArray,
    pools: IntArray,
    cells: Cells,
    groups: tuple[IntArray, int, FloatArray, IntArray],
) -> None:
    """Refuse (`InputError`, source ``target``) a pool short of an asset that no wallet below it holds
    and none of its accounts can buy (no market path from the pool's money on their exchanges): a new
    position nothing can buy, refused as a plain target's is (`rebal.core.plan`), where the pool would
    sell its other assets for it and leave their value as money."""
    group, size, excess, _ = groups
    buyable = np.bincount(group, weights=np.isfinite(cells.ask), minlength=size) > 0
    short = np.flatnonzero((excess < 0) & ~buyable)
    if not short.size:
        return
    tree = diff.tree
    n_assets = len(diff.asset_names)
    wallets = np.flatnonzero(tree.wallet & (member >= 0) & (tree.real_index >= 0) & (diff.asset_id >= 0))
    listed = member[wallets] * n_assets + diff.asset_id[wallets]
    first = np.zeros(size, dtype=np.int64)
    first[group[::-1]] = np.arange(group.size)[::-1]
    keys = cells.pool[first[short]] * n_assets + cells.asset[first[short]]
    new = short[~contains(listed, keys)]
    if not new.size:
        return
    cell = int(first[new[0]])
    pool, asset = int(cells.pool[cell]), diff.asset_names[int(cells.asset[cell])]
    accounts = cells.account[cells.pool == pool].tolist()
    exchanges = ", ".join(sorted({tree.accounts[node][0] for node in accounts}))
    quote = tree.accounts[int(cells.account[cell])][1]
    raise InputError(
        tree.path(int(pools[pool])),
        f"no market path for {asset} from {quote} on {exchanges}: no account of the pool can ever buy it "
        f"(list a market for it, or leave it out of the pool)",
        "target",
    )


def _unbuyable(cells: Cells, groups: tuple[IntArray, int, FloatArray, IntArray]) -> FloatArray:
    """Per cell, its part of a shortfall none of its pool's accounts can buy (an asset they hold, no
    market path to it): desired where it is held (in proportion to the free amounts; all on the group's
    first cell where none is free), so the plan skips its buy `no_market` as for plain weights, and the
    money for it stays."""
    group, size, excess, _ = groups
    buyable = np.bincount(group, weights=np.isfinite(cells.ask), minlength=size) > 0
    short = (excess < 0) & ~buyable
    if not short.any():
        return np.zeros(cells.pool.size)
    held = np.bincount(group, weights=cells.held, minlength=size)
    first = np.zeros(size, dtype=np.int64)
    first[group[::-1]] = np.arange(group.size)[::-1]
    on_first = (np.arange(group.size) == first[group]).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(held[group] > 0, cells.held / held[group], on_first)
    return np.where(short[group], share * -excess[group], 0.0)


def resolve(
    diff: DiffTree, trading: Trading, plain: bool = False, found: Candidates | None = None
) -> Resolved:
    """Decide every pool's holdings per account (see the module); `plain` takes the plain candidate
    everywhere (the property tests' and the savings' reference). `found`: the candidates, when already
    worked out for the same diff and trading (a where plan resolves twice: optimised and plain)."""
    both = found if found is not None else candidates(diff, trading)
    cells, accounts, optimised, simple = both.cells, both.accounts, both.optimised, both.simple
    pools = int(optimised.cost.size)
    if plain:
        chosen = np.zeros(pools, dtype=np.bool_)
    else:
        chosen = optimised.cost < simple.cost * (1 - RELOCATION_MARGIN)
    take = chosen[cells.pool]
    keep_money = chosen[accounts.pool]
    moves = tuple(
        move for move, pool in zip(optimised.moves, optimised.move_pool, strict=True) if chosen[pool]
    )
    return Resolved(
        cells=cells,
        accounts=accounts,
        desired=np.where(take, optimised.desired, simple.desired),
        money=np.where(keep_money, optimised.money, simple.money),
        moves=moves,
        best_sell=take & optimised.best_sell,
        best_buy=take & optimised.best_buy,
        plain_bid=simple.plain_bid,
        plain_ask=simple.plain_ask,
        optimised=chosen,
    )


def _accounts(diff: DiffTree, pools: IntArray, member: IntArray) -> Accounts:
    """The (pool, account) rows: every account with a wallet under the pool; they must share a quote."""
    tree = diff.tree
    wallets = np.flatnonzero(tree.wallet & (member >= 0) & (tree.account_of >= 0))
    keys = unique_keys(member[wallets] * len(tree) + tree.account_of[wallets])
    pool, account = keys // len(tree), keys % len(tree)
    quote = diff.account_quote[account]
    if pool.size:
        starts = np.flatnonzero(np.r_[True, pool[1:] != pool[:-1]])
        mixed = np.minimum.reduceat(quote, starts) != np.maximum.reduceat(quote, starts)
        if mixed.any():
            p = int(pool[starts[np.argmax(mixed)]])
            names = sorted({diff.asset_names[int(q)] for q in quote[pool == p].tolist()})
            raise InputError(
                tree.path(int(pools[p])),
                f"the accounts of a pool share one quote (its money): these trade against {', '.join(names)}",
                "target",
            )
    missing = np.setdiff1d(np.arange(pools.size), unique_keys(pool), assume_unique=True)
    if missing.size:
        raise InputError(
            tree.path(int(pools[missing[0]])), "a pool needs an account with wallets below it", "target"
        )
    cash_wallets = wallets[diff.cash[wallets]]
    value = diff.free_amount[cash_wallets] * diff.price[cash_wallets]
    row = np.searchsorted(keys, member[cash_wallets] * len(tree) + tree.account_of[cash_wallets])
    cash = np.bincount(row, weights=value, minlength=keys.size).astype(np.float64)
    return Accounts(pool=pool, account=account, cash=cash)


def _named(diff: DiffTree, pools: IntArray) -> tuple[IntArray, FloatArray]:
    """What the pools name, in their order: the keys ``pool index * assets + asset id`` and the shares."""
    tree = diff.tree
    ids = {name: i for i, name in enumerate(diff.asset_names)}
    n_assets = len(diff.asset_names)
    # Thousands of pools, a few assets each: flattened once, the assets looked up in one pass.
    listed = [tree.target.pools[weights] for weights in tree.target_index[pools].tolist()]
    counts = np.fromiter(map(len, listed), dtype=np.int64, count=len(listed))
    pairs = [pair for weights in listed for pair in weights]
    found = [ids.get(asset, -1) for asset, _ in pairs]
    if -1 in found:
        at = found.index(-1)
        asset = pairs[at][0]
        node = int(pools[np.searchsorted(np.cumsum(counts), at, side="right")])
        raise InputError(
            f"prices.{asset}", f"no price for asset {asset} (in the pool at {tree.path(node)})", "prices"
        )
    index = np.repeat(np.arange(len(listed), dtype=np.int64), counts)
    keys = index * n_assets + np.array(found, dtype=np.int64)
    return keys, np.array([share for _, share in pairs], dtype=np.float64)


def _cells(
    diff: DiffTree, trading: Trading, member: IntArray, accounts: Accounts, pools: int, named: IntArray
) -> Cells:
    """Every (pool, account, asset) the pool may hold: its accounts times the assets it names (`named`:
    `_named`'s keys) or holds (but its money), with the free amounts held and the rates."""
    tree = diff.tree
    n_assets = len(diff.asset_names)
    wallets = np.flatnonzero(tree.wallet & (member >= 0) & (tree.account_of >= 0) & ~diff.cash)
    pairs = unique_keys(
        np.concatenate(
            (
                named,
                member[wallets] * n_assets + diff.asset_id[wallets],
            )
        )
    )
    pair_pool, pair_asset = pairs // n_assets, pairs % n_assets
    money = diff.account_quote[accounts.account]
    # Each pool's money asset is not a cell.
    pool_money = np.full(pools, -1, dtype=np.int64)
    pool_money[accounts.pool] = money
    keep = pair_asset != pool_money[pair_pool]
    pair_pool, pair_asset = pair_pool[keep], pair_asset[keep]
    # The product: each (pool, asset) with each account of its pool.
    starts = np.searchsorted(accounts.pool, np.arange(pools))
    counts = np.bincount(accounts.pool, minlength=pools)
    n = counts[pair_pool]
    row = np.repeat(np.arange(pair_pool.size), n)
    local = np.arange(row.size) - np.repeat(np.cumsum(n) - n, n)
    account_row = starts[pair_pool[row]] + local
    pool, asset, account = pair_pool[row], pair_asset[row], accounts.account[account_row]
    keys = (pool * len(tree) + account) * n_assets + asset
    order = np.argsort(keys, kind="stable")
    wallet_keys = (member[wallets] * len(tree) + tree.account_of[wallets]) * n_assets + diff.asset_id[wallets]
    at = order[np.searchsorted(keys[order], wallet_keys)]
    held = np.bincount(at, weights=diff.free_amount[wallets], minlength=keys.size).astype(np.float64)
    bid, ask = _rates(diff, trading, account, asset)
    return Cells(pool, account, asset, held, bid, ask, diff.asset_price[asset])


def _rates(
    diff: DiffTree, trading: Trading, account: IntArray, asset: IntArray
) -> tuple[FloatArray, FloatArray]:
    """Per cell the net bid and the gross ask of the cheapest routes, as shares of the reference price
    (per exchange, quote and asset: few); nothing trades in a bank account."""
    tree = diff.tree
    n_assets = len(diff.asset_names)
    exchanges = sorted({exchange for exchange, _ in tree.accounts.values()})
    exchange_id = {name: i for i, name in enumerate(exchanges)}
    account_exchange = np.zeros(len(tree), dtype=np.int64)
    banks = np.zeros(len(tree), dtype=np.bool_)
    for node, (exchange, _) in tree.accounts.items():
        account_exchange[node] = exchange_id[exchange]
    banks[tree.bank_accounts] = True
    keys = (account_exchange[account] * n_assets + diff.account_quote[account]) * n_assets + asset
    combos, inverse = np.unique(keys, return_inverse=True)
    sells, buys = np.full(combos.size, NO_SALE), np.full(combos.size, NO_PURCHASE)
    for i, key in enumerate(combos.tolist()):
        rest, asset_id = divmod(key, n_assets)
        exchange, quote_id = divmod(rest, n_assets)
        name, quote = diff.asset_names[asset_id], diff.asset_names[quote_id]
        scale = float(diff.asset_price[quote_id]) / float(diff.asset_price[asset_id])
        for sell in (True, False):
            route = trading.route(exchanges[exchange], name, quote, sell)
            if route is None:
                continue
            rate = trading.prices.route_rate(exchanges[exchange], route, sell) * scale
            if sell:
                sells[i] = rate
            else:
                buys[i] = rate
    bank = banks[account]
    return np.where(bank, NO_SALE, sells[inverse]), np.where(bank, NO_PURCHASE, buys[inverse])


def _targets(
    diff: DiffTree, cells: Cells, value: FloatArray, keys: IntArray, shares: FloatArray
) -> FloatArray:
    """Per cell, its pool's target amount of its asset (the same on every account row of the pool), from
    what the pools name (`_named`)."""
    n_assets = len(diff.asset_names)
    order = np.argsort(keys)
    keys, shares = keys[order], shares[order]
    wanted = cells.pool * n_assets + cells.asset
    at = np.minimum(np.searchsorted(keys, wanted), max(keys.size - 1, 0))
    share = (
        np.where((keys.size > 0) & (keys[at] == wanted), shares[at], 0.0)
        if keys.size
        else np.zeros(wanted.size)
    )
    return share * value[cells.pool] / cells.price


def _buy_only(
    diff: DiffTree, cells: Cells, accounts: Accounts, pools: IntArray, target: FloatArray, value: FloatArray
) -> FloatArray:
    """The targets of a buy-only rebalance: nothing below what is held (nothing sold), and the shortfalls
    bought only with the pool's free money above its money target (its money and what flows in), each in
    proportion to its size when the money does not cover them all."""
    group, size = _pair_groups(cells)
    n = int(size[0])
    held = np.bincount(group, weights=cells.held, minlength=n)
    first = np.zeros(n, dtype=np.int64)
    first[group[::-1]] = np.arange(group.size)[::-1]
    pool, price = cells.pool[first], cells.price[first]
    short = np.maximum(target[first] - held, 0.0) * price
    shortfall = np.bincount(pool, weights=short, minlength=pools.size)
    targets = np.bincount(pool, weights=target[first] * price, minlength=pools.size)
    cash = np.bincount(accounts.pool, weights=accounts.cash, minlength=pools.size)
    inflow = value - diff.current_value[pools]
    spendable = np.maximum(cash + inflow - (value - targets), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        factor = np.where(shortfall > 0, np.minimum(spendable / shortfall, 1.0), 0.0)
    wanted = held + factor[pool] * short / price
    return wanted[group]


@dataclass(frozen=True, eq=False)
class _Candidate:
    desired: FloatArray
    money: FloatArray
    cost: FloatArray  # per pool, estimated
    moves: list[Move]
    move_pool: list[int]
    best_sell: BoolArray
    best_buy: BoolArray
    plain_bid: FloatArray
    plain_ask: FloatArray


def _pair_groups(cells: Cells) -> tuple[IntArray, IntArray]:
    """Each cell's (pool, asset) group and the groups' count."""
    keys = cells.pool * (int(cells.asset.max(initial=0)) + 1) + cells.asset
    unique, group = np.unique(keys, return_inverse=True)
    return group.astype(np.int64), np.array([unique.size], dtype=np.int64)


def _excess(cells: Cells, target: FloatArray) -> tuple[IntArray, int, FloatArray]:
    group, size = _pair_groups(cells)
    total = np.bincount(group, weights=cells.held, minlength=int(size[0]))
    first = np.zeros(int(size[0]), dtype=np.int64)
    first[group[::-1]] = np.arange(group.size)[::-1]
    excess = total - target[first]
    tolerance = VALUE_EPSILON * np.maximum(total, target[first])
    return group, int(size[0]), np.where(np.abs(excess) > tolerance, excess, 0.0)


def _fill(
    group: IntArray, size: int, priority: FloatArray, room: FloatArray, wanted: FloatArray
) -> FloatArray:
    """Per cell, how much of its group's `wanted` it takes: cells by descending `priority` (then by
    position), each up to its `room`."""
    order = np.lexsort((np.arange(group.size), -priority, group))
    taken = np.zeros(group.size)
    if not group.size:
        return taken
    ordered, ordered_room = group[order], room[order]
    cum = np.cumsum(ordered_room)
    start = np.maximum.accumulate(
        np.where(np.r_[True, ordered[1:] != ordered[:-1]], np.arange(group.size), 0)
    )
    before = cum - ordered_room - (cum[start] - ordered_room[start])
    taken[order] = np.clip(wanted[ordered] - before, 0.0, ordered_room)
    return taken


def _money(
    accounts: Accounts, pools: int, cash_after: FloatArray, money_target: FloatArray, fewest: bool = False
) -> FloatArray:
    """The pool's money target shared over its accounts in proportion to what their trades leave them
    (equally where nothing is left anywhere); `fewest`: where money must flow, in as few transfers as can
    be (`_fewest`)."""
    positive = np.maximum(cash_after, 0.0)
    total = np.bincount(accounts.pool, weights=positive, minlength=pools).astype(np.float64)
    counts = np.bincount(accounts.pool, minlength=pools)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(
            total[accounts.pool] > 0,
            positive / total[accounts.pool],
            1.0 / np.maximum(counts[accounts.pool], 1),
        )
    shared = share * money_target[accounts.pool]
    if not fewest:
        return shared
    # Only where money must flow (more than float noise): elsewhere each keeps what it has, as shared.
    flows = np.abs(total - money_target) > VALUE_EPSILON * np.maximum(
        np.maximum(total, np.abs(money_target)), 1.0
    )
    if not flows.any():
        return shared
    return np.where(flows[accounts.pool], _fewest(accounts, positive, total, money_target), shared)


def _fewest(
    accounts: Accounts, positive: FloatArray, total: FloatArray, money_target: FloatArray
) -> FloatArray:
    """The pool's money target over its accounts in as few transfers as can be: each keeps what its
    trades leave it (`positive`; one they leave short keeps nothing: it receives what it lacks); what the
    pool must give up (to its short accounts or beyond it) comes from the account with the most left
    first, the whole of it where that one has it, then the next; what it gains goes to the account with
    the most (ties: the first in tree order)."""
    n = positive.size
    order = np.lexsort((np.arange(n), -positive, accounts.pool))
    pool = accounts.pool[order]
    held = positive[order]
    give = (total - money_target)[pool]
    first = np.r_[True, pool[1:] != pool[:-1]]
    # What the accounts before and after this one in its pool's order have.
    before = np.cumsum(held) - held
    before -= np.repeat(before[first], np.diff(np.r_[np.flatnonzero(first), n]))
    after = total[pool] - before - held
    taken = np.clip(give - before, 0.0, held)
    # The account where the giving ends, or the first where the pool gains, ends with the target less
    # what the others keep (the one account of a pool: its target exactly).
    rest = np.where(taken > 0, 0.0, held)
    rest = np.where((taken > 0) & (taken < held), money_target[pool] - after, rest)
    money = np.where(first & (give < 0), money_target[pool] - (total[pool] - held), rest)
    out = np.empty(n)
    out[order] = money
    return out


def _account_rows(accounts: Accounts, cells: Cells) -> IntArray:
    """Each cell's (pool, account) row."""
    size = int(max(accounts.account.max(initial=0), cells.account.max(initial=0))) + 1
    keys = accounts.pool * size + accounts.account
    return np.searchsorted(keys, cells.pool * size + cells.account).astype(np.int64)


def _optimised(
    diff: DiffTree,
    trading: Trading,
    cells: Cells,
    accounts: Accounts,
    value: FloatArray,
    groups: tuple[IntArray, int, FloatArray, IntArray],
    unbuyable: FloatArray,
    own: bool = False,
    fewest: bool = False,
) -> _Candidate:
    """The optimised candidate (see the module); `own` and `fewest`: `variants`."""
    pools = value.size
    group, size, excess, row = groups
    sellable = cells.bid > NO_SALE
    # Sells: the best net bid first, each holder up to its free amount (a holder with no route last).
    sold = _fill(group, size, np.where(sellable, cells.bid, -1.0), cells.held, np.maximum(excess, 0.0))
    # The best place to sell and to buy per (pool, asset), among accounts with a route.
    best_sell = _best(group, size, np.where(sellable, cells.bid, -np.inf))
    buyable = np.isfinite(cells.ask)
    best_buy = _best(group, size, np.where(buyable, -cells.ask, -np.inf))
    bought = np.where(best_buy, np.maximum(-excess, 0.0)[group], 0.0) + unbuyable
    # Relocations: a seller's share moved to the account of its pool where, after the network's fee, it
    # fetches the most (an account with a better bid that cannot receive it is passed over for the next).
    hub = np.full(size, -1, dtype=np.int64)
    hub[group[best_sell]] = np.flatnonzero(best_sell)
    moves: list[Move] = []
    move_pool: list[int] = []
    relocated = np.zeros(cells.pool.size)
    arriving = np.zeros(cells.pool.size)
    networks = trading.networks
    if networks is not None:
        tree = diff.tree
        candidates, hubs = _hub_pairs(cells, group, size, np.flatnonzero((sold > 0) & (hub[group] >= 0)))
        # Most sellers gain less at a hub than even the cheapest way's fee: dropped in bulk.
        may = _may_relocate(diff, networks, cells, sold, candidates, hubs)
        candidates, hubs = candidates[may], hubs[may]
        moved: list[int] = []
        to: list[int] = []
        amounts: list[float] = []
        arrived: list[float] = []
        # Per seller (its pairs are consecutive, the better bids first): the hub fetching the most.
        chosen: dict[int, tuple[int, Move, float]] = {}
        for cell, best, selling, best_bid, source, destination, asset_id, price in zip(
            candidates.tolist(),
            hubs.tolist(),
            sold[candidates].tolist(),
            cells.bid[hubs].tolist(),
            cells.account[candidates].tolist(),
            cells.account[hubs].tolist(),
            cells.asset[candidates].tolist(),
            cells.price[candidates].tolist(),
            strict=True,
        ):
            amount = default_steps_of(selling)
            asset = diff.asset_names[asset_id]
            way = networks.choose(tree.accounts[source][0], tree.accounts[destination][0], asset, amount)
            if isinstance(way, str):
                continue
            there = float(amount - way.fee) * best_bid
            if cell in chosen and there <= chosen[cell][2]:
                continue
            move = Move(
                asset,
                source,
                destination,
                amount,
                way.fee,
                way.network,
                "relocation",
                -float(way.fee) * price,
            )
            chosen[cell] = (best, move, there)
        for cell, (best, move, there) in chosen.items():
            here = float(move.amount) * float(cells.bid[cell])
            if there <= here * (1 + RELOCATION_MARGIN):
                continue
            moves.append(move)
            move_pool.append(int(cells.pool[cell]))
            moved.append(cell)
            to.append(best)
            amounts.append(float(move.amount))
            arrived.append(float(move.received))
        # Each seller moves once; a hub receives from several, summed in order.
        np.add.at(relocated, np.array(moved, dtype=np.int64), amounts)
        np.add.at(arriving, np.array(to, dtype=np.int64), arrived)
        # A hub that receives sells where the bid net of fees is best among the accounts that can receive.
        best_sell = best_sell | (arriving > 0)
    # Sales at the hub of what arrives bring money there; what leaves brings none where it left.
    proceeds = (sold - relocated) * cells.price + arriving * cells.price
    fees = np.array([float(m.fee) * float(diff.prices.get(m.asset) or 0) for m in moves])
    trade_cost = (
        _sum(cells.pool, (sold - relocated) * cells.price * (1 - cells.bid), pools)
        + _sum(cells.pool, arriving * cells.price * (1 - cells.bid), pools)
        + _sum(np.array(move_pool, dtype=np.int64), fees, pools)
    )

    if networks is not None:
        budget = accounts.cash + _by_row(row, proceeds, accounts)
        bought, best_buy = _reachable_buys(
            diff, networks, cells, accounts, (group, size, row), budget, np.maximum(-excess, 0.0), best_buy
        )
        bought = bought + unbuyable  # (groups none can buy: `_reachable_buys` buys nothing there)

    def settled(bought: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        desired = cells.held - sold + bought
        cash_after = accounts.cash + _by_row(row, proceeds - bought * cells.price, accounts)
        money_target = value - np.bincount(cells.pool, weights=desired * cells.price, minlength=pools)
        money = _money(accounts, pools, cash_after, money_target, fewest)
        cost = (
            trade_cost
            + _sum(cells.pool, bought * cells.price * _finite(cells.ask - 1), pools)
            + _money_fees(diff, trading, accounts, pools, cash_after, money)
        )
        return desired, money, cost

    desired, money, cost = settled(bought)
    if networks is not None:
        # Money that no network can move to the best ask: those pools buy where their money is, the lowest
        # ask plus fees first, each account with its own money and what its sells bring. Money that moves
        # at a fee above what buying at the best ask saves: the pools buy as the plain plan does, in
        # proportion to each account's money. Either way the sells stay at the best bid.
        budget = accounts.cash + _by_row(row, proceeds, accounts)
        shortfall = np.maximum(-excess, 0.0)
        stuck = ~np.isfinite(cost)
        if own:
            # Each account with its own money, the lowest ask first, in every pool where that buys all
            # it needs (elsewhere as before).
            mine = _local_buys(cells, group, row, budget, shortfall, np.ones(cells.pool.size, np.bool_))
            covered = np.bincount(group, weights=mine, minlength=size) >= shortfall * (1 - VALUE_EPSILON)
            short = np.bincount(cells.pool, weights=(~covered[group]).astype(np.float64), minlength=pools) > 0
            stuck = stuck | ~short
        local = (
            np.where(
                stuck[cells.pool],
                _local_buys(cells, group, row, budget, shortfall, stuck[cells.pool]),
                _shared_buys(cells, group, size, row, budget, shortfall),
            )
            + unbuyable
        )
        local_desired, local_money, local_cost = settled(local)
        better = local_cost < cost
        if better.any():
            take = better[cells.pool]
            bought = np.where(take, local, bought)
            best_buy = best_buy & ~(take & (bought <= 0))
            desired = np.where(take, local_desired, desired)
            money = np.where(better[accounts.pool], local_money, money)
            cost = np.where(better, local_cost, cost)
    return _Candidate(desired, money, cost, moves, move_pool, best_sell, best_buy, np.zeros(0), np.zeros(0))


def _reachable_buys(
    diff: DiffTree,
    networks: Networks,
    cells: Cells,
    accounts: Accounts,
    groups: tuple[IntArray, int, IntArray],
    budget: FloatArray,
    shortfall: FloatArray,
    best_buy: BoolArray,
) -> tuple[FloatArray, BoolArray]:
    """Per cell what it buys, and whether it buys at the best ask its pool's money can reach: the group's
    shortfall at its lowest ask, unless no other account of the pool can send that account money and
    its own `budget` (value) does not cover it; then, lowest ask plus fees first, such an account buys
    with its own money and the first account money can reach buys the rest. A group no reachable
    account completes buys as before, all at the lowest ask (its money cannot follow: `_money_fees`)."""
    group, size, row = groups
    bought = np.where(best_buy, shortfall[group], 0.0)
    best = np.flatnonzero(best_buy & (shortfall[group] > 0))
    unit = cells.price * cells.ask
    # Only an account its own money does not cover needs money sent: whether any can reach it.
    best = best[budget[row[best]] < shortfall[group[best]] * unit[best]]
    short = ~_receives(diff, networks, accounts, row[best])
    if not short.any():
        return bought, best_buy
    affected = contains(unique_keys(group[best[short]]), group)
    buyable = affected & np.isfinite(cells.ask)
    open_ = np.zeros(cells.pool.size, dtype=np.bool_)
    open_[buyable] = _receives(diff, networks, accounts, row[buyable])
    with np.errstate(divide="ignore", invalid="ignore"):
        own = np.where(unit > 0, np.maximum(budget[row], 0.0) / unit, np.inf)
    room = np.where(open_, np.inf, own)
    # The affected groups' buyable cells (few), the lowest ask first (then by position).
    order = np.flatnonzero(buyable)
    order = order[np.lexsort((order, cells.ask[order], group[order]))]
    filled = np.zeros(cells.pool.size)
    need = shortfall.copy()
    for cell, g, most in zip(order.tolist(), group[order].tolist(), room[order].tolist(), strict=True):
        take = min(need[g], most)
        if take > 0:
            filled[cell] = take
            need[g] -= take
    covered = np.bincount(group, weights=filled, minlength=size) >= shortfall * (1 - VALUE_EPSILON)
    take = affected & covered[group]
    # The lowest ask and the first the money reaches are the best asks; an account buying with money
    # that cannot leave it buys where it sits.
    return np.where(take, filled, bought), np.where(take, (filled > 0) & (best_buy | open_), best_buy)


def _receives(diff: DiffTree, networks: Networks, accounts: Accounts, rows: IntArray) -> BoolArray:
    """Per (pool, account) row among `rows`, whether another account of its pool can send it the pool's
    money on an open way (one of its own exchange always can: internal)."""
    tree = diff.tree
    if not rows.size:
        return np.zeros(0, dtype=np.bool_)
    exchanges = sorted({exchange for exchange, _ in tree.accounts.values()})
    exchange_id = {name: i for i, name in enumerate(exchanges)}
    venue = np.array([exchange_id[tree.accounts[node][0]] for node in accounts.account.tolist()], np.int64)
    n_pools = int(accounts.pool.max(initial=0)) + 1
    # Per pool, how many of its accounts are on each exchange (few exchanges, many pools).
    count = np.bincount(accounts.pool * len(exchanges) + venue, minlength=n_pools * len(exchanges))
    count = count.reshape(n_pools, len(exchanges))
    pool, own = accounts.pool[rows], venue[rows]
    others = count[pool] > 0
    others[np.arange(rows.size), own] = count[pool, own] > 1
    quote = diff.account_quote[accounts.account[rows]]
    # Per (other exchanges present, own exchange, quote): whether one of them has an open way in.
    combos = np.column_stack((others.astype(np.int64), own, quote))
    unique, inverse = np.unique(combos, axis=0, return_inverse=True)
    found = np.zeros(len(unique), dtype=np.bool_)
    for i, combo in enumerate(unique.tolist()):
        *present, into, quote_id = combo
        name = diff.asset_names[quote_id]
        found[i] = any(
            not isinstance(networks.ways(exchanges[out], exchanges[into], name), str)
            for out, here in enumerate(present)
            if here
        )
    return found[inverse.reshape(-1)]


def _hub_pairs(cells: Cells, group: IntArray, size: int, sellers: IntArray) -> tuple[IntArray, IntArray]:
    """Per seller among `sellers`, the cells of its group it might move its share to (a better net bid),
    as pairs: sellers in order, each one's hubs by descending bid (then by position)."""
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(size))
    counts = np.bincount(group, minlength=size)
    n = counts[group[sellers]]
    seller = np.repeat(sellers, n)
    local = np.arange(seller.size) - np.repeat(np.cumsum(n) - n, n)
    hub = order[starts[group[seller]] + local]
    keep = (cells.bid[hub] > NO_SALE) & ~(cells.bid[hub] <= cells.bid[seller] * (1 + RELOCATION_MARGIN))
    seller, hub = seller[keep], hub[keep]
    rank = np.repeat(np.arange(sellers.size), n)[keep]
    at = np.lexsort((hub, -cells.bid[hub], rank))
    return seller[at], hub[at]


def _may_relocate(
    diff: DiffTree, networks: Networks, cells: Cells, sold: FloatArray, candidates: IntArray, hubs: IntArray
) -> BoolArray:
    """Which `candidates` (cells selling `sold`) might fetch more at their `hubs` after the network's fee
    (`_optimised` decides exactly): not those with no open way, nor those for which even the cheapest
    way's fee, the amount taken at its largest and the bids' products at their float bounds (slack far
    above float noise), leaves the hub no better than selling in place."""
    tree = diff.tree
    if not candidates.size:
        return np.zeros(0, dtype=np.bool_)
    source, destination = cells.account[candidates], cells.account[hubs]
    nodes = unique_keys(np.concatenate((source, destination)))
    exchanges = sorted({tree.accounts[node][0] for node in nodes.tolist()})
    exchange_id = {name: i for i, name in enumerate(exchanges)}
    node_exchange = np.array([exchange_id[tree.accounts[node][0]] for node in nodes.tolist()], np.int64)
    n_assets, n_exchanges = len(diff.asset_names), len(exchanges)
    combo = (
        node_exchange[np.searchsorted(nodes, source)] * n_exchanges
        + node_exchange[np.searchsorted(nodes, destination)]
    ) * n_assets + cells.asset[candidates]
    unique, inverse = np.unique(combo, return_inverse=True)
    cheapest = np.full(unique.size, np.nan)
    for i, key in enumerate(unique.tolist()):
        pair, asset_id = divmod(key, n_assets)
        out, into = divmod(pair, n_exchanges)
        ways = networks.ways(exchanges[out], exchanges[into], diff.asset_names[asset_id])
        if not isinstance(ways, str):
            cheapest[i] = float(ways[0].fee)  # ways come cheapest first: a way chosen costs at least this
    fee = cheapest[inverse.reshape(-1)]
    selling = sold[candidates]
    # The amount moved is `selling` printed to 12 places and cut to whole satoshis (`default_steps_of`).
    with np.errstate(invalid="ignore"):
        there = (selling + 2e-12 - fee + _SLACK * (selling + fee)) * cells.bid[hubs]
        there += np.abs(there) * _SLACK
        here = np.maximum(selling - 1.1e-8 - _SLACK * selling, 0.0) * cells.bid[candidates]
        here -= np.abs(here) * _SLACK
        may: BoolArray = np.isfinite(fee) & ~(there <= here * (1 + RELOCATION_MARGIN))
    return may


def _buy_shares(cells: Cells, group: IntArray, size: int, row: IntArray, budget: FloatArray) -> FloatArray:
    """Per cell, its share of its group's buys: in proportion to its account's `budget` among the cells
    that can buy (equally where none has money), as `_plain` shares its buys."""
    buyable = np.isfinite(cells.ask)
    money = np.maximum(budget[row], 0.0) * buyable
    money_total = np.bincount(group, weights=money, minlength=size)
    fallback = buyable.astype(np.float64)
    fallback_total = np.bincount(group, weights=fallback, minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(
            money_total[group] > 0,
            money / money_total[group],
            np.where(fallback_total[group] > 0, fallback / fallback_total[group], 0.0),
        )


def _shared_buys(
    cells: Cells, group: IntArray, size: int, row: IntArray, budget: FloatArray, wanted: FloatArray
) -> FloatArray:
    """Per cell, its share (`_buy_shares`) of its group's `wanted` amount."""
    return _buy_shares(cells, group, size, row, budget) * wanted[group]


def _local_buys(
    cells: Cells, group: IntArray, row: IntArray, budget: FloatArray, wanted: FloatArray, chosen: BoolArray
) -> FloatArray:
    """Per cell of the `chosen` pools, what it buys of its group's `wanted` amount with its account's
    `budget` (value; shared by the account's cells, group by group): the lowest ask plus fees first (then
    by position), each account paying at its ask; what no budget covers stays unbought."""
    bought = np.zeros(cells.pool.size)
    left = np.maximum(budget, 0.0)
    buyable = np.flatnonzero(chosen & np.isfinite(cells.ask) & (wanted[group] > 0))
    order = buyable[np.lexsort((buyable, cells.ask[buyable], group[buyable]))]
    need = wanted.copy()
    for cell, g, account_row, unit in zip(
        order.tolist(),
        group[order].tolist(),
        row[order].tolist(),
        (cells.price[order] * cells.ask[order]).tolist(),
        strict=True,
    ):
        if need[g] <= 0 or left[account_row] <= 0 or unit <= 0:
            continue
        take = min(need[g], left[account_row] / unit)
        bought[cell] = take
        need[g] -= take
        left[account_row] -= take * unit
    return bought


def _plain(
    cells: Cells,
    accounts: Accounts,
    value: FloatArray,
    groups: tuple[IntArray, int, FloatArray, IntArray],
    unbuyable: FloatArray,
    fewest: bool = False,
) -> _Candidate:
    """Trade where the asset sits: holders sell in proportion to their holdings, accounts buy in
    proportion to their money (`fewest`: `variants`)."""
    pools = value.size
    group, size, excess, row = groups
    sellable = (cells.bid > NO_SALE) & (cells.held > 0)
    room = np.where(sellable, cells.held, 0.0)
    room_total = np.bincount(group, weights=room, minlength=size)
    # No holder can sell: in proportion to all holdings (the plan skips what has no market).
    room = np.where((room_total[group] > 0), room, cells.held)
    room_total = np.bincount(group, weights=room, minlength=size)
    with np.errstate(divide="ignore", invalid="ignore"):
        sold = np.where(room_total[group] > 0, room / room_total[group], 0.0) * np.maximum(excess, 0.0)[group]
    sold = np.minimum(sold, cells.held)
    cash_before = accounts.cash + _by_row(row, sold * cells.price, accounts)
    share = _buy_shares(cells, group, size, row, cash_before)
    bought = share * np.maximum(-excess, 0.0)[group] + unbuyable
    desired = cells.held - sold + bought
    cash_after = cash_before - _by_row(row, bought * cells.price, accounts)
    money_target = value - np.bincount(cells.pool, weights=desired * cells.price, minlength=pools)
    money_out = _money(accounts, pools, cash_after, money_target, fewest)
    cost = _sum(cells.pool, sold * cells.price * (1 - cells.bid), pools) + _sum(
        cells.pool, bought * cells.price * _finite(cells.ask - 1), pools
    )
    # The plain choice's rates per (pool, asset): holdings-weighted bid, money-weighted ask.
    with np.errstate(divide="ignore", invalid="ignore"):
        held_total = np.bincount(group, weights=room, minlength=size)
        plain_bid = np.bincount(group, weights=room * cells.bid, minlength=size) / held_total
        plain_ask = _sum(group, share * _finite(cells.ask), size)
    plain_bid = np.nan_to_num(plain_bid, nan=0.0).astype(np.float64)
    best = np.zeros(cells.pool.size, dtype=np.bool_)
    return _Candidate(desired, money_out, cost, [], [], best, best, plain_bid[group], plain_ask[group])


def _best(group: IntArray, size: int, score: FloatArray) -> BoolArray:
    """Per group, the first cell with the highest finite `score` (none where every score is -inf)."""
    if score.size and (group[1:] >= group[:-1]).all() and not np.isnan(score).any():
        # Cells in group order (as `_cells` makes them): each group's top by one reduction.
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        top = np.repeat(np.maximum.reduceat(score, starts), np.diff(np.r_[starts, score.size]))
        tops = np.flatnonzero(score == top)
        first = np.zeros(group.size, dtype=np.bool_)
        first[tops[np.r_[True, group[tops][1:] != group[tops][:-1]]]] = True
        return first & np.isfinite(score)
    order = np.lexsort((np.arange(group.size), -score, group))
    first = np.zeros(group.size, dtype=np.bool_)
    ordered = group[order]
    starts = np.r_[True, ordered[1:] != ordered[:-1]] if ordered.size else np.zeros(0, np.bool_)
    first[order[starts]] = True
    return first & np.isfinite(score)


def _by_row(row: IntArray, values: FloatArray, accounts: Accounts) -> FloatArray:
    return np.bincount(row, weights=values, minlength=accounts.pool.size).astype(np.float64)


def _sum(index: IntArray, weights: FloatArray, size: int) -> FloatArray:
    """Per index, the sum of `weights` (floats, `size` of them)."""
    return np.bincount(index, weights=weights, minlength=size).astype(np.float64)


def _finite(values: FloatArray) -> FloatArray:
    return np.where(np.isfinite(values), values, 0.0)


def _money_fees(
    diff: DiffTree,
    trading: Trading,
    accounts: Accounts,
    pools: int,
    cash_after: FloatArray,
    money: FloatArray,
) -> FloatArray:
    """The network fees of the money a pool's accounts must send each other: one per account whose buys
    cost more than it has (from the account with the most to spare), valued at the reference price."""
    fees = np.zeros(pools)
    networks = trading.networks
    if networks is None:
        return fees
    tree = diff.tree
    short = -cash_after
    rows = np.flatnonzero(short > VALUE_EPSILON * np.maximum(money, 1.0))
    if not rows.size:
        return fees
    # Per pool, the first row with the most to spare (as `np.argmax` over the pool's rows).
    spare = cash_after - money
    order = np.lexsort((np.arange(spare.size), -spare, accounts.pool))
    first = np.r_[True, accounts.pool[order][1:] != accounts.pool[order][:-1]]
    source_of = np.full(pools, -1, dtype=np.int64)
    source_of[accounts.pool[order][first]] = order[first]
    if np.isnan(spare).any():  # argmax takes the first NaN: the loop below as it would
        starts = np.searchsorted(accounts.pool, np.arange(pools + 1))
        for pool in range(pools):
            same = spare[starts[pool] : starts[pool + 1]]
            if same.size:
                source_of[pool] = starts[pool] + int(np.argmax(same))
    prices: dict[str, float] = {}  # per quote, looked up once (thousands of accounts, a few quotes)
    pool_of_row = accounts.pool[rows]
    # Summed as Python floats in row order (the same sums as numpy's scalar additions), each row's nodes
    # read at once (a numpy scalar per row cost more than the network's choice).
    summed = fees.tolist()
    for pool, missing, sender, receiver in zip(
        pool_of_row.tolist(),
        short[rows].tolist(),
        accounts.account[source_of[pool_of_row]].tolist(),
        accounts.account[rows].tolist(),
        strict=True,
    ):
        exchange, quote = tree.accounts[receiver]
        if quote not in prices:
            prices[quote] = float(diff.prices.get(quote) or 0)
        price = prices[quote]
        amount = Decimal(amount_str(missing / price)) if price > 0 else Decimal(0)
        way = networks.choose(tree.accounts[sender][0], exchange, quote, amount)
        summed[pool] += math.inf if isinstance(way, str) else float(way.fee) * price
    return np.array(summed, dtype=np.float64)
