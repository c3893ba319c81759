"""Riding out a PostgreSQL restart or failover: which errors mean "the server went away", and how long to wait.

A restart (`pg_ctl restart`, a failover, a proxy that drops every connection) breaks each pooled
connection; the next statement on one fails at once, and new connections are refused (or told
"the database system is starting up") until the server is back. None of that is the run's fault:
every store operation is tried again with a growing pause, for up to `--state-patience` seconds
counted from the first failure of the outage (shared by all operations, so once the patience is
spent every caller gives up at once instead of each waiting its own full term). Then the run
stops with a StateOutageError (exit 3) naming the server; the next run continues.

A statement whose server stops answering without closing the connection (a stalled network) is
cut off after the patience too (psycopg then cancels it, or drops the connection).

Errors that say something else (a bad query, a refused password, a missing database) are not
waited for: they are not going to change.
"""

from __future__ import annotations

import random

import psycopg
from psycopg_pool import PoolTimeout

from downloader.core.errors import StateOutageError

FIRST_PAUSE, MAX_PAUSE = 0.1, 5.0
MIN_ATTEMPT = 2.0  # once the patience is spent, an operation still gets this long to find the server back
# SQLSTATEs of a server going away: class 08 (connection exceptions), admin/crash shutdown, starting up.
# 25P03: the server ended a session left idle in a transaction (a worker cut off mid-transaction).
_GONE_STATES = ("57P01", "57P02", "57P03", "25P03")
_STARTING = ("the database system is", "too many connections")


def is_lost(err: BaseException) -> bool:
    """Whether `err` means the server (or the way to it) went away, rather than a problem of the request."""
    if isinstance(err, PoolTimeout | TimeoutError):
        return True
    if not isinstance(err, psycopg.Error):
        return False
    state = err.sqlstate
    if state is not None:
        return state.startswith("08") or state in _GONE_STATES
    if not isinstance(err, psycopg.OperationalError):
        return False
    text = str(err)
    # A refused connection has no SQLSTATE: one the server answered with FATAL (a wrong password or
    # database) is a configuration problem, unless it says the server is starting or shutting down.
    return "FATAL:" not in text or any(reason in text for reason in _STARTING)


class Patience:
    """One outage's clock: the pause before each new try, and when to give up (monotonic seconds)."""

    def __init__(self, seconds: float, where: str) -> None:
        self.seconds = seconds
        self.where = where  # host:port, for the message
        self.since: float | None = None
        self._tries = 0

    def attempt_timeout(self, now: float) -> float:
        """How long one try may take: what is left of the patience (a stalled statement is cut off then)."""
        left = self.seconds if self.since is None else self.seconds - (now - self.since)
        return max(MIN_ATTEMPT, left)

    def failed(self, err: BaseException, now: float) -> float:
        """The pause before the next try; raises StateOutageError once the patience is spent."""
        if self.since is None:
            self.since, self._tries = now, 0
        self._tries += 1
        left = self.seconds - (now - self.since)
        if left <= 0:
            reason = " ".join(str(err).split()) or type(err).__name__
            raise StateOutageError(
                f"the PostgreSQL state store at {self.where} was unreachable for {now - self.since:.0f} s "
                f"(--state-patience {self.seconds:g}): {reason[:200]}",
                hint="the state is kept: run the same command again once the database is back") from err
        pause = min(MAX_PAUSE, FIRST_PAUSE * 2 ** min(self._tries - 1, 10))
        return min(left, pause * random.uniform(0.5, 1.0))

    def recovered(self) -> None:
        """A try succeeded: the outage (if any) is over."""
        self.since = None

    @property
    def in_outage(self) -> bool:
        """Whether the last try failed."""
        return self.since is not None
