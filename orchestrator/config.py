"""Settings: show, set one, sync from the environment (names live in the table)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from orchestrator import db
from orchestrator.errors import GuardError


@dataclass(frozen=True)
class Setting:
    key: str
    value: Any
    kind: str
    min_value: Decimal
    max_value: Decimal
    env_var: str | None
    description: str | None
    updated_at: datetime | None


def parse_value(text: str) -> Any:
    """``5`` -> 5, ``0.5`` -> 0.5; anything that is not JSON stays a string, so
    the database rejects it with its own message (``must be a number``)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def list_settings(conn: psycopg.Connection) -> list[Setting]:
    return [Setting(*row) for row in db.all(conn, "settings_list")]


def set_setting(conn: psycopg.Connection, key: str, value: Any, actor: str) -> bool:
    """Set one value; True when it changed. Raises GuardError on a refused value."""
    return bool(db.value(conn, "set_setting", key=key, value=json.dumps(value), actor=actor))


def sync_from_env(conn: psycopg.Connection, actor: str,
                  env: Mapping[str, str] | None = None) -> list[str]:
    """Apply every setting whose env var is set. Caller owns the transaction,
    so one bad variable leaves every setting as it was."""
    env = os.environ if env is None else env
    changed = []
    for setting in list_settings(conn):
        if not setting.env_var or setting.env_var not in env:
            continue
        try:
            if set_setting(conn, setting.key, parse_value(env[setting.env_var]), actor):
                changed.append(setting.key)
        except GuardError as exc:
            raise GuardError(f"{setting.env_var}: {exc}") from exc
    return changed


def default_actor() -> str:
    user = os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown"
    return f"cli:{user}"
