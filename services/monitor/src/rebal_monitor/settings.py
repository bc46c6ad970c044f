"""Monitor settings."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import AnyHttpUrl, Field, SecretStr, model_validator

from rebal.notifications import KINDS, Kind
from rebal.settings import API_TOKEN_MIN_LENGTH, ApiSettings, Section, ServiceSettings


class NotifySettings(Section):
    """Where operators are told of breaches, plans waiting for approval, runs that finished or failed
    and halts (docs/autopilot.md): a webhook (JSON, signed with HMAC-SHA256 of the body under
    `webhook_secret`), and apprise URLs (``tgram://…``, ``slack://…``, ``mailtos://…``). Nothing is sent
    when none is configured."""

    webhook_url: AnyHttpUrl | None = None
    webhook_secret: SecretStr | None = None
    webhook_secret_file: Path | None = None
    # Apprise URLs carry their services' tokens: secrets, never logged (a file: one URL a line).
    apprise_urls: tuple[SecretStr, ...] = ()
    apprise_urls_file: Path | None = None
    kinds: tuple[Kind, ...] = KINDS
    timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # A failed delivery is tried again after base x 2^(attempt-1) s (at most max), up to max_attempts.
    max_attempts: int = Field(default=8, ge=1, le=50)
    retry_base_seconds: float = Field(default=2.0, gt=0)
    retry_max_seconds: float = Field(default=300.0, gt=0)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)

    @model_validator(mode="after")
    def _read_files(self) -> NotifySettings:
        try:
            if self.webhook_secret_file is not None:
                self.webhook_secret = SecretStr(self.webhook_secret_file.read_text().strip())
            if self.apprise_urls_file is not None:
                lines = self.apprise_urls_file.read_text().splitlines()
                self.apprise_urls = tuple(SecretStr(line.strip()) for line in lines if line.strip())
        except OSError as exc:
            raise ValueError(f"notify: {exc.filename}: {exc.strerror}") from None
        if self.webhook_url is not None and self.webhook_secret is None:
            raise ValueError("notify.webhook_secret: a webhook needs a shared secret to sign with")
        return self


class MonitorSettings(ServiceSettings):
    service: ClassVar[str] = "monitor"

    api: ApiSettings = ApiSettings()
    notify: NotifySettings = NotifySettings()

    @model_validator(mode="after")
    def _one_mode(self) -> MonitorSettings:
        """`live` (REBAL__LIVE, every service's switch) and its former spelling `api.live` are one fact."""
        if self.live != self.api.live:
            self.live = True
            self.api = self.api.model_copy(update={"live": True})
        return self


def token_problem(settings: MonitorSettings) -> str | None:
    """Why the API must not start (live without a strong token), or None."""
    token = settings.api.token.get_secret_value() if settings.api.token is not None else ""
    if settings.api.live and len(token) < API_TOKEN_MIN_LENGTH:
        what = "missing" if not token else f"only {len(token)} characters"
        return (
            f"api.token: live mode needs a bearer token of at least {API_TOKEN_MIN_LENGTH} characters"
            f" ({what}); set REBAL__API__TOKEN or REBAL__API__TOKEN_FILE"
        )
    viewer = settings.api.viewer_token.get_secret_value() if settings.api.viewer_token is not None else ""
    if settings.api.live and viewer and len(viewer) < API_TOKEN_MIN_LENGTH:
        return (
            f"api.viewer_token: live mode needs tokens of at least {API_TOKEN_MIN_LENGTH} characters"
            f" (only {len(viewer)} characters)"
        )
    return None
