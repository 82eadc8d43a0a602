"""``consistency bench check``: run_check on the last-hour window and on the
whole table, at several dataset sizes, with ~1 % drift injected.

Every sample runs in a transaction that is rolled back, so each one finds
and corrects the same drift. Besides the totals, the whole-table runs are
broken down by rule (detection and actions, from the run's own per-rule
timings in consistency.check_runs.rules).
"""

from __future__ import annotations

import statistics
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from orchestrator import db
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


def run(admin_dsn: str, sizes: tuple[int, ...] = (100_000, 1_000_000),
        repeat: int = 7) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    breakdown: list[dict[str, Any]] = []
    info: dict[str, str] = {}
    plans: dict[str, list[str]] = {}
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
    return {**info, "repeat": repeat, "results": rows, "whole_table_steps": breakdown,
            "window_plan": plans.get("window", []),
            "whole_table_plan": plans.get("whole table", [])}


def print_report(report: dict[str, Any]) -> None:
    render("consistency bench check: run_check (ms, medians; ~1 % drift)",
           ["calls", "scope", "found", "median", "p95", "target", "met"],
           [[r["calls"], r["scope"], r["found"], r["median_ms"], r["p95_ms"], r["target_ms"],
             "yes" if r["meets_target"] else "NO"] for r in report["results"]])
    render("whole-table run by step (ms, medians of the same samples)",
           ["calls", "step", "found", "path", "median"],
           [[r["calls"], r["step"], r["found"], r["path"], r["median_ms"]]
            for r in report["whole_table_steps"]])
    for scope in ("window", "whole_table"):
        print(f"plan of the link rules over the {scope.replace('_', ' ')} (largest size):")
        print("\n".join("  " + line for line in report[f"{scope}_plan"]))
