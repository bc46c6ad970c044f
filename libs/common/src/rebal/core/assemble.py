"""The real tree as the venues report it: a portfolio layout with the venues' amounts in its wallets.

The layout is a real-tree document (docs/formats.md) that says how a user thinks of their holdings
(sectors, strategies, locks); the venues say how much each account holds. `assemble_tree` puts the two
together, purely:

- every wallet of an account that the venues reported gets its share of the account's amount of its asset:
  wallets of one account holding the same asset split it in proportion to their layout amounts (equally
  when those are all zero), exactly, the last wallet in tree order taking the rounding remainder;
- an asset the account holds that none of its wallets names becomes a new wallet under the account, named
  after the asset in lower case;
- what the venue holds in open orders (`in_orders`: locked, not free) is a lock of its own on the
  wallets of the asset (owner `OPEN_ORDERS`, split like the amount): the planner never counts it as
  spendable, whoever's orders they are;
- every other key stays (kind, quote, exchange, locks). A lock given as a share of a wallet is pinned to
  that share of the wallet's LAYOUT amount (the amount written when the lock was set), so it keeps its
  meaning across rebalances (a share of what the venue holds now would shrink after every sell: 0.1 BTC
  of 0.5 would be 0.069 of 0.345); a wallet the layout gives no amount keeps its share. Fixed-amount
  locks are capped, in order, so that the locks never exceed the new amount, open orders first.
  Accounts the venues did not report keep their layout amounts.

So a snapshot's wallet says three things: its `amount` (free and in orders), what open orders lock
(`OPEN_ORDERS`), what its owners lock (their names); free is the amount less every lock.

An account of kind ``futures`` (`rebal.core.positions`) is filled the same way from its collateral (the
venue's margin balance, in its quote), and its ``positions`` are replaced by the venue's.

An account of kind ``bank`` has no venue to ask: `bank_holdings` says what it holds, its layout amounts
(the balances the operator stated) moved by the transfers confirmed since, and by what an unconfirmed
transfer out of it already brought to the receiving account (`landed`), plus what an unconfirmed
transfer into it from an exchange account has already left that account with (`in_transit`), and it is
filled the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from decimal import ROUND_DOWN, Decimal
from typing import Any

from rebal.core.numbers import dec_str, parse_decimal, parse_fraction
from rebal.core.positions import FUTURES
from rebal.core.tree import ACCOUNT, BANK, EXCHANGE, PATH_SEP

Doc = dict[str, Any]
# Shares of a split amount are cut to this quantum (or to the amount's own, when finer).
SPLIT_QUANTUM = Decimal("1e-12")
# The owner of the lock that stands for what the venue holds in open orders (a reserved owner name).
OPEN_ORDERS = "venue-open-orders"


@dataclass(frozen=True)
class LayoutAccount:
    """An account of a layout: its path (the venue account id), exchange and wallet amounts per asset."""

    path: str
    exchange: str | None
    quote: str | None
    amounts: Mapping[str, Decimal]
    futures: bool = False


def layout_accounts(layout: Doc) -> list[LayoutAccount]:
    """The layout's accounts in tree order; the exchange is the account's `exchange` field, else the
    name of its nearest ancestor of kind ``exchange``."""
    found: list[LayoutAccount] = []
    stack: list[tuple[Doc, str, str | None]] = [(layout, str(layout.get("name", "")), None)]
    while stack:
        node, path, exchange = stack.pop()
        if node.get("kind") == EXCHANGE:
            exchange = str(node.get("name"))
        if node.get("kind") in (ACCOUNT, FUTURES):
            futures = node.get("kind") == FUTURES
            found.append(
                LayoutAccount(
                    path, node.get("exchange", exchange), node.get("quote"), _amounts(node), futures
                )
            )
            continue
        stack.extend(
            (child, f"{path}{PATH_SEP}{child.get('name', '')}", exchange)
            for child in reversed(node.get("children") or [])
        )
    return found


def bank_accounts(layout: Doc) -> list[LayoutAccount]:
    """The layout's bank accounts (kind ``bank``) in tree order, with their wallets' amounts per asset."""
    found: list[LayoutAccount] = []
    stack: list[tuple[Doc, str]] = [(layout, str(layout.get("name", "")))]
    while stack:
        node, path = stack.pop()
        if node.get("kind") == BANK:
            found.append(LayoutAccount(path, None, node.get("quote"), _amounts(node)))
            continue
        stack.extend(
            (child, f"{path}{PATH_SEP}{child.get('name', '')}")
            for child in reversed(node.get("children") or [])
        )
    return found


@dataclass(frozen=True)
class BankBalances:
    """What the bank accounts hold (per path, per asset), and the wallets whose confirmed transfers took
    out more than they held (`overdrawn`: path, asset, by how much), shown at zero."""

    holdings: dict[str, dict[str, Decimal]]
    overdrawn: tuple[tuple[str, str, Decimal], ...] = ()


def bank_holdings(banks: Sequence[LayoutAccount], moved: Mapping[tuple[str, str], Decimal]) -> BankBalances:
    """Each bank account's amounts: its layout amount of each asset (the balance the operator stated)
    plus `moved`, per (path, asset), what the transfers confirmed since then brought in (what arrived)
    less what they took out (what left). Assets only transfers name are held too; paths that are not
    bank accounts of `banks` are not."""
    holdings: dict[str, dict[str, Decimal]] = {bank.path: dict(bank.amounts) for bank in banks}
    for (path, asset), change in sorted(moved.items()):
        held = holdings.get(path)
        if held is not None:
            held[asset] = held.get(asset, Decimal(0)) + change
    overdrawn = tuple(
        (path, asset, -amount)
        for path, held in holdings.items()
        for asset, amount in sorted(held.items())
        if amount < 0
    )
    for path, asset, _ in overdrawn:
        holdings[path][asset] = Decimal(0)
    return BankBalances(holdings, overdrawn)


def split_amount(total: Decimal, weights: Sequence[Decimal]) -> list[Decimal]:
    """`total` split in proportion to `weights` (equally if they sum to zero); the parts sum to `total`.

    Every part but the last is truncated to `SPLIT_QUANTUM`; the last takes the remainder.
    """
    if not weights:
        return []
    weight_sum = sum(weights, Decimal(0))
    parts = list(weights) if weight_sum > 0 else [Decimal(1)] * len(weights)
    whole = weight_sum if weight_sum > 0 else Decimal(len(weights))
    exponent = total.as_tuple().exponent
    quantum = min(SPLIT_QUANTUM, Decimal(1).scaleb(exponent)) if isinstance(exponent, int) else SPLIT_QUANTUM
    shares = [(total * part / whole).quantize(quantum, rounding=ROUND_DOWN) for part in parts[:-1]]
    shares.append(total - sum(shares, Decimal(0)))
    return shares


def assemble_tree(
    layout: Doc,
    holdings: Mapping[str, Mapping[str, Decimal]],
    in_orders: Mapping[str, Mapping[str, Decimal]] | None = None,
    positions: Mapping[str, list[Doc]] | None = None,
) -> Doc:
    """The layout with wallet amounts replaced by the venues' (free + locked) amounts per account path
    (a bank's: `bank_holdings`);
    `in_orders`, per account path, what of each asset is locked in open orders at the venue; `positions`,
    per futures account path, the positions the venue holds (real-tree entries)."""
    tree = _copy(layout)
    stack: list[tuple[Doc, str]] = [(tree, str(tree.get("name", "")))]
    while stack:
        node, path = stack.pop()
        if node.get("kind") in (ACCOUNT, FUTURES, BANK) and path in holdings:
            _fill_account(node, holdings[path], (in_orders or {}).get(path, {}))
            if node.get("kind") == FUTURES and positions is not None and path in positions:
                node["positions"] = list(positions[path])
            continue
        stack.extend(
            (child, f"{path}{PATH_SEP}{child.get('name', '')}")
            for child in reversed(node.get("children") or [])
        )
    return tree


def _amounts(account: Doc) -> dict[str, Decimal]:
    """The account's layout amounts per asset (its wallets' summed)."""
    amounts: dict[str, Decimal] = {}
    for wallet in _wallets(account):
        asset = str(wallet["asset"])
        amounts[asset] = amounts.get(asset, Decimal(0)) + (parse_decimal(wallet.get("amount")) or Decimal(0))
    return amounts


def _copy(node: Doc) -> Doc:
    copied = dict(node)
    if isinstance(node.get("children"), list):
        copied["children"] = [_copy(child) for child in node["children"]]
    if isinstance(node.get("locks"), list):
        copied["locks"] = [dict(lock) if isinstance(lock, dict) else lock for lock in node["locks"]]
    return copied


def _wallets(account: Doc) -> list[Doc]:
    """The account's wallets in tree order (pre-order)."""
    found: list[Doc] = []
    stack = [account]
    while stack:
        node = stack.pop()
        if "asset" in node:
            found.append(node)
        else:
            stack.extend(reversed(node.get("children") or []))
    return found


def _fill_account(account: Doc, held: Mapping[str, Decimal], in_orders: Mapping[str, Decimal]) -> None:
    by_asset: dict[str, list[Doc]] = {}
    for wallet in _wallets(account):
        by_asset.setdefault(str(wallet["asset"]), []).append(wallet)
    for asset, wallets in by_asset.items():
        weights = [parse_decimal(wallet.get("amount")) or Decimal(0) for wallet in wallets]
        amounts = split_amount(held.get(asset, Decimal(0)), weights)
        ordered = split_amount(min(in_orders.get(asset, Decimal(0)), held.get(asset, Decimal(0))), amounts)
        for wallet, weight, amount, locked in zip(wallets, weights, amounts, ordered, strict=True):
            wallet["amount"] = dec_str(amount)
            locks = [_pinned(lock, weight) for lock in wallet.get("locks") or []]
            if locked > 0:
                locks.insert(0, {"owner": OPEN_ORDERS, "amount": dec_str(locked)})
            if locks:
                wallet["locks"] = locks
                _cap_locks(locks, amount)
    children = account.setdefault("children", [])
    taken = {child.get("name") for child in children}
    for asset in sorted(held.keys() - by_asset.keys()):
        if held[asset] == 0:
            continue
        name = _free_name(asset.lower(), taken)
        taken.add(name)
        new: Doc = {"name": name, "asset": asset, "amount": dec_str(held[asset])}
        locked = min(in_orders.get(asset, Decimal(0)), held[asset])
        if locked > 0:
            new["locks"] = [{"owner": OPEN_ORDERS, "amount": dec_str(locked)}]
        children.append(new)


def _pinned(lock: Any, layout_amount: Decimal) -> Any:
    """A share lock as the amount it stands for in the layout (kept as a share when the layout gives the
    wallet no amount); any other lock as it is."""
    if not isinstance(lock, dict) or "share" not in lock or layout_amount <= 0:
        return lock
    share = parse_fraction(lock["share"])
    if share is None:
        return lock  # invalid: the tree's parser names it
    pinned = {key: value for key, value in lock.items() if key != "share"}
    pinned["amount"] = dec_str(share * layout_amount)
    return pinned


def _cap_locks(locks: list[Any], amount: Decimal) -> None:
    """Cap fixed-amount locks, in order, so that all the wallet's locks fit in `amount`."""
    shared = sum(
        (
            (parse_fraction(lock.get("share")) or Decimal(0)) * amount
            for lock in locks
            if isinstance(lock, dict) and "share" in lock
        ),
        Decimal(0),
    )
    room = max(amount - shared, Decimal(0))
    for lock in locks:
        if not isinstance(lock, dict) or "amount" not in lock:
            continue
        wanted = parse_decimal(lock["amount"]) or Decimal(0)
        if wanted > room:
            lock["amount"] = dec_str(room)
            wanted = room
        room -= wanted


def _free_name(name: str, taken: set[Any]) -> str:
    if name not in taken:
        return name
    suffix = 2
    while f"{name}-{suffix}" in taken:
        suffix += 1
    return f"{name}-{suffix}"


@dataclass(frozen=True)
class OpenBankTask:
    """An operator's transfer out of a bank account not confirmed yet: `amount` of `asset` from the bank
    `from_account` to `to_account`, whose holding of `asset` was `baseline` when the task opened (None: an
    account no venue reports, such as another bank; moved since as `landed` and `after_confirmation` say),
    and `landed` of which the last snapshot saw at the receiving account."""

    asset: str
    from_account: str
    to_account: str
    amount: Decimal
    baseline: Decimal | None
    landed: Decimal = Decimal(0)


@dataclass(frozen=True)
class Landing:
    """What the open tasks took out of their banks (`moves`, per (bank path, asset), negative, for
    `bank_holdings`) and the tasks as the next snapshot starts from them (in the same order)."""

    moves: dict[tuple[str, str], Decimal]
    tasks: list[OpenBankTask]


def landed(tasks: Sequence[OpenBankTask], observed: Mapping[str, Mapping[str, Decimal]]) -> Landing:
    """What the open tasks (in the order they opened) already took out of their banks: per receiving
    account and asset (`observed`, per path and asset), how much its holding grew over the group's baseline
    (its first task's), shared out in that order, each task at most its amount. So money counts once: at
    the bank until it shows at the receiving account, there from then on (the account's buys wait for the
    task). Money that landed stays landed: a holding that fell below the baseline and what already landed
    (a conversion spending money confirmed meanwhile, a fee) lowers the baseline by the fall, so what lands
    next still counts (`after_confirmation` raises it by what a confirmation moves to the ledger)."""
    moves: dict[tuple[str, str], Decimal] = {}
    after = list(tasks)
    for key, members in _groups(tasks).items():
        account = observed.get(key[0])
        baseline = tasks[members[0]].baseline
        if account is None or baseline is None:
            continue
        held = account.get(key[1], Decimal(0))  # a venue leaves out what it holds none of
        before = sum((tasks[i].landed for i in members), Decimal(0))
        if held - baseline < before:
            baseline = held - before
        left = held - baseline
        for i in members:
            task = tasks[i]
            part = min(max(left, Decimal(0)), task.amount)
            left -= part
            after[i] = replace(task, baseline=baseline, landed=part)
            if part:
                side = (task.from_account, task.asset)
                moves[side] = moves.get(side, Decimal(0)) - part
    return Landing(moves, after)


def after_confirmation(tasks: Sequence[OpenBankTask], done: int, received: Decimal) -> list[OpenBankTask]:
    """The open tasks once `tasks[done]` is confirmed (`received` of it arrived; the ledger counts it from
    then on): the others into the same account and asset start from the group's baseline raised by
    `received`, and what the last snapshot saw landed of the group, less `received`, is theirs (in the
    order they opened), so the confirmed money is neither taken for theirs nor theirs for it."""
    task = tasks[done]
    members = _groups(tasks).get((task.to_account, task.asset), [])
    if done not in members:
        return [other for i, other in enumerate(tasks) if i != done]
    baseline = tasks[members[0]].baseline
    assert baseline is not None  # a group's tasks have one
    left = sum((tasks[i].landed for i in members), Decimal(0)) - received
    after = list(tasks)
    for i in members:
        part = min(max(left, Decimal(0)), tasks[i].amount) if i != done else Decimal(0)
        left -= part
        after[i] = replace(tasks[i], baseline=baseline + received, landed=part)
    return [other for i, other in enumerate(after) if i != done]


@dataclass(frozen=True)
class Withdrawn:
    """A withdrawal out of an exchange account as its venue lists it: `amount` left the account, `fee` of
    it was the venue's, `requested_at` when the venue took it (seconds since the epoch, whole: venues date
    withdrawals to the second); `failed` when it was cancelled or refused (the venue gave the amount
    back)."""

    withdrawal_id: str
    amount: Decimal
    fee: Decimal
    requested_at: int
    failed: bool = False


@dataclass(frozen=True)
class OutboundTask:
    """An operator's transfer from an exchange account into a bank: `amount` of `asset` from `from_account`
    to the bank `to_account`, opened at `opened_at` (seconds since the epoch, whole); `received` None while
    it is open (neither confirmed nor expired), else what the operator confirmed arrived (the ledger counts
    that)."""

    task_id: str
    asset: str
    from_account: str
    to_account: str
    amount: Decimal
    opened_at: int
    received: Decimal | None = None


@dataclass(frozen=True)
class Transit:
    """What is on its way to the banks (`moves`, per (bank path, asset), positive, for `bank_holdings`) and
    the withdrawals newly taken, or taken over, for a task (`claims`: (account, withdrawal id, task id))."""

    moves: dict[tuple[str, str], Decimal]
    claims: tuple[tuple[str, str, str], ...]


def in_transit(
    tasks: Sequence[OutboundTask],
    listed: Mapping[tuple[str, str], Sequence[Withdrawn]],
    claimed: Mapping[tuple[str, str], str],
) -> Transit:
    """The money on its way from exchange accounts to banks: what the withdrawals of the open tasks carry, as
    the venues list them now (`listed`, per (account, asset), oldest first). `tasks` (in the order they
    opened) are the open ones and the confirmed ones the open ones could have taken money of (confirmed
    since the first open one of their account and asset opened); `claimed` (per (account, withdrawal id):
    the task's id) what earlier snapshots gave to which task.

    A withdrawal given to a task not in `tasks` (expired, or confirmed before any open one opened) stays
    its own. The others, not failed, are given again at every snapshot, in order, each whole to the first
    task of its account and asset (in the order they opened) opened at or before it (to the second) whose
    withdrawals so far are below its amount: the operator sends the tasks' money in the order the tasks
    opened, so each withdrawal is its own task's, whether the task is still open or already confirmed (a
    withdrawal no snapshot saw before its confirmation). Then a confirmed task still short takes over the
    open tasks' withdrawals asked after it opened, the latest first (the operator sent a later task's
    money first: the ledger counts the confirmed money now, so it must not stay in transit too). An open
    task's withdrawals count at the bank what they carry, the amount less the venue's fee: the money left
    the exchange's balance when the venue took the withdrawal and reaches the ledger at the confirmation,
    so it counts once in between. Whoever holds which, the open tasks count at most what all the tasks'
    withdrawals carry less what the confirmed ones received (`_TransitGroup.counted`): money sent out of
    order may count short, never twice (but for a bank's fee on a confirmed transfer)."""
    open_ids = {task.task_id for task in tasks if task.received is None}
    claims: dict[tuple[str, str], str] = {}
    moves: dict[tuple[str, str], Decimal] = {}
    for (account, asset), withdrawals in sorted(listed.items()):
        group = _TransitGroup(
            [t for t in tasks if (t.from_account, t.asset) == (account, asset)],
            [w for w in withdrawals if not w.failed],
            {
                w.withdrawal_id: claimed[(account, w.withdrawal_id)]
                for w in withdrawals
                if (account, w.withdrawal_id) in claimed
            },
        )
        for withdrawal_id, task_id in group.settle().items():
            if claimed.get((account, withdrawal_id)) != task_id:
                claims[(account, withdrawal_id)] = task_id
        counted = group.counted()
        for t in group.tasks:
            if t.task_id in open_ids and counted[t.task_id]:
                side = (t.to_account, t.asset)
                moves[side] = moves.get(side, Decimal(0)) + counted[t.task_id]
    return Transit(moves, tuple((a, w, t) for (a, w), t in claims.items()))


class _TransitGroup:
    """`in_transit`'s work on one account and asset: its tasks, withdrawals (not failed), who holds each."""

    def __init__(
        self, tasks: Sequence[OutboundTask], live: Sequence[Withdrawn], claimed: Mapping[str, str]
    ) -> None:
        self.tasks = tasks
        given = {t.task_id for t in tasks}
        # Withdrawals of tasks not given stay theirs; the others are given again.
        self.live = [
            w for w in live if claimed.get(w.withdrawal_id, "") in given or w.withdrawal_id not in claimed
        ]
        self.owner: dict[str, str] = {}
        self.taken = {t.task_id: Decimal(0) for t in tasks}
        self.carried = {t.task_id: Decimal(0) for t in tasks}

    def settle(self) -> dict[str, str]:
        """Give each withdrawal, in order, to the first task with room opened before it; then let the
        confirmed tasks still short take over the open tasks' withdrawals, the latest first. Who holds
        which, by withdrawal id."""
        for w in self.live:
            first = next((t for t in self.tasks if _before(t, w) and self._short(t)), None)
            if first is not None:
                self._give(w, first.task_id)
        opened = {t.task_id for t in self.tasks if t.received is None}
        for confirmed in (t for t in self.tasks if t.received is not None):
            for w in reversed(self.live):
                if not self._short(confirmed):
                    break
                held = self.owner.get(w.withdrawal_id)
                if held in opened and _before(confirmed, w):
                    self._give(w, confirmed.task_id, held)
        return dict(self.owner)

    def counted(self) -> dict[str, Decimal]:
        """What each open task's withdrawals count in transit: what they carry, at most (the latest opened
        cut first) what all the tasks' withdrawals carry less what the confirmed ones received, so money
        the ledger counts is never in transit too, whoever holds which withdrawal."""
        carried = {t.task_id: self.carried[t.task_id] for t in self.tasks if t.received is None}
        ledger = sum((t.received or Decimal(0) for t in self.tasks if t.received is not None), Decimal(0))
        everything = sum(self.carried.values(), Decimal(0))
        over = sum(carried.values(), Decimal(0)) - max(everything - ledger, Decimal(0))
        for task_id in reversed(list(carried)):
            cut = min(max(over, Decimal(0)), carried[task_id])
            carried[task_id] -= cut
            over -= cut
        return carried

    def _short(self, task: OutboundTask) -> bool:
        return self.taken[task.task_id] < task.amount

    def _give(self, w: Withdrawn, to: str, since: str | None = None) -> None:
        if since is not None:
            self.taken[since] -= w.amount
            self.carried[since] -= w.amount - w.fee
        self.taken[to] += w.amount
        self.carried[to] += w.amount - w.fee
        self.owner[w.withdrawal_id] = to


def _before(task: OutboundTask, withdrawal: Withdrawn) -> bool:
    """Whether the task had opened when the venue took the withdrawal (to the second, as venues date it)."""
    return task.opened_at <= withdrawal.requested_at


def _groups(tasks: Sequence[OpenBankTask]) -> dict[tuple[str, str], list[int]]:
    """The tasks' indexes per (receiving account, asset), in order; tasks without a baseline left out."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, task in enumerate(tasks):
        if task.baseline is not None:
            groups.setdefault((task.to_account, task.asset), []).append(i)
    return groups
