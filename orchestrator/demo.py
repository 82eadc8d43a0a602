"""`consistency demo`: a voice agent's day at high speed, with the guard on.

A throwaway PostgreSQL (``orchestrator/pgcluster.py``) or a database of its
own on the server of ``--dsn``; the guard installed; then, for ``minutes`` of
real time, each real second playing ``speed`` seconds of a day from 08:00:

- callers phone the agent; some bookings go through ``CircuitBreaker`` to a
  fake calendar API (a local HTTP server of this module) that has an outage
  in the middle of the run: the circuit opens, refuses bookings fast (each
  queued for review), lets probes through, and closes when the calendar is
  back;
- the calendar's webhook turns each booking into an appointment, which the
  agent validates; some never arrive (phantom bookings), some arrive without
  their call (orphans), some with another booking id (validation fails, the
  booking is rolled back);
- later callers cancel or move appointments; some calls come without a
  direction; the front desk imports a batch of appointments in one
  statement; a legacy feed writes calls with triggers off;
- beside them, what ``consistency up`` runs (``orchestrator/up.py``): the
  monitor's check loop, the relay (stdout and any ``--sink``), and with
  ``--serve`` the dashboard.

The guard's timers (max booking age, circuit cooldown and timeout, check
interval) are divided by ``speed``, with floors so that a loaded machine does
not time out healthy calls. At the end: a last check, the daily report, and
a summary whose every figure is read back from the database.
"""

from __future__ import annotations

import contextlib
import json
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib import error as urlerror
from urllib import request as urlrequest

import psycopg
from psycopg.conninfo import make_conninfo
from psycopg_pool import ConnectionPool
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator import breaker as breaker_mod
from orchestrator import config, db, migrate, monitor, output, pgcluster
from orchestrator.errors import GuardError

KEY = "appointment_booking:service:1"
DAY_START = 8 * 3600          # the played day starts at 08:00
CALLS_PER_HOUR = 90           # a busy practice's phone line, in simulated time
MAX_CALLS_PER_SECOND = 8.0    # real time: what 2 shared cores play comfortably
AGENT_LINES = 6               # calls handled at once
OUTAGE = (0.35, 0.55)         # the calendar's outage, as fractions of the run
LEGACY_AT, IMPORT_AT = 0.25, 0.70
ACTOR = "consistency demo"

log = logging.getLogger("consistency.demo")


@dataclass(frozen=True)
class DemoOptions:
    dsn: str | None = None
    minutes: float = 2.0
    speed: float = 300.0
    serve: bool = False
    keep: bool = False
    sinks: tuple[str, ...] = ()
    seed: int = 13


@dataclass(frozen=True)
class Timers:
    """The guard's timers for the run, in real seconds."""

    max_age: int
    cooldown: float
    timeout: float
    check_every: float

    @classmethod
    def for_run(cls, speed: float, seconds: float) -> Timers:
        outage = (OUTAGE[1] - OUTAGE[0]) * seconds
        return cls(max_age=max(3, round(300 / speed)),
                   # Short enough for probes within the outage, long enough
                   # for some bookings to be refused in between.
                   cooldown=min(max(1.0, 30 / speed), max(outage / 3, 0.2)),
                   timeout=max(0.5, min(10.0, 10 / speed)),
                   check_every=max(0.5, 300 / speed))

    def settings(self) -> dict[str, float | int]:
        return {"validation.max_appointment_age_seconds": self.max_age,
                "circuit_breaker.cooldown_seconds": round(self.cooldown, 3),
                "circuit_breaker.timeout_seconds": round(self.timeout, 3)}


@dataclass
class Clock:
    seconds: float
    speed: float
    started: float = field(default_factory=time.monotonic)
    started_wall: datetime = field(default_factory=lambda: datetime.now(UTC))

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fraction(self) -> float:
        return min(1.0, self.elapsed() / self.seconds)

    def label(self, real_offset: float | None = None) -> str:
        offset = self.elapsed() if real_offset is None else real_offset
        total = int(DAY_START + offset * self.speed) % 86400
        return f"{total // 3600:02d}:{total % 3600 // 60:02d}"

    def label_at(self, wall: datetime | None) -> str:
        if wall is None:
            return "-"
        return self.label((wall - self.started_wall).total_seconds())

    def outage(self) -> bool:
        return OUTAGE[0] <= self.elapsed() / self.seconds < OUTAGE[1]


# --- the fake calendar API ------------------------------------------------------------

class CalendarError(Exception):
    """The calendar answered with an error (a failure for the breaker)."""


class Calendar:
    """POST /bookings -> 201 {"booking_id": ...}; during the outage, 503 at
    once or no answer until well past the breaker's deadline."""

    def __init__(self, clock: Clock, timers: Timers, seed: int) -> None:
        self.clock = clock
        self.hang = timers.timeout * 1.5
        self.requests = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        calendar = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                status, body = calendar._answer()
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/bookings"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="demo-calendar", daemon=True)
        self._thread.start()

    def _answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.requests += 1
            draw = self._rng.random()
        if self.clock.outage():
            if draw < 0.6:
                return 503, {"error": "calendar unavailable"}
            self._stopping.wait(self.hang)
            return 504, {"error": "gateway timeout"}
        time.sleep(0.005 + draw * 0.02)
        return 201, {"booking_id": f"cal-{uuid.uuid4().hex[:12]}"}

    def book(self, slot: str) -> str:
        data = json.dumps({"slot": slot, "service_id": 1}).encode()
        req = urlrequest.Request(self.url, data=data, method="POST",
                                 headers={"content-type": "application/json"})
        try:
            with urlrequest.urlopen(req, timeout=self.hang + 1) as resp:
                return str(json.loads(resp.read())["booking_id"])
        except urlerror.HTTPError as exc:
            raise CalendarError(f"calendar answered {exc.code}") from None
        except (urlerror.URLError, OSError) as exc:
            raise CalendarError(f"calendar unreachable: {exc}") from None

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


# --- the voice agent ----------------------------------------------------------------

@dataclass
class Events:
    """What the script did, for the live view (the summary reads the database)."""

    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def last(self, n: int) -> list[str]:
        with self._lock:
            return self.lines[-n:]


class Agent:
    """Plays the calls: each one a short script of the agent's, the
    calendar's and later callers' writes, as the application would make them."""

    def __init__(self, dsn: str, calendar: Calendar, seed: int, as_app: bool) -> None:
        self.calendar = calendar
        self.seed = seed
        self.rng = random.Random(seed)
        self._rng_lock = threading.Lock()
        self.breaker = breaker_mod.CircuitBreaker(KEY, dsn=dsn)
        self.pool = ConnectionPool(db.session_conninfo(dsn), min_size=2, max_size=AGENT_LINES,
                                   kwargs={"autocommit": True, "application_name": "demo agent"},
                                   configure=self._configure if as_app else None, open=True)
        self._serial = 0
        self._bookings = 0

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        conn.execute(db.query("demo_act_as_app"))

    def close(self) -> None:
        self.pool.close()

    def _confirmed(self) -> int:
        with self._rng_lock:
            self._bookings += 1
            return self._bookings

    def _draw(self) -> tuple[float, int, int]:
        with self._rng_lock:
            self._serial += 1
            return self.rng.random(), self.rng.randrange(1, 400), self._serial

    def call(self) -> None:
        draw, customer, serial = self._draw()
        with self.pool.connection() as conn:
            if draw < 0.50:
                self._booking(conn, customer, serial, self.rng_sub(serial))
            elif draw < 0.60:
                self._cancel(conn, customer, serial)
            elif draw < 0.68:
                self._move(conn, customer, serial)
            else:
                self._information(conn, customer, serial, draw)

    def rng_sub(self, serial: int) -> random.Random:
        return random.Random(f"{self.seed}-{serial}")

    def _insert(self, conn: psycopg.Connection, customer: int, serial: int,
                outcome: str | None = None, made: bool = False) -> int:
        # One caller in seven comes from a telephony route that sends no
        # direction: G6 makes it inbound as the row is written.
        direction = None if serial % 7 == 3 else "inbound"
        return int(conn.execute(db.query("demo_call_insert"), {
            "external_call_id": f"demo-{serial}-{uuid.uuid4().hex[:6]}",
            "customer_id": customer, "direction": direction,
            "from_number": f"+49151{customer:07d}", "outcome": outcome,
            "appointment_made": made}).fetchone()[0])

    def _booking(self, conn: psycopg.Connection, customer: int, serial: int,
                 rng: random.Random) -> None:
        call_id = self._insert(conn, customer, serial)
        slot = (datetime.now(UTC) + timedelta(days=1 + rng.randrange(14))).isoformat()
        try:
            outcome = breaker_mod.book_or_queue(
                self.breaker, call_id, self.calendar.book, slot,
                review_context={"slot": slot, "customer_id": customer})
        except (CalendarError, breaker_mod.CallTimeoutError) as exc:
            conn.execute(db.query("demo_call_booking_failed"),
                         {"call_id": call_id, "reason": str(exc)[:200]})
            conn.execute(db.query("demo_review_enqueue"), {
                "call_id": call_id, "reason": "calendar_booking_failed",
                "context": json.dumps({"error": str(exc)[:200], "slot": slot})})
            return
        if not outcome.booked:
            conn.execute(db.query("demo_call_outcome"),
                         {"call_id": call_id, "outcome": "callback_requested"})
            return
        booking_id = str(outcome.result)
        conn.execute(db.query("demo_call_booked"), {"call_id": call_id, "booking_id": booking_id})
        # Of every 12 confirmed bookings, one never arrives (phantom), one
        # arrives without its call (orphan), one under another booking id.
        fate = self._confirmed() % 12
        if fate == 2:
            return  # phantom: the calendar's webhook never comes
        orphan = fate == 5
        webhook_id = f"{booking_id}-dup" if fate == 8 else booking_id
        conn.execute(db.query("demo_appointment_webhook"), {
            "call_id": None if orphan else call_id, "customer_id": customer,
            "starts_at": slot, "booking_id": webhook_id})
        if orphan:
            return  # nothing to validate the call against; the monitor links it
        ok, reason, _ = conn.execute(db.query("validate_booking"), {
            "call_id": call_id, "appointment_id": None,
            "external_booking_id": booking_id}).fetchone()
        if not ok:
            with conn.transaction():
                conn.execute(db.query("rollback_booking"),
                             {"call_id": call_id, "reason": reason, "actor": "voice agent"})

    def _existing(self, conn: psycopg.Connection, call_id: int, query: str) -> bool:
        with conn.transaction():
            row = conn.execute(db.query("demo_pick_appointment"),
                               {"offset": self.rng_sub(call_id).randrange(5)}).fetchone()
            if row is None:
                return False
            conn.execute(db.query(query), {"appointment_id": row[0], "call_id": call_id})
        return True

    def _cancel(self, conn: psycopg.Connection, customer: int, serial: int) -> None:
        call_id = self._insert(conn, customer, serial, outcome="appointment_cancelled")
        if not self._existing(conn, call_id, "demo_cancel_appointment"):
            conn.execute(db.query("demo_call_outcome"),
                         {"call_id": call_id, "outcome": "information_only"})

    def _move(self, conn: psycopg.Connection, customer: int, serial: int) -> None:
        call_id = self._insert(conn, customer, serial, outcome="appointment_rescheduled")
        if not self._existing(conn, call_id, "demo_move_appointment"):
            conn.execute(db.query("demo_call_outcome"),
                         {"call_id": call_id, "outcome": "information_only"})

    def _information(self, conn: psycopg.Connection, customer: int, serial: int,
                     draw: float) -> None:
        outcomes = ("information_only", "callback_requested", "voicemail", "transferred",
                    "abandoned", "spam")
        outcome = outcomes[int(draw * 1000) % len(outcomes)]
        # A bug of the agent's: "appointment made" on a call that booked
        # nothing. G2 corrects the flag as the row is written, and alerts.
        made = serial % 29 == 5
        self._insert(conn, customer, serial, outcome=outcome, made=made)


# --- scripted moments ---------------------------------------------------------------

def legacy_feed(dsn: str, events: Events, clock: Clock) -> None:
    """Calls from the legacy telephony system, written with triggers off."""
    with db.connect(dsn, application_name="demo legacy feed") as conn:
        if not conn.execute(db.query("demo_may_bypass_triggers")).fetchone()[0]:
            events.add(f"{clock.label()} legacy feed skipped: writing with triggers off needs "
                       "a superuser")
            conn.rollback()
            return
        with conn.transaction():
            conn.execute(db.query("demo_legacy_replica_role"))
            plain, booked, linked = conn.execute(db.query("demo_legacy_calls"), {
                "tag": uuid.uuid4().hex[:6], "plain": 6, "booked": 3, "linked": 4}).fetchone()
        conn.commit()
    events.add(f"{clock.label()} legacy feed, triggers off: {plain} calls without direction, "
               f"{booked} 'booked' with no booking, {linked} with appointments the calls "
               "do not show")


def batch_import(conn: psycopg.Connection, events: Events, clock: Clock) -> None:
    count = conn.execute(db.query("demo_batch_import"), {"limit": 40}).rowcount
    events.add(f"{clock.label()} front desk: {count} appointments imported in one statement "
               "for callers who asked to be called back")


# --- the run ------------------------------------------------------------------------

@dataclass
class Server:
    """Where the demo's database lives."""

    dsn: str
    description: str
    cluster: pgcluster.Cluster | None = None
    admin_dsn: str | None = None
    dbname: str = "consistency_demo"

    def connect_hint(self) -> list[str]:
        if self.cluster is not None:
            return self.cluster.server_commands(self.dbname)
        return [f"psql '{self.dsn}'", f"dropdb {self.dbname}  (when done)"]


@contextlib.contextmanager
def _server(options: DemoOptions, say: Callable[[str], None]) -> Iterator[Server]:
    """The demo's database: on ``--dsn``'s server (a database of its own), or
    on a throwaway cluster. Removed afterwards unless ``keep``, also on
    Ctrl-C (a second Ctrl-C during the clean-up is ignored)."""
    if options.dsn is not None:
        admin = db.resolve_dsn(options.dsn)
        db.connect(admin).close()  # unreachable: one line, exit 2, nothing started
        name = f"consistency_demo_{uuid.uuid4().hex[:8]}"
        with db.connect(admin, autocommit=True) as conn:
            try:
                conn.execute(db.compose("demo_create_database", database=name))
            except psycopg.Error as exc:
                raise GuardError(f"cannot create the demo's database on that server: "
                                 f"{db.describe_error(exc, admin)}") from exc
        server = Server(make_conninfo(admin, dbname=name), f"database {name} on the server of "
                        "--dsn", admin_dsn=admin, dbname=name)
    else:
        cluster = pgcluster.Cluster(fast=False, prefix="consistency-guard-demo-")
        server = Server(cluster.dsn("consistency_demo"), "", cluster)
        try:
            cluster.init()
            cluster.start()
            with db.connect(cluster.dsn(), autocommit=True) as conn:
                conn.execute(db.compose("demo_create_database", database=server.dbname))
        except BaseException:
            cluster.destroy()
            raise
        server.description = (f"a throwaway PostgreSQL from {cluster.binaries.describe()}, "
                              f"data in {cluster.base}")
    say(f"demo database: {server.description}")
    try:
        yield server
    finally:
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) \
            if threading.current_thread() is threading.main_thread() else None
        try:
            _remove(server, options.keep, say)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _remove(server: Server, keep: bool, say: Callable[[str], None]) -> None:
    breaker_mod.close_pools()
    if keep:
        say("kept: " + " · ".join(server.connect_hint()))
        return
    if server.cluster is not None:
        server.cluster.destroy()
        say(f"removed the throwaway cluster ({server.cluster.base})")
    elif server.admin_dsn is not None:
        with db.connect(server.admin_dsn, autocommit=True) as conn:
            conn.execute(db.compose("demo_drop_database", database=server.dbname))
        say(f"dropped database {server.dbname}")


class LiveView:
    """The live view: a panel redrawn from one query a refresh (a terminal),
    or a line on stderr every few seconds (anything else)."""

    def __init__(self, dsn: str, clock: Clock, events: Events) -> None:
        self.clock, self.events = clock, events
        self.conn = db.connect(dsn, autocommit=True, application_name="demo live view")
        self._last: tuple[float, int] | None = None
        self.rate = 0.0

    def close(self) -> None:
        self.conn.close()

    def read(self) -> tuple[Any, ...]:
        row = self.conn.execute(db.query("demo_live"), {"key": KEY}).fetchone()
        now, calls = time.monotonic(), row[0]
        if self._last is not None and now > self._last[0]:
            self.rate = (calls - self._last[1]) / (now - self._last[0])
        self._last = (now, calls)
        return row

    def render(self) -> Group:
        (calls, circuit, opens, critical, warning, info, corrected, runs, pending,
         delivered) = self.read()
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="bold")
        grid.add_column()
        colour = {"closed": "green", "half_open": "yellow"}.get(circuit, "red")
        calendar = Text("outage", "red") if self.clock.outage() else Text("up", "green")
        grid.add_row("simulated time", f"{self.clock.label()}  ({self.clock.fraction():.0%})")
        grid.add_row("calls", f"{calls}  ({self.rate:.1f}/s)")
        grid.add_row("calendar API", calendar)
        grid.add_row("circuit", Text.assemble((circuit, colour), f"  (opened {opens}x)"))
        grid.add_row("alerts", Text.assemble((f"{critical} critical", "red"), " · ",
                                             (f"{warning} warning", "yellow"), " · ",
                                             f"{info} info"))
        grid.add_row("monitor", f"{runs} runs, {corrected} corrected")
        grid.add_row("review backlog", f"{pending} pending")
        grid.add_row("relayed", f"{delivered} deliveries")
        return Group(grid, *(Text(line, style="dim") for line in self.events.last(4)))

    def line(self) -> str:
        (calls, circuit, opens, critical, warning, info, corrected, runs, pending,
         delivered) = self.read()
        return (f"{self.clock.label()} calls {calls} ({self.rate:.1f}/s) · calendar "
                f"{'outage' if self.clock.outage() else 'up'} · circuit {circuit} "
                f"(opened {opens}x) · alerts {critical}/{warning}/{info} · corrected "
                f"{corrected} in {runs} runs · review {pending} · relayed {delivered}")


@dataclass
class DemoResult:
    summary: dict[str, Any]
    report: dict[str, Any]
    clock: Clock
    served_at: str | None = None

    @property
    def ok(self) -> bool:
        return self.summary["violations"] == 0


def _play(dsn: str, options: DemoOptions, clock: Clock, timers: Timers,
          say: Callable[[str], None]) -> str | None:
    """The day itself, with the services running; returns the dashboard's URL."""
    from orchestrator import up as up_mod
    from orchestrator.server import ServeOptions

    events = Events()
    serve = ServeOptions(port=pgcluster.free_port(), refresh_seconds=2) if options.serve else None
    services = up_mod.Up(dsn, up_mod.UpOptions(
        every=timedelta(seconds=timers.check_every), sinks=["stdout://", *options.sinks],
        serve=serve, max_backoff=2.0))
    calendar = Calendar(clock, timers, options.seed)
    with db.connect(dsn) as conn:
        as_app = bool(conn.execute(db.query("demo_may_act_as_app")).fetchone()[0])
    agent = Agent(dsn, calendar, options.seed, as_app)
    live = LiveView(dsn, clock, events)
    stop = threading.Event()
    pool = ThreadPoolExecutor(AGENT_LINES, thread_name_prefix="demo-line")
    url = None
    try:
        services.start()
        if services.server is not None:
            url = f"http://{services.server.address}/"
            say(f"dashboard: {url}")
        rate = min(MAX_CALLS_PER_SECOND, CALLS_PER_HOUR * options.speed / 3600)
        moments = [(OUTAGE[0], lambda: events.add(f"{clock.label()} calendar API outage "
                                                  "begins")),
                   (OUTAGE[1], lambda: events.add(f"{clock.label()} calendar API is back")),
                   (LEGACY_AT, lambda: pool.submit(legacy_feed, dsn, events, clock)),
                   (IMPORT_AT, lambda: _with_conn(agent, lambda c: batch_import(c, events,
                                                                                 clock)))]
        dispatcher = threading.Thread(target=_dispatch, name="demo-dispatch", daemon=True,
                                      args=(clock, rate, random.Random(options.seed + 1), pool,
                                            agent, moments, stop))
        dispatcher.start()
        _watch(live, clock, stop)
        dispatcher.join()
        pool.shutdown(wait=True)
        say(f"{clock.label()} the day is over: last check, relaying what is left")
        _settle(dsn, timers)
        return url
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        services.stop()
        agent.close()
        calendar.close()
        live.close()


def _with_conn(agent: Agent, fn: Callable[[psycopg.Connection], None]) -> None:
    with agent.pool.connection() as conn:
        fn(conn)


def _dispatch(clock: Clock, rate: float, rng: random.Random, pool: ThreadPoolExecutor,
              agent: Agent, moments: list[tuple[float, Callable[[], Any]]],
              stop: threading.Event) -> None:
    """Start calls as a Poisson process of ``rate`` a real second, and each
    scripted moment at its time, until the run's time is up."""
    pending = sorted(moments, key=lambda m: m[0])
    next_call = 0.0
    while not stop.is_set() and clock.elapsed() < clock.seconds:
        now = clock.elapsed()
        while pending and now >= pending[0][0] * clock.seconds:
            pending.pop(0)[1]()
        if now >= next_call:
            try:
                pool.submit(_logged, agent.call)
            except RuntimeError:  # the run was stopped
                return
            next_call = now + rng.expovariate(rate)
        stop.wait(max(0.0, min(next_call - clock.elapsed(), 0.05)))
    for _, moment in pending:  # a very short run still plays every moment
        moment()


def _logged(fn: Callable[[], None]) -> None:
    try:
        fn()
    except Exception:  # one call's failure is a finding, not the end of the day
        log.exception("a call of the demo failed")


def _watch(live: LiveView, clock: Clock, stop: threading.Event) -> None:
    if output.stdout_is_terminal():
        with Live(live.render(), console=output.out, refresh_per_second=4,
                  transient=False) as view:
            while not stop.wait(0.5) and clock.elapsed() < clock.seconds:
                view.update(live.render())
            view.update(live.render())
        return
    next_line, shown = 0.0, 0
    while not stop.wait(0.25) and clock.elapsed() < clock.seconds:
        lines = live.events.last(100)
        for line in lines[shown:]:
            output.say(line, to_stderr=True)
        shown = len(lines)
        if clock.elapsed() >= next_line:
            output.say(live.line(), to_stderr=True)
            next_line = clock.elapsed() + 5.0
    output.say(live.line(), to_stderr=True)


def _settle(dsn: str, timers: Timers) -> None:
    """After the last call: wait until bookings still in flight are overdue,
    run the check until it corrects nothing more, then give the relay time
    to deliver what is left."""
    with db.connect(dsn, autocommit=True, application_name="demo final check") as conn:
        if conn.execute(db.query("demo_pending_bookings")).fetchone()[0]:
            time.sleep(timers.max_age + 0.5)
        for _ in range(3):
            report = monitor.run_check(conn)
            if not sum(r.corrected for r in report.rules):
                break
        deadline = time.monotonic() + 15
        while (conn.execute(db.query("demo_undelivered")).fetchone()[0]
               and time.monotonic() < deadline):
            time.sleep(0.2)


def run(options: DemoOptions, say: Callable[[str], None]) -> DemoResult:
    """Set up, play the day, read back what happened; clean up whatever
    happens (unless ``options.keep``)."""
    from orchestrator import relay

    relay.parse_sinks(["stdout://", *options.sinks])  # a bad --sink: one line, nothing started
    seconds = options.minutes * 60
    timers = Timers.for_run(options.speed, seconds)
    with _server(options, say) as server:
        applied = migrate.migrate(server.dsn, env={})
        say(f"guard installed: {len(applied.migrations_applied)} migrations, "
            f"{len(applied.definitions_applied)} definitions")
        with db.connect(server.dsn, autocommit=True) as conn:
            for key, value in timers.settings().items():
                config.set_setting(conn, key, value, ACTOR)
        hours = seconds * options.speed / 3600
        say(f"playing {hours:.1f} hours of a day from 08:00 in {options.minutes:g} min "
            f"({options.speed:g}x): max booking age {timers.max_age} s, circuit cooldown "
            f"{timers.cooldown:g} s, call deadline {timers.timeout:g} s, check every "
            f"{timers.check_every:g} s (real time)")
        clock = Clock(seconds, options.speed)
        url = _play(server.dsn, options, clock, timers, say)
        with db.connect(server.dsn, autocommit=True) as conn:
            summary = conn.execute(db.query("demo_summary"), {"key": KEY}).fetchone()[0]
            day = conn.execute("SELECT current_date").fetchone()[0]
            report = monitor.daily_report(conn, day)
        return DemoResult(summary, report, clock, url)


# --- what just happened ---------------------------------------------------------------

def summary_rows(result: DemoResult) -> list[tuple[str, Any]]:
    s = result.summary
    rules = s["rules"]
    alerts = s["alerts_by_type"]
    review = s["review_by_reason"]
    severity = s["alerts_by_severity"]
    rollbacks = s["rollbacks_by_actor"]

    def corrected(rule: str) -> int:
        return int(rules.get(rule, {}).get("corrected") or 0)

    rows: list[tuple[str, Any]] = [
        ("calls", s["calls"]),
        ("calls from the legacy feed (triggers off)", s["calls_legacy"]),
        ("bookings confirmed by the calendar", s["appointments_voice_agent"]),
        ("bookings refused by the open circuit, queued for review", review.get("circuit_open", 0)),
        ("calendar failures, queued for review", review.get("calendar_booking_failed", 0)),
        ("circuit opened", s["circuit_opened"]),
        ("circuit probes (half-open)", s["circuit_half_open"]),
        ("circuit closed", s["circuit_closed"]),
        ("bookings that failed validation, rolled back", rollbacks.get("voice agent", 0)),
        ("phantom bookings rolled back by the monitor", rollbacks.get("consistency monitor", 0)),
        ("orphan appointments linked by the monitor", corrected("orphaned_appointment")),
        ("directions set by the monitor", corrected("missing_direction")),
        ("link fields recomputed by the monitor", corrected("inconsistent_link_status")),
        ("'booked' without a booking, alerted for a person",
         alerts.get("session_outcome_mismatch", 0)),
        ("flags corrected as written (G2)", alerts.get("appointment_made_mismatch", 0)),
        ("outcomes corrected as written (G5)", alerts.get("session_outcome_corrected", 0)),
        ("calls that lost their last appointment (G3)", alerts.get("appointment_unlinked", 0)),
        ("appointments cancelled", s["appointments_cancelled"]),
        ("appointments moved to the call that rescheduled", s["appointments_moved"]),
        ("appointments imported in one statement", s["appointments_imported"]),
        ("alerts critical", severity.get("critical", 0)),
        ("alerts warning", severity.get("warning", 0)),
        ("alerts info", severity.get("info", 0)),
        *((f"alerts delivered to {sink}", n) for sink, n in sorted(s["delivered"].items())),
        ("review items pending", s["review_pending"]),
        ("check runs", s["check_runs"]),
        ("violations()", s["violations"]),
    ]
    return rows


def narrative(result: DemoResult) -> list[str]:
    s, clock = result.summary, result.clock
    end = clock.label(clock.seconds)
    lines = [f"08:00-{end} (simulated, {clock.speed:g}x): {s['calls']} calls, "
             f"{s['appointments_active']} appointments active, {s['calls_linked']} calls linked."]
    if s["circuit_opened"]:
        first_open = _parse(s["circuit_first_open_at"])
        last_close = _parse(s["circuit_last_closed_at"])
        refused = s["review_by_reason"].get("circuit_open", 0)
        closed = (f"closed at {clock.label_at(last_close)} once the calendar answered again"
                  if s["circuit_closed"] else f"is still {s['circuit_state']}")
        lines.append(
            f"The calendar went down at {clock.label(OUTAGE[0] * clock.seconds)}: the circuit "
            f"opened at {clock.label_at(first_open)}, refused {refused} bookings without "
            f"calling the calendar (each queued for review), let {s['circuit_half_open']} "
            f"probes through, and {closed}.")
    lines.append("Every figure below is read back from the database; violations() counts "
                 "the calls that break G1/G2 now.")
    return lines


def _parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None
