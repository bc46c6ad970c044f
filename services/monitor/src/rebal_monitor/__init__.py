"""Rebal monitor: persists every event and serves the operators' API and dashboard.

The service itself arrives with the event-backbone and operators issues.
"""
