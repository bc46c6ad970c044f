"""Numbers as operators read them: money to its currency's precision, amounts to the market's step,
weights to two decimals of a percent. One rule for the CLI and the dashboard (the API sends the places
with the exact values, which stay exact strings).

Planned and computed figures carry more digits than anyone can trade or pay (an estimated cost of
12576.954285892 USDT, a desired amount of 0.202238178706 BTC): shown as they are, they read as float
noise, and a column of them no longer fits a terminal. What is shown is rounded half-even to what the
currency or the market can hold; the exact value stays in the JSON.
"""

from __future__ import annotations

from decimal import ROUND_DOWN, ROUND_HALF_EVEN, Decimal

# Decimal places of money in a quote currency: the minor unit of fiat money and of the dollar
# stablecoins priced like it; any other quote (BTC, ETH, BNB as quotes) to its satoshi-like 8 places.
MINOR_UNITS = {
    "JPY": 0,
    "KRW": 0,
    "USD": 2,
    "EUR": 2,
    "GBP": 2,
    "CHF": 2,
    "AUD": 2,
    "CAD": 2,
    "TRY": 2,
    "BRL": 2,
    "USDT": 2,
    "USDC": 2,
    "BUSD": 2,
    "FDUSD": 2,
    "TUSD": 2,
    "DAI": 2,
}
OTHER_QUOTE_PLACES = 8
# A price keeps at least this many significant digits (0.00001234 USDT is not 0.00), at most
# PRICE_MAX_PLACES places.
PRICE_SIGNIFICANT = 4
PRICE_MAX_PLACES = 12
# Weights are shown as percentages with two decimals (12.34%).
PERCENT_PLACES = 2


def quote_places(quote: str | None) -> int:
    """Decimal places of money in `quote` (8 when the quote is unknown)."""
    if quote is None:
        return OTHER_QUOTE_PLACES
    return MINOR_UNITS.get(quote.upper(), OTHER_QUOTE_PLACES)


def _fixed(value: Decimal, places: int) -> str:
    rounded = value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_EVEN)
    text = format(rounded, "f")
    return text[1:] if text.startswith("-") and not rounded else text  # never "-0.00"


def money_text(value: Decimal | str | float, quote: str | None) -> str:
    """Money in `quote` to the currency's places: ``12576.954285892`` USDT → ``12576.95``."""
    return _fixed(_decimal(value), quote_places(quote))


def price_places(value: Decimal | str | float, quote: str | None) -> int:
    """The places a price is shown with: the quote's, or more for a small price (four significant digits)."""
    price = abs(_decimal(value))
    places = quote_places(quote)
    if price == 0:
        return places
    significant = PRICE_SIGNIFICANT - 1 - price.adjusted()
    return min(max(places, significant), PRICE_MAX_PLACES)


def price_text(value: Decimal | str | float, quote: str | None) -> str:
    """A price in `quote`: ``58958.1581`` USDT → ``58958.16``; ``0.0000123456`` → ``0.00001235``."""
    return _fixed(_decimal(value), price_places(value, quote))


def amount_text(value: Decimal | str | float, step: Decimal | str | None) -> str:
    """An amount to the market's step, cut toward zero (what a venue can hold): ``0.202238178706`` BTC
    with a step of 0.00001 → ``0.20223``. Without a step, the exact decimal without trailing zeros."""
    amount = _decimal(value)
    if step is None:
        return _plain(amount)
    unit = _decimal(step)
    if unit <= 0:
        return _plain(amount)
    whole = (amount / unit).to_integral_value(rounding=ROUND_DOWN) * unit
    places = max(0, -unit.normalize().as_tuple().exponent)  # type: ignore[operator]
    return _fixed(whole, places)


def percent_text(weight: Decimal | str | float | None) -> str:
    """A weight (a fraction) as a percentage with two decimals: ``0.123456`` → ``12.35%``; ``-`` for none."""
    if weight is None:
        return "-"
    return _fixed(_decimal(weight) * 100, PERCENT_PLACES) + "%"


def _plain(value: Decimal) -> str:
    if value == 0:
        return "0"
    return format(value.normalize(), "f")


def _decimal(value: Decimal | str | float) -> Decimal:
    if isinstance(value, Decimal):
        return value
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))
