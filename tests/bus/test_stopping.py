"""A consumer asked to stop (its service shutting down, SIGTERM) stops, on a real nats-server.

`BatchConsumer.stop` cancels the consumer's loop once and waits for it. On Python 3.11, `asyncio.wait_for`
(under every nats-py request: a JetStream publish waits for its acknowledgement so) returns a result that
arrives together with the cancellation and drops the cancellation. The loop then went back to waiting for
messages, or held its messages for an "outage" that was the shutdown itself, and `stop` waited forever:
the monitor's bus test hung in its teardown about once in 60 runs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from faststream.nats import NatsBroker

from rebal import bus, subjects
from rebal.events import StartRebalance
from tests.bus.test_bus import command
from tests.messaging import collecting, consume_commands, started

DURABLE = "test-stopping"


@pytest.mark.parametrize("then", ["returns", "outage"])
async def test_a_batch_consumer_stops_when_its_cancellation_is_dropped_on_the_way(
    nats_url: str, then: str
) -> None:
    broker = NatsBroker(nats_url)
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[None] = loop.create_future()
    entered = asyncio.Event()
    calls: list[int] = []

    async def store(events: Sequence[StartRebalance]) -> None:
        calls.append(len(events))
        entered.set()
        await asyncio.wait_for(answer, 60)  # as nats-py waits for a publish's acknowledgement
        if then == "outage":  # e.g. the broker's connection, closing with the service
            raise ConnectionRefusedError(111, "Connect call failed")

    consume_commands(broker, DURABLE, store)
    async with collecting(nats_url) as letters, started(broker):
        await bus.Publisher(broker).publish(command())
        await asyncio.wait_for(entered.wait(), 30)
        answer.set_result(None)  # the answer arrives in the same turn of the loop as the request to stop
        await asyncio.wait_for(bus.stop_batch_consumers(broker), 10)  # waited forever before
        assert bus.waiting(broker) == {}
        js = broker.config.connection_state.stream
        # Stored: acknowledged. Not stored: left unacknowledged, redelivered after the ack wait. (An ack is
        # a message of its own: on a loaded machine the server may count it a moment later.)
        expected = (1, 0) if then == "returns" else (0, 1)
        for _ in range(50):
            info = await js.consumer_info(subjects.COMMANDS_STREAM, DURABLE)
            if (info.ack_floor.consumer_seq, info.num_ack_pending) == expected:
                break
            await asyncio.sleep(0.1)
    assert calls == [1]  # handled once; nothing retried or split while stopping
    assert letters == []  # and nothing dead-lettered: stopping is not the message's fault
    assert (info.ack_floor.consumer_seq, info.num_ack_pending) == expected
