"""The consistency monitor from Python: one check, a loop that survives
database restarts, the daily report and retention. The logic is in SQL
(sql/functions/monitor.sql, report.sql, retention.sql)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

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


# The longest one committed slice of a correction should take: a row the
# check corrects stays locked for that long, so an application write to it
# waits at most about that (plus a commit).
SLICE_MS = 50.0
FIRST_SLICE = 50
MAX_SLICE = 5000


def run_check(conn: psycopg.Connection, window: timedelta | None = None, *,
              name_entities: bool = False, slice_ms: float | None = SLICE_MS) -> CheckReport:
    """Run every rule once and return what was found and done.

    With ``slice_ms`` (the default) the run is batched: each detection, and
    each slice of a correction (sized to take about ``slice_ms``), commits on
    its own, so no row the run corrects stays locked for long; one run at a
    time all the same (a session-level lock; a lost connection releases it).
    ``None`` runs everything in one transaction (``consistency.run_check``).
    With ``name_entities``, each rule also names what it found when the run
    started (consistency.check_findings, under the run's lock): one more
    detection pass."""
    try:
        if slice_ms is None:
            with conn.transaction():
                named = _findings(conn, window) if name_entities else {}
                rows = db.all(conn, "run_check", window=window)
                run = db.one(conn, "last_check_run")
        else:
            named, rows, run = _batched_run(conn, window, name_entities, slice_ms)
    except GuardError as exc:
        if isinstance(exc.__cause__, psycopg.errors.InsufficientPrivilege):
            raise GuardError(f"{exc}: check corrects what it finds, so it runs as the guard's "
                             "owner (consistency_monitor may read, not correct)") from exc
        raise
    assert run is not None
    run_id, _, duration_ms, waited_ms, rules = run
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


def _findings(conn: psycopg.Connection,
              window: timedelta | None) -> dict[str, tuple[str, list[int]]]:
    named: dict[str, tuple[str, list[int]]] = {}
    for rule, entity_type, entity_id in db.all(conn, "check_findings", window=window):
        named.setdefault(rule, (entity_type, []))[1].append(entity_id)
    return named


def _batched_run(conn: psycopg.Connection, window: timedelta | None, name_entities: bool,
                 slice_ms: float) -> tuple[dict[str, tuple[str, list[int]]],
                                           list[tuple[Any, ...]], tuple[Any, ...] | None]:
    """The steps of run_check (sql/functions/monitor.sql), each in its own
    transaction, the corrections in slices of about ``slice_ms``."""
    with conn.transaction():
        bounds = db.one(conn, "check_begin", window=window)
    assert bounds is not None
    try:
        check_window, since, now, started_at, waited_ms = bounds
        named: dict[str, tuple[str, list[int]]] = {}
        if name_entities:
            with conn.transaction():
                named = _findings(conn, window)
        parts: list[dict[str, Any]] = []
        with conn.transaction():
            steps = [step for (step,) in db.all(conn, "check_steps")]
        for step in steps:
            with conn.transaction():
                found = db.all(conn, "check_detect", step=step, since=since, now=now)
            for rule, ids, targets, part in found:
                parts.append(part)
                if ids is not None:
                    parts += _correct(conn, rule, ids, targets, slice_ms)
        with conn.transaction():
            run_id = db.value(conn, "check_record", window=check_window, started=started_at,
                              waited=waited_ms, parts=Jsonb(parts))
            rows = db.all(conn, "check_result", run_id=run_id)
            run = db.one(conn, "check_run", run_id=run_id)
        return named, rows, run
    finally:
        if not conn.closed and not conn.broken:
            with contextlib.suppress(psycopg.Error), conn.transaction():
                db.run(conn, "check_end")


def _correct(conn: psycopg.Connection, rule: str, ids: list[int], targets: list[int] | None,
             slice_ms: float) -> list[dict[str, Any]]:
    """One rule's correction in committed slices, each sized from the last
    one's time per entity to take about ``slice_ms``."""
    parts: list[dict[str, Any]] = []
    size, start = FIRST_SLICE, 0
    while start < len(ids):
        end = start + size
        with conn.transaction():
            part = db.value(conn, "check_correct", rule=rule, ids=ids[start:end],
                            targets=None if targets is None else targets[start:end])
        parts.append(part)
        per_entity = max(float(part["ms"]) / len(ids[start:end]), 0.001)
        size = max(1, min(MAX_SLICE, int(slice_ms / per_entity)))
        start = end
    return parts


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
