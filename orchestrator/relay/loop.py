"""The relay loop: claim due deliveries, send them, record the outcome.

Two connections: a dedicated LISTEN connection that only wakes the loop (and
is probed, and reconnected with exponential backoff and jitter when it dies),
and a work connection for claims and outcomes. NOTIFY is a hint; the poll
interval is the guarantee, and the tables are the truth.
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from orchestrator.db import describe_error, query
from orchestrator.relay.base import Alert, DeliveryError, Sink, TransientError

log = logging.getLogger("consistency.relay")

# Keepalives and a TCP user timeout make a dead server show up as an error in
# seconds instead of a read that hangs for the kernel's retransmission time.
_CONNECT_KWARGS: dict[str, Any] = {
    "autocommit": True, "application_name": "consistency-relay", "connect_timeout": 5,
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}


@dataclass(frozen=True)
class RelayOptions:
    batch: int = 200
    concurrency: int = 16
    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    probe_seconds: float = 5.0
    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 300.0
    reconnect_max_delay: float = 5.0


@dataclass
class RelayStats:
    delivered: int = 0
    retried: int = 0
    failed: int = 0
    dead: int = 0
    reconnects: int = 0
    batches: int = 0
    by_sink: dict[str, int] = field(default_factory=dict)


def full_jitter(attempt: int, cap: float, base: float = 0.1) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2^attempt)]."""
    return random.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


class Relay:
    def __init__(self, dsn: str, sinks: list[Sink], options: RelayOptions | None = None,
                 owner: str | None = None) -> None:
        self.dsn = dsn
        self.sinks = sinks
        self.options = options or RelayOptions()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = RelayStats()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._conn: psycopg.Connection | None = None
        self._by_id: dict[int, Sink] = {}
        self.listening = threading.Event()
        self._listen_failures = 0

    # -- control -----------------------------------------------------------------

    def stop(self) -> None:
        """Finish the sends in flight, record them, then return from run()."""
        self._stop.set()
        self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # -- database ----------------------------------------------------------------

    def _give_up(self, state: RetryCallState) -> bool:
        # Keep reconnecting while running; once asked to stop, allow a short
        # grace so the outcomes of finished sends still get recorded.
        return self._stop.is_set() and state.seconds_since_start > 10

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.reconnects += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning("database unavailable (%s); reconnecting in %.2f s",
                    describe_error(exc) if exc else "?",
                    state.next_action.sleep if state.next_action else 0)

    def _db(self, name: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Run a named query on the work connection, reconnecting with
        exponential backoff and jitter while the server is unreachable. Every
        relay query is safe to repeat (claims under a lease, idempotent
        outcomes), so a statement cut off by a disconnect is simply re-run."""
        for attempt in Retrying(retry=retry_if_exception_type(psycopg.OperationalError),
                                wait=wait_random_exponential(
                                    multiplier=0.1, max=self.options.reconnect_max_delay),
                                stop=self._give_up, before_sleep=self._before_sleep,
                                reraise=True):
            with attempt:
                if self._conn is None or self._conn.closed:
                    self._conn = psycopg.connect(self.dsn, **_CONNECT_KWARGS)
                try:
                    cur = self._conn.execute(query(name), params)
                    return cur.fetchall() if cur.description else []
                except psycopg.OperationalError:
                    self._conn.close()
                    self._conn = None
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def register(self) -> dict[int, Sink]:
        for sink in self.sinks:
            (sink_id,), = self._db("relay_register_sink", {
                "fingerprint": sink.url.fingerprint, "name": sink.name,
                "scheme": sink.url.scheme, "min_severity": sink.url.min_severity,
                "digest_seconds": sink.url.digest_seconds})
            self._by_id[sink_id] = sink
        return self._by_id

    # -- listening ---------------------------------------------------------------

    def _listen_forever(self) -> None:
        self._listen_failures = 0
        while not self._stop.is_set():
            try:
                self._listen_once()
            except psycopg.Error as exc:
                self.listening.clear()
                self._listen_failures += 1
                self.stats.reconnects += 1
                delay = full_jitter(self._listen_failures, self.options.reconnect_max_delay)
                log.warning("listen connection lost (%s); reconnecting in %.2f s",
                            describe_error(exc), delay)
                self._stop.wait(delay)

    def _listen_once(self) -> None:
        with psycopg.connect(self.dsn, **_CONNECT_KWARGS) as conn:
            conn.execute(query("relay_listen"))
            self._listen_failures = 0
            self.listening.set()
            # Whatever was committed while we were not listening is found by
            # the claim this wake-up triggers.
            self._wake.set()
            last_probe = time.monotonic()
            while not self._stop.is_set():
                for _ in conn.notifies(timeout=min(0.5, self.options.poll_seconds)):
                    self._wake.set()
                    if self._stop.is_set():
                        break
                if time.monotonic() - last_probe >= self.options.probe_seconds:
                    # Liveness probe: a silent channel and a dead server look
                    # the same until we ask.
                    conn.execute(query("relay_probe"))
                    last_probe = time.monotonic()

    # -- delivering --------------------------------------------------------------

    def _send(self, sink: Sink, alerts: list[Alert], digest: bool) -> DeliveryError | None:
        try:
            if digest:
                sink.send_digest(alerts)
            else:
                sink.send(alerts[0])
        except DeliveryError as exc:
            return exc
        except Exception as exc:  # a bug in a sink must not kill the relay
            return TransientError(f"{exc.__class__.__name__}: {exc}")
        return None

    def process_batch(self, pool: ThreadPoolExecutor) -> int:
        """Claim, send and record one batch; returns how many were claimed."""
        opts = self.options
        rows = self._db("relay_claim", {
            "owner": self.owner, "sink_ids": list(self._by_id), "limit": opts.batch,
            "lease_seconds": opts.lease_seconds})
        if not rows:
            return 0
        self.stats.batches += 1
        # One send per row, except on digest sinks where the non-critical rows
        # of this claim (due together, see _relay_enqueue) make one message.
        singles: list[tuple[Sink, list[tuple[int, int, Alert]], bool]] = []
        digests: dict[int, list[tuple[int, int, Alert]]] = {}
        for (delivery_id, sink_id, attempts, *alert_fields) in rows:
            sink = self._by_id[sink_id]
            alert = Alert(*alert_fields)
            if sink.url.digest_seconds and alert.severity != "critical":
                digests.setdefault(sink_id, []).append((delivery_id, attempts, alert))
            else:
                singles.append((sink, [(delivery_id, attempts, alert)], False))
        groups = singles + [(self._by_id[sid], items, True) for sid, items in digests.items()]
        futures = [pool.submit(self._send, sink, [a for _, _, a in items], digest)
                   for sink, items, digest in groups]
        done: list[int] = []
        failures = []
        for (sink, items, _), future in zip(groups, futures, strict=True):
            error = future.result()
            for delivery_id, attempts, alert in items:
                if error is None:
                    done.append(delivery_id)
                    self.stats.by_sink[sink.name] = self.stats.by_sink.get(sink.name, 0) + 1
                else:
                    failures.append((delivery_id, sink, attempts, alert, error))
        if done:
            self._db("relay_complete", {"ids": done})
            self.stats.delivered += len(done)
        for delivery_id, sink, attempts, alert, error in failures:
            message = sink.url.redact(str(error))
            (status,), = self._db("relay_fail", {
                "owner": self.owner, "id": delivery_id, "error": message,
                "permanent": error.permanent, "retry_after": error.retry_after,
                "max_attempts": opts.max_attempts, "base_delay": opts.base_delay,
                "max_delay": opts.max_delay})
            if status == "pending":
                self.stats.retried += 1
                log.warning("alert %s -> %s: %s (attempt %s, will retry)",
                            alert.id, sink.name, message, attempts)
            elif status in ("failed", "dead"):
                setattr(self.stats, status, getattr(self.stats, status) + 1)
                log.error("alert %s -> %s: %s (%s after %s attempt(s))",
                          alert.id, sink.name, message, status, attempts)
        return len(rows)

    def _pending(self) -> int:
        (count,), = self._db("relay_pending_count", {"sink_ids": list(self._by_id)})
        return int(count)

    def run(self, once: bool = False) -> RelayStats:
        """Deliver until stop() (or, with ``once``, until nothing of our sinks
        is pending or in flight any more, waiting for scheduled retries)."""
        self.register()
        log.info("relay %s: delivering to %s", self.owner, ", ".join(s.name for s in self.sinks))
        listener = None
        if not once:
            listener = threading.Thread(target=self._listen_forever, name="relay-listen",
                                        daemon=True)
            listener.start()
        pool = ThreadPoolExecutor(max_workers=max(1, self.options.concurrency),
                                  thread_name_prefix="relay-send")
        try:
            while not self._stop.is_set():
                self._wake.clear()
                if self.process_batch(pool):
                    continue
                if once:
                    if self._pending() == 0:
                        break
                    self._wake.wait(0.2)
                else:
                    self._wake.wait(self.options.poll_seconds)
        finally:
            self._stop.set()
            pool.shutdown(wait=True)
            if listener is not None:
                listener.join(timeout=5)
            for sink in self.sinks:
                sink.close()
            if self._conn is not None:
                self._conn.close()
        log.info("relay %s: stopped (delivered %s, retried %s, failed %s, dead %s)", self.owner,
                 self.stats.delivered, self.stats.retried, self.stats.failed, self.stats.dead)
        return self.stats
