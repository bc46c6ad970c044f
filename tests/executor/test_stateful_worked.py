"""The whole-run property of `test_stateful` with worked legs: ETH is bought with limit orders at the bid
(resting, re-priced once, then taken) and BTC sold in slices under 500 USDT, while hypothesis interleaves
the same faults — timeouts before and after the venue took a submit, failing look-ups, 429s, orders shown
late, the process dying and restarting — and the market moving and trading against our resting orders.

Whatever the interleaving: never two live venue orders for one leg, never a client id placed twice,
never more filled than a leg's amount, never a fill counted twice, never more spent than the budget."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, rule

from rebal_executor.execution import Executor
from rebal_executor.settings import ExecutorSettings
from tests.executor.test_stateful import LEG, PLAN, Runs
from tests.fake_exchange.state import OPEN

D = Decimal


class WorkedRuns(Runs):
    def __init__(self) -> None:
        super().__init__()
        self.book.spread_bps = D(10)

    def start(self) -> Executor:
        executor = super().start()
        executor.settings = ExecutorSettings.model_validate(
            {
                "live": True,
                "execution": {
                    "order_timeout_seconds": 5,
                    "poll_interval_seconds": 1,
                    "order_types": {
                        "markets": {"ETH/USDT": {"type": "limit", "rest_seconds": 4, "reprices": 1}}
                    },
                    "max_order_value": {"BTC/USDT": "500"},
                    "slice_interval_seconds": 5,
                },
            }
        )
        return executor

    @rule(symbol=st.sampled_from(["ETHUSDT", "BTCUSDT"]), move=st.sampled_from(["-0.002", "0.001", "0.003"]))
    def market_moves(self, symbol: str, move: str) -> None:
        self.book.prices[symbol] = (self.book.prices[symbol] * (1 + D(move))).quantize(D("0.01"))

    @rule(share=st.sampled_from([D("0.3"), D(1)]))
    def someone_trades_against_our_resting_order(self, share: Decimal) -> None:
        for order in list(self.book.orders.values()):
            if order.resting and order.limit_price is not None and order.status in OPEN:
                step = self.book.markets[order.symbol_id].step
                qty = ((order.orig_qty - order.executed) * share / step).to_integral_value() * step
                if qty > 0:
                    self.book.trade(order, qty)

    @invariant()
    def never_two_venue_orders_for_one_leg(self) -> None:
        """Relaxed for worked legs: a leg has many orders, never two open at once, each id placed once."""
        live = Counter(
            int(m.group(1))
            for o in self.book.orders.values()
            if o.status in OPEN and (m := LEG.match(o.client_order_id))
        )
        assert all(n == 1 for n in live.values()), live
        ids = Counter(o.client_order_id for o in self.book.orders.values())
        assert all(n == 1 for n in ids.values()), ids

    @invariant()
    def never_more_filled_than_a_leg(self) -> None:
        filled: Counter[int] = Counter()
        for o in self.book.orders.values():
            if m := LEG.match(o.client_order_id):
                filled[int(m.group(1))] += o.executed  # type: ignore[assignment]
        for leg, amount in filled.items():
            if leg < len(PLAN.orders):
                assert amount <= PLAN.orders[leg].amount, (leg, amount)


WorkedRuns.TestCase.settings = settings(max_examples=150, stateful_step_count=30, deadline=None)


TestWorkedRuns = WorkedRuns.TestCase
