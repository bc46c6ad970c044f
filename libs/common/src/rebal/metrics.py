"""Application metrics shared by every service: prefixed ``rebal_``, base units, bounded labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

PUBLISHED = Counter(
    "rebal_events_published_total",
    "Events published, by topic, and whether the server dropped them as duplicates.",
    ["topic", "duplicate"],
)
PAYLOAD_BYTES = Histogram(
    "rebal_payload_bytes",
    "Size of the payloads events sent by reference (encoded, in the Object Store), by topic.",
    ["topic"],
    buckets=(2**16, 2**18, 2**20, 2**22, 2**24, 2**26, 2**28),
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
STRATEGY_RETURNS_UNUSABLE = Gauge(
    "rebal_strategy_returns_unusable",
    "Stored returns statistics skip: out of the bounds entries enforce (stored before they were).",
    ["portfolio", "strategy"],
)
STRATEGY_LAST_RETURN = Gauge(
    "rebal_strategy_last_return_timestamp_seconds",
    "Timestamp of the latest return received per strategy.",
    ["strategy"],
)
RUNS = Counter("rebal_runs_total", "Rebalance runs finished, by result.", ["portfolio", "status"])
ORDERS = Counter("rebal_orders_total", "Orders by final status.", ["portfolio", "status"])
PORTFOLIO_VALUE = Gauge(
    "rebal_portfolio_value",
    "Free (unlocked) value of the portfolio, in its valuation currency.",
    ["portfolio"],
)
EXCHANGE_ERRORS = Counter(
    "rebal_exchange_errors_total",
    "Errors a venue answered with, by exchange and error class (rate_limit, network, auth, "
    "insufficient_funds, invalid_order, outcome_unknown, other).",
    ["exchange", "error"],
)
TRADING_HALTED = Gauge(
    "rebal_trading_halted", "1 while trading is halted (kill switch) for the portfolio.", ["portfolio"]
)
EXTERNAL_ORDERS = Gauge(
    "rebal_external_orders",
    "Orders open at the venue, on accounts the executor trades, that are not ours (never cancelled), as "
    "the last reconciliation saw them.",
    ["exchange"],
)
BALANCE_DISCREPANCIES = Counter(
    "rebal_balance_discrepancies_total",
    "Assets whose balance moved during a run by more than the run's fills explain (external activity).",
    ["exchange"],
)
STRANDED = Counter(
    "rebal_stranded_assets_total",
    "Routed orders whose second leg did not fill and whose intermediate asset could not be unwound (below "
    "the market's minimums or refused): it stays on the account (alert).",
    ["exchange", "asset"],
)
DRIFT = Gauge(
    "rebal_drift_ratio",
    "Largest |actual - target| share of the portfolio's value over all its nodes (0.05 = 5 points), "
    "as the planner last saw it.",
    ["portfolio"],
)
WEIGHT_ACTUAL = Gauge(
    "rebal_weight_actual_ratio",
    "Actual share of the portfolio's value of a node of its top levels (node: its path below the root).",
    ["portfolio", "node"],
)
WEIGHT_TARGET = Gauge(
    "rebal_weight_target_ratio",
    "Target share of the portfolio's value of a node of its top levels (node: its path below the root).",
    ["portfolio", "node"],
)
STRATEGY_WEIGHT = Gauge(
    "rebal_strategy_weight_ratio", "Optimizer weight of a strategy.", ["portfolio", "strategy"]
)
LEVERAGE = Gauge("rebal_leverage_ratio", "Leverage from volatility targeting.", ["portfolio"])
BUILD_INFO = Gauge(
    "rebal_build_info", "Always 1: the running version and mode (dry_run or live).", ["version", "mode"]
)
CONSUMER_PENDING = Gauge(
    "rebal_consumer_pending_messages",
    "Messages in the stream not yet delivered to the service's durable consumer (the server's count).",
    ["service", "consumer"],
)
CONSUMER_WAITING = Gauge(
    "rebal_consumer_waiting",
    "1 while the durable consumer holds its messages until a dependency (Postgres, NATS) is back.",
    ["consumer"],
)
CONSUMER_ACK_PENDING = Gauge(
    "rebal_consumer_ack_pending_messages",
    "Messages delivered to the service's durable consumer and not yet acknowledged.",
    ["service", "consumer"],
)
# The operators' API (served by the monitor): requests by route template (bounded), method and status.
API_REQUESTS = Counter(
    "rebal_api_requests_total",
    "Requests to the operators' API and dashboard, by method, route template and status code.",
    ["method", "route", "status"],
)
API_SECONDS = Histogram(
    "rebal_api_request_seconds",
    "Time to answer a request to the operators' API, by method and route template.",
    ["method", "route"],
)
# What the monitor reads back from its journal every few seconds (`rebal_monitor.gauges`).
LATEST_SNAPSHOT = Gauge(
    "rebal_latest_snapshot_timestamp_seconds",
    "When the portfolio's latest balance snapshot was taken (age: time() - this).",
    ["portfolio"],
)
LATEST_TARGET = Gauge(
    "rebal_latest_target_timestamp_seconds",
    "When the portfolio's latest target was published (age: time() - this).",
    ["portfolio"],
)
FUND_USERS = Gauge("rebal_fund_users", "Users holding something in the fund.", ["fund"])
FUND_PENDING_FLOWS = Gauge(
    "rebal_fund_pending_flows",
    "Deposits and withdrawals waiting for a cycle or taken by the running one.",
    ["fund", "kind"],
)
FUND_LAST_CYCLE = Gauge(
    "rebal_fund_last_cycle_timestamp_seconds",
    "When the fund's latest cycle last changed (settled, cancelled, or its phase moved), by its status.",
    ["fund", "status"],
)
AUTOPILOT_TRIGGERS = Counter(
    "rebal_autopilot_triggers_total",
    "Rebalances the autopilot triggered, by portfolio, mode (auto, approve, notify) and kind.",
    ["portfolio", "mode", "kind"],
)
NOTIFICATIONS = Counter(
    "rebal_notifications_total",
    "Notifications sent to a channel (webhook, apprise), by outcome: delivered, retried or failed.",
    ["channel", "outcome"],
)
