"""Rate limits of the HTTP API: per client address and per credential, with the `limits` library.

`limits` (the engine under slowapi) keeps moving windows in process memory; slowapi itself was not
used because it limits per route through decorators and a `request` argument on every handler,
while these limits are per caller across the whole API, checked at the two points of the check
order where they belong (the address before authentication, the credential right after it).
Each copy of the service counts on its own; the limit an attacker meets is per copy.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field

import limits
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

__all__ = ["ApiRateLimits", "Throttled"]


class Throttled(Exception):
    """Too many requests: try again after `retry_after_s` seconds."""

    def __init__(self, scope: str, retry_after_s: int) -> None:
        super().__init__(f"too many requests from this {scope}; retry after {retry_after_s} s")
        self.scope = scope
        self.retry_after_s = retry_after_s


@dataclass
class ApiRateLimits:
    """The API's two limits (rates in the `limits` notation, e.g. `120/minute`)."""

    per_token: str
    per_ip: str
    _limiter: MovingWindowRateLimiter = field(default_factory=lambda: MovingWindowRateLimiter(MemoryStorage()), repr=False)

    def __post_init__(self) -> None:
        self._token_items = limits.parse_many(self.per_token)
        self._ip_items = limits.parse_many(self.per_ip)

    async def check_ip(self, address: str) -> None:
        """Count one request from `address`; raise Throttled past the limit."""
        await self._hit(self._ip_items, "ip", address)

    async def check_credential(self, credential: str) -> None:
        """Count one request with an authenticated credential (keyed by its hash, never the secret); raise Throttled past the limit."""
        await self._hit(self._token_items, "token", hashlib.sha256(credential.encode()).hexdigest())

    async def _hit(self, items: list[limits.RateLimitItem], scope: str, key: str) -> None:
        for item in items:
            if not await self._limiter.hit(item, scope, key):
                stats = await self._limiter.get_window_stats(item, scope, key)
                raise Throttled(scope, max(1, math.ceil(stats.reset_time - time.time())))
