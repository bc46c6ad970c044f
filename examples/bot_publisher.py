"""Report one period's return of a strategy to Rebal, with nothing but nats-py (docs/bots.md).

    python examples/bot_publisher.py --portfolio demo --strategy trend \
        --timestamp 2025-01-02T00:00:00Z --return 0.0123 [--equity 10123.45] [--position BTC=0.5]
"""

import argparse
import asyncio
import json
import uuid
from datetime import UTC, datetime

import nats

# Any fixed namespace: the same strategy and timestamp always give the same message id.
NAMESPACE = uuid.UUID("0d8e4c3a-2f4b-5b7e-9a1c-6b2f3c4d5e6f")


async def report(url, portfolio, strategy, timestamp, period_return, equity=None, positions=None):
    """Publish one StrategyReturnReported; True when stored, False when Rebal already had it."""
    event_id = str(uuid.uuid5(NAMESPACE, f"{portfolio}|{strategy}|{timestamp}"))
    now = datetime.now(UTC).isoformat()
    payload = {
        "type": "StrategyReturnReported",
        "event_id": event_id,
        "occurred_at": timestamp,
        "emitted_at": now,
        "portfolio_id": portfolio,
        "strategy_id": strategy,
        "timestamp": timestamp,
        "period_return": str(period_return),  # decimals as strings
    }
    if equity is not None:
        payload["equity"] = str(equity)
    if positions:
        payload["positions"] = {asset: str(value) for asset, value in positions.items()}
    client = await nats.connect(url)
    try:
        ack = await client.jetstream().publish(
            f"rebal.evt.strategy.return_reported.v1.{strategy}",
            json.dumps(payload).encode(),
            stream="REBAL_EVENTS",
            headers={"Nats-Msg-Id": event_id},
        )
    finally:
        await client.drain()
    return not ack.duplicate


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--nats-url", default="nats://127.0.0.1:4222")
    parser.add_argument("--portfolio", required=True)
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--timestamp", required=True, help="the period's end, ISO 8601 with a zone")
    parser.add_argument("--return", dest="period_return", required=True, help="0.01 is +1%%")
    parser.add_argument("--equity")
    parser.add_argument("--position", action="append", default=[], help="ASSET=signed fraction, -1..1")
    args = parser.parse_args()
    positions = dict(item.split("=", 1) for item in args.position)
    stored = asyncio.run(
        report(
            args.nats_url,
            args.portfolio,
            args.strategy,
            args.timestamp,
            args.period_return,
            args.equity,
            positions,
        )
    )
    print("stored" if stored else "duplicate: already reported")


if __name__ == "__main__":
    main()
