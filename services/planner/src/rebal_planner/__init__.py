"""Rebal planner: a snapshot and a target in, an order plan (`RebalancePlanned`) or why not out.

`app.py` wires it (`build(settings)`), `handlers.py` subscribes; `planner.py` gathers the inputs, plans
and publishes (or says why not); `planning.py` makes the plan event with the pure core (`rebal.core.plan`),
`approvals.py` makes an approved preview live, and `funds/` keeps the funds' ledgers and runs their cycles.
"""
