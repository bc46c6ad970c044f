"""Cash flows in a replay: a withdrawal no portfolio could pay is refused as bad flows, naming its row
(the CLI turns the row into the flows file's line), never replayed into a portfolio worth nothing."""

from __future__ import annotations

import numpy as np
import pytest

from rebal.core.backtest import Overdrawn, compare, replay
from rebal.core.backtest.start import with_cash_wallets
from rebal.core.policy import Bands, Policy
from tests.backtest.paths import MARKETS, history, real, target

START = with_cash_wallets(real({"BTC": "4", "ETH": "3", "SOL": "2", "USDT": "1500"}), "USDT")
BAND = Policy(bands=Bands(absolute=0.05))


def test_a_withdrawal_beyond_the_portfolios_value_is_refused_at_its_row() -> None:
    path = history(rows=60)
    flows = np.zeros(len(path))
    flows[[10, 40]] = [-500.0, -1e9]
    with pytest.raises(Overdrawn) as refused:
        replay(path, START, target(), MARKETS, BAND, flows=flows)
    assert refused.value.row == 40 and refused.value.wanted == 1e9
    assert 0 < refused.value.held < 2_000  # 4 BTC, 3 ETH, 2 SOL near 100 and cash, less the 500


def test_compare_names_the_portfolio_that_could_not_pay() -> None:
    path = history(rows=60)
    flows = np.zeros(len(path))
    flows[40] = -1e9
    with pytest.raises(Overdrawn) as refused:
        compare(path, START, target(), MARKETS, [("band", BAND)], flows=flows)
    assert refused.value.row == 40 and refused.value.name == "baseline"
    assert "takes more than the portfolio holds (baseline: " in str(refused.value)


def test_a_withdrawal_the_cash_cannot_pay_sells_the_rest_pro_rata() -> None:
    path = history(rows=60)
    flows = np.zeros(len(path))
    flows[30] = -1_000.0  # more than the 1,500 cash less what the band's rebalances spent
    run = replay(path, START, target(), MARKETS, BAND, flows=flows)
    assert run.flow[30] == pytest.approx(-1_000.0)  # paid in full
    assert run.value[30] < run.value[29] - 900
