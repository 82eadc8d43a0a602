"""The consistency monitor from Python: one check, a loop that survives
database restarts, the daily report and retention. The logic is in SQL
(sql/functions/monitor.sql, report.sql, retention.sql)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg

from orchestrator import backoff, db
from orchestrator.errors import GuardError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuleResult:
    rule: str
    severity: str
    found: int
    corrected: int
    alerted: int
    # Corrections (or the rule's detection) that failed; the run went on.
    failed: int = 0
    # What the rule found when the run started (ids of entity_type), when the
    # run was asked to name them.
    entity_type: str | None = None
    ids: list[int] | None = None

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in vars(self).items() if k not in ("entity_type", "ids")}
        if self.ids is not None:
            data["ids"] = self.ids
        if self.entity_type is not None:
            data["entity_type"] = self.entity_type
        return data

    @property
    def remaining(self) -> int:
        return max(self.found - self.corrected, 0)


@dataclass(frozen=True)
class CheckReport:
    rules: list[RuleResult]
    run_id: int
    duration_ms: float
    waited_ms: float
    # "rule, entity: error" for each failure the run recorded (the first few).
    failures: list[str] = field(default_factory=list)

    @property
    def critical_remaining(self) -> int:
        return sum(r.remaining for r in self.rules if r.severity == "critical")

    @property
    def failed(self) -> int:
        return sum(r.failed for r in self.rules)

    def as_dict(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "duration_ms": self.duration_ms,
                "waited_ms": self.waited_ms, "critical_remaining": self.critical_remaining,
                "failed": self.failed, "failures": self.failures,
                "rules": [r.as_dict() for r in self.rules]}


def run_check(conn: psycopg.Connection, window: timedelta | None = None, *,
              name_entities: bool = False) -> CheckReport:
    """Run every rule once, commit, and return what was found and done. With
    ``name_entities``, each rule also names what it found when the run
    started (consistency.check_findings, in the run's transaction and under
    its lock): one more detection pass."""
    named: dict[str, tuple[str, list[int]]] = {}
    try:
        with conn.transaction():
            if name_entities:
                for rule, entity_type, entity_id in db.all(conn, "check_findings",
                                                           window=window):
                    named.setdefault(rule, (entity_type, []))[1].append(entity_id)
            rows = db.all(conn, "run_check", window=window)
            run_id, _, duration_ms, waited_ms, rules = db.one(conn, "last_check_run")
    except GuardError as exc:
        if isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
            raise GuardError(f"{exc}: check corrects what it finds, so it runs as the guard's "
                             "owner (consistency_monitor may read, not correct)") from exc
        raise
    results, failures = [], []
    for rule, severity, found, corrected, alerted in rows:
        recorded = (rules or {}).get(rule, {})
        entity_type, ids = named.get(rule, (None, []))
        results.append(RuleResult(rule, severity, found, corrected, alerted,
                                  int(recorded.get("failed", 0)),
                                  entity_type, ids if name_entities else None))
        failures += [f"{rule}, {e.get('entity_type')} {e.get('entity_id')}: {e.get('error')}"
                     if e.get("entity_id") is not None else f"{rule}: {e.get('error')}"
                     for e in recorded.get("errors", [])]
    return CheckReport(results, run_id, float(duration_ms or 0), float(waited_ms or 0),
                       failures)


def daily_report(conn: psycopg.Connection, day: date | None = None) -> dict[str, Any]:
    report: dict[str, Any] = db.value(conn, "daily_report", day=day or date.today())
    conn.commit()
    return report


def archive_alerts(conn: psycopg.Connection, older_than: timedelta | None = None,
                   batch: int = 10_000, dry_run: bool = False) -> int:
    """Move old alerts to the archive, one committed transaction per batch, so
    no lock is held for long. With ``dry_run``, count what would move."""
    if dry_run:
        count = db.value(conn, "archivable_alerts", older_than=older_than)
        conn.rollback()
        return int(count)
    total = 0
    while True:
        with conn.transaction():
            moved = db.value(conn, "archive_alerts", older_than=older_than, batch=batch)
        total += moved
        if moved < batch:
            return total


RETRY_DELAY = 0.5  # first wait after a failed run; doubles up to max_backoff and every


def check_loop(dsn: str, every: timedelta, stop: threading.Event,
               window: timedelta | None = None,
               on_result: Callable[[CheckReport], None] | None = None,
               max_backoff: float = 30.0, *, name_entities: bool = False) -> int:
    """Run the check every ``every`` until ``stop`` is set. No database error
    ends the loop: a lost database (restart, failover) is reconnected, and any
    other error (a failing run, a function dropped by hand, a timeout) is
    logged; both are retried with exponential backoff and jitter, capped at
    ``max_backoff`` seconds and at ``every``. Returns the number of completed
    runs."""
    runs, failures = 0, 0
    conn: psycopg.Connection | None = None
    try:
        while not stop.is_set():
            try:
                if conn is None or conn.closed:
                    conn = db.connect(dsn, application_name="consistency check --every")
                report = run_check(conn, window, name_entities=name_entities)
                runs, failures = runs + 1, 0
                if on_result is not None:
                    on_result(report)
                wait = every.total_seconds()
            except (psycopg.Error, GuardError) as exc:
                failures += 1
                lost = isinstance(exc, psycopg.OperationalError) or conn is None or conn.broken
                if lost and conn is not None:
                    conn.close()
                    conn = None
                wait = backoff.delay(failures, RETRY_DELAY,
                                     min(max_backoff, every.total_seconds()))
                log.warning("%s (%s); retrying in %.1fs",
                            "database unavailable" if lost else "check failed",
                            db.redact(str(exc), dsn) if isinstance(exc, GuardError)
                            else db.describe_error(exc, dsn), wait)
            stop.wait(wait)
    finally:
        # Whatever ends the loop (a stop, a bug in on_result, an interrupt):
        # `up` restarts a part that ended, which must not cost a connection.
        if conn is not None:
            conn.close()
    return runs
