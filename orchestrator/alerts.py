"""Alerts: the row every part of the guard raises into consistency.alerts
(the durable outbox the relay delivers from), and reading them back."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import psycopg

from orchestrator import db

SEVERITIES = ("info", "warning", "critical")


@dataclass(frozen=True)
class Alert:
    id: int
    alert_type: str
    severity: str
    entity_type: str
    entity_id: int | None
    description: str
    metadata: dict[str, Any]
    detected_at: datetime
    auto_corrected: bool = False

    @property
    def idempotency_key(self) -> str:
        return str(self.id)

    @property
    def entity(self) -> str:
        return f"{self.entity_type}/{self.entity_id}" if self.entity_id is not None \
            else self.entity_type

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "alert_type": self.alert_type, "severity": self.severity,
                "entity_type": self.entity_type, "entity_id": self.entity_id,
                "description": self.description, "metadata": self.metadata,
                "detected_at": self.detected_at.isoformat(),
                "auto_corrected": self.auto_corrected}


def at_least(severity: str) -> list[str]:
    """``severity`` and every severity above it."""
    return list(SEVERITIES[SEVERITIES.index(severity):])


def list_alerts(conn: psycopg.Connection, since: timedelta, *, min_severity: str = "info",
                alert_type: str | None = None, limit: int = 100) -> list[Alert]:
    """Alerts still in the outbox detected within ``since``, newest first
    (retention moves older ones to consistency.alerts_archive)."""
    rows = db.all(conn, "alerts_list", since=since, severities=at_least(min_severity),
                  alert_type=alert_type, limit=limit)
    return [Alert(*row) for row in rows]
