"""How one hub process paces what it asks of the Kubernetes API during a spawn storm (issue 15).

A thousand people pressing *Start* at 9:00 must not turn into a thousand creates sent at once:
the API server answers slower, clients give up after their timeout and send the create again,
the retries add to the load, and spawns fail. :class:`Pacer` keeps three facts for the hub:

- **a line**: at most ``slots`` creates in flight at once; the others wait their turn, first
  come first served, and each knows how many are ahead of it (shown in the spawn's progress);
- **a timeout that follows the load**: a create is given ``timeout_factor`` times the slowest
  of the recent answers (the 90th percentile of the last :data:`SAMPLES`), never less than the
  configured floor nor more than the ceiling; a create that timed out counts as an answer that
  took its whole timeout, so the next ones wait longer;
- **backoff**: :func:`backoff` is how long to wait before asking again after a refusal for load
  (HTTP 429 with ``Retry-After``, 5xx, or a timeout).

The pacer decides nothing about what to create; :class:`spawner.kube.TenantKubeSpawner` asks it
for a slot around each create and checks, before sending a create again, whether the first one
succeeded after all.
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

# answers the timeout follows: recent enough to track a storm, enough for a stable percentile
SAMPLES = 64
# seconds between two looks at a waiting create's place in the line
REFRESH = 1.0


class Pacer:
    """A first-come-first-served line of at most ``slots`` creates in flight, and the create timeout."""

    def __init__(self, slots: int) -> None:
        self.slots = max(1, int(slots))
        self.in_flight = 0
        self._line: deque[asyncio.Future[None]] = deque()
        self._issued = 0  # tickets given out, in order
        self._served = 0  # tickets that left the line (handed a slot, or given up)
        self._answers: deque[float] = deque(maxlen=SAMPLES)

    @property
    def waiting(self) -> int:
        return len(self._line)

    @asynccontextmanager
    async def slot(self, waiting: Callable[[int], None] | None = None) -> AsyncIterator[None]:
        """Hold one of the slots for the body; while in line, ``waiting(ahead)`` is called with the
        number of creates ahead (in flight, and earlier in the line) when it changes, looked at every
        :data:`REFRESH` seconds: a progress message, not a count to the unit."""
        if self.in_flight >= self.slots or self._line:
            ticket: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._issued += 1
            number = self._issued
            self._line.append(ticket)
            try:
                last = -1
                while not ticket.done():
                    ahead = self.in_flight + max(0, number - self._served - 1)
                    if waiting is not None and ahead != last:
                        waiting(ahead)
                        last = ahead
                    await asyncio.wait({ticket}, timeout=REFRESH)
            except BaseException:
                if ticket.done():
                    self._release()  # handed the slot just as it was cancelled: pass it on
                else:
                    ticket.cancel()  # stays in the line until its turn comes, then is skipped
                raise
        else:
            self.in_flight += 1
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        """A create finished: its slot goes to the head of the line (the count in flight stays)."""
        while self._line:
            ticket = self._line.popleft()
            self._served += 1
            if not ticket.done():
                ticket.set_result(None)
                return
        self.in_flight -= 1

    def answered(self, seconds: float) -> None:
        """Record how long a create took to be answered (or its whole timeout, if it timed out)."""
        self._answers.append(max(0.0, seconds))

    def timeout(self, floor: float, ceiling: float, factor: float) -> float:
        """Seconds to give the next create: ``factor`` times the recent 90th percentile answer time,
        within [floor, ceiling]."""
        if not self._answers:
            return min(ceiling, floor)
        ordered = sorted(self._answers)
        p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
        return max(floor, min(ceiling, factor * p90))


def backoff(attempt: int, retry_after: float | None, cap: float = 8.0) -> float:
    """Seconds to wait before the ``attempt``-th retry (1, 2, ...): the server's ``Retry-After`` when it
    gave one, else an exponential backoff with full jitter (0.25 s, 0.5 s, ... up to ``cap``), so that
    a thousand spawns refused at the same moment do not come back at the same moment."""
    if retry_after is not None and retry_after >= 0:
        return min(retry_after, 60.0) + random.uniform(0, 0.5)
    return random.uniform(0, min(cap, 0.25 * 2 ** (attempt - 1)))


def retry_after(headers: object) -> float | None:
    """The ``Retry-After`` seconds of an API answer's headers (a mapping or None), if it has one."""
    if headers is None or not hasattr(headers, "get"):
        return None
    value = headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
