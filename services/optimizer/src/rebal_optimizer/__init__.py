"""Rebal optimizer: allocates capital across strategies and publishes target weights.

The service itself arrives with the event-backbone and strategies issues.
"""
