"""How the services that trade configure the paper exchange (a section of their settings)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import asyncpg
from pydantic import Field

from rebal.io import load_document
from rebal.settings import Section
from rebal_venues.paper import Clock, PaperVenue, utc_now
from rebal_venues.paper_futures import BASELINE_FUNDING_RATE, futures_of


class PaperPricing(Section):
    """One paper exchange's own prices: its assets at `price_factor` x the moving price, bought at the ask
    and sold at the bid, `spread_bps` (basis points of the mid) apart."""

    price_factor: Decimal = Field(default=Decimal(1), gt=0, le=10)
    spread_bps: Decimal = Field(default=Decimal(0), ge=0, lt=10_000)


class PaperSettings(Section):
    """The paper exchange's markets and base prices (docs/formats.md files) and how its prices move."""

    markets_file: Path = Path("examples/demo/markets.json")
    prices_file: Path = Path("examples/demo/prices.json")
    amplitude: float = Field(default=0.02, ge=0, lt=0.5)
    period_seconds: float = Field(default=3600.0, gt=0)
    noise: float = Field(default=0.001, ge=0, lt=0.1)
    bucket_seconds: float = Field(default=10.0, ge=0)
    # Transfers between paper accounts: credited this long after the withdrawal, less the asset's fee.
    transfer_delay_seconds: float = Field(default=60.0, ge=0)
    withdraw_fees: dict[str, Decimal] = Field(default_factory=dict)
    # A venue's documented unpleasant parts (`rebal_venues.paper`): a new order is not shown by look-ups
    # until it is this old; at most this many new orders per account in 10 s (Binance: 50; None: no limit);
    # the trading fee in the asset received (Binance; off: in the quote, as the demo's figures assume).
    order_visible_after_seconds: float = Field(default=1.0, ge=0)
    orders_per_10s: int | None = Field(default=50, gt=0)
    fee_in_received: bool = False
    # Each exchange's own prices and spread, by exchange name (one not listed trades at the mid of the
    # moving prices): `{"coinbase": {"price_factor": "1.005", "spread_bps": "4"}}`.
    venues: dict[str, PaperPricing] = Field(default_factory=dict)
    # Perpetual futures (`rebal_venues.paper_futures`): the contracts of each exchange (a contracts
    # document, docs/formats.md; an exchange it does not list has no futures accounts), the funding rate
    # paid every `funding_interval_hours` (Binance's baseline: 0.01% every 8 hours), and the clearance fee
    # charged on the notional of a liquidated position.
    contracts_file: Path | None = Path("examples/demo/contracts.json")
    funding_rate: Decimal = Field(default=BASELINE_FUNDING_RATE, gt=-1, lt=1)
    funding_interval_hours: float = Field(default=8.0, gt=0)
    liquidation_fee_rate: Decimal = Field(default=Decimal("0.01"), ge=0, lt=1)


def open_paper_venues(
    exchanges: Iterable[str], pool: asyncpg.Pool, settings: PaperSettings, clock: Clock = utc_now
) -> dict[str, PaperVenue]:
    """One paper venue per exchange name, sharing the pool, the documents and the clock; with perpetual
    futures where the contracts document lists the exchange."""
    markets = load_document(settings.markets_file)
    prices = load_document(settings.prices_file)
    contracts = load_document(settings.contracts_file) if settings.contracts_file is not None else None
    rules = {
        "funding_rate": settings.funding_rate,
        "funding_interval": timedelta(hours=settings.funding_interval_hours),
        "liquidation_fee_rate": settings.liquidation_fee_rate,
    }
    movement = {
        "amplitude": settings.amplitude,
        "period_seconds": settings.period_seconds,
        "noise": settings.noise,
        "bucket_seconds": settings.bucket_seconds,
    }
    delay = timedelta(seconds=settings.transfer_delay_seconds)
    opened = {
        exchange: PaperVenue.from_documents(
            exchange,
            pool,
            markets,
            prices,
            clock,
            delay,
            settings.withdraw_fees,
            order_visible_after=timedelta(seconds=settings.order_visible_after_seconds),
            orders_per_10s=settings.orders_per_10s,
            fee_in_received=settings.fee_in_received,
            price_factor=settings.venues.get(exchange, PaperPricing()).price_factor,
            spread_bps=settings.venues.get(exchange, PaperPricing()).spread_bps,
            **movement,
        )
        for exchange in sorted(set(exchanges))
    }
    return {exchange: futures_of(venue, contracts, **rules) for exchange, venue in opened.items()}
