"""Rebal optimizer: each portfolio's desired tree (`TargetWeightsComputed`), as its file says or allocated
across its strategies from their returns.

`app.py` wires it (`build(settings)`), `handlers.py` subscribes and schedules; `targets.py` reads the
files, `allocator.py` allocates one portfolio, `store.py` reads the strategies' returns from Postgres.
"""
