"""The manual review queue: list, enqueue, claim, resolve (SQL in
``sql/functions/review.sql``; every step is audited there)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg

from orchestrator import db

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


def list_items(conn: psycopg.Connection, status: str | None = None,
               limit: int = 100) -> list[ReviewItem]:
    return [ReviewItem(*row) for row in db.all(conn, "review_list", status=status, limit=limit)]


def enqueue(conn: psycopg.Connection, call_id: int, reason: str,
            context: dict[str, Any] | None = None, priority: int | None = None,
            actor: str = "system") -> int:
    db.require_bigint(call_id, "call_id")
    return int(db.value(conn, "review_enqueue", call_id=call_id, reason=reason,
                        context=json.dumps(context or {}), priority=priority, actor=actor))


def claim(conn: psycopg.Connection, reviewer: str) -> ReviewItem | None:
    """The next item for ``reviewer``, or None when nothing is pending."""
    row = db.one(conn, "review_claim", reviewer=reviewer)
    return ReviewItem(*row) if row else None


def resolve(conn: psycopg.Connection, item_id: int, reviewer: str, status: str,
            notes: str | None) -> ReviewItem:
    db.require_bigint(item_id, "review item id")
    row = db.one(conn, "review_resolve", id=item_id, reviewer=reviewer, status=status,
                 notes=notes)
    if row is None:
        raise RuntimeError("review_resolve returned no row")
    return ReviewItem(*row)
