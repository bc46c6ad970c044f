"""The `rebal` commands' HTTP client for the monitor's REST API: one request, one outcome, exit codes.

Every failure becomes one line on stderr and the documented exit code (`rebal_cli.support`): the API not
answering is 3 (not running), a token missing or refused is 4 (configuration), a 404 or a rejected
request is 2, a refusal (409: a stale or expired plan) or a server error is 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rebal.settings import (
    EXIT_CONFIGURATION,
    ApiSettings,
    ConfigFileError,
    ConfigFileSource,
    Configured,
    DatabaseSettings,
    NatsSettings,
)
from rebal_cli import context
from rebal_cli.support import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    fail,
)

REQUEST_TIMEOUT_SECONDS = 30.0
TOKEN_HELP = (
    "set REBAL__API__TOKEN or REBAL__API__TOKEN_FILE (or api.token_file in the client context"
    " var/client.toml, which `make run` writes, or in REBAL_CONFIG)"
)


@dataclass(frozen=True)
class Api:
    """Where the API is and the operator's token."""

    url: str
    token: str | None
    timeout: float = REQUEST_TIMEOUT_SECONDS

    def _client(self) -> httpx.Client:
        if not self.url.startswith(("http://", "https://")):
            fail(f"--api-url: {self.url!r} is not an http:// or https:// URL")
        if not self.token:
            fail(f"no API token: {TOKEN_HELP}", EXIT_CONFIGURATION)
        return httpx.Client(
            base_url=self.url.rstrip("/"),
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=self.timeout,
        )

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        return self.request("GET", path, params=params)

    def post(
        self, path: str, body: Mapping[str, Any] | None = None, params: Mapping[str, Any] | None = None
    ) -> Any:
        return self.request("POST", path, body=body, params=params)

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Any:
        with self._client() as client:
            try:
                response = client.request(method, path, json=body, params=_params(params))
            except httpx.TransportError as exc:
                self._not_running(exc)
            check(response, f"{method} {path}")
            try:
                return response.json()
            except ValueError:
                fail(f"{method} {path}: the API answered something that is not JSON", EXIT_ERROR)

    @contextmanager
    def stream(self, path: str, params: Mapping[str, Any] | None = None) -> Iterator[httpx.Response]:
        """A streamed GET (exports): the response, checked, its body not read yet."""
        with self._client() as client:
            try:
                with client.stream("GET", path, params=_params(params)) as response:
                    if response.is_error:
                        response.read()
                    check(response, f"GET {path}")
                    yield response
            except httpx.TransportError as exc:
                self._not_running(exc)

    def _not_running(self, exc: httpx.TransportError) -> None:
        reason = str(exc) or type(exc).__name__
        fail(
            f"the Rebal API does not answer at {self.url} ({reason}); is the monitor running?",
            EXIT_NOT_RUNNING,
        )


def _params(params: Mapping[str, Any] | None) -> dict[str, Any]:
    return {key: value for key, value in (params or {}).items() if value is not None}


def check(response: httpx.Response, what: str) -> None:
    """Fail with the API's own message and the matching exit code unless the response is a success."""
    status = response.status_code
    if status < 400:
        return
    message = f"{what}: {detail(response)}"
    if status in (401, 403):
        fail(f"{message} (HTTP {status}): {TOKEN_HELP}", EXIT_CONFIGURATION)
    if status == 503:
        fail(f"{message} (HTTP 503: not ready)", EXIT_NOT_RUNNING)
    if status in (400, 404, 422):
        fail(message, EXIT_BAD_INPUT)
    fail(f"{message} (HTTP {status})", EXIT_ERROR)


def detail(response: httpx.Response) -> str:
    """The API's reason: FastAPI's `detail` (a string, or validation errors naming the field)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:200] or response.reason_phrase
    found = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(found, list):
        parts = []
        for error in found:
            if isinstance(error, dict):
                where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
                parts.append(f"{where}: {error.get('msg', '')}" if where else str(error.get("msg", "")))
            else:
                parts.append(str(error))
        return "; ".join(parts)
    if isinstance(found, dict):
        return str(found.get("message") or found.get("reason") or found)
    return str(found)


class ContextSource(PydanticBaseSettingsSource):
    """The client context's sections (`rebal_cli.context`): below the environment, above REBAL_CONFIG."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole context is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        found = context.current()
        if found is None:
            return {}
        sections = found.settings()
        # A token given in the environment (or its file) is the operator's: the context's token file,
        # read by the settings' validator, would replace it.
        if any(os.environ.get(f"REBAL__API__{key}") for key in ("TOKEN", "TOKEN_FILE")):
            sections.get("api", {}).pop("token_file", None)
        # Likewise a NATS user given in the environment comes with its own password.
        if any(os.environ.get(f"REBAL__NATS__{key}") for key in ("USER", "PASSWORD", "PASSWORD_FILE")):
            for key in ("user", "password_file"):
                sections.get("nats", {}).pop(key, None)
        return sections


class OperatorSettings(Configured):
    """What `rebal` needs to reach the system: the ``api``, ``nats`` and ``database`` sections of the one
    configuration, as the services read them, from the environment (``REBAL__API__URL``,
    ``REBAL__API__TOKEN(_FILE)``, ``REBAL__NATS__URL``, ``REBAL__DATABASE__URL``), then the client context
    (``var/client.toml``, which `make run` writes), then ``REBAL_CONFIG``."""

    model_config = SettingsConfigDict(env_prefix="REBAL__", env_nested_delimiter="__", extra="ignore")
    api: ApiSettings = ApiSettings()
    nats: NatsSettings = NatsSettings()
    database: DatabaseSettings = DatabaseSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            ContextSource(settings_cls),
            ConfigFileSource(settings_cls),
            file_secret_settings,
        )


def operator_settings() -> OperatorSettings:
    """The operator's settings; a configuration or a context that does not validate (a token file that
    cannot be read, a bad key) exits 4 naming the key."""
    try:
        return OperatorSettings()
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        fail(f"{where}: {error['msg']}" if where else str(error["msg"]), EXIT_CONFIGURATION)
    except (ConfigFileError, ValueError) as exc:
        fail(str(exc), EXIT_CONFIGURATION)


def nats_settings(option: str | None) -> NatsSettings:
    """The operator's NATS settings (environment, context, file, default): its servers (``--nats-url``
    when given) and its user and password (the client context's `api` user under `make run`)."""
    settings = operator_settings().nats
    return settings.model_copy(update={"url": option}) if option else settings


def connect(url: str | None = None) -> Api:
    """The API at `url` (default: ``api.url``) with the operator's token."""
    settings = operator_settings().api
    token = settings.token.get_secret_value() if settings.token is not None else None
    return Api(url or settings.url, token)
