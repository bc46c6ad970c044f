"""Assembling the real tree from a layout and the venues' balances, with worked numbers."""

from __future__ import annotations

import copy
from decimal import Decimal

from rebal.core.assemble import OPEN_ORDERS, LayoutAccount, assemble_tree, layout_accounts, split_amount
from rebal.core.tree import parse_tree
from tests.support import Doc, account, folder, wallet

D = Decimal
SPOT = "alice/spot"


def layout(*children: Doc) -> Doc:
    return folder("alice", account("spot", *children, exchange="paper"), kind="user")


def wallets_of(doc: Doc) -> dict[str, Doc]:
    found: dict[str, Doc] = {}
    stack = [(doc, doc["name"])]
    while stack:
        node, path = stack.pop()
        if "asset" in node:
            found[path] = node
        for child in node.get("children", []):
            stack.append((child, f"{path}/{child['name']}"))
    return found


def test_split_in_proportion_to_layout_amounts() -> None:
    # 1.5 BTC held, layout 0.2 : 0.6 → 0.375 and 1.125.
    assert split_amount(D("1.5"), [D("0.2"), D("0.6")]) == [D("0.375"), D("1.125")]


def test_split_equally_when_layout_amounts_are_zero_and_exactly() -> None:
    parts = split_amount(D("1"), [D(0), D(0), D(0)])
    assert parts == [D("0.333333333333"), D("0.333333333333"), D("0.333333333334")]
    assert sum(parts) == D(1)


def test_split_keeps_a_finer_amount_exact() -> None:
    # 3e-14 is finer than SPLIT_QUANTUM: the shares are cut to the amount's own quantum, never lost.
    assert split_amount(D("0.00000000000003"), [D(1), D(1)]) == [D("1E-14"), D("2E-14")]
    assert split_amount(D(0), [D(1), D(2)]) == [D(0), D(0)]


def test_wallet_amounts_become_the_venue_amounts() -> None:
    doc = layout(
        folder(
            "crypto",
            wallet("btc", "BTC", "0.5", locks=[{"owner": "bot", "share": "20%"}]),
            wallet("eth", "ETH", "2"),
            kind="sector",
        ),
        folder("cash", wallet("usdt", "USDT", "5000"), kind="sector"),
    )
    result = assemble_tree(doc, {SPOT: {"BTC": D("0.75"), "ETH": D("1.25"), "USDT": D("1234.5")}})
    wallets = wallets_of(result)
    assert wallets["alice/spot/crypto/btc"] == {
        "name": "btc",
        "asset": "BTC",
        "amount": "0.75",
        "locks": [{"owner": "bot", "amount": "0.1"}],  # 20% of the layout's 0.5, pinned
    }
    assert wallets["alice/spot/crypto/eth"]["amount"] == "1.25"
    assert wallets["alice/spot/cash/usdt"]["amount"] == "1234.5"
    # Every other key stays: kinds, the account's quote and exchange.
    spot = result["children"][0]
    assert (spot["kind"], spot["quote"], spot["exchange"]) == ("account", "USDT", "paper")
    assert spot["children"][0]["kind"] == "sector"
    parse_tree(result, "real")


def test_same_asset_in_two_sectors_is_split_by_layout_amounts() -> None:
    doc = layout(
        folder("long", wallet("btc", "BTC", "1")),
        folder("bot", wallet("btc", "BTC", "3")),
    )
    wallets = wallets_of(assemble_tree(doc, {SPOT: {"BTC": D("2")}}))
    assert wallets["alice/spot/long/btc"]["amount"] == "0.5"
    assert wallets["alice/spot/bot/btc"]["amount"] == "1.5"


def test_a_wallet_the_venue_does_not_hold_becomes_zero() -> None:
    wallets = wallets_of(assemble_tree(layout(wallet("sol", "SOL", "10")), {SPOT: {}}))
    assert wallets["alice/spot/sol"]["amount"] == "0"


def test_an_unnamed_asset_becomes_a_new_wallet_under_the_account() -> None:
    doc = layout(wallet("btc", "BTC", "1"), folder("sol", wallet("x", "XYZ", "1")))
    result = assemble_tree(doc, {SPOT: {"BTC": D(1), "SOL": D("3"), "ETH": D("0.1"), "DOGE": D(0)}})
    spot = result["children"][0]
    # Sorted by asset; "sol" is taken by a sector, so the SOL wallet is "sol-2"; zero balances add nothing.
    assert spot["children"][2:] == [
        {"name": "eth", "asset": "ETH", "amount": "0.1"},
        {"name": "sol-2", "asset": "SOL", "amount": "3"},
    ]
    assert wallets_of(result)["alice/spot/sol/x"]["amount"] == "0"
    parse_tree(result, "real")


def test_fixed_locks_larger_than_the_new_amount_are_capped() -> None:
    doc = layout(
        wallet(
            "usdt",
            "USDT",
            "5000",
            locks=[
                {"owner": "a", "share": "0.5"},
                {"owner": "b", "amount": "300"},
                {"owner": "c", "amount": "1000"},
            ],
        )
    )
    result = assemble_tree(doc, {SPOT: {"USDT": D("3000")}})
    # "a" holds half of the layout's 5000 (2500, pinned); "b" keeps 300; "c" gets what is left: 200.
    assert wallets_of(result)["alice/spot/usdt"]["locks"] == [
        {"owner": "a", "amount": "2500"},
        {"owner": "b", "amount": "300"},
        {"owner": "c", "amount": "200"},
    ]
    parse_tree(result, "real")


def test_a_share_lock_keeps_its_amount_after_the_wallet_shrinks() -> None:
    # A bot holds 20% of a 0.5 BTC wallet: 0.1 BTC. A rebalance sold some of the free BTC (0.345 held
    # now): the bot still holds 0.1, not 20% of 0.345 (0.069), so its BTC is never planned as free.
    doc = layout(wallet("btc", "BTC", "0.5", locks=[{"owner": "arb-bot", "share": "0.2"}]))
    after = assemble_tree(doc, {SPOT: {"BTC": D("0.345")}})
    assert wallets_of(after)["alice/spot/btc"]["locks"] == [{"owner": "arb-bot", "amount": "0.1"}]
    tree = parse_tree(after, "real")
    [index] = [i for i in range(len(tree)) if tree.path(i) == "alice/spot/btc"]
    assert tree.exact_locked(index) == D("0.1")


def test_what_open_orders_lock_is_a_lock_of_its_own_never_free() -> None:
    # The venue holds 0.5 BTC: 0.3 free, 0.2 in open orders (ours or anyone's); a bot locks 0.1.
    doc = layout(wallet("btc", "BTC", "0.5", locks=[{"owner": "arb-bot", "amount": "0.1"}]))
    result = assemble_tree(
        doc, {SPOT: {"BTC": D("0.5"), "ETH": D("2")}}, {SPOT: {"BTC": D("0.2"), "ETH": D("1")}}
    )
    wallets = wallets_of(result)
    assert wallets["alice/spot/btc"] == {
        "name": "btc",
        "asset": "BTC",
        "amount": "0.5",
        "locks": [{"owner": OPEN_ORDERS, "amount": "0.2"}, {"owner": "arb-bot", "amount": "0.1"}],
    }
    assert wallets["alice/spot/eth"]["locks"] == [{"owner": OPEN_ORDERS, "amount": "1"}]
    tree = parse_tree(result, "real")
    [btc] = [i for i in range(len(tree)) if tree.path(i) == "alice/spot/btc"]
    assert tree.exact_amount(btc) - tree.exact_locked(btc) == D("0.2")  # free to plan with


def test_unreported_accounts_keep_the_layout_and_the_input_is_untouched() -> None:
    doc = folder(
        "alice",
        account("spot", wallet("btc", "BTC", "1"), exchange="paper"),
        account("other", wallet("eth", "ETH", "7"), exchange="elsewhere"),
    )
    before = copy.deepcopy(doc)
    result = assemble_tree(doc, {SPOT: {"BTC": D("0.25")}})
    assert doc == before
    wallets = wallets_of(result)
    assert wallets["alice/spot/btc"]["amount"] == "0.25"
    assert wallets["alice/other/eth"]["amount"] == "7"


def test_layout_accounts_name_their_exchange_and_sum_wallets_per_asset() -> None:
    doc = folder(
        "alice",
        folder(
            "paper",
            account(
                "spot", folder("a", wallet("btc", "BTC", "1")), wallet("btc2", "BTC", "0.5"), exchange=None
            ),
            kind="exchange",
        ),
        account("other", wallet("eth", "ETH", "7"), exchange="elsewhere"),
    )
    del doc["children"][0]["children"][0]["exchange"]
    assert layout_accounts(doc) == [
        LayoutAccount("alice/paper/spot", "paper", "USDT", {"BTC": D("1.5")}),
        LayoutAccount("alice/other", "elsewhere", "USDT", {"ETH": D("7")}),
    ]
