"""`rebal trigger` and `rebal plan --buy-only` as a user calls them: the installed entry point, files on
disk, docs/formats.md's worked examples."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.autopilot import PRICES, TARGET, real

REBAL = Path(sys.executable).parent / "rebal"
COOLDOWN_POLICY = """\
schedule = "0 0 * * MON"
timezone = "Europe/Berlin"
drift_absolute = "5%"
cooldown = "7d"
invest_cash_above = "500"
mode = "approve"
"""


def rebal(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(REBAL), *map(str, args)], capture_output=True, text=True, timeout=60, check=False
    )


def files(tmp_path: Path, holdings: tuple[str, str, str, str], policy: str) -> list[str | Path]:
    written = {"real.json": real(*holdings), "target.json": TARGET, "prices.json": PRICES}
    for name, document in written.items():
        (tmp_path / name).write_text(json.dumps(document))
    (tmp_path / "policy.toml").write_text(policy)
    return [
        "--real",
        tmp_path / "real.json",
        "--target",
        tmp_path / "target.json",
        "--prices",
        tmp_path / "prices.json",
        "--policy",
        tmp_path / "policy.toml",
    ]


def answer(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_breach_in_the_cooldown_waits_and_cash_in_the_cooldown_buys_only(tmp_path: Path) -> None:
    over = files(tmp_path, ("0.0902", "1", "7.45", "1000"), COOLDOWN_POLICY)
    times = ["--now", "2024-06-05T12:00:00Z", "--last-rebalance", "2024-06-03T08:00:00Z", "--json"]
    waits = answer(rebal("trigger", *over, *times))
    assert (waits["rebalance"], waits["kind"], waits["blocked_by"]) == (False, None, "cooldown")
    assert [b["path"] for b in waits["breaches"]] == ["alice/spot/btc", "alice/spot/sol"]
    assert waits["next_scheduled"] == "2024-06-09T22:00:00Z"
    deposit = files(tmp_path, ("0.08", "0.9", "9", "2500"), COOLDOWN_POLICY)
    buys = answer(rebal("trigger", *deposit, *times))
    assert (buys["rebalance"], buys["kind"], buys["blocked_by"]) == (True, "buy_only", "cooldown")
    assert buys["reasons"][-1] == "cash: 1400 USD above the target cash, more than invest_cash_above 500"
    # At the end of the cooldown the breach rebalances in full; the human answer says so too.
    later = ["--now", "2024-06-10T08:00:00Z", "--last-rebalance", "2024-06-03T08:00:00Z"]
    done = rebal("trigger", *over, *later)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "rebalance: full"
    assert "schedule: the tick at 2024-06-09T22:00:00Z" in done.stdout


def test_no_rebalance_is_still_exit_0(tmp_path: Path) -> None:
    under = files(tmp_path, ("0.0898", "1", "7.55", "1000"), 'drift_absolute = "5%"\n')
    done = answer(rebal("trigger", *under, "--now", "2024-06-05T12:00:00Z", "--json"))
    assert done == {
        "rebalance": False,
        "kind": None,
        "reasons": ["within_bands: every node is within its bands"],
        "blocked_by": None,
        "breaches": [],
        "next_scheduled": None,
    }


def test_bad_input_is_exit_2_naming_the_file_and_the_key(tmp_path: Path) -> None:
    now = ["--now", "2024-06-05T12:00:00Z"]
    bad = files(tmp_path, ("0.0898", "1", "7.55", "1000"), "drift_absolute = -0.02\n")
    done = rebal("trigger", *bad, *now)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"error: {tmp_path / 'policy.toml'}: drift_absolute: a band cannot be negative, got -0.02"
    )
    assert "Traceback" not in done.stderr
    unknown = files(tmp_path, ("0.0898", "1", "7.55", "1000"), 'drift = "5%"\n')
    done = rebal("trigger", *unknown, *now)
    assert done.returncode == 2 and f"{tmp_path / 'policy.toml'}: drift: unknown key" in done.stderr
    good = files(tmp_path, ("0.0898", "1", "7.55", "1000"), 'drift_absolute = "5%"\n')
    (tmp_path / "prices.json").write_text(json.dumps({"quote": "USD", "prices": {"BTC": "50000"}}))
    done = rebal("trigger", *good, *now)
    assert done.returncode == 2 and str(tmp_path / "prices.json") in done.stderr, done.stderr
    done = rebal("trigger", *files(tmp_path, ("1", "1", "1", "1"), ""), "--now", "yesterday")
    assert done.returncode == 2 and "--now: expected an ISO 8601 time" in done.stderr
    # The calendar's ends: a schedule looks decades ahead and a month back (a traceback before).
    for end in ("9999-12-31T23:59:59Z", "0001-01-03T00:00:00Z"):
        done = rebal("trigger", *files(tmp_path, ("1", "1", "1", "1"), ""), "--now", end)
        assert done.returncode == 2, done.stderr
        assert done.stderr.strip() == (
            "error: --now: expected a time from 1000-01-01T00:00:00Z to before 9000-01-01T00:00:00Z, "
            f"got '{end}'"
        ), done.stderr


def test_a_last_rebalance_after_now_is_refused(tmp_path: Path) -> None:
    args = files(tmp_path, ("0.0898", "1", "7.55", "1000"), 'drift_absolute = "5%"\n')
    done = rebal(
        "trigger", *args, "--now", "2024-06-05T12:00:00Z", "--last-rebalance", "2024-06-05T12:00:01Z"
    )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "error: --last-rebalance: 2024-06-05T12:00:01Z is later than --now 2024-06-05T12:00:00Z"
    )


def test_plan_buy_only_sells_nothing_and_spends_the_cash_above_target(tmp_path: Path) -> None:
    # docs/formats.md, "Deficits larger than the cash": BTC over its target is not sold; ETH and SOL
    # share the 900 above the target cash in proportion to their deficits.
    args = files(tmp_path, ("0.1", "0.8", "8", "2000"), "")[:6]
    done = rebal("plan", *args, "--buy-only", "--json")
    assert done.returncode == 0, done.stderr
    orders = [(o["symbol"], o["side"], o["amount"]) for o in json.loads(done.stdout)["orders"]]
    assert orders == [("ETH/USDT", "buy", "0.18"), ("SOL/USDT", "buy", "1.8")]
    full = json.loads(rebal("plan", *args, "--json").stdout)["orders"]
    assert ("BTC/USDT", "sell") in [(o["symbol"], o["side"]) for o in full]
    refused = rebal("plan", "--portfolio", "demo", "--buy-only")
    assert refused.returncode == 2 and "leave out --buy-only" in refused.stderr
