"""Slowing down password and key guessing: failed attempts per source address and per user.

Each failure doubles the wait before the gateway answers the next attempt from that source or
for that user (``base_delay``, 2x, 4x, ... up to ``max_delay``). After ``max_failures`` failures
from one source, that source is refused outright until ``window`` seconds have passed since its
last failure. A user's own counter only delays (never refuses), so that nobody can lock a person
out by failing on purpose from elsewhere. Counters are forgotten ``window`` seconds after the last
failure, and a source's counter is reset when it authenticates.

The counters are rows of a SQLite file that every process of the gateway opens
(``SSHGateway.workers``), so that failures counted by one process slow down and refuse in all of
them; a write is one transaction, which a process killed halfway leaves undone. Rows older than
``window`` are deleted at each failure, and beyond ``max_rows`` (100,000 by default) the oldest
are dropped: an attacker spraying source addresses cannot grow the file without end (it can only
make the gateway forget the oldest counts early).
"""

from __future__ import annotations

import math
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from i18n import Text, _

MEMORY = ":memory:"
MAX_ROWS = 100_000
# seconds a process waits for another one's write (each is a few statements)
BUSY_TIMEOUT = 5.0

SCHEMA = """
CREATE TABLE IF NOT EXISTS failures (
    seq INTEGER PRIMARY KEY,  -- larger for each failure: the oldest rows have the smallest
    kind TEXT NOT NULL,  -- 'source' or 'user'
    key TEXT NOT NULL,
    failures INTEGER NOT NULL,
    last REAL NOT NULL,  -- the clock at the last failure
    UNIQUE (kind, key)
);
CREATE INDEX IF NOT EXISTS failures_by_last ON failures (last);
"""  # i18n: SQL


def connect(path: str) -> sqlite3.Connection:
    """The counters' database at ``path`` (created 0600 when missing, with its tables), in WAL mode
    so that readers never wait for a writer; ``:memory:`` for one connection's own."""
    if path != MEMORY:
        # SQLite creates a file 0644 (umask); its -wal and -shm files take the mode of this one
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")  # i18n: SQL
    # a crashed process loses nothing; a power cut, the last counts
    db.execute("PRAGMA synchronous = NORMAL")  # i18n: SQL
    db.executescript(SCHEMA)
    return db


class AuthThrottle:
    """Counts failed logins; says how long to wait and whom to refuse. The counts are in the SQLite
    file ``path``, shared by every object (and process) that opens it; ``:memory:`` (the default)
    keeps them in this object. One connection per process: opened at first use, and to be closed
    (:meth:`close`) before a fork. Not thread-safe: one event loop."""

    def __init__(
        self,
        base_delay: float = 1.0,
        max_delay: float = 30.0,
        max_failures: int = 10,
        window: float = 600.0,
        clock: Callable[[], float] = time.monotonic,
        path: str = MEMORY,
        max_rows: int = MAX_ROWS,
    ):
        self.base_delay, self.max_delay = base_delay, max_delay
        self.max_failures, self.window = max_failures, window
        # monotonic: the same clock for every process of the machine, which a change of the time
        # of day does not move; the gateway empties the file at its start (:meth:`clear`)
        self.clock = clock
        self.path, self.max_rows = path, max_rows
        self._db: sqlite3.Connection | None = None

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self._db = connect(self.path)
        return self._db

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")  # the write lock now: no other process counts in between
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def _count(self, db: sqlite3.Connection, kind: str, key: str, now: float) -> tuple[int, float]:
        """Failures of ``key`` within the window and the time of the last one; (0, now) when none."""
        row = db.execute(
            "SELECT failures, last FROM failures WHERE kind = ? AND key = ?",  # i18n: SQL
            (kind, key),
        ).fetchone()
        if row is None or now - row[1] >= self.window:
            return 0, now
        return int(row[0]), float(row[1])

    def delay(self, source: str, user: str) -> float:
        """Seconds to wait before answering the next attempt of ``user`` from ``source``."""
        db, now = self._conn(), self.clock()
        n = max(self._count(db, "source", source, now)[0], self._count(db, "user", user, now)[0])
        if n == 0:
            return 0.0
        return float(min(self.max_delay, self.base_delay * 2 ** (n - 1)))

    def refusal(self, source: str) -> Text | None:
        """Why ``source`` may not try now (for people), or None when it may."""
        now = self.clock()
        n, last = self._count(self._conn(), "source", source, now)
        if n < self.max_failures:
            return None
        wait = self.window - (now - last)
        return _(
            "Too many failed logins from {source} ({failures} in a row). Try again in {seconds} seconds, with a"
            " key registered on the hub's quotas page (SSH keys).",
            source=source,
            failures=n,
            seconds=math.ceil(wait),
        )

    def failure(self, source: str, user: str) -> None:
        with self._transaction() as db:
            now = self.clock()
            for kind, key in (("source", source), ("user", user)):
                n, _ = self._count(db, kind, key, now)
                # a new row (a larger seq) each time: the row's age for max_rows is its last failure's
                cursor = db.execute(
                    "INSERT OR REPLACE INTO failures (kind, key, failures, last) VALUES (?, ?, ?, ?)",  # i18n: SQL
                    (kind, key, n + 1, now),
                )
            newest = cursor.lastrowid or 0
            # the same test as _count's, exactly; the index on last finds the candidates
            db.execute(
                "DELETE FROM failures WHERE last <= ? AND ? - last >= ?",  # i18n: SQL
                (now - self.window, now, self.window),
            )
            # more rows than max_rows only if the seqs span that many (cheap to know); then the
            # oldest go, found by walking max_rows rows back from the newest
            oldest = db.execute("SELECT min(seq) FROM failures").fetchone()[0]  # i18n: SQL
            if oldest is not None and newest - oldest >= self.max_rows:
                db.execute(
                    "DELETE FROM failures WHERE seq <= (SELECT seq FROM failures ORDER BY seq DESC LIMIT 1 OFFSET ?)",  # i18n: SQL
                    (self.max_rows,),
                )

    def success(self, source: str, user: str) -> None:
        self._conn().execute(
            "DELETE FROM failures WHERE (kind = 'source' AND key = ?) OR (kind = 'user' AND key = ?)",  # i18n: SQL
            (source, user),
        )

    def clear(self) -> None:
        """Forget every count (the gateway at its start: a restart forgets, as it always did)."""
        self._conn().execute("DELETE FROM failures")  # i18n: SQL

    def close(self) -> None:
        """Close this process's connection; the next call opens a new one."""
        if self._db is not None:
            self._db.close()
            self._db = None
