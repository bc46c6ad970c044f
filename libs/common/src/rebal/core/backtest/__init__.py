"""The policy lab's engine: a price history replayed through the same pure core as the live system.

`compare` replays policies side by side (`replay` one of them) from a real tree document over a
`History`; `figures` says what each cost and how it tracked the target. Pure: arrays and documents
in, figures out (the CLI reads the files: `rebal_cli.backtest`).
"""

from rebal.core.backtest.compare import BASELINE, BUY_AND_HOLD, Comparison, Outcome, compare
from rebal.core.backtest.figures import Figures, figures
from rebal.core.backtest.history import History
from rebal.core.backtest.references import FILL_RULES, FillRule
from rebal.core.backtest.replay import Overdrawn, Run, Trade, replay, replay_all

__all__ = [
    "BASELINE",
    "BUY_AND_HOLD",
    "FILL_RULES",
    "Comparison",
    "Figures",
    "FillRule",
    "History",
    "Outcome",
    "Overdrawn",
    "Run",
    "Trade",
    "compare",
    "figures",
    "replay",
    "replay_all",
]
