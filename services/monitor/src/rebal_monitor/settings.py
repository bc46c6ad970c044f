"""Monitor settings."""

from __future__ import annotations

from typing import ClassVar

from rebal.settings import API_TOKEN_MIN_LENGTH, ApiSettings, ServiceSettings


class MonitorSettings(ServiceSettings):
    service: ClassVar[str] = "monitor"

    api: ApiSettings = ApiSettings()


def token_problem(settings: MonitorSettings) -> str | None:
    """Why the API must not start (live without a strong token), or None."""
    token = settings.api.token.get_secret_value() if settings.api.token is not None else ""
    if settings.api.live and len(token) < API_TOKEN_MIN_LENGTH:
        what = "missing" if not token else f"only {len(token)} characters"
        return (
            f"api.token: live mode needs a bearer token of at least {API_TOKEN_MIN_LENGTH} characters"
            f" ({what}); set REBAL__API__TOKEN or REBAL__API__TOKEN_FILE"
        )
    return None
