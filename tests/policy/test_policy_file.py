"""The policy file: TOML, YAML or JSON, checked key by key; a bad one is refused naming file and key."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import yaml

from rebal.core.policy import Bands
from rebal.io import FileError
from rebal.policy import duration_seconds, load_policy, parse_policy
from rebal.trigger import parse_instant

FULL_TOML = """\
schedule = "0 0 * * MON"
timezone = "Europe/Berlin"
drift_absolute = "5%"
drift_relative = 0.25
scope = "breaching"
cooldown = "7d"
invest_cash_above = "500"
min_trade_value = "10"
mode = "approve"
replan_on_price_move = 3

[bands."alice/binance/spot/crypto/sol"]
drift_absolute = 0.02
"""


def test_a_toml_policy_compiles_into_the_core_policy(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(FULL_TOML)
    policy = load_policy(path).to_policy()
    assert policy.bands == Bands(absolute=0.05, relative=0.25)
    assert policy.overrides == {"alice/binance/spot/crypto/sol": {"absolute": 0.02}}
    assert (policy.scope, policy.cooldown, policy.mode, policy.replan_on_price_move) == (
        "breaching",
        7 * 86_400,
        "approve",
        3,
    )
    assert (policy.invest_cash_above, policy.min_trade_value) == (500.0, 10.0)
    assert policy.schedule is not None
    assert policy.schedule.following(parse_instant("2024-06-05T12:00:00Z")) == parse_instant(
        "2024-06-09T22:00:00Z"  # Monday 00:00 in Berlin (CEST)
    )


def test_yaml_and_json_say_the_same(tmp_path: Path) -> None:
    doc = {
        "schedule": "0 0 * * MON",
        "timezone": "Europe/Berlin",
        "drift_absolute": "5%",
        "drift_relative": 0.25,
        "scope": "breaching",
        "cooldown": "7d",
        "invest_cash_above": "500",
        "min_trade_value": "10",
        "mode": "approve",
        "replan_on_price_move": 3,
        "bands": {"alice/binance/spot/crypto/sol": {"drift_absolute": 0.02}},
    }
    toml, as_yaml, as_json = tmp_path / "p.toml", tmp_path / "p.yaml", tmp_path / "p.json"
    toml.write_text(FULL_TOML)
    as_yaml.write_text(yaml.safe_dump(doc))
    as_json.write_bytes(orjson.dumps(doc))
    assert load_policy(toml) == load_policy(as_yaml) == load_policy(as_json)


def test_defaults_trigger_nothing_and_only_notify() -> None:
    policy = parse_policy({}).to_policy()
    assert (policy.schedule, policy.bands, policy.overrides, policy.invest_cash_above) == (
        None,
        Bands(),
        {},
        None,
    )
    assert (policy.scope, policy.cooldown, policy.mode, policy.replan_on_price_move) == (
        "portfolio",
        0,
        "notify",
        0,
    )


def test_an_override_may_take_a_band_off_a_node() -> None:
    policy = parse_policy(
        {"drift_absolute": 0.05, "drift_relative": 0.2, "bands": {"a/b": {"drift_relative": None}}}
    ).to_policy()
    assert policy.overrides == {"a/b": {"relative": None}}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("7d", 604_800), ("12h", 43_200), ("30m", 1_800), ("90s", 90), ("1d12h", 129_600), ("0s", 0)],
)
def test_durations(text: str, seconds: int) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("doc", "where", "message"),
    [
        ({"drift_absolut": 0.05}, "drift_absolut", "unknown key"),
        ({"bands": {"a/b": {"limit": 0.1}}}, "bands.a/b.limit", "unknown key"),
        ({"bands": {"a/b": {}}}, "bands.a/b", "names drift_absolute and/or drift_relative"),
        ({"bands": {"a//b": {"drift_absolute": 0.1}}}, "bands.a//b", "node path"),
        ({"drift_absolute": "nan"}, "drift_absolute", "expected a fraction"),
        ({"drift_relative": float("inf")}, "drift_relative", "expected a fraction"),
        ({"drift_relative": "1e400"}, "drift_relative", "expected a fraction"),
        ({"drift_absolute": -0.01}, "drift_absolute", "cannot be negative"),
        ({"bands": {"a/b": {"drift_relative": "-5%"}}}, "bands.a/b.drift_relative", "cannot be negative"),
        ({"drift_absolute": 1.5}, "drift_absolute", "within 0..1"),
        ({"drift_absolute": True}, "drift_absolute", "expected a fraction"),
        ({"schedule": "0 25 * * *"}, "schedule", "out of range"),
        ({"schedule": "0 0 * *"}, "schedule", "5 fields"),
        ({"schedule": "0 0 31 4 *"}, "schedule", "never ticks"),
        ({"schedule": 5}, "schedule", "cron expression"),
        ({"timezone": "Europe/Atlantis"}, "timezone", "unknown time zone"),
        ({"cooldown": "7 days"}, "cooldown", "duration"),
        ({"cooldown": 7}, "cooldown", "duration"),
        ({"cooldown": "4000d"}, "cooldown", "longer than 3650d"),
        ({"invest_cash_above": "-1"}, "invest_cash_above", ">= 0"),
        ({"min_trade_value": "NaN"}, "min_trade_value", "decimal amount"),
        ({"mode": "yolo"}, "mode", "'auto', 'approve' or 'notify'"),
        ({"scope": "everything"}, "scope", "'portfolio' or 'breaching'"),
        ({"replan_on_price_move": 4}, "replan_on_price_move", "0..3"),
        ({"replan_on_price_move": True}, "replan_on_price_move", "0..3"),
    ],
)
def test_bad_keys_are_named(tmp_path: Path, doc: dict[str, object], where: str, message: str) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(doc))  # YAML writes NaN and infinity, which JSON cannot
    with pytest.raises(FileError) as caught:
        load_policy(path)
    assert caught.value.where == where
    assert message in caught.value.message
    assert str(caught.value).startswith(f"{path}: {where}: ")
    assert "\n" not in str(caught.value)


def test_a_document_that_is_not_a_mapping_or_not_toml(tmp_path: Path) -> None:
    listed = tmp_path / "policy.yaml"
    listed.write_text("- schedule\n")
    with pytest.raises(FileError, match="a policy is a mapping of keys"):
        load_policy(listed)
    broken = tmp_path / "policy.toml"
    broken.write_text('schedule = "0 0 * * MON\n')
    with pytest.raises(FileError, match="malformed TOML"):
        load_policy(broken)
    with pytest.raises(FileError, match="file not found"):
        load_policy(tmp_path / "absent.toml")


def test_times_are_iso_8601_in_whole_seconds() -> None:
    assert parse_instant("2024-06-03T00:00:00Z") == 1_717_372_800
    assert parse_instant("2024-06-03T02:00:00+02:00") == 1_717_372_800
    assert parse_instant("2024-06-03T00:00:00") == 1_717_372_800  # no offset: UTC
    assert parse_instant("2024-06-03T00:00:00.9Z") == 1_717_372_800
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_instant("yesterday")


def test_a_policy_reads_back_from_what_it_stores(tmp_path: Path) -> None:
    path = tmp_path / "policy.toml"
    path.write_text(FULL_TOML)
    written = load_policy(path)
    stored = written.document()
    assert orjson.loads(orjson.dumps(stored)) == stored
    assert stored["bands"] == {"alice/binance/spot/crypto/sol": {"drift_absolute": 0.02}}
    assert (stored["invest_cash_above"], stored["cooldown"]) == ("500", "7d")
    assert parse_policy(stored) == written
    removed = parse_policy({"bands": {"a/b": {"drift_relative": None}}})
    assert parse_policy(removed.document()).to_policy().overrides == {"a/b": {"relative": None}}
