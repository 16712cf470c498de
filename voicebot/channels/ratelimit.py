"""Per-sender token bucket: a burst of ``per_minute`` messages, refilled evenly over a minute.

A sender over the limit gets one polite refusal (the pack's ``rate_limited`` phrase) per
minute; further messages in that minute are acknowledged and dropped, so a flood cannot turn
into a flood of paid replies.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ALLOW", "DROP", "REFUSE", "RateLimiter"]

ALLOW, REFUSE, DROP = "", "refuse", "drop"


@dataclass(slots=True)
class _Bucket:
    tokens: float
    stamp: float
    refused: float = float("-inf")


class RateLimiter:
    def __init__(
        self,
        per_minute: int,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_senders: int = 100_000,
    ) -> None:
        self.capacity = float(per_minute)
        self._rate = per_minute / 60.0
        self._clock = clock
        self._max = max_senders
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()

    async def take(self, sender: str) -> str:
        """``check`` behind the async ``voicebot.state.Limiter`` interface."""
        return self.check(sender)

    def check(self, sender: str) -> str:
        """ALLOW and spend a token, or REFUSE (first time this minute), or DROP."""
        if self.capacity <= 0:
            return ALLOW
        now = self._clock()
        bucket = self._buckets.get(sender)
        if bucket is None:
            bucket = self._buckets[sender] = _Bucket(tokens=self.capacity, stamp=now)
            while len(self._buckets) > self._max:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(sender)
            bucket.tokens = min(self.capacity, bucket.tokens + (now - bucket.stamp) * self._rate)
            bucket.stamp = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return ALLOW
        if now - bucket.refused >= 60.0:
            bucket.refused = now
            return REFUSE
        return DROP
