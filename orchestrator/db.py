"""Connections: where the DSN comes from, and turning failures into one line."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache
from pathlib import Path

import psycopg

from orchestrator.errors import GuardError

_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[a-z0-9_]+://", re.IGNORECASE)


def resolve_dsn(dsn: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Return the connection string to use: ``--dsn``, else DATABASE_URL, else
    the empty string, which makes libpq read its PG* environment variables.

    SQLAlchemy/yoyo style URLs (``postgresql+psycopg://``) are accepted too.
    """
    env = os.environ if env is None else env
    chosen = dsn or env.get("DATABASE_URL") or ""
    return _DRIVER_SUFFIX.sub(r"\1://", chosen.strip())


def describe_error(exc: BaseException) -> str:
    """One line, without the DSN (it may hold a password)."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return text or exc.__class__.__name__


def connect(dsn: str, *, autocommit: bool = False, application_name: str = "consistency",
            **kwargs: object) -> psycopg.Connection:
    """Open a connection or raise GuardError with a one-line reason."""
    try:
        return psycopg.connect(dsn, autocommit=autocommit, application_name=application_name,
                               **kwargs)
    except psycopg.OperationalError as exc:
        raise GuardError(f"cannot connect to PostgreSQL: {describe_error(exc)}") from exc
    except psycopg.ProgrammingError as exc:  # malformed conninfo / URL
        raise GuardError(f"invalid connection string: {describe_error(exc)}") from exc


def sql_dir() -> Path:
    """The ``sql/`` tree: packaged inside the wheel, or beside the source tree."""
    packaged = Path(__file__).parent / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "sql"


_QUERY_HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)\s*--?\s*$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """Named queries from ``orchestrator/queries/*.sql`` (``-- name: foo --``
    blocks, one file per module). A name defined twice is a bug, not an override."""
    found: dict[str, str] = {}
    for path in sorted((Path(__file__).parent / "queries").glob("*.sql")):
        parts = _QUERY_HEADER.split(path.read_text(encoding="utf-8"))
        for name, body in zip(parts[1::2], parts[2::2], strict=True):
            if name in found:
                raise RuntimeError(f"query {name!r} defined twice ({path.name})")
            found[name] = body.strip()
    return found


def query(name: str) -> str:
    return queries()[name]
