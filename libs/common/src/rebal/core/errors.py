"""The one error type for bad input: it names where (a node path or a key) and what is wrong."""

from __future__ import annotations


class InputError(ValueError):
    """Input that cannot be planned: malformed values, inconsistent trees, missing prices.

    `where` is a node path (``alice/binance/spot/btc``) or a key (``prices.BTC``); the caller adds
    the file name. Expected planning outcomes (below minimum, no market) are *not* errors: they are skips.
    """

    def __init__(self, where: str, message: str, source: str = "") -> None:
        self.where = where
        self.message = message
        # The input it is about when the raiser knows better than the caller: real, target, prices, options.
        self.source = source
        super().__init__(f"{where}: {message}" if where else message)


def spelled(raw: object) -> str:
    """A value read from a JSON or YAML file, for a message, as the file spells it: ``null``, ``true``,
    ``false`` (not Python's None, True, False); any other value as `repr` shows it."""
    if raw is None:
        return "null"
    if isinstance(raw, bool):
        return "true" if raw else "false"
    return repr(raw)
