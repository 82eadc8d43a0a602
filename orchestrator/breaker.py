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

- Before the call the circuit must admit it; when it refuses, CircuitOpenError
  is raised and the call does not run. A closed (or disabled) circuit admits
  without a round trip: each process mirrors the circuits it uses
  (``orchestrator/circuit_mirror.py``: filled on first use, kept current by
  LISTEN, polled while it cannot listen). Every other decision is
  ``circuit_acquire`` in the database, so exactly one worker of all processes
  becomes the probe of a half-open circuit. The mirror's docstring says how
  long a call may still pass a circuit another process has just opened.
- After the call: a success on a closed circuit without failures changes
  nothing and is not sent; every other outcome is recorded in the database.
- The call gets ``circuit_breaker.timeout_seconds``. At the deadline the
  caller gets CallTimeoutError back and the call counts as a failure.
  Async: the task is cancelled (and not waited for). Sync (``call`` and the
  decorator): the call runs in a shared, bounded set of WORKERS daemon
  threads (``orchestrator/deadline_pool.py``); at the deadline it is
  abandoned, because Python cannot stop a thread: whatever it does afterwards
  (including a late booking) still happens and is not counted. One key holds
  at most WORKERS_PER_KEY of them (default half), so the calls of a hanging
  service cannot take every worker from the others. A call that no worker
  takes before its deadline (every worker, or its key's share, held by
  abandoned calls) does not run at all: WorkersBusyError (a CallTimeoutError,
  ``started`` False). That is this process's saturation, not a failure of
  the key: nothing is recorded, the calls are counted apart
  (``not_started()``) and logged once a minute per key. A sync ``with``
  block cannot be interrupted at all: a block that overruns the deadline
  counts as a failure when it ends.
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
- No database error reaches the caller. One that is not about reaching the
  database (a setting the database cannot turn into an interval or a count,
  a missing grant) is logged, once a minute per kind, and decided
  in-process: a call is refused when the circuit was last seen open,
  half-open or forced open, else admitted by the key's in-process breaker;
  an outcome the database does not record goes to that in-process breaker,
  which from then on sees every outcome of the key and may refuse its calls,
  until the database records one again. Thresholds read from the settings
  are bounded here too (a value outside is clamped, one that is not a
  number keeps its default, both logged).

Every breaker of a DSN in a process shares one psycopg_pool pool and one mirror.
"""

from __future__ import annotations

import asyncio
import atexit
import contextvars
import functools
import inspect
import json
import logging
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from orchestrator import circuit_mirror, db
from orchestrator.deadline_pool import DeadlineExceeded, DeadlinePool
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
WORKERS = 32            # threads that run sync calls under their deadline, per process
WORKERS_PER_KEY: int | None = None  # most of them one circuit key holds; None: half
REFUSED_LOG_INTERVAL = 60.0  # one log line per kind of database error this often

# States in which the database refuses a call that is not the probe.
_REFUSING = frozenset({"open", "half_open", "forced_open"})


class CircuitOpenError(Exception):
    """The circuit refused the call; it was not attempted."""

    def __init__(self, key: str, state: str | None = None) -> None:
        self.key = key
        self.state = state
        super().__init__(f"circuit {key!r} is {state or 'open'}: call not attempted")


class CallTimeoutError(TimeoutError):
    """The protected call did not finish within timeout_seconds (a failure).
    ``started`` is False when no worker was free to start it before then
    (WorkersBusyError)."""

    def __init__(self, key: str, timeout: float, started: bool = True) -> None:
        self.key = key
        self.timeout = timeout
        self.started = started
        super().__init__(f"call through circuit {key!r} exceeded its {timeout:g} s deadline")


class WorkersBusyError(CallTimeoutError):
    """No worker was free to start the call before its deadline: every one of
    this process's WORKERS, or its key's share, is held by calls that overran
    theirs. The call did not run, and is not a failure of the key."""

    def __init__(self, key: str, timeout: float) -> None:
        TimeoutError.__init__(
            self, f"call through circuit {key!r} not started: all {WORKERS} workers (or the "
                  f"{_per_key_workers()} a key may hold) were busy for its {timeout:g} s "
                  "deadline")
        self.key, self.timeout, self.started = key, timeout, False


def _per_key_workers() -> int:
    return max(1, WORKERS_PER_KEY if WORKERS_PER_KEY is not None else WORKERS // 2)


# What the breaker accepts from the settings, whatever the table holds (the
# database bounds them when they are set; a value written around set_setting
# must not turn into an exception in the booking code): kind, least, most.
_BOUNDS: dict[str, tuple[type, float, float]] = {
    "failure_threshold": (int, 1, 1_000_000),
    "cooldown_seconds": (float, 0.0, 10 * 365 * 86400.0),
    "success_threshold": (int, 1, 1_000_000),
    "timeout_seconds": (float, 0.001, 365 * 86400.0),
}


@dataclass(frozen=True)
class Thresholds:
    failure_threshold: int = 3
    cooldown_seconds: float = 30.0
    success_threshold: int = 2
    timeout_seconds: float = 10.0

    @classmethod
    def from_settings(cls, rows: Iterable[tuple[str, Any]],
                      problems: list[str] | None = None) -> Thresholds:
        """Values out of bounds are clamped; values that are not numbers
        keep the default. Each is described in ``problems``."""
        values = {key.removeprefix("circuit_breaker."): value for key, value in rows}
        chosen: dict[str, Any] = {}
        for name, (kind, least, most) in _BOUNDS.items():
            if name not in values:
                continue
            raw = values[name]
            number = _number(raw)
            if number is None:
                if problems is not None:
                    problems.append(f"circuit_breaker.{name} = {repr(raw)[:60]} is not a "
                                    f"number: using {getattr(cls(), name)}")
                continue
            bounded = min(max(number, least), most)
            if bounded != number and problems is not None:
                problems.append(f"circuit_breaker.{name} = {number:g} is outside [{least:g}, "
                                f"{most:g}]: using {bounded:g}")
            chosen[name] = kind(round(bounded) if kind is int else bounded)
        return cls(**chosen)


def _number(raw: Any) -> float | None:
    if isinstance(raw, bool):
        return None
    try:
        number = float(raw)
    except (TypeError, ValueError, OverflowError):
        return None
    return None if math.isnan(number) else number


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


class _Refused(Exception):
    """The database answered with an error that is not about reaching it
    (logged); the caller decides in-process."""


class _Database:
    """Per DSN and process: the connection pool, the mirror, the thresholds,
    the fallback."""

    def __init__(self, dsn: str) -> None:
        self.dsn = db.session_conninfo(dsn)
        self._lock = threading.Lock()
        self._pool: ConnectionPool | None = None
        self.thresholds = Thresholds()
        self._settings_read_at: float | None = None
        self._settings_problems: tuple[str, ...] = ()
        self.down_since: float | None = None
        self._next_attempt = 0.0
        self._local: dict[str, LocalCircuit] = {}
        self._refused_logged: dict[str, float] = {}
        self.mirror = circuit_mirror.Mirror(self.dsn, self._poll_mirror, self._heartbeat)
        # False when the schema predates consistency.circuit_mirror (the
        # application upgraded before `consistency migrate`).
        self.mirror_supported = True

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
        self.mirror.close()
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

    def execute(self, name: str, params: dict[str, Any], *,
                read_key: str | None = None) -> tuple[Any, ...] | None:
        """Run one named query and return its first row. With ``read_key``,
        that key's mirror row is read in the same round trip (a pipeline:
        one transaction, so the read sees the query's change) and applied.
        Raises _Unreachable when the database cannot be reached, _Refused
        when it answers with an error."""
        if not self._may_try():
            raise _Unreachable
        try:
            with self._get_pool().connection() as conn:
                if (self._settings_read_at is None
                        or time.monotonic() - self._settings_read_at > SETTINGS_TTL):
                    self._read_settings(conn)
                if read_key is None or not self.mirror_supported:
                    row = db.run(conn, name, params, prepare=True).fetchone()
                else:
                    with conn.pipeline():
                        cur = db.run(conn, name, params, prepare=True)
                        read = db.run(conn, "circuit_mirror", {"keys": [read_key]}, prepare=True)
                    row = cur.fetchone()
                    self.mirror.apply(read.fetchall())
        except (psycopg.OperationalError, PoolTimeout) as exc:
            self._went_down(exc)
            raise _Unreachable from exc
        except psycopg.errors.UndefinedFunction as exc:
            if read_key is None or "circuit_mirror" not in str(exc):
                self._refused(name, exc)
                raise _Refused from exc
            self._mirror_unsupported()
            return self.execute(name, params)
        except psycopg.Error as exc:
            self._refused(name, exc)
            raise _Refused from exc
        if self.down_since is not None:
            self._came_back()
        return row

    def _read_settings(self, conn: psycopg.Connection) -> None:
        problems: list[str] = []
        self.thresholds = Thresholds.from_settings(
            db.run(conn, "circuit_settings").fetchall(), problems)
        self._settings_read_at = time.monotonic()
        if tuple(problems) != self._settings_problems:
            self._settings_problems = tuple(problems)
            for problem in problems:
                log.warning("circuit breaker: %s", problem)

    # -- the mirror's reads ------------------------------------------------------

    def _poll_mirror(self, keys: list[str]) -> list[circuit_mirror.Row]:
        if self.down_since is not None or not self.mirror_supported:
            raise _Unreachable
        # Not the callers' POOL_TIMEOUT: a poll that cannot get a connection
        # soon is better skipped (nothing is trusted meanwhile).
        with self._get_pool().connection(timeout=circuit_mirror.POLL_INTERVAL) as conn:
            return db.run(conn, "circuit_mirror", {"keys": keys}, prepare=True).fetchall()

    def _heartbeat(self, conn: psycopg.Connection) -> None:
        """On the listener's connection: calls admitted in-process never
        reach execute(), so the thresholds are kept fresh from here."""
        if (self._settings_read_at is None
                or time.monotonic() - self._settings_read_at > SETTINGS_TTL):
            self._read_settings(conn)

    def _mirror_unsupported(self) -> None:
        with self._lock:
            if not self.mirror_supported:
                return
            self.mirror_supported = False
        log.warning("circuit breaker: consistency.circuit_mirror is missing (run `consistency "
                    "migrate`); every call goes to the database")
        self.mirror.close()

    # -- failures -----------------------------------------------------------------

    def _refused(self, name: str, exc: psycopg.Error) -> None:
        kind = exc.sqlstate or type(exc).__name__
        now = time.monotonic()
        with self._lock:
            last = self._refused_logged.get(kind)
            if last is not None and now - last < REFUSED_LOG_INTERVAL:
                return
            self._refused_logged[kind] = now
        log.error("circuit breaker: %s failed in the database (%s); deciding in-process",
                  name, db.describe_error(exc))

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

    # While the database is reachable, an in-process breaker exists for a key
    # only because the database refused to record one of its outcomes: it
    # stands in for the shared count (every outcome goes to it too, and it
    # may refuse calls) until the database records one again.

    def stand_in(self, key: str) -> LocalCircuit | None:
        return self._local.get(key) if self._local and self.down_since is None else None

    def drop_stand_in(self, key: str) -> None:
        if key in self._local and self.down_since is None:
            with self._lock:
                self._local.pop(key, None)


def _configure(conn: psycopg.Connection) -> None:
    db.run(conn, "circuit_session_setup", {"ms": STATEMENT_TIMEOUT_MS})


class _NotStarted:
    """Calls dropped without a worker, per key: counted apart from failures,
    logged once per REFUSED_LOG_INTERVAL and key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self._logged: dict[str, float] = {}

    def count(self, key: str) -> None:
        now = time.monotonic()
        with self._lock:
            total = self.counts[key] = self.counts.get(key, 0) + 1
            last = self._logged.get(key)
            if last is not None and now - last < REFUSED_LOG_INTERVAL:
                return
            self._logged[key] = now
        log.warning("circuit %r: %s call(s) not started, no worker free before the deadline "
                    "(this key's calls hold %s, at most %s of %s): not counted as failures",
                    key, total, _WORKER_POOL.busy(key), _per_key_workers(), WORKERS)


_NOT_STARTED = _NotStarted()


def not_started(key: str | None = None) -> int:
    """Calls of ``key`` (None: of every key) this process dropped without
    running them: WorkersBusyError."""
    with _NOT_STARTED._lock:
        counts = dict(_NOT_STARTED.counts)
    return counts.get(key, 0) if key is not None else sum(counts.values())


_DATABASES: dict[str, _Database] = {}
_DATABASES_LOCK = threading.Lock()
# Process-wide, like the pools: sync calls run here under their deadline.
_WORKER_POOL = DeadlinePool(lambda: WORKERS, "consistency-breaker-worker", _per_key_workers)


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
    """Close every pool and mirror of this process (also run at exit)."""
    with _DATABASES_LOCK:
        databases = list(_DATABASES.values())
        _DATABASES.clear()
    for database in databases:
        database.close()


def _forget_after_fork() -> None:
    """A forked worker (gunicorn, celery prefork) has none of its parent's
    threads and must not share its connections: it starts afresh."""
    global _DATABASES_LOCK, _WORKER_POOL, _NOT_STARTED
    _DATABASES.clear()
    _DATABASES_LOCK = threading.Lock()
    _NOT_STARTED = _NotStarted()
    _WORKER_POOL = DeadlinePool(lambda: WORKERS, "consistency-breaker-worker", _per_key_workers)


os.register_at_fork(after_in_child=_forget_after_fork)


@dataclass(frozen=True)
class _Ticket:
    """Who admitted the call, so its outcome goes back to the same place."""

    local: LocalCircuit | None  # None: the database (or its mirror)


_SHARED = _Ticket(None)
# An exception that records nothing (see CircuitBreaker._outcome).
_NOTHING = object()


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return (f"{type(exc).__name__}: {text}" if text else type(exc).__name__)[:2000]


def _consume(task: asyncio.Future[Any]) -> None:
    """Done callback of an abandoned task: nobody awaits it any more."""
    if not task.cancelled():
        task.exception()


class CircuitBreaker:
    """Protects calls under one circuit key; see the module docstring.
    ``mirror=False`` asks the database about every call (two round trips)."""

    def __init__(self, key: str, *, dsn: str | None = None,
                 exclude: Iterable[type[BaseException]] = (), mirror: bool = True) -> None:
        if not isinstance(key, str) or not key.strip() or len(key) > MAX_KEY_LENGTH:
            raise ValueError(f"circuit key must be a non-empty string of at most "
                             f"{MAX_KEY_LENGTH} characters")
        self.key = key
        self.exclude = tuple(exclude)
        self._mirrored = mirror
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

    @property
    def mirror(self) -> circuit_mirror.Mirror:
        """This process's mirror of the circuits of this DSN."""
        return self._db.mirror

    # -- the protocol ---------------------------------------------------------

    def _admitted_in_process(self) -> _Ticket | None:
        database = self._db
        if self._mirrored and database.down_since is None and database.mirror.admits(self.key):
            return _SHARED
        return None

    def _watch(self, database: _Database) -> str | None:
        """The key to read back with a query, so the mirror holds it."""
        if not self._mirrored or not database.mirror_supported:
            return None
        database.mirror.watch(self.key)
        return self.key

    def _check_stand_in(self) -> None:
        database = self._db
        stand_in = database.stand_in(self.key)
        if stand_in is not None and not stand_in.acquire(database.thresholds):
            raise CircuitOpenError(self.key, stand_in.state)

    def _acquire(self) -> _Ticket:
        self._check_stand_in()
        return self._admitted_in_process() or self._acquire_from_database()

    def _acquire_from_database(self) -> _Ticket:
        database = self._db
        read_key = self._watch(database)
        try:
            row = database.execute("circuit_acquire", {"key": self.key}, read_key=read_key)
        except _Unreachable:
            return self._acquire_local(database)
        except _Refused:
            last = database.mirror.known_state(self.key)
            if last in _REFUSING:
                raise CircuitOpenError(self.key, last) from None
            return self._acquire_local(database)
        if row and row[0]:
            return _SHARED
        state = database.mirror.known_state(self.key) if read_key else None
        raise CircuitOpenError(self.key, state or self.state())

    def _acquire_local(self, database: _Database) -> _Ticket:
        local = database.local(self.key)
        if local.acquire(database.thresholds):
            return _Ticket(local)
        raise CircuitOpenError(self.key, local.state)

    def _records_nothing(self, ticket: _Ticket, error: BaseException | None) -> bool:
        return (error is None and ticket.local is None and self._mirrored
                and self._db.mirror.success_changes_nothing(self.key))

    def _record(self, ticket: _Ticket, error: BaseException | None) -> None:
        database = self._db
        t = database.thresholds
        if self._records_nothing(ticket, error):
            stand_in = database.stand_in(self.key)
            if stand_in is not None:
                stand_in.record_success(t)
            return
        if ticket.local is None:
            read_key = self._watch(database)
            try:
                if error is None:
                    database.execute("circuit_record_success", {"key": self.key},
                                     read_key=read_key)
                else:
                    database.execute("circuit_record_failure",
                                     {"key": self.key, "error": _describe(error)},
                                     read_key=read_key)
            except (_Unreachable, _Refused):
                ticket = _Ticket(database.local(self.key))
            else:
                database.drop_stand_in(self.key)  # the database counts again
                return
        assert ticket.local is not None
        if error is None:
            ticket.local.record_success(t)
        else:
            ticket.local.record_failure(t)

    def _outcome(self, exc: BaseException) -> Any:
        """What an exception records: None (a success), itself (a failure)
        or _NOTHING."""
        if isinstance(exc, self.exclude):
            return None
        return exc if isinstance(exc, Exception) else _NOTHING

    def _settle(self, ticket: _Ticket, exc: BaseException) -> None:
        outcome = self._outcome(exc)
        if outcome is not _NOTHING:
            self._record(ticket, outcome)

    def state(self) -> str:
        """The circuit's state as the database (or, degraded, this process) sees it."""
        database = self._db
        try:
            row = database.execute("circuit_status", {"key": self.key})
        except _Unreachable:
            return database.local(self.key).state
        except _Refused:
            return database.mirror.known_state(self.key) or database.local(self.key).state
        return row[1] if row else "closed"

    # -- sync -------------------------------------------------------------------

    def call(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        """Run ``fn(*args, **kwargs)`` through the circuit, with the deadline."""
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"{fn!r} is a coroutine function: use call_async")
        ticket = self._acquire()
        timeout = self._db.thresholds.timeout_seconds
        try:
            value = _WORKER_POOL.run(fn, args, kwargs, timeout, self.key)
        except DeadlineExceeded as expired:
            if not expired.started:
                _NOT_STARTED.count(self.key)
                raise WorkersBusyError(self.key, timeout) from None
            timed_out = CallTimeoutError(self.key, timeout)
            self._record(ticket, timed_out)
            raise timed_out from None
        except BaseException as exc:
            self._settle(ticket, exc)
            raise
        self._record(ticket, None)
        return value

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
    # Database round trips run in a worker thread, off the event loop; what
    # the mirror decides runs inline.

    async def _acquire_async(self) -> _Ticket:
        self._check_stand_in()
        return (self._admitted_in_process()
                or await asyncio.to_thread(self._acquire_from_database))

    async def _record_async(self, ticket: _Ticket, error: BaseException | None) -> None:
        if self._records_nothing(ticket, error):
            self._record(ticket, error)  # in-process only
        else:
            await asyncio.to_thread(self._record, ticket, error)

    async def _settle_async(self, ticket: _Ticket, exc: BaseException) -> None:
        outcome = self._outcome(exc)
        if outcome is not _NOTHING:
            await self._record_async(ticket, outcome)

    async def call_async(self, fn: Callable[..., Awaitable[T]], /, *args: Any,
                         **kwargs: Any) -> T:
        """Await ``fn(*args, **kwargs)`` through the circuit, with the deadline."""
        ticket = await self._acquire_async()
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
            await self._record_async(ticket, timed_out)
            raise timed_out
        if task.cancelled():
            return task.result()  # raises CancelledError; nothing recorded
        exc = task.exception()
        if exc is not None:
            await self._settle_async(ticket, exc)
            raise exc
        await self._record_async(ticket, None)
        return task.result()

    async def __aenter__(self) -> CircuitBreaker:
        ticket = await self._acquire_async()
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
            await self._record_async(ticket, timed_out)
            raise timed_out from expired
        if exc is None:
            await self._record_async(ticket, None)
        else:
            await self._settle_async(ticket, exc)

    # -- manual review of refused bookings ------------------------------------

    def queue_for_review(self, call_id: int, refused: CircuitOpenError,
                         context: dict[str, Any] | None = None,
                         priority: int | None = None) -> int:
        """Queue ``call_id`` for manual review with reason ``circuit_open``.
        Raises the CircuitOpenError again when the database is unreachable
        or refuses the item: then nothing was queued and the caller must keep
        the booking."""
        payload = {**(context or {}), "circuit_key": self.key, "circuit_state": refused.state}
        try:
            row = self._db.execute("circuit_review_enqueue", {
                "call_id": call_id, "reason": "circuit_open",
                "context": json.dumps(payload, default=str), "priority": priority})
        except (_Unreachable, _Refused):
            log.error("circuit %r open and the database did not take the review item: "
                      "call %s not queued for review", self.key, call_id)
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


def status(conn: psycopg.Connection, key: str | None = None) -> list[CircuitStatus]:
    if key is not None and not key.strip():
        raise GuardError("circuit key must not be empty")
    return [CircuitStatus(*row) for row in db.all(conn, "circuit_status", key=key)]


def force(conn: psycopg.Connection, key: str, state: str, actor: str, reason: str) -> bool:
    """Operator override; True when the state changed. Audited by the database."""
    with conn.transaction():
        return bool(db.value(conn, "circuit_force", key=key, state=state, actor=actor,
                             reason=reason))
