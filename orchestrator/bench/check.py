"""``consistency bench check``: run_check on the last-hour window and on the
whole table, at several dataset sizes, with ~1 % drift injected.

Every sample runs in a transaction that is rolled back, so each one finds
and corrects the same drift.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from orchestrator import db
from orchestrator.bench import Stats, dump_json, render, sample, scratch_database, server_info
from orchestrator.bench.dataset import load_dataset

TARGETS_MS = {"window": 20.0, "whole table": 150.0}
WINDOWS = {"window": timedelta(hours=1), "whole table": timedelta(days=365 * 100)}

__all__ = ["dump_json", "print_report", "run"]


def _one_run(conn: psycopg.Connection, window: timedelta, found: list[int]) -> None:
    with conn.transaction(force_rollback=True):
        total, _ = conn.execute(db.query("bench_check_run"), {"window": window}).fetchone()
        found.append(int(total or 0))


def run(admin_dsn: str, sizes: tuple[int, ...] = (100_000, 1_000_000),
        repeat: int = 7) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    info: dict[str, str] = {}
    for calls in sizes:
        with scratch_database(admin_dsn, "cg_bench_check") as dsn, \
                db.connect(dsn, autocommit=True) as conn:
            load_dataset(conn, calls=calls, spread_seconds=5.0)
            with conn.transaction():
                conn.execute(db.query("bench_check_drift"))
            conn.execute("VACUUM ANALYZE public.calls")
            conn.execute("VACUUM ANALYZE public.appointments")
            info = server_info(conn)
            for name, window in WINDOWS.items():
                found: list[int] = []
                stats: Stats = sample(lambda w=window, f=found: _one_run(conn, w, f), repeat)
                rows.append({"calls": calls, "scope": name, "found": found[-1],
                             **stats.as_dict(), "target_ms": TARGETS_MS[name],
                             "meets_target": stats.median_ms < TARGETS_MS[name]})
            now = datetime.now(UTC)
            plan = [r[0] for r in conn.execute(db.query("bench_check_plan"),
                                               {"since": now - WINDOWS["window"], "now": now})]
    return {**info, "repeat": repeat, "results": rows, "window_plan": plan}


def print_report(report: dict[str, Any]) -> None:
    render("consistency bench check: run_check (ms, medians; ~1 % drift)",
           ["calls", "scope", "found", "median", "p95", "target", "met"],
           [[r["calls"], r["scope"], r["found"], r["median_ms"], r["p95_ms"], r["target_ms"],
             "yes" if r["meets_target"] else "NO"] for r in report["results"]])
    print("plan of the link-status rule over the window:")
    print("\n".join("  " + line for line in report["window_plan"]))
