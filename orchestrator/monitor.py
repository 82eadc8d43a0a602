"""The consistency monitor from Python: one check, a loop that survives
database restarts, the daily report and retention. The logic is in SQL
(sql/functions/monitor.sql, report.sql, retention.sql)."""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import psycopg

from orchestrator import db

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleResult:
    rule: str
    severity: str
    found: int
    corrected: int
    alerted: int

    @property
    def remaining(self) -> int:
        return max(self.found - self.corrected, 0)


@dataclass(frozen=True)
class CheckReport:
    rules: list[RuleResult]
    run_id: int
    duration_ms: float
    waited_ms: float

    @property
    def critical_remaining(self) -> int:
        return sum(r.remaining for r in self.rules if r.severity == "critical")

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "duration_ms": self.duration_ms,
                "waited_ms": self.waited_ms, "critical_remaining": self.critical_remaining,
                "rules": [vars(r) for r in self.rules]}


def run_check(conn: psycopg.Connection, window: timedelta | None = None) -> CheckReport:
    """Run every rule once, commit, and return what was found and done."""
    with conn.transaction():
        rows = conn.execute(db.query("run_check"), {"window": window}).fetchall()
        run_id, _, duration_ms, waited_ms = conn.execute(db.query("last_check_run")).fetchone()
    return CheckReport([RuleResult(*row) for row in rows], run_id, float(duration_ms or 0),
                       float(waited_ms or 0))


def daily_report(conn: psycopg.Connection, day: date | None = None) -> dict[str, Any]:
    row = conn.execute(db.query("daily_report"), {"day": day or date.today()}).fetchone()
    conn.commit()
    return row[0]


def archive_alerts(conn: psycopg.Connection, older_than: timedelta | None = None,
                   batch: int = 10_000, dry_run: bool = False) -> int:
    """Move old alerts to the archive, one committed transaction per batch, so
    no lock is held for long. With ``dry_run``, count what would move."""
    if dry_run:
        count = conn.execute(db.query("archivable_alerts"),
                             {"older_than": older_than}).fetchone()[0]
        conn.rollback()
        return int(count)
    total = 0
    while True:
        with conn.transaction():
            moved = conn.execute(db.query("archive_alerts"),
                                 {"older_than": older_than, "batch": batch}).fetchone()[0]
        total += moved
        if moved < batch:
            return total


def check_loop(dsn: str, every: timedelta, stop: threading.Event,
               window: timedelta | None = None,
               on_result: Callable[[CheckReport], None] | None = None,
               max_backoff: float = 30.0) -> int:
    """Run the check every ``every`` until ``stop`` is set. A lost database
    (restart, failover) is reconnected with exponential backoff and jitter;
    the loop never dies of it. Returns the number of completed runs."""
    runs, failures = 0, 0
    conn: psycopg.Connection | None = None
    while not stop.is_set():
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(dsn, application_name="consistency check --every")
            report = run_check(conn, window)
            runs, failures = runs + 1, 0
            if on_result is not None:
                on_result(report)
            wait = every.total_seconds()
        except psycopg.OperationalError as exc:
            failures += 1
            if conn is not None:
                conn.close()
            conn = None
            wait = min(max_backoff, 0.5 * 2 ** (failures - 1)) * (1 + random.random() / 10)
            log.warning("database unavailable (%s); retrying in %.1fs", db.describe_error(exc),
                        wait)
        stop.wait(wait)
    if conn is not None:
        conn.close()
    return runs
