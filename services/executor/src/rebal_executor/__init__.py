"""Rebal executor: executes approved plans against venues exactly once.

The service itself arrives with the event-backbone and executor issues.
"""
