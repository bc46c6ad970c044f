"""How a service configures one account on a real exchange through ccxt (a section of its settings).

Keys are `SecretStr` (never logged, never in a repr), from the environment (``REBAL__…__API_KEY``) or from
secret files (``…__API_KEY_FILE``, ``…__SECRET_FILE``), the files winning. Production-safe defaults: the
exchange's sandbox (testnet) is on until the operator turns it off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, model_validator

from rebal.settings import Section


class CcxtVenueSettings(Section):
    """One account on one ccxt exchange."""

    # Any id of `ccxt.exchanges` ("binance", "kraken", …); checked when the venue is opened.
    exchange_id: str = "binance"
    # The venue's name in the portfolio tree (the exchange id when empty).
    name: str = ""
    # The account of the tree these keys trade for.
    account: str = "main"
    api_key: SecretStr = SecretStr("")
    secret: SecretStr = SecretStr("")
    api_key_file: Path | None = None
    secret_file: Path | None = None
    # The exchange's testnet; opening fails when the exchange has none and this is left on.
    sandbox: bool = True
    # Tests: every API url of the exchange keeps its path and gets this origin ("http://127.0.0.1:8765").
    api_base_url: str | None = None
    timeout_ms: int = Field(default=10_000, gt=0)
    # ccxt's own throttle; the exchange's rate limit (ms between requests) unless `rate_limit_ms` is set.
    enable_rate_limit: bool = True
    rate_limit_ms: float | None = Field(default=None, gt=0)
    # Request cost (ccxt's units: one per `rate_limit_ms`) the throttle banks while idle; 1 like ccxt's.
    rate_limit_burst: float = Field(default=1.0, ge=1)
    # A 429 is retried (same request, same client order id) this many times, after the venue's Retry-After
    # or else after backoff_seconds·2^(attempt-1); a longer wait than max_backoff_seconds is the caller's.
    rate_limit_retries: int = Field(default=3, ge=0)
    backoff_seconds: float = Field(default=0.5, gt=0)
    max_backoff_seconds: float = Field(default=30.0, gt=0)
    # The venue's order-count limits (new orders per 10 seconds and per day); the exchange's profile's
    # when unset (Binance: 50 and 160,000).
    orders_per_10s: int | None = Field(default=None, gt=0)
    orders_per_day: int | None = Field(default=None, gt=0)
    # Extra ccxt options, merged over the exchange's profile in `rebal_venues.ccxt_venue`.
    options: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _read_secret_files(self) -> CcxtVenueSettings:
        if self.api_key_file is not None:
            self.api_key = SecretStr(_read_secret(self.api_key_file, "api_key_file"))
        if self.secret_file is not None:
            self.secret = SecretStr(_read_secret(self.secret_file, "secret_file"))
        return self

    @property
    def venue_name(self) -> str:
        return self.name or self.exchange_id


def _read_secret(path: Path, field: str) -> str:
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{field} {path}: {exc.strerror}") from None
