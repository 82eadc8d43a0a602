"""The benchmark dataset (calls + appointments), loaded consistent."""

from __future__ import annotations

import psycopg

from orchestrator import db


def load_dataset(conn: psycopg.Connection, calls: int = 100_000,
                 appointments: int | None = None, spread_seconds: float = 5.0) -> None:
    """Load ``calls`` calls (~60 % linked) and ``appointments`` appointments
    (default: as many as calls) with every guard column already consistent.
    Needs a superuser (triggers are bypassed while loading). Commits."""
    appointments = calls if appointments is None else appointments
    params = {"calls": calls, "appointments": appointments, "spread": spread_seconds}
    with conn.transaction():
        db.execute(conn, "bench_bypass_triggers")
        db.execute(conn, "bench_load_calls", **params)
        db.execute(conn, "bench_load_appointments", **params)
    db.execute(conn, "bench_analyze")
