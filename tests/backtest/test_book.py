"""The replay's book: the tree it hands the core after a fill is the tree its document parses to."""

from __future__ import annotations

import numpy as np

from rebal.core.backtest.book import Book
from rebal.core.tree import parse_tree

DOC = {
    "name": "p",
    "children": [
        {
            "name": "spot",
            "kind": "account",
            "exchange": "x",
            "quote": "USD",
            "children": [
                {"name": "usd", "asset": "USD", "amount": "1000"},
                {
                    "name": "btc",
                    "asset": "BTC",
                    "amount": "0.5",
                    "locks": [{"owner": "bot", "amount": "0.1"}],
                },
                {"name": "eth", "asset": "ETH", "amount": "0"},
            ],
        }
    ],
}


def test_new_amounts_read_as_the_document_would_parse() -> None:
    """After a fill the book's tree carries the new float amounts; each wallet's exact text (what the
    planner's exact sells read) is the shortest decimal of its float, as parsing the written document."""
    book = Book.of(DOC)
    book.tree()  # parsed once per shape
    book.amount[:] = [0.1 + 0.2, 1 / 3, -1e-18]  # float noise below zero reads as nothing
    book.changed()
    tree = book.tree()
    written = parse_tree(book.copy().doc, "real")
    assert list(tree.amount_text) == list(written.amount_text)
    assert tree.amount_text[2] == "0.30000000000000004"
    assert tree.exact_amount(3) == written.exact_amount(3)
    assert tree.amount_text[4] == "0"
    assert tree.amount_text[0:2] == [None, None]  # portfolios have no amount
    assert np.array_equal(tree.amount, written.amount)
    assert np.array_equal(tree.locked, written.locked)
