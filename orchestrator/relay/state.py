"""What the operator sees and does to the relay's state: per-sink status,
re-driving dead deliveries, forgetting a sink (sql/functions/relay.sql)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg

from orchestrator import db
from orchestrator.errors import GuardError

STATUS_COLUMNS = ("sink_id", "sink", "min_severity", "status", "deliveries",
                  "oldest_created_at", "last_seen_at", "pending", "in_flight", "retrying",
                  "retrying_oldest_seconds", "dead", "delivered_last_hour",
                  "last_success_at", "last_error", "last_error_at")
# Per sink and delivery status; the rest of a row is per sink.
SINK_COLUMNS = STATUS_COLUMNS[:7]
_PER_STATUS = ("status", "deliveries", "oldest_created_at")


def status_rows(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """consistency.relay_status(): one row per sink and delivery status."""
    return [dict(zip(STATUS_COLUMNS, row, strict=True)) for row in db.all(conn, "relay_status")]


def sinks(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Registered sinks, their deliveries by status, when a relay last served them."""
    return [{k: r[k] for k in SINK_COLUMNS} for r in status_rows(conn)]


def per_sink(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """One entry per sink: pending, in flight, retrying, dead, last success and error."""
    found: dict[int, dict[str, Any]] = {}
    for r in status_rows(conn):
        found.setdefault(r["sink_id"], {k: v for k, v in r.items() if k not in _PER_STATUS})
    return list(found.values())


def redrive(conn: psycopg.Connection, *, sink_id: int | None, since: timedelta | None,
            alert_type: str | None, actor: str) -> int:
    """Put dead deliveries back to pending (audited); returns how many."""
    with conn.transaction():
        return int(db.value(conn, "relay_redrive", sink_id=sink_id, since=since,
                            alert_type=alert_type, actor=actor))


# A running relay refreshes last_seen_at of its sinks every 15 s; a sink seen
# within four of those is taken to be served still.
SERVED_WITHIN_SECONDS = 60.0


def forget_sink(conn: psycopg.Connection, sink_id: int, *, force: bool = False) -> None:
    """Forget a sink no relay serves any more, with its pending deliveries.
    A sink a relay served within SERVED_WITHIN_SECONDS is refused unless
    ``force``: its pending alerts would be lost, and the relay registers
    it again anyway."""
    with conn.transaction():
        rows = db.all(conn, "relay_sink_unseen_for", sink_id=sink_id)
        if not rows:
            raise GuardError(f"no relay sink with id {sink_id} (see consistency relay sinks)")
        (unseen_for,), = rows
        if not force and unseen_for is not None and unseen_for < SERVED_WITHIN_SECONDS:
            raise GuardError(
                f"sink {sink_id} was served by a relay {max(unseen_for, 0):.0f} s ago: stop that "
                "relay or take the sink out of its list first (a running relay registers its "
                "sinks again), or pass --force to drop its pending deliveries now")
        db.value(conn, "relay_forget_sink", sink_id=sink_id)
