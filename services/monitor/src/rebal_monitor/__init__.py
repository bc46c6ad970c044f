"""Rebal monitor: every event journaled once in Postgres, and the operators' API and dashboard over it.

`app.py` wires it (`build(settings)`), `handlers.py` subscribes, `monitor.py` journals each batch,
`journal.py` stores and projects each event; `api/` is the REST API (a module per concern), `queries.py`
its SQL (`plan_store.py` the stored plans), `views.py` what it computes from events, `dashboard.py` the page.
"""
