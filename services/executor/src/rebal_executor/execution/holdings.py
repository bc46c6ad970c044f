"""What one account holds, read once for several of a phase's sells instead of once per sell.

A venue answers a balance read with every asset of the account (Binance's ``/api/v3/account``: weight 20,
and ccxt parses all of it: ~25 ms of CPU for 2,500 assets), so a read per sell made an account's sells
quadratic in its assets. A sell
reuses the last read while it is younger than `ExecutionSettings.balances_max_age_seconds` AND no order of
ours on the account has touched the asset it sells since (as its base or its quote): what our own legs
change is always read again, and a read is never older than that age. A read older than the order it
sizes is nothing new: the read and the send were never atomic, and a venue refusing a sell for
insufficient funds resizes it once from a fresh read (`legs.resize`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from rebal.venue import Balances, Venue
from rebal_executor.execution.ports import Context


@dataclass
class Holdings:
    """One account's last balance read, and the assets our orders there touched since."""

    ctx: Context
    venue: Venue
    account: str
    _read: Balances | None = field(default=None, init=False)
    _at: datetime | None = field(default=None, init=False)
    _touched: set[str] = field(default_factory=set, init=False)

    async def balances(self, asset: str) -> Balances:
        """The account's balances, fresh enough for `asset` (read again when they are not)."""
        now = self.ctx.clock()
        max_age = self.ctx.settings.execution.balances_max_age_seconds
        stale = self._at is None or (now - self._at).total_seconds() >= max_age or asset in self._touched
        if self._read is None or stale:
            self._read = await self.venue.balances(self.account)
            self._at, self._touched = now, set()
        return self._read

    def touched(self, *assets: str) -> None:
        """An order of ours changed these assets (or may have): they are read again before they are used."""
        self._touched.update(assets)

    def forget(self) -> None:
        """Everything is read again (our orders were cancelled: what they locked is free again)."""
        self._read, self._at = None, None
