"""Monitor settings."""

from __future__ import annotations

from typing import ClassVar

from pydantic import model_validator

from rebal.settings import API_TOKEN_MIN_LENGTH, ApiSettings, ServiceSettings


class MonitorSettings(ServiceSettings):
    service: ClassVar[str] = "monitor"

    api: ApiSettings = ApiSettings()

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
