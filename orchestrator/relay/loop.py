"""The relay loop: claim due deliveries, send them, record each outcome.

One asyncio event loop, so every send can be given a hard deadline and
cancelled there, wherever it hangs (connect, TLS, a server dripping its
answer byte by byte). Three database connections: a dedicated LISTEN
connection that only wakes the loop (probed, and reconnected with exponential
backoff and jitter when it dies), one for claims, lease renewals and
heartbeats, and one that records outcomes, so claiming the next rows and
recording the last ones run side by side on the server. NOTIFY is a hint;
the poll interval is the guarantee, and the tables are the truth.

Each sink has a lane of its own with at most ``concurrency`` sends at once,
and a lane claims only what it can start (``in_flight`` in the table means
"being sent"), so a hanging sink holds a few rows of its own and never a
healthy sink's. A claimed row stays leased (renewed every third of the lease)
until its outcome is recorded, which happens as soon as its own send ends,
not at the end of a batch: another relay never finds it expired and re-sends
it to a sink that already has it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
import socket
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type

from orchestrator import backoff, db
from orchestrator.alerts import Alert
from orchestrator.db import describe_error, session_conninfo
from orchestrator.errors import GuardError
from orchestrator.relay.base import DeliveryError, Sink, TransientError

log = logging.getLogger("consistency.relay")

# Keepalives and a TCP user timeout make a dead server show up as an error in
# seconds instead of a read that hangs for the kernel's retransmission time.
_CONNECT_KWARGS: dict[str, Any] = {
    "autocommit": True, "application_name": "consistency-relay", "connect_timeout": 5,
    "keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
    "tcp_user_timeout": 15000,
}
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Once asked to stop, outcomes of finished sends are still written for this
# long while the database is unreachable; then the leases bring them back.
_STOP_GRACE_SECONDS = 10.0
# First wait before reconnecting; doubles up to RelayOptions.reconnect_max_delay.
_RECONNECT_DELAY = 0.1


@dataclass(frozen=True)
class RelayOptions:
    """How a relay runs. ``timeout`` is the hard deadline of one send
    (connect + whole response); a delivery is retried with capped exponential
    backoff until it is ``give_up_after`` seconds old (or has made
    ``max_attempts`` attempts, when set)."""

    batch: int = 200       # most rows one claim takes for one sink
    concurrency: int = 16  # sends at once per sink
    lease_seconds: float = 30.0
    poll_seconds: float = 2.0
    probe_seconds: float = 5.0
    timeout: float = 10.0
    give_up_after: float = 86400.0
    max_attempts: int | None = None
    base_delay: float = 1.0
    max_delay: float = 300.0
    backlog_seconds: float | None = None
    heartbeat_seconds: float = 15.0
    reconnect_max_delay: float = 5.0

    def check(self) -> None:
        """Refuse, before anything runs, options that cannot hold together."""
        if self.lease_seconds < 1:
            raise GuardError(f"--lease {self.lease_seconds:g} s is too short to be renewed "
                             "while a send runs (at least 1 s)")
        if self.timeout <= 0:
            raise GuardError("--timeout must be positive")
        if self.give_up_after < self.timeout:
            raise GuardError(f"--give-up-after ({self.give_up_after:g} s) is shorter than one "
                             f"send's deadline (--timeout {self.timeout:g} s)")
        if self.max_attempts is not None and self.max_attempts < 1:
            raise GuardError("--max-attempts must be at least 1")
        if self.batch < 1 or self.concurrency < 1:
            raise GuardError("--batch and --concurrency must be at least 1")


@dataclass
class RelayStats:
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    reconnects: int = 0
    claims: int = 0
    deadlines: int = 0
    # Outcomes the database refused to record (left to their lease).
    unrecorded: int = 0
    by_sink: dict[str, int] = field(default_factory=dict)

    @property
    def undelivered(self) -> int:
        """Deliveries this run attempted without delivering them (or
        without recording that it did)."""
        return self.retried + self.dead + self.unrecorded


def _bounded(retry_after: float | None, options: RelayOptions) -> float | None:
    """A server's Retry-After as the database takes it: a finite number of
    seconds, no longer than the give-up age."""
    if retry_after is None or not math.isfinite(retry_after):
        return None
    return min(max(retry_after, 0.0), options.give_up_after)


def _unrecorded(exc: BaseException) -> str:
    """Why recording an outcome failed, without the database's message: it
    may quote the row, and with it what the sink answered."""
    cause = exc.__cause__ if isinstance(exc, GuardError) and exc.__cause__ else exc
    sqlstate = getattr(cause, "sqlstate", None)
    return cause.__class__.__name__ + (f", SQLSTATE {sqlstate}" if sqlstate else "")


def _printable(text: str) -> str:
    """A server's answer goes to logs, last_error and alerts: no control
    characters (a forged log line, an ANSI escape for whoever reads it)."""
    return _CONTROL.sub(" ", text)


@dataclass
class _WorkConnection:
    conn: psycopg.AsyncConnection | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class _Claimed:
    delivery_id: int
    attempts: int
    alert: Alert


@dataclass
class _Lane:
    """One sink's share of this relay: what it holds, waiting or sending."""

    sink_id: int
    sink: Sink
    waiting: deque[list[_Claimed]] = field(default_factory=deque)
    running: int = 0
    more: bool = True      # the last claim was full: more may be due

    def free(self, concurrency: int) -> int:
        return concurrency - self.running - len(self.waiting)


class Relay:
    """``Relay(dsn, sinks, options).run()`` delivers until ``stop()`` (from
    any thread or a signal handler); ``run(once=True)`` makes one pass over
    what is due now."""

    def __init__(self, dsn: str, sinks: list[Sink], options: RelayOptions | None = None,
                 owner: str | None = None) -> None:
        self.dsn = session_conninfo(dsn)
        self.sinks = sinks
        self.options = options or RelayOptions()
        self.options.check()
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.stats = RelayStats()
        self.listening = threading.Event()
        self._stop_requested = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._conns: dict[str, _WorkConnection] = {}
        self._lanes: dict[int, _Lane] = {}
        self._held: dict[int, _Lane] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._outcomes: asyncio.Queue[tuple[_Lane, list[_Claimed], DeliveryError | None]] | None \
            = None
        self._fatal: BaseException | None = None

    # -- control -----------------------------------------------------------------

    def stop(self) -> None:
        """Stop claiming, hand back what has not started, let the sends in
        flight end (each within its deadline), record them, then return from
        run(). Safe from any thread and from a signal handler."""
        self._stop_requested.set()
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._signal_stop)

    def _signal_stop(self) -> None:
        if self._stop is not None and self._wake is not None:
            self._stop.set()
            self._wake.set()

    @property
    def stopping(self) -> bool:
        return self._stop_requested.is_set()

    # -- database ----------------------------------------------------------------

    def _give_up(self, state: RetryCallState) -> bool:
        # Keep reconnecting while running; once asked to stop, allow a short
        # grace so the outcomes of finished sends still get recorded.
        return self.stopping and state.seconds_since_start > _STOP_GRACE_SECONDS

    def _reconnect_delay(self, attempt: int) -> float:
        return backoff.delay(attempt, _RECONNECT_DELAY, self.options.reconnect_max_delay)

    def _before_sleep(self, state: RetryCallState) -> None:
        self.stats.reconnects += 1
        exc = state.outcome.exception() if state.outcome else None
        log.warning("database unavailable (%s); reconnecting in %.2f s",
                    describe_error(exc) if exc else "?",
                    state.next_action.sleep if state.next_action else 0)

    async def _db(self, name: str, params: dict[str, Any] | None = None,
                  via: str = "claim") -> list[tuple[Any, ...]]:
        """Run a named query on work connection ``via`` ("claim" or
        "record"), reconnecting with exponential backoff and jitter while the
        server is unreachable. Every relay query is safe to repeat (claims
        under a lease, idempotent outcomes), so a statement cut off by a
        disconnect is simply re-run."""
        work = self._conns.setdefault(via, _WorkConnection())
        async for attempt in AsyncRetrying(
                retry=retry_if_exception_type(psycopg.OperationalError),
                wait=lambda state: self._reconnect_delay(state.attempt_number),
                stop=self._give_up, before_sleep=self._before_sleep, reraise=True):
            with attempt:
                async with work.lock:
                    if work.conn is None or work.conn.closed:
                        work.conn = await psycopg.AsyncConnection.connect(self.dsn,
                                                                          **_CONNECT_KWARGS)
                    try:
                        return await db.all_async(work.conn, name, **(params or {}))
                    except psycopg.OperationalError:
                        await work.conn.close()
                        work.conn = None
                        raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _register_params(self, sink: Sink) -> dict[str, Any]:
        backlog = self.options.backlog_seconds
        return {"fingerprint": sink.url.fingerprint, "name": sink.name,
                "scheme": sink.url.scheme, "min_severity": sink.url.min_severity,
                "digest_seconds": sink.url.digest_seconds,
                "backlog": timedelta(seconds=backlog) if backlog else None}

    def register(self) -> dict[int, Sink]:
        """Register the sinks (before run(), e.g. so that alerts raised next
        already get their delivery rows); run() registers them too."""
        with psycopg.connect(self.dsn, **_CONNECT_KWARGS) as conn:
            for sink in self.sinks:
                (sink_id,), = db.all(conn, "relay_register_sink", **self._register_params(sink))
                self._lanes[sink_id] = _Lane(sink_id, sink)
        return {lane.sink_id: lane.sink for lane in self._lanes.values()}

    async def _register(self) -> None:
        lanes = {}
        for sink in self.sinks:
            (sink_id,), = await self._db("relay_register_sink", self._register_params(sink))
            lanes[sink_id] = _Lane(sink_id, sink)
        self._lanes = lanes

    async def _register_again(self, unseen_for: float) -> None:
        """A sink this relay serves was forgotten (`relay forget-sink`)
        meanwhile: register it again, handing it the alerts raised since its
        last heartbeat, which the forgetting took away with its delivery
        rows (those due before that, still pending then, are lost)."""
        lanes = {}
        for lane in self._lanes.values():
            params = {**self._register_params(lane.sink),
                      "backlog": timedelta(seconds=max(unseen_for,
                                                       self.options.backlog_seconds or 0))}
            (sink_id,), = await self._db("relay_register_sink", params)
            if sink_id != lane.sink_id:
                log.warning("sink %s (id %s) was forgotten while this relay serves it: "
                            "registered again as id %s, with the alerts of the last %.0f s",
                            lane.sink.name, lane.sink_id, sink_id, unseen_for)
                lane.sink_id = sink_id
            lanes[sink_id] = lane
        self._lanes = lanes

    # -- listening ---------------------------------------------------------------

    async def _listen_forever(self) -> None:
        assert self._stop is not None
        failures = 0
        while not self._stop.is_set():
            try:
                await self._listen_once()
            except psycopg.Error as exc:
                self.listening.clear()
                failures += 1
                self.stats.reconnects += 1
                delay = self._reconnect_delay(failures)
                log.warning("listen connection lost (%s); reconnecting in %.2f s",
                            describe_error(exc), delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), delay)
            else:
                failures = 0

    async def _listen_once(self) -> None:
        assert self._stop is not None and self._wake is not None
        conn = await psycopg.AsyncConnection.connect(self.dsn, **_CONNECT_KWARGS)
        async with conn:
            await db.all_async(conn, "relay_listen")
            self.listening.set()
            # Whatever was committed while we were not listening is found by
            # the claim this wake-up triggers.
            self._wake.set()
            last_probe = time.monotonic()
            while not self._stop.is_set():
                async for _ in conn.notifies(timeout=min(0.5, self.options.poll_seconds)):
                    self._wake.set()
                if time.monotonic() - last_probe >= self.options.probe_seconds:
                    # Liveness probe: a silent channel and a dead server look
                    # the same until we ask.
                    await db.all_async(conn, "relay_probe")
                    last_probe = time.monotonic()

    # -- keeping claims and sinks alive -------------------------------------------

    async def _keepalive(self) -> None:
        """Renew the leases of every row held (waiting or sending) every third
        of the lease, and refresh the sinks' last_seen_at."""
        assert self._stop is not None
        opts = self.options
        interval = min(opts.lease_seconds / 3, opts.heartbeat_seconds)
        last_beat = time.monotonic()
        while True:
            await asyncio.sleep(interval)
            if self._held:
                ids = list(self._held)
                kept = (await self._db("relay_renew", {
                    "owner": self.owner, "ids": ids,
                    "lease": timedelta(seconds=opts.lease_seconds)}))[0][0]
                if kept < len(ids):
                    log.warning("%s of %s claimed deliveries were no longer ours to renew "
                                "(lease ran out; another relay may send them too)",
                                len(ids) - kept, len(ids))
            if time.monotonic() - last_beat >= opts.heartbeat_seconds:
                seen = (await self._db("relay_heartbeat", {"sink_ids": list(self._lanes)}))[0][0]
                if seen < len(self._lanes):
                    # One heartbeat interval of margin: alerts raised while
                    # the last heartbeat ran are handed over too.
                    await self._register_again(time.monotonic() - last_beat
                                               + opts.heartbeat_seconds)
                last_beat = time.monotonic()

    # -- delivering --------------------------------------------------------------

    async def _claim(self, due_by: Any = None) -> int:
        """Claim for every lane with room; start what can start. Returns how
        many rows were claimed."""
        opts = self.options
        lanes = [lane for lane in self._lanes.values() if self._has_room(lane)]
        if not lanes:
            return 0
        limits = [min(opts.batch, lane.free(opts.concurrency)) for lane in lanes]
        rows = await self._db("relay_claim", {
            "owner": self.owner, "sink_ids": [lane.sink_id for lane in lanes],
            "limits": limits, "lease": timedelta(seconds=opts.lease_seconds),
            "max_attempts": opts.max_attempts,
            "give_up": timedelta(seconds=opts.give_up_after), "due_by": due_by})
        self.stats.claims += 1
        got: dict[int, list[_Claimed]] = {}
        for (delivery_id, sink_id, attempts, *alert_fields) in rows:
            got.setdefault(sink_id, []).append(_Claimed(delivery_id, attempts,
                                                        Alert(*alert_fields)))
        for lane, limit in zip(lanes, limits, strict=True):
            claimed = got.get(lane.sink_id, [])
            lane.more = len(claimed) >= limit
            if not claimed:
                continue
            for item in claimed:
                self._held[item.delivery_id] = lane
            # One send per row, except on digest sinks where the non-critical
            # rows of this claim (due together, see _relay_first_due) make one.
            digest = [c for c in claimed
                      if lane.sink.url.digest_seconds and c.alert.severity != "critical"]
            lane.waiting.extend([c] for c in claimed if c not in digest)
            if digest:
                lane.waiting.append(digest)
            self._pump(lane)
        return len(rows)

    def _pump(self, lane: _Lane) -> None:
        while lane.running < self.options.concurrency and lane.waiting \
                and not self.stopping:
            unit = lane.waiting.popleft()
            lane.running += 1
            task = asyncio.create_task(self._send(lane, unit))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, lane: _Lane, unit: list[_Claimed]) -> None:
        assert self._outcomes is not None and self._wake is not None
        error: DeliveryError | None = None
        deadline = self.options.timeout
        try:
            async with asyncio.timeout(deadline) as cm:
                if len(unit) > 1 or (lane.sink.url.digest_seconds
                                     and unit[0].alert.severity != "critical"):
                    await lane.sink.send_digest([c.alert for c in unit])
                else:
                    await lane.sink.send(unit[0].alert)
        except TimeoutError:
            if not cm.expired():
                raise
            self.stats.deadlines += 1
            error = TransientError(f"no complete answer within the {deadline:g} s deadline")
        except DeliveryError as exc:
            error = exc
        except Exception as exc:  # a bug in a sink must not kill the relay
            error = TransientError(f"{exc.__class__.__name__}: {exc}")
        finally:
            lane.running -= 1
        self._outcomes.put_nowait((lane, unit, error))
        self._pump(lane)
        if lane.more and self._has_room(lane):
            self._wake.set()

    async def _record_forever(self) -> None:
        """Write outcomes as sends end; whatever ended while the last write
        ran goes in the next one (one relay_complete for all successes)."""
        assert self._outcomes is not None
        while True:
            batch = [await self._outcomes.get()]
            while not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            try:
                await self._record(batch)
            finally:
                for _ in batch:
                    self._outcomes.task_done()

    async def _record(self, batch: list[tuple[_Lane, list[_Claimed], DeliveryError | None]]
                      ) -> None:
        done = [c.delivery_id for _, unit, error in batch if error is None for c in unit]
        if done:
            await self._complete(done)
        for lane, unit, error in batch:
            if error is None:
                self.stats.by_sink[lane.sink.name] = \
                    self.stats.by_sink.get(lane.sink.name, 0) + len(unit)
                continue
            message = _printable(lane.sink.url.redact(str(error)))
            for item in unit:
                await self._fail(lane, item, error, message)
        for _, unit, _ in batch:
            self._forget(unit)

    # Recording one outcome may fail in the database for a reason of its own
    # (a constraint, a setting written around set_setting, a bug): that is
    # logged and the delivery handled as well as it can be, and the relay
    # goes on with every other delivery. A lost database is not such a
    # reason: _db reconnects, and raises only once a stopping relay's grace
    # is over.

    async def _complete(self, ids: list[int]) -> None:
        try:
            await self._db("relay_complete", {"ids": ids}, via="record")
        except psycopg.OperationalError:
            raise
        except Exception as exc:
            if len(ids) > 1:
                for one in ids:  # the one row it is about still fails alone
                    await self._complete([one])
                return
            self.stats.unrecorded += 1
            log.error("delivery %s was sent but recording it failed (%s): its lease runs out "
                      "and it is sent again", ids[0], _unrecorded(exc))
            return
        self.stats.delivered += len(ids)

    async def _fail(self, lane: _Lane, item: _Claimed, error: DeliveryError,
                    message: str) -> None:
        opts = self.options
        params = {"owner": self.owner, "id": item.delivery_id, "error": message,
                  "permanent": error.permanent, "retry_after": _bounded(error.retry_after, opts),
                  "max_attempts": opts.max_attempts, "base_delay": opts.base_delay,
                  "max_delay": opts.max_delay, "give_up": timedelta(seconds=opts.give_up_after)}
        status = None
        for retry in (False, True):
            try:
                (status,), = await self._db("relay_fail", params, via="record")
                break
            except psycopg.OperationalError:
                raise
            except Exception as exc:
                log.error("alert %s -> %s: recording the failure%s failed (%s)",
                          item.alert.id, lane.sink.name,
                          " without the server's answer" if retry else "", _unrecorded(exc))
                params.update(retry_after=None, error=(
                    f"{'refused' if error.permanent else 'failed'}; the error could not be "
                    f"recorded ({_unrecorded(exc)})"))
        if status is None:
            self.stats.unrecorded += 1
            log.error("alert %s -> %s: the failure is not recorded; the delivery is retried "
                      "when its lease runs out (%g s), buried at its give-up age or attempt limit",
                      item.alert.id, lane.sink.name, opts.lease_seconds)
        elif status == "pending":
            self.stats.retried += 1
            log.warning("alert %s -> %s: %s (attempt %s, will retry)",
                        item.alert.id, lane.sink.name, message, item.attempts)
        elif status == "dead":
            self.stats.dead += 1
            log.error("alert %s -> %s: %s (dead after %s attempt(s); "
                      "consistency relay redrive re-drives it)",
                      item.alert.id, lane.sink.name, message, item.attempts)

    def _forget(self, unit: list[_Claimed]) -> None:
        for item in unit:
            self._held.pop(item.delivery_id, None)

    async def _release_waiting(self) -> None:
        """Hand back what was claimed but never started (a stopping relay)."""
        units = [(lane, unit) for lane in self._lanes.values() for unit in lane.waiting]
        for lane in self._lanes.values():
            lane.waiting.clear()
        ids = [c.delivery_id for _, unit in units for c in unit]
        if ids:
            await self._db("relay_release", {"owner": self.owner, "ids": ids})
        for _, unit in units:
            self._forget(unit)

    async def _wait_woken(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    def _has_room(self, lane: _Lane) -> bool:
        # Refill once half the lane's slots are free: a claim per finished
        # send would cost a round trip per alert.
        concurrency = self.options.concurrency
        return lane.free(concurrency) >= max(1, concurrency // 2)

    async def _deliver(self, once: bool) -> None:
        assert self._wake is not None
        due_by = (await self._db("relay_now"))[0][0] if once else None
        while not self.stopping:
            self._wake.clear()
            claimed = await self._claim(due_by)
            if claimed and any(lane.more and self._has_room(lane)
                               for lane in self._lanes.values()):
                continue
            if once and not claimed and not self._held:
                return
            # Woken by a NOTIFY, by a send that made room in a lane with more
            # due, or by stop(); the poll is the guarantee.
            await self._wait_woken(0.2 if once else self.options.poll_seconds)

    async def _guard(self, work: Any) -> None:
        """A background task that fails (the database refusing a statement,
        a bug) stops the relay and makes run() raise, rather than leaving a
        relay that claims but never records."""
        try:
            await work
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("relay %s: stopping: %s", self.owner, describe_error(exc))
            self._fatal = exc
            self.stop()

    async def _main(self, once: bool) -> RelayStats:
        self._loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        self._conns = {}
        self._outcomes = asyncio.Queue()
        if self.stopping:
            self._signal_stop()
        # The recorder first: shutdown waits for it to drain.
        background: list[asyncio.Task[None]] = []
        try:
            await self._register()
            log.info("relay %s: delivering to %s", self.owner,
                     ", ".join(lane.sink.name for lane in self._lanes.values()))
            background.append(asyncio.create_task(self._guard(self._record_forever())))
            background.append(asyncio.create_task(self._guard(self._keepalive())))
            if not once:
                background.append(asyncio.create_task(self._guard(self._listen_forever())))
            await self._deliver(once)
        finally:
            self._stop_requested.set()
            self._stop.set()
            try:
                await self._release_waiting()
                # Each send ends by its deadline; its outcome is recorded
                # (unless the recorder itself failed: then the leases bring
                # those rows back).
                await asyncio.gather(*list(self._sending), return_exceptions=True)
                if background:
                    drained = asyncio.create_task(self._outcomes.join())
                    await asyncio.wait([drained, background[0]],
                                       return_when=asyncio.FIRST_COMPLETED)
                    drained.cancel()
            finally:
                for task in background:
                    task.cancel()
                await asyncio.gather(*background, return_exceptions=True)
                for sink in self.sinks:
                    with contextlib.suppress(Exception):
                        await sink.close()
                for work in self._conns.values():
                    if work.conn is not None:
                        await work.conn.close()
                self.listening.clear()
        if self._fatal is not None:
            raise self._fatal
        log.info("relay %s: stopped (delivered %s, retried %s, dead %s)", self.owner,
                 self.stats.delivered, self.stats.retried, self.stats.dead)
        return self.stats

    def run(self, once: bool = False) -> RelayStats:
        """Deliver until stop() (or, with ``once``, one pass over what is due
        now: each due delivery is attempted once, retries wait for the next
        run). Blocks the calling thread; runs its own event loop."""
        self.stats = RelayStats()
        try:
            return asyncio.run(self._main(once))
        finally:
            self._loop = None
            # Ready to run again; a stop() before run() still stops that run.
            self._stop_requested.clear()
