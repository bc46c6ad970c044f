"""The `rebal` commands' HTTP client for the monitor's REST API: one request, one outcome, exit codes.

Every failure becomes one line on stderr and the documented exit code (`rebal_cli.support`): the API not
answering is 3 (not running), a token missing or refused is 4 (configuration), a 404 or a rejected
request is 2, a refusal (409: a stale or expired plan) or a server error is 1.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from rebal.settings import EXIT_CONFIGURATION, ApiSettings, ConfigFileError, Configured
from rebal_cli.support import (
    EXIT_BAD_INPUT,
    EXIT_ERROR,
    EXIT_NOT_RUNNING,
    fail,
)

DEFAULT_API_URL = "http://127.0.0.1:8105"
REQUEST_TIMEOUT_SECONDS = 30.0
TOKEN_HELP = "set REBAL__API__TOKEN or REBAL__API__TOKEN_FILE (or api.token_file in REBAL_CONFIG)"


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


class OperatorSettings(Configured):
    """What `rebal` needs to reach the API: the ``api`` section of the one configuration (``REBAL_CONFIG``
    and ``REBAL__API__URL``, ``REBAL__API__TOKEN``, ``REBAL__API__TOKEN_FILE``), as the monitor reads it."""

    model_config = SettingsConfigDict(env_prefix="REBAL__", env_nested_delimiter="__", extra="ignore")
    api: ApiSettings = ApiSettings()


def connect(url: str | None = None) -> Api:
    """The API at `url` (default: ``api.url``) with the operator's token; a configuration that does not
    validate (a token file that cannot be read, a bad key) exits 4 naming the key."""
    try:
        settings = OperatorSettings().api
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        fail(f"{where}: {error['msg']}" if where else str(error["msg"]), EXIT_CONFIGURATION)
    except (ConfigFileError, ValueError) as exc:
        fail(str(exc), EXIT_CONFIGURATION)
    token = settings.token.get_secret_value() if settings.token is not None else None
    return Api(url or settings.url, token)
