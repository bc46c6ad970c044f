"""The client context (`rebal_cli.context`): `make run` writes var/client.toml and `rebal` finds it by itself,
below the environment and above REBAL_CONFIG."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rebal_cli import context
from rebal_cli.api import OperatorSettings
from rebal_cli.app import app


def written(root: Path, api_url: str = "http://127.0.0.1:18105") -> Path:
    token = root / "var" / "api-token"
    token.parent.mkdir(parents=True, exist_ok=True)
    token.write_text("token-from-the-context\n")
    path = root / "var" / "client.toml"
    context.write(
        path,
        api_url=api_url,
        token_file=token,
        nats_url="nats://127.0.0.1:14222",
        database_url="postgresql://postgres@127.0.0.1:15432/rebal",
        services={"tracker": "http://127.0.0.1:18101", "monitor": api_url},
    )
    return path


def test_it_is_found_from_the_directory_or_a_parent_and_named_or_disabled_by_the_environment(
    tmp_path: Path,
) -> None:
    path = written(tmp_path)
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert context.locate(deep, {}) == path
    assert context.locate(tmp_path, {}) == path
    assert context.locate(tmp_path, {"REBAL_CONTEXT": "none"}) is None
    assert context.locate(Path("/"), {"REBAL_CONTEXT": str(path)}) == path
    read = context.read(path)
    assert read.api["token_file"] == str(tmp_path / "var" / "api-token")
    assert read.services["tracker"] == "http://127.0.0.1:18101"
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_environment_comes_first_then_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = written(tmp_path)
    for key in (
        "REBAL__API__URL",
        "REBAL__API__TOKEN",
        "REBAL__API__TOKEN_FILE",
        "REBAL__NATS__URL",
        "REBAL_CONFIG",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("REBAL_CONTEXT", str(path))
    settings = OperatorSettings()
    assert settings.api.url == "http://127.0.0.1:18105"
    assert (
        settings.api.token is not None and settings.api.token.get_secret_value() == "token-from-the-context"
    )
    assert settings.nats.url == "nats://127.0.0.1:14222"
    assert settings.database.url.get_secret_value().endswith(":15432/rebal")
    monkeypatch.setenv("REBAL__NATS__URL", "nats://10.0.0.9:4222")
    assert OperatorSettings().nats.url == "nats://10.0.0.9:4222"


def test_a_broken_context_is_a_configuration_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "client.toml"
    bad.write_text("[api\nurl = 1\n")
    result = CliRunner().invoke(app, ["status"], env={"REBAL_CONTEXT": str(bad), "REBAL__API__TOKEN": None})
    assert result.exit_code == 4, result.output
    assert str(bad) in result.stderr and "malformed TOML" in result.stderr
    unknown = tmp_path / "other.toml"
    unknown.write_text('[apis]\nurl = "x"\n')
    result = CliRunner().invoke(app, ["status"], env={"REBAL_CONTEXT": str(unknown)})
    assert result.exit_code == 4 and "unknown section(s) apis" in result.stderr


def test_commands_reach_the_context_s_api(tmp_path: Path) -> None:
    """Nothing listens there: the error names the context's URL (not the default port)."""
    path = written(tmp_path, api_url="http://127.0.0.1:9")
    env = {"REBAL_CONTEXT": str(path), "REBAL__API__URL": None, "REBAL__API__TOKEN": None}
    result = CliRunner().invoke(app, ["status"], env=env)
    assert result.exit_code == 3, result.output
    assert "http://127.0.0.1:9" in result.stderr


def test_a_token_in_the_environment_wins_over_the_context_s_token_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REBAL_CONTEXT", str(written(tmp_path)))
    monkeypatch.delenv("REBAL__API__TOKEN_FILE", raising=False)
    monkeypatch.setenv("REBAL__API__TOKEN", "the-operator-s-own")
    token = OperatorSettings().api.token
    assert token is not None and token.get_secret_value() == "the-operator-s-own"
