"""``consistency bench serve``: the cost of one Prometheus scrape at 1M calls
and 1M alerts (a year of a busy deployment: one sink's delivery history,
1,000 circuits with 20,000 transitions, review items, a month of check runs,
alerts older than 30 days archived).

The counters and the index of the scrape's consistency rate cost the
writers something: the second part times raising a set of 20 alerts (what
one DELETE of 100 appointments raises) with and without them, on two clones
of one database, interleaved.

Variants of the scrape, interleaved sample by sample: ``consistency.metrics()`` (the scrape
query, as consistency_monitor) with the counter deltas folded and with 10,000
unfolded deltas (folds skipped for a long while); the scrape query from a role
that is not the guard's owner, as serve's login is in production, whose session
checks what each query reads and calls first (orchestrator.owner_code); what counting the alerts
and the deliveries would cost instead of the counters; ``consistency.status()``
(the dashboard's query); and a whole HTTP scrape of /metrics through serve.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import psycopg

from orchestrator import db, owner_code
from orchestrator.bench import Stats, render, scratch_database, server_info
from orchestrator.bench.dataset import load_dataset

TARGET_MS = 50.0
UNFOLDED = 10_000
WITHOUT_COUNTERS = "without the alert counter's delta row and alerts_call_issue_idx"

__all__ = ["TARGET_MS", "print_report", "run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _load(conn: Any, calls: int, alerts: int, progress: Callable[[str], None]) -> None:
    progress(f"loading {calls} calls and appointments")
    load_dataset(conn, calls=calls, spread_seconds=5.0)
    progress(f"loading {alerts} alerts, deliveries, circuits, review items, check runs")
    with conn.transaction():
        db.all(conn, "bench_serve_sinks")
        db.execute(conn, "bench_serve_forget_stdout_sink")
        db.execute(conn, "bench_serve_alerts", alerts=alerts, calls=calls)
        db.all(conn, "bench_serve_sinks")
        db.execute(conn, "bench_serve_deliveries_done")
        db.execute(conn, "bench_serve_circuits", circuits=1000)
        db.execute(conn, "bench_serve_circuit_events", circuits=1000)
        db.execute(conn, "bench_serve_review", reviews=20_000)
        db.execute(conn, "bench_serve_check_runs", runs=8640)
    progress("archiving alerts older than 30 days")
    with conn.transaction():
        db.execute(conn, "bench_serve_archive")
    db.execute(conn, "bench_serve_vacuum")


def write_cost(admin_dsn: str, repeat: int) -> list[dict[str, Any]]:
    """Raising 20 alerts at once, with and without the metric counters."""
    variants = {"guard": [], WITHOUT_COUNTERS: ["bench_serve_without_counters"]}
    samples: dict[str, list[float]] = {name: [] for name in variants}
    with scratch_database(admin_dsn, "cg_bench_serve_w") as a, \
            scratch_database(admin_dsn, "cg_bench_serve_w") as b:
        conns = {}
        for (name, setup), dsn in zip(variants.items(), (a, b), strict=True):
            conns[name] = db.connect(dsn, autocommit=True)
            for statement in setup:
                db.execute(conns[name], statement)
        try:
            for i in range(repeat + 20):
                for name, conn in conns.items():
                    with conn.transaction(force_rollback=True):
                        start = time.perf_counter()
                        db.execute(conn, "bench_serve_raise_set", first=i * 20)
                        if i >= 20:
                            samples[name].append((time.perf_counter() - start) * 1000.0)
        finally:
            for conn in conns.values():
                conn.close()
    base = Stats.of(samples[WITHOUT_COUNTERS]).median_ms
    return [{"variant": name, **Stats.of(s).as_dict(), "ratio": Stats.of(s).median_ms / base}
            for name, s in samples.items()]


def _watcher(dsn: str) -> psycopg.Connection | None:
    """A serve session of a role that is not the guard's owner (its named
    queries checked by orchestrator.owner_code), or None when the admin role
    cannot act as another role (not a superuser)."""
    conn = psycopg.connect(db.session_conninfo(dsn), autocommit=True)
    try:
        if not db.value(conn, "bench_serve_is_superuser"):
            conn.close()
            return None
        db.execute(conn, "bench_serve_watcher")
        db.execute(conn, "bench_serve_watcher_grant")
        db.execute(conn, "bench_serve_become_watcher")
        owner_code.enter(conn, become_owner=False)
        db.execute(conn, "serve_session")
    except BaseException:
        conn.close()
        raise
    return conn


def run(admin_dsn: str, calls: int = 1_000_000, alerts: int = 1_000_000, repeat: int = 30,
        progress: Callable[[str], None] | None = None,
        write_repeat: int = 1000) -> dict[str, Any]:
    from orchestrator import server

    say = progress or (lambda _: None)
    with scratch_database(admin_dsn, "cg_bench_serve") as dsn, \
            db.connect(dsn, autocommit=True) as conn:
        _load(conn, calls, alerts, say)
        counts = dict(zip(("calls", "alerts", "alerts_archived", "deliveries", "deltas"),
                          db.one(conn, "bench_serve_counts"), strict=True))
        info = server_info(conn)
        monitor = db.connect(dsn, autocommit=True)
        db.execute(monitor, "serve_session")
        owner = db.connect(dsn, autocommit=True)
        watcher = _watcher(dsn)
        options = server.ServeOptions(port=free_port(), rate_limit="1000000/minute")
        thread, database = server.start(dsn, options)
        http = httpx.Client(base_url=f"http://127.0.0.1:{options.port}", timeout=30)

        def timed(fn: Callable[[], Any]) -> float:
            start = time.perf_counter()
            fn()
            return (time.perf_counter() - start) * 1000.0

        def with_deltas() -> float:
            with owner.transaction(force_rollback=True):
                db.execute(owner, "bench_serve_unfolded_deltas", n=UNFOLDED)
                return timed(lambda: db.one(owner, "serve_metrics"))

        variants: dict[str, Callable[[], float]] = {
            "metrics() (the scrape query)":
                lambda: timed(lambda: db.one(monitor, "serve_metrics")),
            f"metrics() with {UNFOLDED:,} unfolded deltas": with_deltas,
            **({} if watcher is None else {
                "metrics() from a login not the owner (checked)":
                    lambda: timed(lambda: db.one(watcher, "serve_metrics"))}),
            "counting alerts + archive + deliveries instead":
                lambda: timed(lambda: db.one(owner, "bench_serve_naive")),
            "status() (dashboard, /api/status)":
                lambda: timed(lambda: db.one(monitor, "serve_status", hours=24)),
            "GET /metrics through serve":
                lambda: timed(lambda: http.get("/metrics").raise_for_status()),
        }
        samples: dict[str, list[float]] = {name: [] for name in variants}
        try:
            for i in range(repeat + 2):
                for name, fn in variants.items():
                    elapsed = fn()
                    if i >= 2:  # two warm-up rounds
                        samples[name].append(elapsed)
        finally:
            http.close()
            thread.stop()
            database.close()
            monitor.close()
            if watcher is not None:
                watcher.close()
                db.execute(owner, "bench_serve_drop_watcher")
            owner.close()
    stats = {name: Stats.of(s) for name, s in samples.items()}
    base = stats["metrics() (the scrape query)"].median_ms
    say("raising alerts with and without the metric counters")
    return {**info, **counts, "repeat": repeat, "target_ms": TARGET_MS,
            "meets_target": base < TARGET_MS,
            "variants": [{"variant": name, **s.as_dict(), "ratio": s.median_ms / base}
                         for name, s in stats.items()],
            "write_repeat": write_repeat,
            "write_cost": write_cost(admin_dsn, write_repeat)}


def print_report(report: dict[str, Any]) -> None:
    render(f"bench serve: {report['calls']:,} calls, {report['alerts']:,} alerts "
           f"(+{report['alerts_archived']:,} archived), {report['deliveries']:,} deliveries; "
           f"median of {report['repeat']} (ms)",
           ["variant", "median", "p95", "min", "x scrape query"],
           [[v["variant"], v["median_ms"], v["p95_ms"], v["min_ms"], f"{v['ratio']:.2f}x"]
            for v in report["variants"]])
    verdict = "met" if report["meets_target"] else "NOT met"
    print(f"target: scrape query < {report['target_ms']:.0f} ms: {verdict}")
    render(f"raising 20 alerts as one set, median of {report['write_repeat']} (ms)",
           ["variant", "median", "p95", "x without"],
           [[w["variant"], w["median_ms"], w["p95_ms"], f"{w['ratio']:.2f}x"]
            for w in report["write_cost"]])
