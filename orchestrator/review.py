"""The manual review queue: list, enqueue, claim, resolve (SQL in
``sql/functions/review.sql``; every step is audited there)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from orchestrator import db
from orchestrator.errors import GuardError

STATUSES = ("pending", "in_progress", "resolved", "dismissed")


@dataclass(frozen=True)
class ReviewItem:
    id: int
    call_id: int
    reason: str
    priority: int
    status: str
    context: dict[str, Any]
    assigned_to: str | None
    assigned_at: datetime | None
    resolved_at: datetime | None
    resolution_notes: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _refused(exc: psycopg.Error) -> GuardError:
    return GuardError((exc.diag.message_primary if exc.diag else None)
                      or db.describe_error(exc))


_USER_ERRORS = (psycopg.errors.InvalidParameterValue, psycopg.errors.NoDataFound,
                psycopg.errors.InsufficientPrivilege)


def list_items(conn: psycopg.Connection, status: str | None = None,
               limit: int = 100) -> list[ReviewItem]:
    try:
        rows = conn.execute(db.query("review_list"), {"status": status, "limit": limit}).fetchall()
    except _USER_ERRORS as exc:
        raise _refused(exc) from exc
    return [ReviewItem(*row) for row in rows]


def enqueue(conn: psycopg.Connection, call_id: int, reason: str,
            context: dict[str, Any] | None = None, priority: int | None = None,
            actor: str = "system") -> int:
    db.require_bigint(call_id, "call_id")
    try:
        row = conn.execute(db.query("review_enqueue"),
                           {"call_id": call_id, "reason": reason,
                            "context": json.dumps(context or {}), "priority": priority,
                            "actor": actor}).fetchone()
    except _USER_ERRORS as exc:
        raise _refused(exc) from exc
    return int(row[0])


def claim(conn: psycopg.Connection, reviewer: str) -> ReviewItem | None:
    """The next item for ``reviewer``, or None when nothing is pending."""
    try:
        row = conn.execute(db.query("review_claim"), {"reviewer": reviewer}).fetchone()
    except _USER_ERRORS as exc:
        raise _refused(exc) from exc
    return ReviewItem(*row) if row else None


def resolve(conn: psycopg.Connection, item_id: int, reviewer: str, status: str,
            notes: str | None) -> ReviewItem:
    db.require_bigint(item_id, "review item id")
    try:
        row = conn.execute(db.query("review_resolve"),
                           {"id": item_id, "reviewer": reviewer, "status": status,
                            "notes": notes}).fetchone()
    except _USER_ERRORS as exc:
        raise _refused(exc) from exc
    return ReviewItem(*row)
