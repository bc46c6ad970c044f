"""Targets managed by operators: `rebal target show|diff|set|history|rollback` and `GET/PUT
/portfolio/targets` on the real monitor, with the real optimizer publishing them (NATS, Postgres)."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from rebal_cli.app import app
from rebal_devstack.pytest_plugin import FreshDatabase
from rebal_optimizer.app import build as build_optimizer
from rebal_optimizer.settings import OptimizerSettings
from tests.monitor.running import TOKEN, free_port, monitor_settings, running_monitor, serving
from tests.monitor.test_api import EXAMPLES, journaled, load, publish, snapshot, until


@asynccontextmanager
async def running_optimizer(nats_url: str, dsn: str) -> AsyncIterator[None]:
    """The optimizer publishing the demo's target file every half second."""
    settings = OptimizerSettings(
        nats={"url": nats_url},
        database={"url": dsn},
        http={"port": free_port()},
        targets={"files": {"demo": EXAMPLES / "target.json"}, "interval_seconds": 0.5},
    )
    async with serving(build_optimizer(settings), settings.http.port):
        yield


def cli(url: str, *args: str | Path) -> tuple[int, str, str]:
    env = {"REBAL__API__URL": url, "REBAL__API__TOKEN": TOKEN, "COLUMNS": "120", "REBAL_CONTEXT": "none"}
    result = CliRunner().invoke(app, [str(a) for a in args], env=env)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout, result.stderr


def more_cash(cash: str) -> dict[str, Any]:
    """The demo's target with `cash` for cash and the rest for crypto."""
    tree = copy.deepcopy(load("target"))
    spot = tree["children"][0]["children"][0]["children"]
    crypto, cash_node = spot
    crypto["weight"] = f"{100 - int(cash.rstrip('%'))}%"
    cash_node["weight"] = cash
    return tree


async def test_operators_set_preview_and_roll_back_the_target(
    nats_url: str, database: FreshDatabase, tmp_path: Path
) -> None:
    settings = monitor_settings(nats_url, database.dsn)
    async with running_monitor(settings) as monitor, running_optimizer(nats_url, database.dsn):
        client, url = monitor.client, monitor.url
        await publish(nats_url, snapshot("tick-1"))
        shown = (await journaled(client, "/portfolio/targets")).json()
        assert shown["source"].endswith("target.json") and shown["manual"] is None
        code, out, _ = await asyncio.to_thread(cli, url, "target", "show")
        assert code == 0 and "target.json" in out and "crypto 70%" in out

        half = tmp_path / "half.json"
        half.write_text(json.dumps(more_cash("50%")))
        code, out, err = await asyncio.to_thread(cli, url, "target", "diff", half, "--json")
        assert code == 0, err
        preview = json.loads(out)["preview"]
        # 78% crypto now (of 100000) down to 50%: BTC 48000 -> 25000 and SOL 15000 -> 10000 are sold,
        # ETH is at its 15000 already.
        sold = sorted((o["symbol"], o["side"]) for o in preview["orders"])
        assert sold == [("BTC/USDT", "sell"), ("SOL/USDT", "sell")]
        shares = {row["path"]: row for row in preview["weights"]}
        assert shares["demo/paper/spot/crypto"]["target_share"] == "0.5"
        assert (await client.get("/portfolio/targets/history")).json()["versions"] == []

        code, out, err = await asyncio.to_thread(
            cli, url, "target", "set", half, "--author", "alice", "--note", "more cash"
        )
        assert code == 0, err
        said = " ".join(out.split())
        assert "version 1 of demo by alice: published as the target: the next rebalance trades it" in said
        assert "Orders (2)" in out

        async def manual() -> dict[str, Any] | None:
            found = (await client.get("/portfolio/targets")).json()
            return found if found["source"].startswith("manual") else None

        current = await until(manual)
        assert current["source"] == "manual:v1" and current["tree"] == more_cash("50%")
        assert current["manual"]["author"] == "alice" and current["manual"]["note"] == "more cash"
        await asyncio.sleep(1.5)  # three ticks of the optimizer's file: the operators' version stays
        assert (await client.get("/portfolio/targets")).json()["source"] == "manual:v1"

        third = tmp_path / "third.yaml"
        third.write_text(json.dumps(more_cash("40%")))
        assert (await asyncio.to_thread(cli, url, "target", "set", third, "--author", "bob"))[0] == 0
        code, out, err = await asyncio.to_thread(cli, url, "target", "rollback", "1", "--author", "carol")
        assert code == 0, err
        back = await until(lambda: _source(client, "manual:v3"))
        assert back["tree"] == more_cash("50%")
        code, out, _ = await asyncio.to_thread(cli, url, "target", "history")
        lines = out.splitlines()
        assert code == 0 and [line.split()[0] for line in lines if line.startswith("v")] == ["v3", "v2", "v1"]
        assert "carol (the tree of version 1)" in out and "rollback to version 1" in out
        one = (await client.get("/portfolio/targets/2")).json()
        assert one["author"] == "bob" and one["tree"] == more_cash("40%")

        # Bad trees: named where they are wrong; nothing stored.
        bad = tmp_path / "bad.json"
        broken = more_cash("50%")
        broken["children"][0]["children"][0]["children"][0]["weight"] = "20%"
        bad.write_text(json.dumps(broken))
        code, _, err = await asyncio.to_thread(cli, url, "target", "set", bad)
        assert code == 2 and str(bad) in err and "demo/paper/spot" in err, err
        unpriced = more_cash("50%")
        unpriced["children"][0]["children"][0]["children"][1]["children"][0]["asset"] = "DOGE"
        refused = await client.put("/portfolio/targets", json={"tree": unpriced})
        assert refused.status_code == 422 and refused.json()["detail"].startswith("tree: ")
        assert "DOGE" in refused.json()["detail"]
        assert len((await client.get("/portfolio/targets/history")).json()["versions"]) == 3
        missing = await client.post("/portfolio/targets/rollback", json={"version": 9})
        assert missing.status_code == 404 and "no target version 9" in missing.json()["detail"]


async def _source(client: Any, source: str) -> dict[str, Any] | None:
    found = (await client.get("/portfolio/targets")).json()
    return dict(found) if found["source"] == source else None
