"""`consistency serve`: Prometheus metrics, /healthz, /api/status and the
dashboard, on Starlette + uvicorn.

Every database read is one call of a read-only SQL function
(``consistency.metrics()`` per scrape, ``consistency.status()`` for the API
and the dashboard; sql/functions/metrics.sql) on a connection that has
dropped to ``consistency_monitor`` in read-only mode, so serve works against
a hot standby and can write nothing even when started with an owner's DSN.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import ipaddress
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from limits import parse as parse_rate
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter
from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from psycopg_pool import ConnectionPool, PoolTimeout
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from orchestrator import db, owner_code
from orchestrator.errors import GuardError

log = logging.getLogger("consistency.serve")

# How long /healthz reuses its last look at the database.
HEALTH_PROBE_SECONDS = 1.0

CIRCUIT_STATES = ("closed", "open", "half_open", "forced_open", "disabled")
WINDOW_GAUGES = {
    "calls": "Calls created in the trailing window",
    "booking_attempts": "Calls of the window that tried to book (booking outcome, "
                        "creation_failed or booking_failed)",
    "booking_failures": "Calls of the window whose booking failed (booking_failed)",
    "inconsistent_calls": "Calls of the window with a critical or warning alert",
    "validation_failures": "appointment_rollback alerts raised in the window",
}
RELAY_STATUSES = ("pending", "retrying", "in_flight", "dead")


# --- database --------------------------------------------------------------------

class Database:
    """A small pool of monitor connections. The pool reconnects by itself, so
    a database that goes away and comes back needs no restart of serve.

    reconnect_timeout bounds psycopg_pool's backoff, which doubles without a
    cap: after 10 s of failures the attempt ends, and the next request starts
    a fresh one, so serve is back within a request of the database."""

    def __init__(self, dsn: str, *, timeout: float = 2.0) -> None:
        self.timeout = timeout
        self.pool = ConnectionPool(
            db.session_conninfo(dsn), min_size=1, max_size=4, open=False,
            name="consistency-serve",
            kwargs={"autocommit": True, "application_name": "consistency serve",
                    "connect_timeout": 3},
            configure=self._configure, check=ConnectionPool.check_connection,
            timeout=timeout, reconnect_timeout=10.0)

    @staticmethod
    def _configure(conn: psycopg.Connection) -> None:
        # Not the guard's owner: what it calls is checked (orchestrator.owner_code).
        owner_code.enter(conn, become_owner=False)
        db.execute(conn, "serve_session")

    def open(self) -> None:
        self.pool.open(wait=False)

    def close(self) -> None:
        self.pool.close(timeout=5)

    def fetch(self, name: str, params: dict[str, Any] | None = None) -> Any:
        """First column of the first row of a named query."""
        with self.pool.connection(timeout=self.timeout) as conn:
            return db.run(conn, name, params).fetchone()[0]

    def verify(self, dsn: str) -> None:
        """Fail fast with one line when the role cannot become consistency_monitor
        (or the database is not migrated), rather than serving 500s."""
        with db.connect(dsn, autocommit=True, application_name="consistency serve",
                        owner_code=owner_code.CHECK) as conn:
            try:
                db.execute(conn, "serve_session")
                db.execute(conn, "serve_metrics")
            except GuardError as exc:
                if isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
                    raise GuardError(f"serve connects as consistency_monitor: {exc} "
                                     "(GRANT consistency_monitor TO <login role>)") from exc
                raise


# --- /metrics ------------------------------------------------------------------------

def _gauge(name: str, doc: str, labels: list[str] | None = None) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


class GuardCollector(Collector):
    """One ``consistency.metrics()`` per scrape, turned into metric families.
    When the database does not answer, only ``consistency_database_up 0`` and
    the scrape's own figures are exported (Prometheus keeps the last values
    out of alerts rather than seeing every counter drop to nothing)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.errors = 0
        self._lock = threading.Lock()

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        start = time.perf_counter()
        data: dict[str, Any] | None = None
        try:
            data = self.database.fetch("serve_metrics")
        except (psycopg.Error, PoolTimeout) as exc:
            with self._lock:
                self.errors += 1
            log.warning("scrape failed: %s", db.describe_error(exc))
        up = _gauge("consistency_database_up", "1 when the last scrape query succeeded")
        up.add_metric([], 1 if data is not None else 0)
        yield up
        if data is not None:
            yield from metric_families(data)
        took = _gauge("consistency_scrape_duration_seconds",
                      "Time this scrape spent reading the database")
        took.add_metric([], time.perf_counter() - start)
        yield took
        errors = CounterMetricFamily("consistency_scrape_errors",
                                     "Scrapes whose database query failed")
        errors.add_metric([], self.errors)
        yield errors


def metric_families(d: dict[str, Any]) -> Iterator[Metric]:
    """The document of consistency.metrics() as Prometheus metric families."""
    alerts = CounterMetricFamily("consistency_alerts", "Alerts raised, archived ones included",
                                 labels=["type", "severity"])
    for a in d["alerts_total"]:
        alerts.add_metric([a["type"], a["severity"]], a["value"])
    yield alerts

    corrections = CounterMetricFamily("consistency_corrections",
                                      "Corrections made by the consistency check, by rule",
                                      labels=["rule"])
    for c in d["corrections_total"]:
        corrections.add_metric([c["rule"]], c["value"])
    yield corrections

    runs = CounterMetricFamily("consistency_check_runs", "Consistency checks run")
    runs.add_metric([], d["check_runs_total"])
    yield runs

    transitions = CounterMetricFamily(
        "consistency_circuit_transitions",
        "Circuit breaker transitions by circuit family and target state", labels=["key", "to"])
    for t in d["circuit_transitions_total"]:
        transitions.add_metric([t["key"], t["to"]], t["value"])
    yield transitions

    state = _gauge("consistency_circuit_state",
                   "Circuits of the family in each state (1 for the current state of a "
                   "single circuit)", ["key", "state"])
    open_for = _gauge("consistency_circuit_open_seconds",
                      "Longest time a circuit of the family has been open, half-open or "
                      "forced open (0 when none is)", ["key"])
    for c in d["circuits"]:
        for s in CIRCUIT_STATES:
            state.add_metric([c["key"], s], c["states"].get(s, 0))
        open_for.add_metric([c["key"]], c["open_seconds"])
    yield state
    yield open_for

    review = _gauge("consistency_review_items", "Open manual review items by status",
                    ["status"])
    for status in ("pending", "in_progress"):
        review.add_metric([status], d["review"][status])
    yield review
    oldest = _gauge("consistency_review_oldest_pending_seconds",
                    "Age of the oldest pending review item (0 when none)")
    oldest.add_metric([], d["review"]["oldest_pending_seconds"])
    yield oldest

    rate = _gauge("consistency_rate_ratio",
                  "Share of the calls of the last 24 h without a critical or warning alert "
                  "(1 when there were no calls)")
    rate.add_metric([], float(d["day"]["consistency_ratio"]))
    yield rate

    for key, doc in WINDOW_GAUGES.items():
        g = _gauge(f"consistency_window_{key}", doc, ["window"])
        for w in d["windows"]:
            g.add_metric([w["window"]], w[key])
        yield g

    last = d.get("last_check")
    duration = _gauge("consistency_check_duration_seconds", "Duration of the last check run")
    stamp = _gauge("consistency_check_last_run_timestamp_seconds",
                   "When the last check run finished (Unix time)")
    if last is not None:
        duration.add_metric([], last["duration_seconds"])
        stamp.add_metric([], last["finished_at"])
    yield duration
    yield stamp

    deliveries = _gauge("consistency_relay_deliveries",
                        "Deliveries owed or dead, by sink and status "
                        "(retrying: pending after a failed attempt)", ["sink", "status"])
    relay_oldest = _gauge("consistency_relay_oldest_pending_seconds",
                          "Age of the oldest delivery a sink is still owed (0 when none)",
                          ["sink"])
    last_success = _gauge("consistency_relay_last_success_timestamp_seconds",
                          "When the sink last accepted a delivery (Unix time)", ["sink"])
    for s in d["relay"]:
        for status in RELAY_STATUSES:
            deliveries.add_metric([s["sink"], status], s[status])
        relay_oldest.add_metric([s["sink"]], s["oldest_pending_seconds"])
        if s["last_success_at"] is not None:
            last_success.add_metric([s["sink"]], s["last_success_at"])
    yield deliveries
    yield relay_oldest
    yield last_success

    standby = _gauge("consistency_database_standby", "1 when serve reads a hot standby")
    standby.add_metric([], 1 if d["standby"] else 0)
    yield standby


def build_registry(database: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(GuardCollector(database))
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


# --- security ----------------------------------------------------------------------

def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def presented_token(header: str) -> str | None:
    """The token of ``Bearer T``, or the password of ``Basic`` (what a browser
    sends after its login prompt; the user name is ignored)."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() == "bearer":
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2]
    return None


@dataclass
class Guard:
    """Rate limit per client, then the token, for every path but the open ones."""

    token: str | None
    rate: str = "120/minute"
    open_paths: frozenset[str] = frozenset({"/healthz"})
    clock: Callable[[], float] = time.time
    _limiter: MovingWindowRateLimiter = field(init=False)

    def __post_init__(self) -> None:
        try:
            self.item = parse_rate(self.rate)
        except ValueError as exc:
            raise GuardError(f"invalid rate limit {self.rate!r}: use e.g. 120/minute") from exc
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    def check(self, path: str, client: str, authorization: str | None) -> Response | None:
        if path in self.open_paths:
            return None
        if not self._limiter.hit(self.item, client):
            reset = self._limiter.get_window_stats(self.item, client).reset_time
            retry = max(1, math.ceil(reset - self.clock()))
            return PlainTextResponse("rate limit exceeded\n", status_code=429,
                                     headers={"Retry-After": str(retry)})
        if self.token is None:
            return None
        given = presented_token(authorization or "")
        if given is None or not hmac.compare_digest(given.encode(), self.token.encode()):
            return PlainTextResponse(
                "authentication required\n", status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="consistency-guard", '
                                             'Basic realm="consistency-guard"'})
        return None


class GuardMiddleware:
    def __init__(self, app: ASGIApp, guard: Guard) -> None:
        self.app = app
        self.guard = guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        client = request.client.host if request.client else "unknown"
        refused = self.guard.check(request.url.path, client,
                                   request.headers.get("authorization"))
        if refused is not None:
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)


# --- health -------------------------------------------------------------------------

class Health:
    """Named parts of the process (`up`: check loop, relay, server) and their
    state, reported by /healthz next to the database."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def set(self, part: str, state: str, **details: Any) -> None:
        with self._lock:
            entry = self._parts.setdefault(part, {"restarts": 0})
            entry.update(details, state=state, since=time.time())

    def restarted(self, part: str) -> None:
        with self._lock:
            self._parts.setdefault(part, {"restarts": 0})["restarts"] += 1

    def note(self, part: str, **details: Any) -> None:
        with self._lock:
            self._parts.setdefault(part, {"restarts": 0, "state": "running"}).update(details)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._parts.items()}


class DatabaseProbe:
    """/healthz's view of the database. /healthz is open (no token, no rate
    limit: load balancers and orchestrators must reach it), so its answer is
    cached for ``ttl`` seconds and one probe runs at a time, in one thread: a
    flood of /healthz costs the pool one query a second and one connection,
    never the four a scrape needs, nor the server's threads."""

    def __init__(self, database: Database, ttl: float = HEALTH_PROBE_SECONDS) -> None:
        self.database = database
        self.ttl = ttl
        self._lock = asyncio.Lock()
        self._result: dict[str, Any] = {}
        self._at: float | None = None

    def _fresh(self) -> bool:
        return self._at is not None and time.monotonic() - self._at < self.ttl

    def _probe(self) -> dict[str, Any]:
        try:
            return {"state": "ok", "standby": self.database.fetch("serve_ping")}
        except (psycopg.Error, PoolTimeout) as exc:
            return {"state": "unavailable", "error": db.describe_error(exc)}

    async def state(self) -> dict[str, Any]:
        """The database's state, at most ``ttl`` seconds old (``age_seconds``)."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():
                    self._result = await run_in_threadpool(self._probe)
                    self._at = time.monotonic()
        assert self._at is not None
        return {**self._result, "age_seconds": round(time.monotonic() - self._at, 3)}


# --- the application -------------------------------------------------------------------

def create_app(database: Database, guard: Guard, health: Health | None = None,
               refresh_seconds: int = 30) -> Starlette:
    from orchestrator import dashboard

    registry = build_registry(database)
    health = health or Health()
    probe = DatabaseProbe(database)

    def metrics(request: Request) -> Response:
        encoder, content_type = choose_encoder(request.headers.get("accept"))
        return Response(encoder(registry), media_type=content_type)

    async def healthz(request: Request) -> Response:
        body: dict[str, Any] = {"status": "ok", "database": await probe.state()}
        if body["database"]["state"] != "ok":
            body["status"] = "unavailable"
        parts = health.snapshot()
        if parts:
            body["parts"] = parts
            if body["status"] == "ok" and any(p.get("state") != "running"
                                              for p in parts.values()):
                body["status"] = "degraded"
        return JSONResponse(body, status_code=200 if body["status"] == "ok" else 503)

    def status(request: Request) -> Response:
        try:
            hours = int(request.query_params.get("hours", "24"))
        except ValueError:
            return JSONResponse({"error": "hours must be an integer"}, status_code=400)
        if not 1 <= hours <= 744:
            return JSONResponse({"error": "hours must be between 1 and 744"}, status_code=400)
        try:
            return JSONResponse(database.fetch("serve_status", {"hours": hours}))
        except (psycopg.Error, PoolTimeout) as exc:
            return JSONResponse({"error": f"database unavailable: {db.describe_error(exc)}"},
                                status_code=503)

    def page(request: Request) -> Response:
        fragment = request.query_params.get("fragment") == "panels"
        try:
            data = database.fetch("serve_status", {"hours": 24})
        except (psycopg.Error, PoolTimeout) as exc:
            html = dashboard.render_unavailable(db.describe_error(exc), refresh_seconds,
                                                fragment=fragment)
            return HTMLResponse(html, status_code=503)
        return HTMLResponse(dashboard.render(data, refresh_seconds, fragment=fragment))

    routes = [Route("/", page), Route("/metrics", metrics), Route("/healthz", healthz),
              Route("/api/status", status)]
    return Starlette(routes=routes, middleware=[Middleware(GuardMiddleware, guard=guard)])


# --- running ----------------------------------------------------------------------------

class ServerThread:
    """uvicorn in a thread: the caller's thread keeps the signal handlers, so
    one shutdown path (a stop event) serves `serve` and `up` alike."""

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        import uvicorn

        config = uvicorn.Config(app, host=host, port=port, log_level="warning",
                                access_log=False, lifespan="off", server_header=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="serve", daemon=True)
        self.address = f"{host}:{port}"

    def start(self, timeout: float = 15.0) -> None:
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise GuardError(f"cannot listen on {self.address} (address in use?)")
            time.sleep(0.02)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 9187
    token: str | None = None
    rate_limit: str = "120/minute"
    refresh_seconds: int = 30


def start(dsn: str, options: ServeOptions, health: Health | None = None
          ) -> tuple[ServerThread, Database]:
    """Check the database and the role, then listen. Warns (stderr, logging)
    when the address is reachable from elsewhere and no token is set."""
    database = Database(dsn)
    database.verify(dsn)
    guard = Guard(options.token or None, options.rate_limit)
    if not is_loopback(options.host) and not options.token:
        log.warning("serving on %s:%s WITHOUT A TOKEN: anyone who can reach this address "
                    "reads metrics, alerts and circuit keys; set --token or CONSISTENCY_TOKEN",
                    options.host, options.port)
    database.open()
    thread = ServerThread(create_app(database, guard, health, options.refresh_seconds),
                          options.host, options.port)
    try:
        thread.start()
    except BaseException:
        database.close()
        raise
    return thread, database
