"""pg_cron registration of the monitor's periodic jobs."""

from __future__ import annotations

import psycopg

from orchestrator import db
from orchestrator.errors import GuardError

JOBS = [
    ("consistency-check", "*/5 * * * *", "SELECT count(*) FROM consistency.run_check()"),
    ("consistency-daily-report", "5 0 * * *",
     "SELECT consistency.store_daily_report(current_date - 1)"),
    ("consistency-retention", "30 3 * * *", "CALL consistency.archive_alerts_all()"),
]


def install(conn: psycopg.Connection) -> list[tuple[str, str, str]]:
    """Register (or update: cron.schedule replaces a job of the same name)."""
    if not db.value(conn, "pg_cron_available"):
        raise GuardError("pg_cron is not installed in this database; "
                         "run `consistency check --every 5m` instead")
    with conn.transaction():
        for name, spec, command in JOBS:
            db.execute(conn, "cron_schedule", name=name, schedule=spec, command=command)
    return JOBS
