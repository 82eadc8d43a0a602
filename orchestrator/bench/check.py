"""``consistency bench check``: run_check on the last-hour window and on the
whole table, at several dataset sizes, with ~1 % drift injected.

Every sample runs in a transaction that is rolled back, so each one finds
and corrects the same drift. Besides the totals, the whole-table runs are
broken down by rule (detection and actions, from the run's own per-rule
timings in consistency.check_runs.rules).

Then, on the largest size, what a whole-table check costs an application
writing at the same time: two clients insert appointments into random calls
one by one (each its own transaction) while a bulk fix's drift (1 linked call
in 40) is corrected, by run_check in one transaction, and by the batched run
of `consistency check`; and for as long without any check. Each gives the
writers' latency (median, p99, p99.9, max).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from orchestrator import db, monitor
from orchestrator.bench import Stats, render, sample, scratch_database, server_info
from orchestrator.bench.dataset import load_dataset

TARGETS_MS = {"window": 20.0, "whole table": 150.0}
WINDOWS = {"window": timedelta(hours=1), "whole table": timedelta(days=365 * 100)}
# Steps of a run, in run order: (label, rule, key in the rule's entry).
STEPS = (("missing_direction: detect + fix", "missing_direction", "ms"),
         ("orphaned_appointment: detect + link + alert", "orphaned_appointment", "ms"),
         ("link rules: one detection pass", "inconsistent_link_status", "detect_ms"),
         ("missing_appointment: rollbacks", "missing_appointment", "ms"),
         ("inconsistent_link_status: resync + alert", "inconsistent_link_status", "ms"),
         ("session_outcome_mismatch: detect + alert", "session_outcome_mismatch", "ms"),
         ("recent_failure: count", "recent_failure", "ms"))

__all__ = ["print_report", "run"]


def _one_run(conn: psycopg.Connection, window: timedelta, found: list[int],
             steps: list[dict[str, Any]]) -> None:
    with conn.transaction(force_rollback=True):
        total, _ = db.one(conn, "bench_check_run", window=window)
        found.append(int(total or 0))
        steps.append(db.value(conn, "bench_check_steps"))


def _breakdown(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for label, rule, key in STEPS:
        values = [float(s[rule][key]) for s in steps if key in s.get(rule, {})]
        if values:
            rows.append({"step": label, "found": steps[-1][rule]["found"],
                         "path": steps[-1][rule].get("path", ""),
                         "median_ms": round(statistics.median(values), 3)})
    return rows


def _plan(conn: psycopg.Connection, since: datetime, now: datetime, bulk: bool) -> list[str]:
    with conn.transaction(force_rollback=True):
        db.execute(conn, "bench_check_plan_settings")
        return [r[0] for r in db.all(conn, "bench_check_plan", since=since, now=now, bulk=bulk)]


WRITERS = 2
# A writer's wait the monitor may cause at most (issue: ~100 ms).
WRITER_TARGET_MS = 100.0


class _Writers:
    """WRITERS threads inserting one appointment at a time, each in its own
    transaction, into random calls; every latency is recorded with the time
    it ended."""

    def __init__(self, dsn: str, calls: int) -> None:
        self.dsn, self.calls = dsn, calls
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(n,), daemon=True)
                        for n in range(WRITERS)]

    def _write(self, n: int) -> None:
        rnd = random.Random(n)
        with db.connect(self.dsn, autocommit=True, application_name="bench writer") as conn:
            i = 0
            while not self.stop.is_set():
                i += 1
                start = time.perf_counter()
                db.run(conn, "bench_check_writer_insert",
                       {"call": rnd.randint(1, self.calls), "tag": f"w{n}-{i}-{time.time_ns()}"},
                       prepare=True)
                end = time.perf_counter()
                with self.lock:
                    self.samples.append((end, (end - start) * 1000.0))

    def __enter__(self) -> _Writers:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join()

    def between(self, start: float, end: float) -> list[float]:
        with self.lock:
            return [ms for at, ms in self.samples if start <= at <= end]


def _latency(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples) or [0.0]

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

    return {"writes": len(samples), "median_ms": round(statistics.median(ordered), 3),
            "p99_ms": round(pct(0.99), 3), "p999_ms": round(pct(0.999), 3),
            "max_ms": round(ordered[-1], 3)}


def writer_scenario(dsn: str, conn: psycopg.Connection, calls: int) -> list[dict[str, Any]]:
    """Writers' latency with no check, while run_check corrects a bulk fix's
    drift in one transaction, and while the batched run does."""
    window = WINDOWS["whole table"]

    def one_transaction() -> dict[str, Any]:
        with conn.transaction():
            db.value(conn, "bench_check_run_one_transaction", window=window)
        return {}

    def batched() -> dict[str, Any]:
        report = monitor.run_check(conn, window)
        return {"slices_ms": monitor.SLICE_MS, "run_id": report.run_id}

    rows = []
    for name, check in (("run_check, one transaction", one_transaction),
                        ("consistency check, batched", batched)):
        with conn.transaction():
            db.execute(conn, "bench_check_bulk_fix")
        with _Writers(dsn, calls) as writers:
            time.sleep(1.0)
            start = time.perf_counter()
            extra = check()
            end = time.perf_counter()
            # A write that waited for the last commit ends just after it.
            time.sleep(0.5)
        rows.append({"variant": name, "check_ms": round((end - start) * 1000.0, 1), **extra,
                     **_latency(writers.between(start, end + 0.5))})
    seconds = max(r["check_ms"] for r in rows) / 1000.0 + 0.5
    with _Writers(dsn, calls) as writers:
        time.sleep(0.5)
        start = time.perf_counter()
        time.sleep(seconds)
        end = time.perf_counter()
    rows.insert(0, {"variant": "no check", "check_ms": 0.0,
                    **_latency(writers.between(start, end))})
    for row in rows:
        row["meets_target"] = row["max_ms"] <= WRITER_TARGET_MS
    return rows


def run(admin_dsn: str, sizes: tuple[int, ...] = (100_000, 1_000_000),
        repeat: int = 7, writers: bool = True) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    info: dict[str, str] = {}
    plans: dict[str, list[str]] = {}
    concurrent: list[dict[str, Any]] = []
    for calls in sizes:
        with scratch_database(admin_dsn, "cg_bench_check") as dsn, \
                db.connect(dsn, autocommit=True) as conn:
            load_dataset(conn, calls=calls, spread_seconds=5.0)
            with conn.transaction():
                db.execute(conn, "bench_check_drift")
            db.execute(conn, "bench_vacuum_analyze")
            info = server_info(conn)
            for name, window in WINDOWS.items():
                found: list[int] = []
                steps: list[dict[str, Any]] = []
                stats: Stats = sample(
                    lambda w=window, f=found, s=steps: _one_run(conn, w, f, s), repeat)
                rows.append({"calls": calls, "scope": name, "found": found[-1],
                             **stats.as_dict(), "target_ms": TARGETS_MS[name],
                             "meets_target": stats.median_ms < TARGETS_MS[name]})
                if name == "whole table":
                    breakdown += [{"calls": calls, **r} for r in _breakdown(steps)]
            now = datetime.now(UTC)
            plans = {"window": _plan(conn, now - WINDOWS["window"], now, False),
                     "whole table": _plan(conn, now - WINDOWS["whole table"], now, True)}
            if writers and calls == max(sizes):
                concurrent = [{"calls": calls, **r} for r in writer_scenario(dsn, conn, calls)]
    return {**info, "repeat": repeat, "results": rows, "whole_table_steps": breakdown,
            "window_plan": plans.get("window", []),
            "whole_table_plan": plans.get("whole table", []),
            "concurrent_writers": concurrent, "writer_target_ms": WRITER_TARGET_MS}


def print_report(report: dict[str, Any]) -> None:
    render("consistency bench check: run_check (ms, medians; ~1 % drift)",
           ["calls", "scope", "found", "median", "p95", "target", "met"],
           [[r["calls"], r["scope"], r["found"], r["median_ms"], r["p95_ms"], r["target_ms"],
             "yes" if r["meets_target"] else "NO"] for r in report["results"]])
    render("whole-table run by step (ms, medians of the same samples)",
           ["calls", "step", "found", "path", "median"],
           [[r["calls"], r["step"], r["found"], r["path"], r["median_ms"]]
            for r in report["whole_table_steps"]])
    if report["concurrent_writers"]:
        render(f"{WRITERS} clients inserting appointments during a whole-table check "
               "(a bulk fix left 1 linked call in 40 wrong; ms per write)",
               ["calls", "check", "check ms", "writes", "median", "p99", "p99.9", "max",
                f"max <= {report['writer_target_ms']:g}"],
               [[r["calls"], r["variant"], r["check_ms"], r["writes"], r["median_ms"],
                 r["p99_ms"], r["p999_ms"], r["max_ms"], "yes" if r["meets_target"] else "NO"]
                for r in report["concurrent_writers"]])
    for scope in ("window", "whole_table"):
        print(f"plan of the link rules over the {scope.replace('_', ' ')} (largest size):")
        print("\n".join("  " + line for line in report[f"{scope}_plan"]))
