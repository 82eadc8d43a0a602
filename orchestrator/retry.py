"""Retry of transient database failures, built on tenacity.

The n-th retry waits ``base * 2**(n-1)`` seconds plus 0-10 % of that as
jitter (orchestrator.backoff, so two workers that failed together do not
retry together), for at most ``max_attempts`` attempts in all. Only transient errors are retried:
serialization failures, deadlocks and lost or refused connections. Anything
else, and the last transient error once the attempts are spent, is re-raised
unchanged.

A retried function must own its transaction: after a serialization failure
the whole transaction has to run again, not just the last statement.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

from orchestrator import backoff, db

T = TypeVar("T")

# SQLSTATE classes/codes worth another attempt: 40 transaction rollback
# (serialization failure, deadlock), 08 connection exception, and the server
# going away or not accepting connections yet.
_TRANSIENT_CLASSES = ("40", "08")
_TRANSIENT_CODES = frozenset({"57P01", "57P02", "57P03", "53300"})


def is_transient(exc: BaseException) -> bool:
    """True for errors that another attempt may not hit."""
    if not isinstance(exc, psycopg.OperationalError):
        return False
    state = exc.sqlstate
    if state is None:
        # Raised by the client, not the server: the connection broke or
        # could not be made.
        return True
    return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_CODES


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3
    base_delay: float = 1.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.base_delay < 0:
            raise ValueError(f"base_delay must not be negative, got {self.base_delay}")

    @classmethod
    def from_settings(cls, conn: psycopg.Connection, **kwargs: Any) -> RetryPolicy:
        """validation.max_retry_attempts and validation.base_delay_seconds."""
        attempts, delay = db.one(conn, "retry_settings")
        return cls(max_attempts=int(attempts), base_delay=float(delay), **kwargs)

    def delay(self, attempt: int) -> float:
        """Wait after the ``attempt``-th failed attempt (1-based)."""
        return backoff.delay(attempt, self.base_delay, rand=self.random)

    def _wait(self, state: RetryCallState) -> float:
        return self.delay(state.attempt_number)

    def retrying(self) -> Retrying:
        return Retrying(
            stop=stop_after_attempt(self.max_attempts),
            wait=self._wait,
            retry=retry_if_exception(is_transient),
            sleep=self.sleep,
            reraise=True,
        )

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn`` until it succeeds, fails for good, or attempts run out."""
        return self.retrying()(fn, *args, **kwargs)
