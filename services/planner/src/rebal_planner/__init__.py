"""Rebal planner: turns snapshots and target weights into diff trees and order plans with ``rebal.core``.

The service itself arrives with the event-backbone issue; the planning core is ``rebal.core.plan``.
"""
