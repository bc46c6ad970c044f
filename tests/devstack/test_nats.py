"""Real nats-server with JetStream: dedup, durable consumers, file-store persistence, R3 streams."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats
import pytest
from nats.js.api import StreamConfig

from rebal_devstack import _proc
from rebal_devstack.nats import NatsCluster, NatsServer
from rebal_devstack.pytest_plugin import NatsService

pytestmark = pytest.mark.timeout(60)


async def test_jetstream_drops_duplicate_msg_id_and_delivers_to_durable(nats_server: NatsService) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        await js.add_stream(StreamConfig(name="DEDUP", subjects=["dedup.>"], duplicate_window=60.0))

        first = await js.publish("dedup.order", b"buy 1 BTC", headers={"Nats-Msg-Id": "order-1"})
        again = await js.publish("dedup.order", b"buy 1 BTC", headers={"Nats-Msg-Id": "order-1"})
        other = await js.publish("dedup.order", b"sell 2 ETH", headers={"Nats-Msg-Id": "order-2"})

        assert not first.duplicate
        assert again.duplicate
        assert again.seq == first.seq
        assert other.seq == first.seq + 1
        assert (await js.stream_info("DEDUP")).state.messages == 2

        sub = await js.pull_subscribe("dedup.>", durable="planner")
        msgs = await sub.fetch(10, timeout=2.0)
        assert [m.data for m in msgs] == [b"buy 1 BTC", b"sell 2 ETH"]
        for m in msgs:
            await m.ack_sync()
        info = await js.consumer_info("DEDUP", "planner")
        assert info.num_pending == 0
        assert info.ack_floor.stream_seq == other.seq
    finally:
        await nc.close()


async def _publish(url: str, stream: str, payload: bytes) -> int:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[f"{stream.lower()}.>"])
        ack = await js.publish(f"{stream.lower()}.x", payload)
        return ack.seq
    finally:
        await nc.close()


async def _read(url: str, stream: str, seq: int) -> bytes:
    nc = await nats.connect(url)
    try:
        msg = await nc.jetstream().get_msg(stream, seq)
        assert msg.data is not None
        return msg.data
    finally:
        await nc.close()


def test_file_store_survives_a_restart(tmp_path: Path) -> None:
    store = tmp_path / "jetstream"
    with NatsServer(store) as server:
        seq = asyncio.run(_publish(server.url, "KEEP", b"kept"))
        pid = server.pid
    assert pid is not None and not _proc.is_alive(pid)

    with NatsServer(store) as server:  # a new process, maybe a new port, the same store
        assert asyncio.run(_read(server.url, "KEEP", seq)) == b"kept"
    assert (tmp_path / "jetstream.nats.log").stat().st_size > 0


def test_file_store_with_sync_always_survives_sigkill(tmp_path: Path) -> None:
    server = NatsServer(tmp_path / "jetstream", sync_always=True).start()
    try:
        seq = asyncio.run(_publish(server.url, "CRASH", b"acked before the crash"))
        pid = server.pid
        server.kill()
        assert pid is not None and not _proc.is_alive(pid)
        assert not server.running
        server.start()
        assert asyncio.run(_read(server.url, "CRASH", seq)) == b"acked before the crash"
    finally:
        server.stop()


async def test_three_node_cluster_holds_an_r3_stream(tmp_path: Path) -> None:
    with NatsCluster(tmp_path / "cluster", size=3) as cluster:
        nc = await nats.connect(servers=cluster.urls)
        try:
            js = nc.jetstream()
            info = await js.add_stream(name="R3", subjects=["r3.>"], num_replicas=3)
            assert info.config.num_replicas == 3
            assert info.cluster is not None
            assert info.cluster.leader is not None
            assert len(info.cluster.replicas or []) == 2
            ack = await js.publish("r3.x", b"replicated")
            assert ack.seq == 1
        finally:
            await nc.close()
        pids = [node.pid for node in cluster.nodes]
    assert all(pid is not None and not _proc.is_alive(pid) for pid in pids)
