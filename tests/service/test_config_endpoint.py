"""Every service's /config: the settings it runs with, secrets masked, its mode; to loopback clients only."""

from __future__ import annotations

import json

from pydantic import SecretStr

from rebal.service import config_response, mode_of
from rebal.settings import ServiceSettings


def test_config_masks_secrets_and_says_the_mode() -> None:
    settings = ServiceSettings(
        database={"url": SecretStr("postgresql://rebal:hunter2@db/rebal")},
        nats={"password": SecretStr("nats-secret")},
        live=True,
    )
    response = config_response("tracker", settings, {"client": ("127.0.0.1", 51000)})
    assert response.status_code == 200
    body = json.loads(response.body)
    assert body["service"] == "tracker" and body["mode"] == "live" == mode_of(settings)
    text = json.dumps(body)
    assert "hunter2" not in text and "nats-secret" not in text
    assert body["settings"]["database"]["url"] == "**********" and body["settings"]["live"] is True


def test_config_answers_only_this_machine() -> None:
    settings = ServiceSettings()
    for client in (("10.1.2.3", 4000), ("192.0.2.1", 1), None):
        refused = config_response("planner", settings, {"client": client})
        assert refused.status_code == 403, client
    assert config_response("planner", settings, {"client": ("::1", 1)}).status_code == 200
    assert json.loads(config_response("planner", settings, {"client": ("::1", 1)}).body)["mode"] == "dry_run"


def test_the_monitor_s_former_api_live_and_live_are_one_fact() -> None:
    from rebal_monitor.settings import MonitorSettings

    old = MonitorSettings(api={"live": True, "token": "t" * 40})
    assert old.live is True and mode_of(old) == "live"
    new = MonitorSettings(live=True, api={"token": "t" * 40})
    assert new.api.live is True
    assert mode_of(MonitorSettings()) == "dry_run" and MonitorSettings().api.live is False
