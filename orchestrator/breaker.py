"""Circuit breaker for calls to the calendar API, its state shared in PostgreSQL.

The state machine lives in ``sql/functions/circuit.sql``; this module wraps a
call with it::

    breaker = CircuitBreaker("appointment_booking:service:42", dsn=DSN)

    booking = breaker.call(calendar.book, slot)            # sync
    booking = await breaker.call_async(calendar.abook, slot)

    @breaker                                               # sync or async function
    def book(slot): ...

    with breaker:                                          # or `async with breaker:`
        calendar.book(slot)

- Before the call: ``circuit_acquire``; when it refuses, CircuitOpenError is
  raised and the call does not run.
- The call gets ``circuit_breaker.timeout_seconds``. At the deadline the
  caller gets CallTimeoutError back and the call counts as a failure.
  Async: the task is cancelled (and not waited for). Sync (``call`` and the
  decorator): the call runs in a daemon thread that is abandoned at the
  deadline, because Python cannot stop a thread; whatever it does afterwards
  (including a late booking) still happens and is not counted. A sync
  ``with`` block cannot be interrupted at all: a block that overruns the
  deadline counts as a failure when it ends.
- Exceptions propagate unchanged (the same object). Those listed in
  ``exclude=`` mean the service answered (e.g. "slot taken") and count as a
  success; other ``Exception`` s count as failures; BaseExceptions such as
  cancellation record nothing (a probe that never reports is replaced after
  timeout_seconds by the database).
- When the database is unreachable, each process falls back to an in-process
  breaker per key with the thresholds last read from the settings, logs one
  warning, retries the database every RETRY_INTERVAL seconds and, once it
  answers, logs that and goes back to the shared state (the in-process state
  is dropped: the database is the truth).

Every breaker of a DSN in a process shares one psycopg_pool pool.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestrator import db
from orchestrator.errors import GuardError

log = logging.getLogger(__name__)

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

FORCEABLE_STATES = ("forced_open", "disabled", "closed")
MAX_KEY_LENGTH = 500

# Tunables of the process side (module attributes, read when used).
RETRY_INTERVAL = 2.0    # seconds between reconnection attempts while degraded
POOL_TIMEOUT = 1.0      # seconds to wait for a pooled connection
CONNECT_TIMEOUT = 2     # libpq connect_timeout of new connections
SETTINGS_TTL = 30.0     # thresholds are re-read from consistency.settings this often
STATEMENT_TIMEOUT_MS = 2000  # a stuck database must not hold the caller: it degrades instead
POOL_MAX_SIZE = 10


class CircuitOpenError(Exception):
    """The circuit refused the call; it was not attempted."""

    def __init__(self, key: str, state: str | None = None) -> None:
        self.key = key
        self.state = state
        super().__init__(f"circuit {key!r} is {state or 'open'}: call not attempted")


class CallTimeoutError(TimeoutError):
    """The protected call did not finish within timeout_seconds (a failure)."""

    def __init__(self, key: str, timeout: float) -> None:
        self.key = key
        self.timeout = timeout
        super().__init__(f"call through circuit {key!r} exceeded its {timeout:g} s deadline")


@dataclass(frozen=True)
class Thresholds:
    failure_threshold: int = 3
    cooldown_seconds: float = 30.0
    success_threshold: int = 2
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, rows: Iterable[tuple[str, Any]]) -> Thresholds:
        values = {key.removeprefix("circuit_breaker."): value for key, value in rows}
        default = cls()
        return cls(
            failure_threshold=int(values.get("failure_threshold", default.failure_threshold)),
            cooldown_seconds=float(values.get("cooldown_seconds", default.cooldown_seconds)),
            success_threshold=int(values.get("success_threshold", default.success_threshold)),
            timeout_seconds=float(values.get("timeout_seconds", default.timeout_seconds)),
        )


class LocalCircuit:
    """The state machine of sql/functions/circuit.sql in process memory: the
    fallback while the database is unreachable."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.state = "closed"
        self.failure_count = 0
        self.success_count = 0
        self.opened_at: float | None = None
        self.probe_started_at: float | None = None

    def acquire(self, t: Thresholds) -> bool:
        with self._lock:
            now = self._clock()
            if self.state == "closed":
                return True
            if self.state == "open":
                assert self.opened_at is not None
                if now - self.opened_at < t.cooldown_seconds:
                    return False
                self.state, self.success_count, self.probe_started_at = "half_open", 0, now
                return True
            if self.probe_started_at is None or now - self.probe_started_at >= t.timeout_seconds:
                self.probe_started_at = now
                return True
            return False

    def record_success(self, t: Thresholds) -> None:
        with self._lock:
            if self.state == "closed":
                self.failure_count = 0
            elif self.state == "half_open":
                self.success_count += 1
                self.probe_started_at = None
                if self.success_count >= t.success_threshold:
                    self.state, self.failure_count, self.success_count = "closed", 0, 0

    def record_failure(self, t: Thresholds) -> None:
        with self._lock:
            now = self._clock()
            if self.state == "closed":
                self.failure_count += 1
                if self.failure_count >= t.failure_threshold:
                    self.state, self.opened_at = "open", now
            elif self.state == "half_open":
                self.failure_count += 1
                self.state, self.opened_at = "open", now
                self.success_count, self.probe_started_at = 0, None


class _Unreachable(Exception):
    """The database cannot be used right now; the caller falls back."""


class _Database:
    """Per DSN and process: the connection pool, the thresholds, the fallback."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self.thresholds = Thresholds()
        self._settings_read_at: float | None = None
        self.down_since: float | None = None
        self._next_attempt = 0.0
        self._local: dict[str, LocalCircuit] = {}

    # -- connections --------------------------------------------------------

    def _get_pool(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self.dsn, min_size=1, max_size=POOL_MAX_SIZE, timeout=POOL_TIMEOUT,
                    open=False, name="consistency-breaker", configure=_configure,
                    kwargs={"autocommit": True, "application_name": "consistency-breaker",
                            "connect_timeout": CONNECT_TIMEOUT})
                self._pool.open(wait=False)
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def _may_try(self) -> bool:
        """While degraded, one caller per RETRY_INTERVAL tries the database;
        everybody else stays on the in-process breaker without waiting."""
        if self.down_since is None:
            return True
        with self._lock:
            now = time.monotonic()
            if now < self._next_attempt:
                return False
            self._next_attempt = now + RETRY_INTERVAL
        # A plain connect fails in milliseconds on a refused port, where a
        # pool would wait for its background reconnection (with backoff).
        try:
            psycopg.connect(self.dsn, connect_timeout=CONNECT_TIMEOUT).close()
        except psycopg.Error:
            return False
        return True

    def execute(self, name: str, params: dict[str, Any]) -> tuple[Any, ...] | None:
        """Run one named query; raise _Unreachable when the database cannot
        be reached (other errors are bugs and propagate)."""
        if not self._may_try():
            raise _Unreachable
        try:
            with self._get_pool().connection() as conn:
                if (self._settings_read_at is None
                        or time.monotonic() - self._settings_read_at > SETTINGS_TTL):
                    self._read_settings(conn)
                row = conn.execute(db.query(name), params, prepare=True).fetchone()
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._went_down(exc)
            raise _Unreachable from exc
        if self.down_since is not None:
            self._came_back()
        return row

    def _read_settings(self, conn: psycopg.Connection) -> None:
        self.thresholds = Thresholds.from_settings(
            conn.execute(db.query("circuit_settings")).fetchall())
        self._settings_read_at = time.monotonic()

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            first = self.down_since is None
            if first:
                self.down_since = time.monotonic()
            self._next_attempt = time.monotonic() + RETRY_INTERVAL
            # Its connections died with the server; a new pool starts clean.
            pool, self._pool = self._pool, None
        if first:
            log.warning("circuit breaker: database unreachable (%s); using in-process breakers "
                        "with the same thresholds until it answers again", db.describe_error(exc))
        if pool is not None:
            threading.Thread(target=pool.close, kwargs={"timeout": 1.0}, daemon=True,
                             name="consistency-breaker-pool-close").start()

    def _came_back(self) -> None:
        with self._lock:
            if self.down_since is None:
                return
            outage = time.monotonic() - self.down_since
            self.down_since = None
            self._local.clear()
            self._settings_read_at = None
        log.warning("circuit breaker: database reachable again after %.1f s; "
                    "using the shared state", outage)

    def local(self, key: str) -> LocalCircuit:
        with self._lock:
            return self._local.setdefault(key, LocalCircuit())


def _configure(conn: psycopg.Connection) -> None:
    conn.execute(db.query("circuit_session_setup"), {"ms": STATEMENT_TIMEOUT_MS})


_DATABASES: dict[str, _Database] = {}
_DATABASES_LOCK = threading.Lock()


def _database(dsn: str) -> _Database:
    found = _DATABASES.get(dsn)
    if found is not None:
        return found
    with _DATABASES_LOCK:
        found = _DATABASES.get(dsn)
        if found is None:
            found = _DATABASES[dsn] = _Database(dsn)
        return found


@atexit.register
def close_pools() -> None:
    """Close every pool of this process (also run at exit)."""
    with _DATABASES_LOCK:
        databases = list(_DATABASES.values())
        _DATABASES.clear()
    for database in databases:
        database.close()


@dataclass(frozen=True)
class _Ticket:
    """Who admitted the call, so its outcome goes back to the same place."""

    local: LocalCircuit | None  # None: the database


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:2000]


def _consume(task: asyncio.Future[Any]) -> None:
    """Done callback of an abandoned task: nobody awaits it any more."""
    if not task.cancelled():
        task.exception()


class CircuitBreaker:
    """Protects calls under one circuit key; see the module docstring."""

    def __init__(self, key: str, *, dsn: str | None = None,
                 exclude: Iterable[type[BaseException]] = ()) -> None:
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"circuit key must be a non-empty string of at most "
                             f"{MAX_KEY_LENGTH} characters")
        self.key = key
        self.exclude = tuple(exclude)
        self._dsn = db.resolve_dsn(dsn)
        self._entered: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar(
            f"circuit_entered_{id(self)}", default=())

    def __repr__(self) -> str:
        return f"CircuitBreaker({self.key!r})"

    @property
    def _db(self) -> _Database:
        # Looked up on every use, so a breaker outlives close_pools(): it
        # gets the new pool, which the next close_pools() closes too.
        return _database(self._dsn)

    @property
    def thresholds(self) -> Thresholds:
        return self._db.thresholds

    @property
    def degraded(self) -> bool:
        """True while this process uses in-process breakers for this DSN."""
        return self._db.down_since is not None

    # -- the protocol ---------------------------------------------------------

    def _acquire(self) -> _Ticket:
        try:
            row = self._db.execute("circuit_acquire", {"key": self.key})
        except _Unreachable:
            local = self._db.local(self.key)
            if local.acquire(self._db.thresholds):
                return _Ticket(local)
            raise CircuitOpenError(self.key, local.state) from None
        if row and row[0]:
            return _Ticket(None)
        raise CircuitOpenError(self.key, self.state())

    def _record(self, ticket: _Ticket, error: BaseException | None) -> None:
        t = self._db.thresholds
        if ticket.local is None:
            try:
                if error is None:
                    self._db.execute("circuit_record_success", {"key": self.key})
                else:
                    self._db.execute("circuit_record_failure",
                                     {"key": self.key, "error": _describe(error)})
                return
            except _Unreachable:
                ticket = _Ticket(self._db.local(self.key))
        assert ticket.local is not None
        if error is None:
            ticket.local.record_success(t)
        else:
            ticket.local.record_failure(t)

    def _settle(self, ticket: _Ticket, exc: BaseException) -> None:
        if isinstance(exc, self.exclude):
            self._record(ticket, None)
        elif isinstance(exc, Exception):
            self._record(ticket, exc)

    def state(self) -> str:
        """The circuit's state as the database (or, degraded, this process) sees it."""
        try:
            row = self._db.execute("circuit_status", {"key": self.key})
        except _Unreachable:
            return self._db.local(self.key).state
        return row[1] if row else "closed"

    # -- sync -------------------------------------------------------------------

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` through the circuit, with the deadline."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use call_async")
        ticket = self._acquire()
        timeout = self._db.thresholds.timeout_seconds
        done = threading.Event()
        box: dict[str, Any] = {}
        ctx = contextvars.copy_context()

        def run() -> None:
            try:
                box["value"] = ctx.run(fn, *args, **kwargs)
            except BaseException as exc:
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=run, daemon=True, name=f"circuit:{self.key[:40]}").start()
        if not done.wait(timeout):
            timed_out = CallTimeoutError(self.key, timeout)
            self._record(ticket, timed_out)
            raise timed_out
        if "error" in box:
            exc = box.pop("error")
            self._settle(ticket, exc)
            raise exc
        self._record(ticket, None)
        return box["value"]

    def __enter__(self) -> CircuitBreaker:
        ticket = self._acquire()
        self._entered.set((*self._entered.get(), (ticket, time.monotonic(), None)))
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        stack = self._entered.get()
        ticket, started, _ = stack[-1]
        self._entered.set(stack[:-1])
        if exc is not None:
            self._settle(ticket, exc)
            return
        timeout = self._db.thresholds.timeout_seconds
        if time.monotonic() - started > timeout:
            log.warning("circuit %r: with-block overran its %g s deadline; counted as a failure",
                        self.key, timeout)
            self._record(ticket, CallTimeoutError(self.key, timeout))
        else:
            self._record(ticket, None)

    def __call__(self, fn: F) -> F:
        """Decorate a sync or async function."""
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                return await self.call_async(fn, *args, **kwargs)
            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return self.call(fn, *args, **kwargs)
        return wrapper  # type: ignore[return-value]

    # -- async ------------------------------------------------------------------

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any,
                         **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` through the circuit, with the deadline.
        Database round trips run in a worker thread, off the event loop."""
        ticket = await asyncio.to_thread(self._acquire)
        timeout = self._db.thresholds.timeout_seconds
        task = asyncio.ensure_future(fn(*args, **kwargs))
        try:
            done, _ = await asyncio.wait({task}, timeout=timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            # Cancelled, not awaited: a task that ignores cancellation must
            # not hold the caller past the deadline.
            task.cancel()
            task.add_done_callback(_consume)
            timed_out = CallTimeoutError(self.key, timeout)
            await asyncio.to_thread(self._record, ticket, timed_out)
            raise timed_out
        if task.cancelled():
            return task.result()  # raises CancelledError; nothing recorded
        exc = task.exception()
        if exc is not None:
            await asyncio.to_thread(self._settle, ticket, exc)
            raise exc
        await asyncio.to_thread(self._record, ticket, None)
        return task.result()

    async def __aenter__(self) -> CircuitBreaker:
        ticket = await asyncio.to_thread(self._acquire)
        deadline = asyncio.timeout(self._db.thresholds.timeout_seconds)
        await deadline.__aenter__()
        self._entered.set((*self._entered.get(), (ticket, time.monotonic(), deadline)))
        return self

    async def __aexit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        stack = self._entered.get()
        ticket, _, deadline = stack[-1]
        self._entered.set(stack[:-1])
        try:
            await deadline.__aexit__(exc_type, exc, tb)
        except TimeoutError as expired:
            timed_out = CallTimeoutError(self.key, self._db.thresholds.timeout_seconds)
            await asyncio.to_thread(self._record, ticket, timed_out)
            raise timed_out from expired
        if exc is None:
            await asyncio.to_thread(self._record, ticket, None)
        else:
            await asyncio.to_thread(self._settle, ticket, exc)

    # -- manual review of refused bookings ------------------------------------

    def queue_for_review(self, call_id: int, refused: CircuitOpenError,
                         context: dict[str, Any] | None = None,
                         priority: int | None = None) -> int:
        """Queue ``call_id`` for manual review with reason ``circuit_open``.
        Raises the CircuitOpenError again when the database is unreachable:
        then nothing can be queued and the caller must keep the booking."""
        payload = {**(context or {}), "circuit_key": self.key, "circuit_state": refused.state}
        try:
            row = self._db.execute("circuit_review_enqueue", {
                "call_id": call_id, "reason": "circuit_open",
                "context": json.dumps(payload, default=str), "priority": priority})
        except _Unreachable:
            log.error("circuit %r open and database unreachable: call %s not queued for review",
                      self.key, call_id)
            raise refused from None
        assert row is not None
        return int(row[0])


@dataclass(frozen=True)
class BookingOutcome:
    """``booked``: the call ran and returned ``result``; otherwise the circuit
    refused it and ``review_id`` is its manual review item."""

    booked: bool
    result: Any = None
    review_id: int | None = None


def book_or_queue(breaker: CircuitBreaker, call_id: int, book: Callable[..., Any], /,
                  *args: Any, review_context: dict[str, Any] | None = None,
                  review_priority: int | None = None, **kwargs: Any) -> BookingOutcome:
    """Book through the breaker; on an open circuit queue the call for review."""
    try:
        return BookingOutcome(True, breaker.call(book, *args, **kwargs))
    except CircuitOpenError as refused:
        return BookingOutcome(False, review_id=breaker.queue_for_review(
            call_id, refused, review_context, review_priority))


async def book_or_queue_async(breaker: CircuitBreaker, call_id: int,
                              book: Callable[..., Awaitable[Any]], /, *args: Any,
                              review_context: dict[str, Any] | None = None,
                              review_priority: int | None = None,
                              **kwargs: Any) -> BookingOutcome:
    try:
        return BookingOutcome(True, await breaker.call_async(book, *args, **kwargs))
    except CircuitOpenError as refused:
        review_id = await asyncio.to_thread(breaker.queue_for_review, call_id, refused,
                                            review_context, review_priority)
        return BookingOutcome(False, review_id=review_id)


# -- operator side (the CLI) ------------------------------------------------------

@dataclass(frozen=True)
class CircuitStatus:
    circuit_key: str
    state: str
    failure_count: int
    success_count: int
    last_failure_at: datetime | None
    opened_at: datetime | None
    closed_at: datetime | None


def _pg_message(exc: psycopg.Error) -> str:
    return (exc.diag.message_primary if exc.diag else None) or db.describe_error(exc)


def status(conn: psycopg.Connection, key: str | None = None) -> list[CircuitStatus]:
    if key is not None and not key.strip():
        raise GuardError("circuit key must not be empty")
    try:
        rows = conn.execute(db.query("circuit_status"), {"key": key}).fetchall()
    except psycopg.errors.InvalidParameterValue as exc:
        raise GuardError(_pg_message(exc)) from exc
    return [CircuitStatus(*row) for row in rows]


def force(conn: psycopg.Connection, key: str, state: str, actor: str, reason: str) -> bool:
    """Operator override; True when the state changed. Audited by the database."""
    try:
        with conn.transaction():
            row = conn.execute(db.query("circuit_force"), {
                "key": key, "state": state, "actor": actor, "reason": reason}).fetchone()
    except psycopg.errors.InvalidParameterValue as exc:
        raise GuardError(_pg_message(exc)) from exc
    return bool(row and row[0])
