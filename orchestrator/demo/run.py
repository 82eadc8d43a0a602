"""Setting up, playing the day with the services running, reading back what
happened, cleaning up."""

from __future__ import annotations

import contextlib
import logging
import random
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from orchestrator import breaker as breaker_mod
from orchestrator import config, db, migrate, monitor, output, pgcluster
from orchestrator.demo.agent import Agent, batch_import, legacy_feed
from orchestrator.demo.calendar import Calendar
from orchestrator.demo.script import (
    ACTOR,
    AGENT_LINES,
    CALLS_PER_HOUR,
    IMPORT_AT,
    KEY,
    LEGACY_AT,
    MAX_CALLS_PER_SECOND,
    OUTAGE,
    Clock,
    DemoOptions,
    Events,
    Timers,
)
from orchestrator.errors import GuardError

log = logging.getLogger("consistency.demo")


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
    Ctrl-C or SIGTERM (a second one during the clean-up is ignored)."""
    with pgcluster.sigterm_as_interrupt(), _server_of(options, say) as server:
        yield server


@contextlib.contextmanager
def _server_of(options: DemoOptions, say: Callable[[str], None]) -> Iterator[Server]:
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
        main = threading.current_thread() is threading.main_thread()
        previous = {sig: signal.signal(sig, signal.SIG_IGN)
                    for sig in (signal.SIGINT, signal.SIGTERM)} if main else {}
        try:
            _remove(server, options.keep, say)
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


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
