"""Slowing down password and key guessing: failed attempts per source address and per user.

Each failure doubles the wait before the gateway answers the next attempt from that source or
for that user (``base_delay``, 2x, 4x, ... up to ``max_delay``). After ``max_failures`` failures
from one source, that source is refused outright until ``window`` seconds have passed since its
last failure. A user's own counter only delays (never refuses), so that nobody can lock a person
out by failing on purpose from elsewhere. Counters are forgotten ``window`` seconds after the last
failure, and a source's counter is reset when it authenticates.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Count:
    failures: int
    last: float


class AuthThrottle:
    """Counts failed logins; says how long to wait and whom to refuse. Not thread-safe: one event loop."""

    def __init__(
        self,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        max_failures: int = 10,
        window: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.base_delay, self.max_delay = base_delay, max_delay
        self.max_failures, self.window = max_failures, window
        self.clock = clock
        self._counts: dict[tuple[str, str], _Count] = {}

    def _failures(self, key: tuple[str, str]) -> int:
        count = self._counts.get(key)
        if count is None:
            return 0
        if self.clock() - count.last >= self.window:
            del self._counts[key]
            return 0
        return count.failures

    def delay(self, source: str, user: str) -> float:
        """Seconds to wait before answering the next attempt of ``user`` from ``source``."""
        n = max(self._failures(("source", source)), self._failures(("user", user)))
        if n == 0:
            return 0.0
        return float(min(self.max_delay, self.base_delay * 2 ** (n - 1)))

    def refusal(self, source: str) -> str | None:
        """Why ``source`` may not try now (for people), or None when it may."""
        n = self._failures(("source", source))
        if n < self.max_failures:
            return None
        wait = self.window - (self.clock() - self._counts[("source", source)].last)
        return (
            f"Too many failed logins from {source} ({n} in a row). Try again in {math.ceil(wait)} seconds,"
            " with a key registered on the hub's quotas page (SSH keys)."
        )

    def failure(self, source: str, user: str) -> None:
        now = self.clock()
        for key in (("source", source), ("user", user)):
            n = self._failures(key)
            self._counts[key] = _Count(n + 1, now)

    def success(self, source: str, user: str) -> None:
        self._counts.pop(("source", source), None)
        self._counts.pop(("user", user), None)
