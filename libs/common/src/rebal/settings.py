"""Typed configuration: one pydantic-settings class per service, loaded once at start.

Values come from defaults, then an optional TOML/YAML/JSON file (``REBAL_CONFIG``), then environment
variables ``REBAL__SECTION__KEY`` (for example ``REBAL__NATS__URL``). Secrets are `SecretStr` and may
be read from a file (``REBAL__DATABASE__URL_FILE``). Only production-safe defaults: dry-run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, ClassVar

from pydantic import (
    AnyHttpUrl,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from rebal.io import FileError, load_document

CONFIG_FILE_ENV = "REBAL_CONFIG"
# The exit code of a service or a CLI command that cannot start with its configuration.
EXIT_CONFIGURATION = 4
_config_file: ContextVar[Path | None] = ContextVar("rebal_config_file", default=None)
PORTS = {"tracker": 8101, "optimizer": 8102, "planner": 8103, "executor": 8104, "monitor": 8105}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _empty_file_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        # `REBAL__API__TOKEN_FILE=` (set but empty) means "no file", not the current directory ".".
        if info.field_name is not None and info.field_name.endswith("_file") and value == "":
            return None
        return value


class NatsSettings(Section):
    # One server, or a cluster's servers separated by commas.
    url: str = "nats://127.0.0.1:4222"
    stream_replicas: int = Field(default=1, ge=1, le=5)
    connect_timeout_seconds: int = Field(default=5, gt=0)
    # How long a delivered, unacknowledged message waits before it is delivered again (a crashed
    # consumer's messages come back after this; handlers report progress meanwhile).
    ack_wait_seconds: float = Field(default=10.0, ge=1.0, le=3600.0)
    # The service's own NATS user (deploy/nats/auth.conf gives each one only its subjects).
    user: str | None = None
    password: SecretStr | None = None
    password_file: Path | None = None
    # TLS (``tls://`` servers): the CA that signed the servers' certificates, when not a public one.
    tls_ca_file: Path | None = None

    @property
    def servers(self) -> list[str]:
        return [server.strip() for server in self.url.split(",") if server.strip()]

    @model_validator(mode="after")
    def _read_password_file(self) -> NatsSettings:
        if self.password_file is not None:
            try:
                self.password = SecretStr(self.password_file.read_text().strip())
            except OSError as exc:
                raise ValueError(f"nats.password_file {self.password_file}: {exc.strerror}") from None
        if self.tls_ca_file is not None and not self.tls_ca_file.is_file():
            raise ValueError(f"nats.tls_ca_file {self.tls_ca_file}: no such file")
        return self


class DatabaseSettings(Section):
    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/rebal")
    url_file: Path | None = None
    pool_size: int = Field(default=5, ge=1, le=100)

    @model_validator(mode="after")
    def _read_secret_file(self) -> DatabaseSettings:
        if self.url_file is not None:
            try:
                self.url = SecretStr(self.url_file.read_text().strip())
            except OSError as exc:
                raise ValueError(f"database.url_file {self.url_file}: {exc.strerror}") from None
        return self


class HttpSettings(Section):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)


API_TOKEN_MIN_LENGTH = 32


class ApiSettings(Section):
    """The operators' REST API (served by the monitor; the CLI reads `token` to call it)."""

    # Every API request needs `Authorization: Bearer <token>`; none configured refuses every request. The
    # operator's token may do everything; a viewer's token (`viewer_token`) may only read: every request
    # that changes something (plans, approvals, halt and resume, targets, funds) is refused to it (403).
    token: SecretStr | None = None
    token_file: Path | None = None
    viewer_token: SecretStr | None = None
    viewer_token_file: Path | None = None
    # Where operators' tools (`rebal`, REBAL__API__URL) reach this API; the monitor binds `http.host/port`.
    url: str = "http://127.0.0.1:8105"
    # The former spelling of the service's `live` (REBAL__LIVE), kept so that REBAL__API__LIVE still works:
    # the monitor takes either and keeps both equal. Live: plans may execute at once (`dry_run: false`);
    # the API then refuses to start without a token of at least API_TOKEN_MIN_LENGTH characters.
    live: bool = False
    # A stored plan may be approved this long after it was made.
    plan_ttl_seconds: float = Field(default=300.0, gt=0)
    # A plan is stale when a traded market's price moved more than this fraction since its snapshot...
    stale_price_tolerance: float = Field(default=0.01, ge=0)
    # ... or balances moved by more than this fraction of the portfolio's value.
    stale_balance_tolerance: float = Field(default=0.01, ge=0)
    # How long POST /portfolio/rebalance waits for the planner.
    plan_timeout_seconds: float = Field(default=10.0, gt=0)
    # How long POST /halt (and POST /transfers/{id}/confirm) waits for the executor's acknowledgement
    # before answering "pending".
    halt_ack_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # The other services' base URLs (name -> "http://host:port"): GET /status (and `rebal status`) report
    # each one's /readyz. Empty: only the monitor's own NATS and Postgres are reported.
    peers: dict[str, AnyHttpUrl] = Field(default_factory=dict)
    # Limits (docs/api.md): a request body larger than this is refused (413) before it is read; a body
    # not received within `body_timeout_seconds` is refused (408); each token may make at most
    # `rate_limit_per_second` requests in any one second (429 with Retry-After beyond).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    body_timeout_seconds: float = Field(default=10.0, gt=0)
    rate_limit_per_second: int = Field(default=100, ge=1)
    # The API's own Postgres connections (the journal's consumers have `database.pool_size` of theirs).
    pool_size: int = Field(default=10, ge=1, le=100)
    # How long the answers of GET /status and GET /portfolio/history are kept and shared by every request
    # asking the same (portfolio, query, token's scope); a new event of the portfolio journaled by this
    # monitor, a halt and a resume drop them at once (docs/api.md). 0: every request reads Postgres.
    cache_seconds: float = Field(default=1.0, ge=0, le=1)

    @model_validator(mode="after")
    def _read_token_file(self) -> ApiSettings:
        if self.token_file is not None:
            try:
                self.token = SecretStr(self.token_file.read_text().strip())
            except OSError as exc:
                raise ValueError(f"api.token_file {self.token_file}: {exc.strerror}") from None
        if self.viewer_token_file is not None:
            try:
                self.viewer_token = SecretStr(self.viewer_token_file.read_text().strip())
            except OSError as exc:
                raise ValueError(f"api.viewer_token_file {self.viewer_token_file}: {exc.strerror}") from None
        return self


class Configured(BaseSettings):
    """Settings read from the environment (``REBAL__SECTION__KEY``) over the configuration file
    (``REBAL_CONFIG``): the one configuration every service, the CLI and the venues read."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, ConfigFileSource(settings_cls), file_secret_settings


class ServiceSettings(Configured):
    """What every service reads. Subclasses add their own sections and set `service`."""

    service: ClassVar[str] = "rebal"
    model_config = SettingsConfigDict(
        env_prefix="REBAL__",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    nats: NatsSettings = NatsSettings()
    database: DatabaseSettings = DatabaseSettings()
    http: HttpSettings = HttpSettings()
    portfolios: tuple[str, ...] = ("demo",)
    # The system's mode, one switch for every service (REBAL__LIVE): live, the executor executes plans and
    # the API takes immediate live rebalances; each service reports it (`rebal_build_info`, `/config`).
    live: bool = False

    @model_validator(mode="after")
    def _default_port(self) -> ServiceSettings:
        if self.http.port == 0:
            self.http = HttpSettings(host=self.http.host, port=PORTS.get(self.service, 8100))
        return self

    def public(self) -> dict[str, Any]:
        """The settings as a document with secrets masked (for logs, `/config` and `rebal config show`)."""
        document = masked(self.model_dump(mode="json"))
        assert isinstance(document, dict)
        return document


MASK = "**********"
# Values under keys like these are masked even when a setting forgot SecretStr.
SECRET_KEY = re.compile(r"(password|secret|token|api_?key|private)", re.IGNORECASE)


# The password of a URL's user information (`nats://user:PASSWORD@host`, `postgresql://u:PASSWORD@db/x`),
# in every server of a comma-separated list.
# A NATS server's token, given as the URL's user alone (`nats://TOKEN@host`).
_NATS_TOKEN = re.compile(r"(\b(?:nats|tls|ws|wss)://)[^:/@,\s]+@", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@,\s]*:)[^@/,\s]*@", re.IGNORECASE)


def setting_key(loc: tuple[int | str, ...]) -> str:
    """A validation error's location as the dotted key a user writes (``planning.network_file``)."""
    return ".".join(str(part) for part in loc) or "(top level)"


def masked(value: Any, key: str = "") -> Any:
    """A settings document with every secret replaced by `MASK` (SecretStr dumps masked already)."""
    if isinstance(value, dict):
        return {k: masked(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key) for v in value]
    if isinstance(value, str) and value and SECRET_KEY.search(key) and not key.endswith("_file"):
        return MASK
    if isinstance(value, str) and "@" in value:
        return _NATS_TOKEN.sub(rf"\g<1>{MASK}@", _URL_PASSWORD.sub(rf"\g<1>{MASK}@", value))
    return value


class ConfigFileError(ValueError):
    """The configuration file cannot be read or is not a mapping of sections; the message names it."""


def config_file() -> Path | None:
    """The configuration file in use: the one `using_config_file` chose, else ``$REBAL_CONFIG``, else none."""
    chosen = _config_file.get()
    if chosen is not None:
        return chosen
    named = os.environ.get(CONFIG_FILE_ENV, "").strip()
    return Path(named) if named else None


@contextmanager
def using_config_file(path: Path | None) -> Iterator[None]:
    """Settings made inside read `path` instead of ``$REBAL_CONFIG`` (`rebal config validate FILE`)."""
    token = _config_file.set(path)
    try:
        yield
    finally:
        _config_file.reset(token)


def read_config_file(path: Path) -> dict[str, Any]:
    """The file's sections: TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON."""
    try:
        document = load_document(path)
    except FileError as exc:
        raise ConfigFileError(f"{CONFIG_FILE_ENV}: {exc}") from None
    if document is None:
        return {}
    if not isinstance(document, dict):
        raise ConfigFileError(f"{CONFIG_FILE_ENV}: {path}: expected a mapping of sections (nats, ...)")
    return document


class ConfigFileSource(PydanticBaseSettingsSource):
    """The sections of the configuration file that this service's settings know: one file configures
    every service, each takes its own (`rebal config validate` reports what no service knows)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole document is read at once in __call__

    def __call__(self) -> dict[str, Any]:
        path = config_file()
        if path is None:
            return {}
        known = self.settings_cls.model_fields
        return {key: value for key, value in read_config_file(path).items() if key in known}
