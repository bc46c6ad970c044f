"""Rebal optimizer: each portfolio's desired tree (`TargetWeightsComputed`), as its file says or allocated
across its strategies from their returns.

`app.py` wires it (`build(settings)`), `handlers.py` subscribes; `targets.py` publishes the files,
`allocations.py` schedules the allocations, `allocator.py` allocates one portfolio, `manual.py` keeps the
operators' targets, `store.py` reads the strategies' returns from Postgres.
"""
