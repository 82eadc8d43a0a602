"""The circuits a process uses, mirrored in its memory (one mirror per DSN),
so that CircuitBreaker admits a call through a closed circuit, and drops a
success that would change nothing, without a round trip.

Per key the mirror holds the state, whether a closed circuit has failures
(then its next success must reach the database to reset them) and the
version of both (``sql/functions/circuit_mirror.sql``). A key is added on
its first use; from then on a listener thread keeps it current:

- listening: ``LISTEN consistency_circuit_state``. A notification is only a
  hint (any role may NOTIFY any channel): the listener re-reads the keys it
  names through ``consistency.circuit_mirror``, and re-reads every key it
  holds each RESYNC_INTERVAL, which is also its heartbeat.
- polling: while it cannot listen (its connection was killed, the server
  restarts), every key held is re-read each POLL_INTERVAL through the
  breaker's pool, and listening is tried again after RELISTEN_DELAY,
  doubling up to RELISTEN_MAX. (Through a pooler in transaction mode LISTEN
  seems to work but hears nothing: only the RESYNC_INTERVAL re-read keeps
  the mirror current there. Give the breaker a direct DSN.)
- off: neither works. Nothing held is trusted and every call goes to the
  database, where an unreachable database makes the breaker fall back to its
  in-process breaker.

A read, from the listener or from a caller that has just written, is applied
only when its version is newer than what is held, so a read that arrives
late never undoes a newer one. What is held is trusted only for a while
after the last read that succeeded: 2 x RESYNC_INTERVAL while listening,
3 x POLL_INTERVAL while polling; a connection lost is noticed at once and
trust ends there, until LISTEN is back and everything held was read again.

The window: another process's transition reaches this one when its NOTIFY
has been delivered and the listener has read the key (about 0.5 ms median, a
few ms at p99 on one host, docs/benchmarks.md; more when the listener thread
waits for the GIL behind busy threads). Until then this process may still
admit calls through a circuit that was just opened (their outcomes are
recorded as for any call admitted just before a transition), or drop a
success that should have reset a failure just recorded elsewhere. While
polling the window is up to POLL_INTERVAL; if the listener's connection dies
without the peer closing it, or notifications do not arrive, up to
2 x RESYNC_INTERVAL.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import psycopg

from orchestrator import backoff, db

log = logging.getLogger(__name__)

LISTENER_NAME = "consistency-breaker-listener"

# Tunables (module attributes, read when used).
RESYNC_INTERVAL = 1.0   # listening: every key held is re-read this often (the heartbeat)
POLL_INTERVAL = 0.1     # not listening: every key held is re-read this often
RELISTEN_DELAY = 0.5    # first wait before listening again; doubles up to RELISTEN_MAX
RELISTEN_MAX = 10.0
MAX_KEYS = 10_000       # keys beyond this are not mirrored: their calls go to the database
CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 2000

# States in which the database admits every call without writing anything.
_ADMITTING = frozenset({"closed", "disabled"})


class Entry(NamedTuple):
    state: str
    failing: bool
    version: int


Row = tuple[str, str, bool, int]
ReadFn = Callable[[list[str]], Sequence[Row]]

# A key whose first read has not been applied yet: admits nothing.
_PENDING = Entry("unknown", True, -1)


class Mirror:
    """Per DSN and process; see the module docstring."""

    def __init__(self, dsn: str, poll: ReadFn,
                 heartbeat: Callable[[psycopg.Connection], None] | None = None) -> None:
        self.dsn = dsn
        self._poll = poll
        self._heartbeat = heartbeat
        self._entries: dict[str, Entry] = {}
        self._lock = threading.Lock()
        self._trusted_until = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None
        self.mode = "off"
        self.listens = 0  # how often LISTEN was established
        self._lost_logged = False

    # -- the hot path (no lock: one dict read, one clock read) ------------------

    def admits(self, key: str) -> bool:
        """The database would admit this call without writing anything."""
        entry = self._entries.get(key)
        return (entry is not None and entry.state in _ADMITTING
                and time.monotonic() < self._trusted_until)

    def success_changes_nothing(self, key: str) -> bool:
        """A success now would not change the row (closed without failures,
        or disabled), so it need not be sent."""
        entry = self._entries.get(key)
        return (entry is not None
                and (entry.state == "disabled" or (entry.state == "closed" and not entry.failing))
                and time.monotonic() < self._trusted_until)

    # -- filling -------------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        return time.monotonic() < self._trusted_until

    def known_state(self, key: str) -> str | None:
        """The last state read for ``key``, trusted or not (None: never read)."""
        entry = self._entries.get(key)
        return None if entry is None or entry.version < 0 else entry.state

    def watch(self, key: str) -> None:
        """Mirror ``key`` from now on. Called before the caller's own read, so
        that a change notified while that read is on its way is not missed."""
        if key in self._entries:
            return
        with self._lock:
            if self._stop.is_set():
                return
            if key not in self._entries and len(self._entries) < MAX_KEYS:
                self._entries[key] = _PENDING
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, daemon=True,
                                                name="consistency-breaker-listener")
                self._thread.start()

    def apply(self, rows: Iterable[Row]) -> None:
        """Take the rows that are newer than what is held (held keys only)."""
        with self._lock:
            for key, state, failing, version in rows:
                held = self._entries.get(key)
                if held is not None and version > held.version:
                    self._entries[key] = Entry(state, bool(failing), version)

    def close(self) -> None:
        """Stop the listener and close its connection (waits up to a second)."""
        self._stop.set()
        with self._lock:
            thread, conn = self._thread, self._conn
        if conn is not None:
            _interrupt(conn)
        if thread is not None and thread is not threading.current_thread():
            thread.join(1.0)

    # -- the listener thread ---------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            listens = self.listens
            try:
                self._listen()
            except Exception as exc:  # whatever broke, the mirror must keep going
                if self._stop.is_set():
                    break
                self._lost(exc)
            else:
                break
            # Back off only while LISTEN keeps failing, not after a long listen.
            attempt = 1 if self.listens > listens else attempt + 1
            delay = backoff.delay(attempt, RELISTEN_DELAY, RELISTEN_MAX)
            self._poll_until(time.monotonic() + delay)
        self._trusted_until = 0.0
        self.mode = "off"

    def _listen(self) -> None:
        conn = psycopg.connect(
            self.dsn, autocommit=True, application_name=LISTENER_NAME,
            connect_timeout=CONNECT_TIMEOUT,
            # A peer that vanishes without closing the connection is noticed
            # by TCP (ignored on a Unix socket, where that cannot happen).
            keepalives=1, keepalives_idle=5, keepalives_interval=2, keepalives_count=2,
            tcp_user_timeout=10_000)
        with conn:
            with self._lock:
                if self._stop.is_set():
                    return
                self._conn = conn
            try:
                db.run(conn, "circuit_session_setup", {"ms": STATEMENT_TIMEOUT_MS})
                db.run(conn, "circuit_mirror_listen")
                # Only after LISTEN: a change committed from now on is
                # notified, one committed before is in this read.
                self._resync(conn)
                self.listens += 1
                self.mode = "listening"
                if self._lost_logged:
                    self._lost_logged = False
                    log.warning("circuit mirror: listening again")
                self._follow(conn)
            finally:
                with self._lock:
                    self._conn = None

    def _follow(self, conn: psycopg.Connection) -> None:
        next_resync = time.monotonic() + RESYNC_INTERVAL
        while not self._stop.is_set():
            named: set[str] = set()
            wait = max(0.0, next_resync - time.monotonic())
            # Leave the generator before querying: it holds the connection's lock.
            for notify in conn.notifies(timeout=wait, stop_after=1):
                key = _key_of(notify.payload)
                if key is not None and key in self._entries:
                    named.add(key)
            if self._stop.is_set():
                return
            if time.monotonic() >= next_resync:
                self._resync(conn)
                next_resync = time.monotonic() + RESYNC_INTERVAL
            elif named:
                started = time.monotonic()
                self.apply(_read(conn, sorted(named)))
                self._trust_from(started, 2 * RESYNC_INTERVAL)

    def _held(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def _resync(self, conn: psycopg.Connection) -> None:
        started = time.monotonic()
        self.apply(_read(conn, self._held()))
        if self._heartbeat is not None:
            self._heartbeat(conn)
        self._trust_from(started, 2 * RESYNC_INTERVAL)

    def _trust_from(self, started: float, span: float) -> None:
        self._trusted_until = max(self._trusted_until, started + span)

    def _lost(self, exc: BaseException) -> None:
        self._trusted_until = 0.0
        if not self._lost_logged:
            self._lost_logged = True
            log.warning("circuit mirror: cannot listen (%s); polling every %g s until LISTEN "
                        "works again", db.describe_error(exc), POLL_INTERVAL)
        if self.mode == "listening":
            self.mode = "polling"

    def _poll_until(self, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                self.apply(self._poll(self._held()))
            except Exception:
                # The breaker's own calls find out and fall back; nothing held
                # is trusted until a read succeeds again.
                self._trusted_until = 0.0
                self.mode = "off"
            else:
                self._trust_from(started, 3 * POLL_INTERVAL)
                self.mode = "polling"
            self._stop.wait(POLL_INTERVAL)


def _read(conn: psycopg.Connection, keys: list[str]) -> list[Row]:
    return db.run(conn, "circuit_mirror", {"keys": keys}, prepare=True).fetchall()


def _key_of(payload: str) -> str | None:
    try:
        data: Any = json.loads(payload)
    except ValueError:
        return None
    key = data.get("circuit_key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def _interrupt(conn: psycopg.Connection) -> None:
    """Wake a thread blocked on ``conn`` (it sees its connection closed)."""
    with contextlib.suppress(OSError, psycopg.Error):
        fd = os.dup(conn.fileno())
        with socket.socket(fileno=fd) as sock:
            sock.shutdown(socket.SHUT_RDWR)
