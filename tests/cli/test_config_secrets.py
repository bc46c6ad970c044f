"""Secrets written inside URLs stay hidden in `rebal config show`, and an empty `*_FILE` variable means
"no file" (issue 19.12: a NATS URL's password was printed; `REBAL__API__TOKEN_FILE=` was read as "." and
reported as "Is a directory")."""

from __future__ import annotations

import json
import os

from typer.testing import CliRunner

from rebal.settings import MASK, masked
from rebal_cli.app import app

TOKEN = "t" * 40


def show(env: dict[str, str]) -> tuple[int, str, str]:
    unset: dict[str, str | None] = {k: None for k in os.environ if k.startswith(("REBAL__", "REBAL_CONFIG"))}
    result = CliRunner().invoke(app, ["config", "show", "--local", "--json"], env={**unset, **env})
    return result.exit_code, result.stdout, result.stderr


def test_config_show_masks_the_password_inside_the_nats_and_database_urls() -> None:
    code, out, err = show(
        {
            "REBAL__NATS__URL": "nats://planner:nats-url-pass@10.0.0.1:4222,nats://planner:nats-url-pass@10.0.0.2:4222",
            "REBAL__DATABASE__URL": "postgresql://rebal:db-url-pass@db:5432/rebal",
        }
    )
    assert code == 0, err
    assert "nats-url-pass" not in out and "db-url-pass" not in out
    document = json.loads(out)
    assert document["planner"]["nats"]["url"] == (
        f"nats://planner:{MASK}@10.0.0.1:4222,nats://planner:{MASK}@10.0.0.2:4222"
    )


def test_a_url_without_credentials_and_a_nats_token_url() -> None:
    assert masked({"url": "nats://10.0.0.1:4222"}) == {"url": "nats://10.0.0.1:4222"}
    assert masked({"url": "nats://s3cr3t-token@10.0.0.1:4222"}) == {"url": f"nats://{MASK}@10.0.0.1:4222"}
    assert masked({"url": "postgresql://postgres@db/rebal"}) == {"url": "postgresql://postgres@db/rebal"}


def test_an_empty_token_file_variable_means_unset() -> None:
    code, out, err = show({"REBAL__API__TOKEN_FILE": "", "REBAL__API__TOKEN": TOKEN})
    assert code == 0, err
    assert "Is a directory" not in err
    assert json.loads(out)["monitor"]["api"]["token_file"] is None
