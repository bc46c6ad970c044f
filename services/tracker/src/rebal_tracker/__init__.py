"""Rebal tracker: reads venue balances into a real tree and measures strategy performance.

The service itself arrives with the event-backbone issue; this distribution fixes its place in the workspace.
"""
