"""Application metrics shared by every service: prefixed ``rebal_``, base units, bounded labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "rebal_events_published_total",
    "Events published, by topic, and whether the server dropped them as duplicates.",
    ["topic", "duplicate"],
)
HANDLED = Histogram(
    "rebal_handler_seconds",
    "Time to handle one message, by service and topic.",
    ["service", "topic"],
)
HANDLER_RETRIES = Counter(
    "rebal_handler_retries_total",
    "Handler failures that were retried with backoff.",
    ["service", "topic"],
)
DEAD_LETTERED = Counter(
    "rebal_messages_dead_lettered_total",
    "Messages a service could not read or handle, sent to its dead-letter subject.",
    ["service", "topic"],
)
STRATEGY_RETURNS = Counter(
    "rebal_strategy_returns_received_total",
    "Strategy returns ingested by the tracker (duplicates included).",
    ["strategy"],
)
STRATEGY_LAST_RETURN = Gauge(
    "rebal_strategy_last_return_timestamp_seconds",
    "Timestamp of the latest return received per strategy.",
    ["strategy"],
)
RUNS = Counter("rebal_runs_total", "Rebalance runs finished, by result.", ["portfolio", "status"])
ORDERS = Counter("rebal_orders_total", "Orders by final status.", ["portfolio", "status"])
PORTFOLIO_VALUE = Gauge("rebal_portfolio_value", "Free (unlocked) value of the portfolio.", ["portfolio"])
