"""Post-booking validation and the atomic rollback of a failed booking.

Thin wrappers over ``consistency.validate_booking`` and
``consistency.rollback_booking``: the rules live in
``sql/functions/validation.sql``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg

from orchestrator import db
from orchestrator.errors import GuardError
from orchestrator.retry import RetryPolicy


class RollbackFailedError(GuardError):
    """rollback_booking did not happen; nothing of it was kept. The database
    error is the ``__cause__``."""


@dataclass(frozen=True)
class ValidationResult:
    call_id: int
    ok: bool
    reason: str | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def appointment_id(self) -> int | None:
        value = self.details.get("appointment_id")
        return int(value) if value is not None else None

    def as_dict(self) -> dict[str, Any]:
        return {"call_id": self.call_id, "ok": self.ok, "reason": self.reason,
                "details": self.details}


def validate_booking(conn: psycopg.Connection, call_id: int, appointment_id: int | None = None,
                     external_booking_id: str | None = None) -> ValidationResult:
    """Run the validation cascade; bad input (unknown call, an id beyond
    bigint) raises GuardError. Writes nothing."""
    db.require_bigint(call_id, "call_id")
    db.require_bigint(appointment_id, "appointment_id")
    ok, reason, details = db.one(conn, "validate_booking", call_id=call_id,
                                 appointment_id=appointment_id,
                                 external_booking_id=external_booking_id)
    return ValidationResult(call_id, ok, reason, details or {})


def rollback_booking(conn: psycopg.Connection, call_id: int, reason: str, *,
                     actor: str = "system", retry: RetryPolicy | None = None) -> int:
    """Roll the booking of ``call_id`` back; returns the alert id.

    Runs in its own transaction (a savepoint when the caller already has one
    open, then the caller's commit decides). On any error that transaction is
    rolled back, nothing is kept, no notification escapes, and
    RollbackFailedError is raised from the database error. With ``retry``,
    transient errors (serialization failure, deadlock, lost connection) are
    retried first.
    """

    db.require_bigint(call_id, "call_id")

    def attempt() -> int:
        with conn.transaction():
            return int(db.run(conn, "rollback_booking", {"call_id": call_id, "reason": reason,
                                                         "actor": actor}).fetchone()[0])

    try:
        return retry.call(attempt) if retry is not None else attempt()
    except psycopg.Error as exc:
        raise RollbackFailedError(
            f"rollback of call {call_id} failed, nothing was changed: {db.message(exc)}") from exc
