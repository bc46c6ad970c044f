"""Rebal tracker: the venues' balances in, the real tree (`BalanceSnapshotTaken`) out; the bots' returns
stored and their statistics kept.

`app.py` wires it (`build(settings)`) and opens the venues, `handlers.py` subscribes, `tracker.py` reads
the venues and snapshots, `returns.py` stores the returns, `stats.py` recomputes the statistics.
"""
