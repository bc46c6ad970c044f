"""Diff trees, plans and trees as the documented JSON (docs/formats.md): `rebal plan --json`, the API's
diff, and what the CLI's renderer (`rebal_cli.render`) draws for people.

A where-mode plan (`rebal.core.where`: per-venue prices, a network file or pools) adds to each order
``reason``, ``est_saving`` and ``after_transfer``, to each transfer ``network``, ``fee``, ``reason`` and
``est_saving``, and a top-level ``costs``; any other plan is written exactly as before.

`plan_chunks` writes a plan's JSON as a stream of compact chunks, some 32k nodes or orders each, so a
million-wallet plan (600 MB of JSON) is never built whole: each chunk is a matrix of rows of text, one
row per node or order, put together field by field from literals, strings escaped once per distinct
value and numbers formatted in bulk (`rebal.core.bulk`), then stripped of its NUL padding. `plan_json`
and `diff_json` are the same text read back into dicts, so every output says the same thing.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from decimal import Decimal
from functools import partial
from typing import Any, BinaryIO, cast

import numpy as np
import numpy.typing as npt
import orjson

from rebal.core.bulk import (
    Decimals,
    TextMatrix,
    decimal_texts,
    float_texts,
    plain_texts,
    replace_rows,
    shown_texts,
)
from rebal.core.diff import OPERATION_NAMES, SELL, DiffTree
from rebal.core.numbers import (
    AMOUNT_PLACES,
    MONEY_PLACES,
    WEIGHT_PLACES,
    dec_str,
    money_dec,
    money_str,
    shown_str,
)
from rebal.core.plan import REASONS, TRANSFER, Notes, OrderColumns, Plan, Transfer
from rebal.core.tree import Categorical, FloatArray, IntArray, Tree, pick, preorder
from rebal.core.union import UnionTree

JsonDict = dict[str, Any]
# A piece of a plan's JSON: its text, or (a chunk of rows) a function that makes it.
Part = bytes | Callable[[], bytes]
# Rows per chunk: the numpy work of a chunk stays within the CPU's caches.
CHUNK_ROWS = 32_768


def write_plan_json(plan: Plan, out: BinaryIO, *, pretty: bool) -> None:
    """The plan's JSON and a newline: compact and streamed, or indented by two (for a terminal)."""
    if pretty:
        out.write(orjson.dumps(plan_json(plan), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
        return
    write_chunks(plan_chunks(plan), out)


def write_chunks(chunks: Iterable[bytes], out: BinaryIO) -> None:
    """The chunks and a newline, each chunk written while the next is made."""
    with _WriteBehind(out) as writer:
        for chunk in chunks:
            writer.write(chunk)
    out.write(b"\n")


class _WriteBehind:
    """Each chunk written by a thread while the next one is made: writing 600 MB (a million wallets)
    is a second of copying into the kernel, which runs without the interpreter's lock, beside the
    numpy work of the next chunk. One chunk at a time, in order; a failed write (a closed pipe) is
    raised in the caller."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.thread: threading.Thread | None = None
        self.failure: OSError | ValueError | None = None

    def __enter__(self) -> _WriteBehind:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            self._wait()
        elif self.thread is not None:  # the caller failed: its error is the one raised
            self.thread.join()

    def write(self, chunk: bytes) -> None:
        self._wait()
        self.thread = threading.Thread(target=self._write, args=(chunk,), daemon=True)
        self.thread.start()

    def _write(self, chunk: bytes) -> None:
        try:
            self.out.write(chunk)
        except (OSError, ValueError) as exc:  # a closed pipe or file: raised in the caller's thread
            self.failure = exc

    def _wait(self) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.failure is not None:
            failure, self.failure = self.failure, None
            raise failure


def plan_json(plan: Plan) -> JsonDict:
    """The plan as the documented JSON document (``diff``, ``orders``, ``transfers``, ``skipped``)."""
    document: JsonDict = orjson.loads(b"".join(plan_chunks(plan)))
    return document


def diff_json(diff: DiffTree) -> JsonDict:
    """The diff tree as nested nodes (see docs/formats.md)."""
    document: JsonDict = orjson.loads(b"".join(made(diff_parts(diff))))
    return document


def plan_chunks(plan: Plan) -> Iterator[bytes]:
    """``{"diff": NODE, "orders": [...], "transfers": [...], "skipped": [...]}``, compact, in chunks."""
    return made(plan_parts(plan))


def made(parts: Iterable[Part]) -> Iterator[bytes]:
    """The text of each part, in order."""
    for part in parts:
        yield part if isinstance(part, bytes) else part()


def plan_parts(plan: Plan) -> Iterator[Part]:
    """`plan_chunks` as parts: the short pieces as text, each chunk of rows as a function that makes
    it, so that chunks can be made apart from one another (in other processes) and written in order."""
    paths = _Paths(plan.diff.tree)
    yield b'{"diff":'
    yield from diff_parts(plan.diff, paths)
    yield b',"orders":['
    yield from _order_parts(plan, paths)
    yield b'],"transfers":'
    notes = plan.notes
    yield orjson.dumps([transfer_json(t, notes, i) for i, t in enumerate(plan.transfers)])
    yield b',"skipped":['
    yield from _skip_parts(plan, paths)
    if notes is None:
        yield b"]}"
        return
    yield b'],"costs":'
    yield orjson.dumps(costs_json(plan))
    yield b"}"


def costs_json(plan: Plan) -> JsonDict:
    """The plan's estimated costs in the valuation currency, from the orders and transfers as shown
    (`Plan.shown_costs`): trading fees, spreads against the reference prices, network fees of the
    transfers, each to `MONEY_PLACES` (half to even), and their total (the sum of the three as shown)."""
    fees, spread, withdrawal_fees = (money_dec(value) for value in plan.shown_costs())
    return {
        "fees": dec_str(fees),
        "spread": dec_str(spread),
        "withdrawal_fees": dec_str(withdrawal_fees),
        "total": dec_str(fees + spread + withdrawal_fees),
    }


class _Rows:
    """Rows of text made field by field (each field a `TextMatrix` of the same rows, or a literal every
    row holds), then joined."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.parts: list[bytes | TextMatrix] = []

    def add(self, *fields: bytes | TextMatrix) -> None:
        self.parts.extend(fields)

    def matrix(self) -> TextMatrix:
        """The fields side by side: each copied into its columns as one item of its width a row (numpy
        copies a (rows, 8) byte matrix into (rows, 8) columns byte by byte: twice as slow)."""
        widths = [len(part) if isinstance(part, bytes) else part.shape[1] for part in self.parts]
        offsets = np.cumsum([0, *widths[:-1]]).tolist()
        kept = [i for i, width in enumerate(widths) if width]
        if not kept:
            return np.zeros((self.count, 0), dtype=np.uint8)
        row = np.dtype(
            {
                "names": [f"f{i}" for i in kept],
                "formats": [f"V{widths[i]}" for i in kept],
                "offsets": [offsets[i] for i in kept],
                "itemsize": sum(widths),
            }
        )
        made = np.empty(self.count, dtype=row)
        for i in kept:
            part, item = self.parts[i], f"V{widths[i]}"
            if isinstance(part, bytes):
                made[f"f{i}"] = np.frombuffer(part, dtype=item)[0]
            else:
                made[f"f{i}"] = np.ascontiguousarray(part).view(item).ravel()
        return made.view(np.uint8).reshape(self.count, row.itemsize)

    def text(self) -> bytes:
        """The rows one after the other, without their NUL padding."""
        text: bytes = self.matrix().tobytes().translate(None, b"\0")
        return text


def _table(texts: Sequence[bytes]) -> TextMatrix:
    """Texts as rows of a matrix (NUL-padded), to be picked by index."""
    return np.array(list(texts) or [b""], dtype=np.bytes_).view(np.uint8).reshape(max(len(texts), 1), -1)


def _stacked(*tables: TextMatrix) -> TextMatrix:
    """Tables one below the other (the narrower padded)."""
    width = max(table.shape[1] for table in tables)
    return np.concatenate([np.pad(table, ((0, 0), (0, width - table.shape[1]))) for table in tables])


def _where(mask: npt.NDArray[np.bool_], text: bytes) -> TextMatrix:
    """`text` on the rows of `mask`, nothing on the others."""
    return _table([b"", text])[mask.astype(np.intp)]


def _json_strings(values: Sequence[str | None]) -> TextMatrix:
    """Each value JSON-encoded (None is null), as a table."""
    return _table([orjson.dumps(value) for value in values])


def _vocabulary(values: list[str] | list[str | None]) -> tuple[TextMatrix, IntArray]:
    """A JSON string per distinct value (None is null) and each row's index into them."""
    codes = Categorical.of(values)
    return _json_strings([*codes.vocabulary, None]), np.where(
        codes.ids >= 0, codes.ids, len(codes.vocabulary)
    )


class _Paths:
    """Node paths as JSON strings, for slices of nodes.

    A path is the names of the node and its ancestors: up to `PATH_SEGMENTS` levels its text is made
    from the names' table (one segment per ancestor, NUL where a node has fewer); deeper trees, or very
    long names, build each path once in Python.
    """

    SEGMENT_BYTES = 512

    def __init__(self, tree: UnionTree) -> None:
        self.parent = tree.parent
        self.depth = tree.depth
        self.codes = tree.name_codes.ids
        content = [orjson.dumps(name)[1:-1] for name in tree.name_codes.vocabulary]
        self.names = _table(content)
        deepest = int(tree.depth.max(initial=0))
        self.whole: list[bytes] | None = None
        if (deepest + 1) * (self.names.shape[1] + 1) > self.SEGMENT_BYTES:
            whole: list[bytes] = [b""] * len(tree.names)
            for i, (up, code) in enumerate(zip(tree.parent.tolist(), self.codes.tolist(), strict=True)):
                whole[i] = content[code] if up < 0 else whole[up] + b"/" + content[code]
            self.whole = whole

    def table(self, nodes: IntArray) -> TextMatrix:
        """The paths of `nodes`, quoted, as a table (rows NUL-padded where their segments are)."""
        rows = _Rows(len(nodes))
        rows.add(*self.of(nodes))
        return rows.matrix()

    def of(self, nodes: IntArray) -> list[TextMatrix]:
        """The paths of `nodes`, quoted, as fields of a `_Rows`."""
        if self.whole is not None:
            return [_table([b'"' + self.whole[i] + b'"' for i in nodes.tolist()])]
        segments: list[TextMatrix] = [self.names[self.codes[nodes]]]
        up = self.parent[nodes]
        while (up >= 0).any():
            above = up >= 0
            segments.append(_where(above, b"/"))
            segments.append(self.names[self.codes[np.maximum(up, 0)]] * above[:, None])
            up = np.where(above, self.parent[np.maximum(up, 0)], -1)
        quote = np.full((len(nodes), 1), ord('"'), dtype=np.uint8)
        return [quote, *reversed(segments), quote]


def diff_parts(diff: DiffTree, paths: _Paths | None = None) -> Iterator[Part]:
    """The diff tree's root NODE, compact, nodes in pre-order (children in tree order), in chunks
    (`paths`: the tree's, when the caller has them)."""
    tree = diff.tree
    count = len(tree)
    order = np.empty(count, dtype=np.int64)
    order[preorder(tree.parent, tree.depth)] = np.arange(count)
    parent, wallet = tree.parent, tree.wallet
    has_children = np.bincount(parent[1:], minlength=count) > 0 if count > 1 else np.zeros(count, np.bool_)
    paths = paths or _Paths(tree)
    names = _json_strings(tree.name_codes.vocabulary)
    kinds = _json_strings([*tree.kind_codes.vocabulary, None])
    kind_codes = np.where(tree.kind_codes.ids >= 0, tree.kind_codes.ids, len(tree.kind_codes.vocabulary))
    operations = _table([OPERATION_NAMES[op].encode() for op in (-1, 0, 1)])
    wallets = _Wallets(diff)
    # After a node without children: its closing, then one "]}" per level the next node climbs.
    depth = tree.depth[order]
    closings = np.where(has_children[order], 0, depth - np.append(depth[1:], 0))
    close = _table([b"]}" * k for k in range(int(closings.max(initial=0)) + 1)])

    def chunk(start: int) -> bytes:
        nodes = order[start : start + CHUNK_ROWS]
        rows = _Rows(len(nodes))
        previous = order[np.maximum(np.arange(start, start + len(nodes)) - 1, 0)]
        comma = parent[nodes] != previous
        comma[:1] &= start > 0
        current, desired = diff.current_value[nodes], diff.desired_value[nodes]
        rows.add(
            _where(comma, b","),
            b'{"path":',
            *paths.of(nodes),
            b',"name":',
            names[tree.name_codes.ids[nodes]],
            b',"kind":',
            kinds[kind_codes[nodes]],
            b',"current_value":"',
            shown_texts(current, MONEY_PLACES),
            b'","desired_value":"',
            shown_texts(desired, MONEY_PLACES),
            b'","diff_value":"',
            shown_texts(desired - current, MONEY_PLACES, np.maximum(np.abs(current), np.abs(desired))),
            b'","current_weight":"',
            float_texts(diff.current_weight[nodes], WEIGHT_PLACES),
            b'","desired_weight":"',
            float_texts(diff.desired_weight[nodes], WEIGHT_PLACES),
            b'","operation":"',
            operations[diff.operation[nodes].astype(np.intp) + 1],
            b'","children":[',
            _where(~wallet[nodes] & ~has_children[nodes], b"]}"),
            wallets.fields(nodes),
            close[closings[start : start + CHUNK_ROWS]],
        )
        return rows.text()

    for start in range(0, count, CHUNK_ROWS):
        yield partial(chunk, start)


class _Wallets:
    """The wallet fields of diff nodes: ``],"asset":...,"locked_amount":"..."}``, nothing for portfolios."""

    def __init__(self, diff: DiffTree) -> None:
        tree = diff.tree
        self.diff = diff
        self.assets = _json_strings([*tree.asset_codes.vocabulary, None])
        self.asset_of = np.where(
            tree.asset_codes.ids >= 0, tree.asset_codes.ids, len(tree.asset_codes.vocabulary)
        )
        self.real = tree.real
        self.real_index = tree.real_index
        self.desired_amount = diff.desired_amount
        # What is locked: exactly, for wallets with locks (their rows of `self.locked`), else 0 (its last).
        real = self.real
        held = sorted(real.locks)
        exact = Decimals.of([real.exact_locked(index) for index in held])
        self.locked = _stacked(decimal_texts(exact), _table([b"0"]))
        row = np.full(len(real) + 1, len(held), dtype=np.intp)
        row[held] = np.arange(len(held))
        self.locked_row = row[np.where(tree.real_index >= 0, tree.real_index, len(real))]
        # Which real wallet each node is (-1: none, its amount is 0).
        held_by = np.where(tree.real_index >= 0, tree.real_index, len(real))
        self.real_wallet = np.where(np.append(real.wallet, False)[held_by], held_by, -1)

    def current(self, wallets: IntArray) -> TextMatrix:
        """What each wallet holds, as the real tree's file says it (plain), 0 where it holds nothing;
        printed a chunk at a time (so that chunks made apart share this work)."""
        real = self.real_wallet[wallets]
        held = np.flatnonzero(real >= 0)
        texts = pick(self.real.amount_text, real[held].tolist())
        plain = plain_texts([text or "0" for text in texts] if None in texts else cast(list[str], texts))
        row = np.full(len(wallets), len(held), dtype=np.intp)
        row[held] = np.arange(len(held))
        return _stacked(plain, _table([b"0"]))[row]

    def fields(self, nodes: IntArray) -> TextMatrix:
        """One field: the wallets' part of each row (the wallets' rows are made alone, then put in place)."""
        at = np.flatnonzero(self.diff.tree.wallet[nodes])
        made = np.zeros((len(nodes), 0), dtype=np.uint8)
        if not at.size:
            return made
        wallets = nodes[at]
        desired, current = self.desired_amount[wallets], self.diff.tree.amount[wallets]
        rows = _Rows(len(wallets))
        rows.add(
            b'],"asset":',
            self.assets[self.asset_of[wallets]],
            b',"current_amount":"',
            self.current(wallets),
            b'","desired_amount":"',
            shown_texts(desired, AMOUNT_PLACES),
            b'","diff_amount":"',
            shown_texts(desired - current, AMOUNT_PLACES, np.maximum(np.abs(desired), np.abs(current))),
            b'","locked_amount":"',
            self.locked[self.locked_row[wallets]],
            b'"}',
        )
        part = rows.matrix()
        made = np.zeros((len(nodes), part.shape[1]), dtype=np.uint8)
        made[at] = part
        return made


def _order_parts(plan: Plan, paths: _Paths) -> Iterator[Part]:
    columns: OrderColumns = plan.order_columns()
    tree = plan.diff.tree
    nodes = sorted(tree.accounts)
    accounts = paths.table(np.array(nodes, dtype=np.int64))
    exchanges, exchange_codes = _vocabulary([tree.accounts[node][0] for node in nodes])
    account_codes = np.searchsorted(np.array(nodes, dtype=np.int64), columns.account)
    symbols = _table([orjson.dumps(market.symbol) for market in columns.markets])
    prices = decimal_texts(columns.est_price)
    sides = _table([b"buy", b"sell"])
    phases = _table([b"2", b"1"])
    notes = plan.notes
    if notes is not None:
        reasons = _table([orjson.dumps(reason) for reason in notes.reasons])
        after = np.where(notes.order_after >= 0, notes.order_after, 0)
        after_text = _stacked(float_texts(after.astype(np.float64), 0), _table([b"null"]))
        after_row = np.where(notes.order_after >= 0, np.arange(len(after)), len(after))

    def chunk(start: int) -> bytes:
        part = slice(start, start + CHUNK_ROWS)
        rows = _Rows(len(columns.account[part]))
        codes, market, sell = account_codes[part], columns.market[part], columns.sell[part].astype(np.intp)
        price_row = columns.price_row[part]
        first = np.zeros(rows.count, dtype=np.bool_)
        first[:1] = start == 0
        rows.add(
            _where(~first, b","),
            b'{"account":',
            accounts[codes],
            b',"exchange":',
            exchanges[exchange_codes[codes]],
            b',"symbol":',
            symbols[market],
            b',"side":"',
            sides[sell],
            b'","amount":"',
            decimal_texts(columns.amount.slice(part)),
            b'","est_price":"',
            prices[price_row],
            b'","est_cost":"',
            decimal_texts(columns.est_cost.slice(part)),
            b'","est_fee":"',
            decimal_texts(columns.est_fee.slice(part)),
            b'","phase":',
            phases[sell],
        )
        if notes is not None:
            rows.add(
                b',"reason":',
                reasons[notes.order_reason[part]],
                b',"est_saving":"',
                shown_texts(notes.order_saving[part], MONEY_PLACES),
                b'","after_transfer":',
                after_text[after_row[part]],
            )
        rows.add(b"}")
        return rows.text()

    for start in range(0, len(columns), CHUNK_ROWS):
        yield partial(chunk, start)


def _skip_parts(plan: Plan, paths: _Paths) -> Iterator[Part]:
    skips = plan.skips
    if not len(skips):
        return
    tree = plan.diff.tree
    names = plan.diff.asset_names
    quotes = {node: quote for node, (_, quote) in tree.accounts.items()}
    symbols, symbol_codes = _vocabulary(
        [
            skips.symbol.get(row) or f"{names[asset]}/{quotes[account]}"
            for row, (asset, account) in enumerate(
                zip(skips.asset.tolist(), skips.account.tolist(), strict=True)
            )
        ]
    )
    reasons = _table([orjson.dumps(reason or "") for reason in REASONS])
    sides = _table([b"buy", b"sell", b"transfer"])
    side_row = np.where(skips.side == SELL, 1, np.where(skips.side == TRANSFER, 2, 0))

    def chunk(start: int) -> bytes:
        part = slice(start, start + CHUNK_ROWS)
        rows = _Rows(len(skips.node[part]))
        first = np.zeros(rows.count, dtype=np.bool_)
        first[:1] = start == 0
        rows.add(
            _where(~first, b","),
            b'{"path":',
            *paths.of(skips.node[part]),
            b',"symbol":',
            symbols[symbol_codes[part]],
            b',"side":"',
            sides[side_row[part]],
            b'","amount":"',
            _skip_amounts(skips.amount[part], skips.side[part]),
            b'","reason":',
            reasons[skips.code[part]],
            b"}",
        )
        return rows.text()

    for start in range(0, len(skips), CHUNK_ROWS):
        yield partial(chunk, start)


def _skip_amounts(amount: FloatArray, side: IntArray) -> TextMatrix:
    """Skipped orders' amounts as computed numbers are shown (`shown_texts`, `AMOUNT_PLACES`); a skipped
    transfer's, whole 1e-8 steps, to 8 places (9716.83555708, not its float's 9716.835557079999)."""
    texts = shown_texts(amount, AMOUNT_PLACES)
    transfers = np.flatnonzero(side == TRANSFER).tolist()
    return replace_rows(texts, transfers, [money_str(value) for value in amount[transfers].tolist()])


def transfer_json(transfer: Transfer, notes: Notes | None = None, index: int = 0) -> JsonDict:
    """A TRANSFER (docs/formats.md); with a where-mode plan's notes, its network, fee, reason and saving."""
    made: JsonDict = {
        "asset": transfer.asset,
        "from": transfer.source,
        "to": transfer.destination,
        "amount": dec_str(transfer.amount),
        "est_value": dec_str(transfer.value),
    }
    if notes is not None:
        made["network"] = transfer.network
        made["fee"] = dec_str(transfer.fee)
        made["reason"] = notes.transfer_reason[index]
        made["est_saving"] = shown_str(notes.transfer_saving[index], MONEY_PLACES)
    return made


def tree_json(tree: Tree, owner: str | None = None) -> JsonDict | None:
    """A real tree, or one owner's virtual tree (only wallets where it holds locks, at its locked amount)."""
    count = len(tree)
    keep = np.ones(count, dtype=np.bool_)
    owned: dict[int, Decimal] = {}
    if owner is not None:
        for index, locks in tree.locks.items():
            total = tree.exact_amount(index)
            mine = sum((lock.locked(total) for lock in locks if lock.owner == owner), Decimal(0))
            if any(lock.owner == owner for lock in locks):
                owned[index] = mine
        keep[:] = False
        for index in owned:
            up = index
            while up >= 0 and not keep[up]:
                keep[up] = True
                up = int(tree.parent[up])
        if not owned:
            return None
    nodes: dict[int, JsonDict] = {}
    for i in range(count):
        if not keep[i]:
            continue
        node: JsonDict = {"name": tree.names[i]}
        if tree.kinds[i] is not None:
            node["kind"] = tree.kinds[i]
        if i in tree.quote:
            node["quote"] = tree.quote[i]
        if i in tree.exchange:
            node["exchange"] = tree.exchange[i]
        if tree.wallet[i]:
            node["asset"] = tree.assets[i]
            if owner is not None:
                node["amount"] = dec_str(owned[i])
            else:
                node["amount"] = dec_str(tree.exact_amount(i))
                if i in tree.locks:
                    node["locked_amount"] = dec_str(tree.exact_locked(i))
                    node["free_amount"] = dec_str(tree.exact_amount(i) - tree.exact_locked(i))
                    node["locks"] = [
                        {"owner": lock.owner, "amount": dec_str(lock.locked(tree.exact_amount(i)))}
                        for lock in tree.locks[i]
                    ]
        else:
            node["children"] = []
        nodes[i] = node
        parent = int(tree.parent[i])
        if parent >= 0:
            nodes[parent]["children"].append(node)
    return nodes[0]
