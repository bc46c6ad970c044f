"""The venues a service trades on, from configuration: the paper exchange (the default) or any ccxt exchange.

One ``[venues.<name>]`` section per venue (the name is the exchange of the layout's accounts and of the
markets document), read from the configuration file (``REBAL_CONFIG``) and the environment
(``REBAL__VENUES__<NAME>__KIND=ccxt``), loaded once when a service starts::

    [venues.binance]
    kind = "ccxt"                 # "paper" (the default for every exchange not configured) or "ccxt"
    exchange_id = "binance"       # any ccxt exchange id; the section's name when left out
    sandbox = true                # the exchange's testnet (the default; opening fails without one)
    account = "demo/binance/spot" # the layout account these keys trade for
    api_key_file = "/run/secrets/binance_key"
    secret_file = "/run/secrets/binance_secret"

    [venues.binance.accounts.savings]   # more accounts on the same exchange, each with its own keys
    account = "demo/binance/savings"
    api_key_file = "/run/secrets/binance_savings_key"
    secret_file = "/run/secrets/binance_savings_secret"

Keys are `SecretStr`: never logged, never in a repr.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import asyncpg
from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from rebal.core.contracts import Contract
from rebal.core.positions import MarginMode, Position
from rebal.core.venues import Quote
from rebal.futures import FuturesVenue, Margin
from rebal.settings import Configured, Section
from rebal.venue import (
    AssetNetwork,
    Balances,
    BookTop,
    DepositAddress,
    MarketInfo,
    OrderState,
    Side,
    Transfer,
    Venue,
    VenueAuthError,
    VenueError,
)
from rebal_venues.ccxt_settings import CcxtVenueSettings
from rebal_venues.settings import PaperSettings, open_paper_venues

if TYPE_CHECKING:  # ccxt takes seconds to import: only a service with a ccxt venue pays for it
    from rebal_venues.ccxt_venue import CcxtVenue

# The valuation quote of a ccxt venue unless its section names another.
DEFAULT_CCXT_QUOTE = "USDT"


class ConfiguredVenue(Venue, Protocol):
    """A venue as a service opens it: the port, plus what the tracker needs and a close."""

    @property
    def valuation_quote(self) -> str: ...

    async def seed(self, account: str, amounts: Mapping[str, Decimal]) -> bool: ...

    async def close(self) -> None: ...


class AccountKeys(Section):
    """Another account's keys on a configured ccxt venue."""

    # The layout's account path (``demo/binance/savings``); the accounts entry's name when empty.
    account: str = ""
    api_key: SecretStr = SecretStr("")
    secret: SecretStr = SecretStr("")
    api_key_file: Path | None = None
    secret_file: Path | None = None


class VenueSettings(CcxtVenueSettings):
    """One venue: `kind` chooses the adapter; the ccxt fields (`CcxtVenueSettings`) apply to ccxt only."""

    kind: Literal["paper", "ccxt"] = "paper"
    # The ccxt exchange id; the venue's (section's) name when empty.
    exchange_id: str = ""
    # The asset the tracker values this venue's holdings in (ccxt; the paper exchange's is its prices').
    valuation_quote: str = DEFAULT_CCXT_QUOTE
    accounts: dict[str, AccountKeys] = Field(default_factory=dict)

    def ccxt_accounts(self, venue: str) -> list[CcxtVenueSettings]:
        """One `CcxtVenueSettings` per account: the section's own keys, then each of `accounts`."""
        common = self.model_dump(exclude={"kind", "valuation_quote", "accounts"})
        common.update(exchange_id=self.exchange_id or venue, name=venue)
        found = [CcxtVenueSettings.model_validate(common)] if self.api_key.get_secret_value() else []
        for entry, keys in sorted(self.accounts.items()):
            own = keys.model_dump()
            own["account"] = keys.account or entry
            found.append(CcxtVenueSettings.model_validate(common | own))
        return found

    @model_validator(mode="after")
    def _one_account_per_keys(self) -> VenueSettings:
        paths = [keys.account or entry for entry, keys in self.accounts.items()]
        if self.api_key.get_secret_value():
            paths.append(self.account)
        repeated = sorted({path for path in paths if paths.count(path) > 1})
        if repeated:
            raise ValueError(f"accounts {', '.join(repeated)} have more than one set of keys")
        return self


class VenuesConfig(Configured):
    """The ``venues`` section of the configuration (file and ``REBAL__VENUES__…``)."""

    model_config = SettingsConfigDict(
        env_prefix="REBAL__", env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    venues: dict[str, VenueSettings] = Field(default_factory=dict)


class CcxtAccounts:
    """One ccxt exchange under one venue name, with a `CcxtVenue` (a set of keys) per account."""

    def __init__(self, name: str, quote: str, by_account: Mapping[str, CcxtVenue]) -> None:
        if not by_account:
            raise ValueError(f"venue {name!r} is ccxt but no account has keys (api_key or api_key_file)")
        self._name = name
        self._quote = quote
        self._by_account = dict(sorted(by_account.items()))
        self._public = next(iter(self._by_account.values()))

    def __repr__(self) -> str:
        return f"CcxtAccounts(name={self._name!r}, accounts={sorted(self._by_account)!r})"

    @property
    def name(self) -> str:
        return self._name

    @property
    def valuation_quote(self) -> str:
        return self._quote

    @property
    def accounts(self) -> Mapping[str, CcxtVenue]:
        return self._by_account

    def of(self, account: str) -> CcxtVenue:
        """The account's venue; an account without keys cannot trade: stop and alert (not retryable)."""
        venue = self._by_account.get(account)
        if venue is None:
            raise VenueAuthError(f"{self._name}: no keys are configured for account {account!r}")
        return venue

    async def markets(self) -> Mapping[str, MarketInfo]:
        return await self._public.markets()

    async def prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        return await self._public.prices(symbols)

    async def quotes(self, symbols: Sequence[str]) -> Mapping[str, Quote]:
        return await self._public.quotes(symbols)

    async def balances(self, account: str) -> Balances:
        return await self.of(account).balances(account)

    async def seed(self, account: str, amounts: Mapping[str, Decimal]) -> bool:
        return await self.of(account).seed(account, amounts)

    async def place_order(
        self,
        account: str,
        client_order_id: str,
        symbol: str,
        side: Side,
        amount: Decimal,
        *,
        price: Decimal | None = None,
        post_only: bool = False,
    ) -> OrderState:
        return await self.of(account).place_order(
            account, client_order_id, symbol, side, amount, price=price, post_only=post_only
        )

    async def order(self, account: str, client_order_id: str, symbol: str | None = None) -> OrderState | None:
        return await self.of(account).order(account, client_order_id, symbol)

    async def open_orders(self, account: str, symbol: str | None = None) -> Sequence[OrderState]:
        return await self.of(account).open_orders(account, symbol)

    async def cancel_order(self, account: str, client_order_id: str, symbol: str) -> OrderState | None:
        return await self.of(account).cancel_order(account, client_order_id, symbol)

    async def book_top(self, symbol: str) -> BookTop:
        return await self._public.book_top(symbol)

    async def networks(self, asset: str) -> Mapping[str, AssetNetwork]:
        return await self._public.networks(asset)

    async def deposit_address(self, account: str, asset: str, network: str) -> DepositAddress:
        return await self.of(account).deposit_address(account, asset, network)

    async def withdraw(
        self, account: str, transfer_id: str, asset: str, amount: Decimal, destination: DepositAddress
    ) -> Transfer:
        return await self.of(account).withdraw(account, transfer_id, asset, amount, destination)

    async def withdrawal(self, account: str, transfer_id: str, asset: str) -> Transfer | None:
        return await self.of(account).withdrawal(account, transfer_id, asset)

    async def deposit(self, account: str, asset: str, txid: str) -> Transfer | None:
        return await self.of(account).deposit(account, asset, txid)

    async def withdrawals(self, account: str, asset: str, since: datetime) -> Sequence[Transfer]:
        return await self.of(account).withdrawals(account, asset, since)

    # -- perpetual futures accounts (`rebal.futures`), where the venue is a derivatives exchange --------

    def _futures(self, account: str | None = None) -> FuturesVenue:
        venue = self._public if account is None else self.of(account)
        if not isinstance(venue, FuturesVenue):
            raise VenueError(f"{self._name} ({venue.client.id}) has no perpetual futures accounts")
        return venue

    async def contracts(self) -> Mapping[str, Contract]:
        return await self._futures().contracts()

    async def mark_prices(self, symbols: Sequence[str]) -> Mapping[str, Decimal]:
        return await self._futures().mark_prices(symbols)

    async def positions(self, account: str) -> Sequence[Position]:
        return await self._futures(account).positions(account)

    async def margin(self, account: str) -> Margin:
        return await self._futures(account).margin(account)

    async def set_leverage(self, account: str, symbol: str, leverage: int) -> None:
        await self._futures(account).set_leverage(account, symbol, leverage)

    async def set_margin_mode(self, account: str, symbol: str, mode: MarginMode) -> None:
        await self._futures(account).set_margin_mode(account, symbol, mode)

    async def place_position_order(
        self, account: str, client_order_id: str, symbol: str, side: Side, amount: Decimal, reduce_only: bool
    ) -> OrderState:
        venue = self._futures(account)
        return await venue.place_position_order(account, client_order_id, symbol, side, amount, reduce_only)

    async def close(self) -> None:
        for venue in self._by_account.values():
            await venue.close()


def open_ccxt_accounts(name: str, settings: VenueSettings) -> CcxtAccounts:
    """The ccxt venue `name` as configured (clients built, not yet connected)."""
    from rebal_venues.ccxt_venue import open_ccxt_venue

    opened: dict[str, CcxtVenue] = {}
    try:
        for account in settings.ccxt_accounts(name):
            opened[account.account] = open_ccxt_venue(account)
    except ValueError as exc:
        raise ValueError(f"venues.{name}: {exc}") from None
    return CcxtAccounts(name, settings.valuation_quote, opened)


def open_venues(
    exchanges: Iterable[str],
    pool: asyncpg.Pool | None,
    paper: PaperSettings,
    config: VenuesConfig | None = None,
) -> dict[str, ConfiguredVenue]:
    """Every venue the service needs: `exchanges` (the layout's or the markets document's) and every
    configured one; ccxt where configured so, the paper exchange otherwise. `config` is read from the
    configuration file and the environment when not given."""
    config = config if config is not None else VenuesConfig()
    names = sorted(set(exchanges) | set(config.venues))
    ccxt_names = [name for name in names if name in config.venues and config.venues[name].kind == "ccxt"]
    opened: dict[str, ConfiguredVenue] = {}
    paper_names = [name for name in names if name not in ccxt_names]
    if paper_names:
        if pool is None:
            raise ValueError(f"the paper venues {', '.join(paper_names)} need the database")
        opened.update(open_paper_venues(paper_names, pool, paper))
    for name in ccxt_names:
        opened[name] = open_ccxt_accounts(name, config.venues[name])
    return dict(sorted(opened.items()))
