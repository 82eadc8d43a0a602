"""The one way into the database: where the DSN comes from, what every
session starts with, the named queries of ``orchestrator/queries/*.sql`` and
how they are run, and turning failures into one line that never shows a
secret of the DSN.

A named query always gets its parameters as a mapping (an empty one when it
takes none), so in every query file ``%(name)s`` is a parameter and ``%%`` a
literal ``%``. ``one``/``all``/``value``/``execute`` (and ``all_async``) turn
the errors by which the guard refuses something into GuardError with one
line; ``run`` leaves psycopg's errors as they are, for the callers that decide
themselves what an error means (the breaker, which must never fail a booking
because of its database, and migrate's own labelled steps).
"""

from __future__ import annotations

import os
import re
import weakref
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psycopg
from psycopg import sql

from orchestrator.errors import GuardError

_DRIVER_SUFFIX = re.compile(r"^(postgres(?:ql)?)\+[a-z0-9_]+://", re.IGNORECASE)

# Every session of the orchestrator resolves names in pg_catalog only (and
# its own temporary schema, last): what it calls is schema-qualified, so a
# function or operator another role created in public is never picked up.
SEARCH_PATH = "pg_catalog,pg_temp"

REDACTED = "***"

BIGINT_MIN, BIGINT_MAX = -(2**63), 2**63 - 1


def resolve_dsn(dsn: str | None = None, env: Mapping[str, str] | None = None) -> str:
    """Return the connection string to use: ``--dsn``, else DATABASE_URL, else
    the empty string, which makes libpq read its PG* environment variables.

    SQLAlchemy/yoyo style URLs (``postgresql+psycopg://``) are accepted too.
    """
    env = os.environ if env is None else env
    chosen = dsn or env.get("DATABASE_URL") or ""
    return _DRIVER_SUFFIX.sub(r"\1://", chosen.strip())


@cache
def _conninfo_keywords() -> frozenset[str]:
    return frozenset(o.keyword.decode() for o in psycopg.pq.Conninfo.get_defaults())


_URI_USERINFO = re.compile(r"^([a-z][a-z0-9+.-]*://)([^@/?#]*)@", re.IGNORECASE)
_URI_PASSWORD_PARAM = re.compile(r"([?&]password=)[^&#]*", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"""\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S*)""", re.IGNORECASE)
_QUOTED = re.compile(r'"([^"]*)"')
_SYNTAX = re.compile(r"[^\w]{0,2}")


def _mask_uri(uri: str) -> str:
    """``scheme://user:secret@host`` -> ``scheme://user:***@host``; a password
    query parameter likewise."""
    def userinfo(m: re.Match[str]) -> str:
        user, sep, _ = m.group(2).partition(":")
        return f"{m.group(1)}{user}{sep and ':' + REDACTED}@"

    return _URI_PASSWORD_PARAM.sub(r"\1" + REDACTED, _URI_USERINFO.sub(userinfo, uri, count=1))


def dsn_secrets(dsn: str) -> set[str]:
    """Every text of ``dsn`` that may be (part of) a password: the URI's
    password (raw and decoded), password= values, and in a key=value string
    every word that is not a key=value pair (an unquoted password with a
    space in it leaves its tail as such a word)."""
    found: set[str] = set()
    m = _URI_USERINFO.match(dsn)
    if m and ":" in m.group(2):
        raw = m.group(2).split(":", 1)[1]
        found |= {raw, unquote(raw)}
    for m in _URI_PASSWORD_PARAM.finditer(dsn):
        raw = dsn[m.end(1):m.end()]
        found |= {raw, unquote(raw)}
    if "://" not in dsn:
        for m in _KV_PASSWORD.finditer(dsn):
            value = m.group(1)
            found |= {value, value.strip("'")}
        found |= {w for w in dsn.split() if "=" not in w}
    return {s for s in found if s}


def redact(message: str, dsn: str | None) -> str:
    """``message`` without any secret of ``dsn``. libpq quotes the part of a
    connection string it could not parse, which may be a password or the
    whole URI: in such a message every quoted fragment that is not a
    connection keyword is masked (a URI keeps everything but its password)."""
    if not dsn:
        return message
    for secret in sorted(dsn_secrets(dsn), key=len, reverse=True):
        message = message.replace(f'"{secret}"', f'"{REDACTED}"')
        if len(secret) >= 4:
            message = message.replace(secret, REDACTED)

    def fragment(m: re.Match[str]) -> str:
        text = m.group(1)
        # libpq's own syntax ("=", "]") and connection keywords are not secrets.
        if text in _conninfo_keywords() or text == REDACTED or _SYNTAX.fullmatch(text):
            return m.group(0)
        return f'"{_mask_uri(text)}"' if "://" in text else f'"{REDACTED}"'

    if _is_parse_error(message):
        message = _QUOTED.sub(fragment, message)
    return message


def _is_parse_error(message: str) -> bool:
    return any(marker in message for marker in (
        "connection info string", "in URI", "percent-encoded", "invalid URI",
        "connection option", "unterminated quoted string"))


def describe_error(exc: BaseException, dsn: str | None = None) -> str:
    """One line, without any secret of ``dsn``."""
    text = " ".join(line.strip() for line in str(exc).splitlines() if line.strip())
    return redact(text, dsn) or exc.__class__.__name__


def session_conninfo(dsn: str) -> str:
    """``dsn`` with ``-c search_path=...`` added to its libpq options (after
    the DSN's own options, or PGOPTIONS, which an explicit value replaces)."""
    try:
        given = psycopg.conninfo.conninfo_to_dict(dsn).get("options")
    except psycopg.ProgrammingError as exc:
        raise GuardError(f"invalid connection string: {describe_error(exc, dsn)}") from exc
    base = given if given is not None else os.environ.get("PGOPTIONS", "")
    options = f"{base} -c search_path={SEARCH_PATH}".strip()
    return psycopg.conninfo.make_conninfo(dsn, options=options)


# libpq's variables that say where to connect; without any of them (and
# without a DSN) libpq tries a local socket under its compiled-in defaults.
_WHERE_VARIABLES = ("PGHOST", "PGHOSTADDR", "PGPORT", "PGDATABASE", "PGSERVICE")


def connect(dsn: str, *, autocommit: bool = False, application_name: str = "consistency",
            owner_code: str = "become", **kwargs: object) -> psycopg.Connection:
    """Open a connection (search_path pinned, see SEARCH_PATH) or raise
    GuardError with a one-line reason.

    A session that is not the guard's owner is guarded (orchestrator.owner_code):
    ``owner_code`` "become" also makes it SET ROLE to the owner when it may,
    "check" only checks, "off" leaves it to the caller (migrate)."""
    try:
        conn = psycopg.connect(session_conninfo(dsn), autocommit=autocommit,
                               application_name=application_name, **kwargs)
    except psycopg.OperationalError as exc:
        raise GuardError(f"cannot connect to PostgreSQL: {describe_error(exc, dsn)}"
                         f"{_no_dsn_hint(dsn)}") from exc
    except psycopg.ProgrammingError as exc:  # malformed conninfo / URL
        raise GuardError(f"invalid connection string: {describe_error(exc, dsn)}") from exc
    if owner_code != "off":
        from orchestrator import owner_code as guards

        try:
            guards.enter(conn, become_owner=owner_code == "become")
        except BaseException:
            conn.close()
            raise
    return conn


# Sessions that are not the guard's owner: their named queries go through
# their guard (orchestrator.owner_code).
_GUARDED: weakref.WeakKeyDictionary[psycopg.Connection, Any] = weakref.WeakKeyDictionary()


def guard_session(conn: psycopg.Connection, guard: Any) -> None:
    _GUARDED[conn] = guard


def session_guard(conn: psycopg.Connection) -> Any:
    """The guard of a session that is not the guard's owner, else None."""
    return _GUARDED.get(conn)


def _no_dsn_hint(dsn: str) -> str:
    if dsn.strip() or any(os.environ.get(v) for v in _WHERE_VARIABLES):
        return ""
    return " (no database given: pass --dsn or set DATABASE_URL, or libpq's PGHOST/PGDATABASE)"


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


def require_bigint(value: int | None, what: str) -> None:
    """Refuse an id no bigint column can hold (psycopg would send it as a
    numeric, and the function call would not resolve)."""
    if value is not None and not BIGINT_MIN <= value <= BIGINT_MAX:
        raise GuardError(f"{what} is out of range for an id: {value}")


def query(name: str) -> str:
    return queries()[name]


def compose(name: str, /, **identifiers: str) -> sql.Composed:
    """A named query with ``{placeholders}`` filled by quoted identifiers
    (DDL takes no parameters)."""
    return sql.SQL(query(name)).format(**{k: sql.Identifier(v) for k, v in identifiers.items()})


# --- running named queries ------------------------------------------------------

NOT_INSTALLED = "the guard is not installed here: run `consistency migrate`"

# SQLSTATEs by which the guard (or PostgreSQL on its behalf) refuses what was
# asked: bad or unknown input, a missing right. Their primary message is meant
# for the person who asked.
_REFUSAL_CLASSES = ("22", "23")  # data exceptions, integrity constraint violations
_REFUSAL_CODES = frozenset({
    "P0002",  # no_data_found: an unknown call, item or sink
    "42501",  # insufficient_privilege
    "42704",  # undefined_object: an unknown setting, role
})
# A schema without the guard, or an older one: the object a query names is missing.
_MISSING_CODES = frozenset({"42883", "42P01"})  # undefined_function, undefined_table


def message(exc: psycopg.Error) -> str:
    """The server's primary message (the line a RAISE wrote), else the whole
    error on one line."""
    primary = exc.diag.message_primary if exc.diag else None
    return " ".join(primary.split()) if primary else describe_error(exc)


def refusal(exc: psycopg.Error) -> GuardError | None:
    """``exc`` as the GuardError a person acts on, or None when it is not a
    refusal (a lost connection, a serialization failure, a bug)."""
    state = exc.sqlstate or ""
    if state == "3F000" and '"consistency"' in message(exc):
        return GuardError(NOT_INSTALLED)
    if state in _MISSING_CODES and "consistency." in message(exc):
        return GuardError(f"the guard here is not up to date ({message(exc)}): "
                          "run `consistency migrate`")
    if state[:2] in _REFUSAL_CLASSES or state in _REFUSAL_CODES:
        return GuardError(message(exc))
    return None


@contextmanager
def refusals() -> Iterator[None]:
    """Raise the guard's refusals inside the block as GuardError (from the
    psycopg error); every other error passes unchanged."""
    try:
        yield
    except psycopg.Error as exc:
        refused = refusal(exc)
        if refused is None:
            raise
        raise refused from exc


Params = Mapping[str, Any]


def run(conn: psycopg.Connection, name: str, params: Params | None = None, *,
        prepare: bool | None = None) -> psycopg.Cursor[Any]:
    """Send named query ``name`` with ``params`` (always a mapping: ``%%`` is
    a literal ``%`` in every query; one that takes none may hold several
    statements). psycopg's errors propagate unchanged. In a session that is
    not the guard's owner, what the query names is checked first
    (orchestrator.owner_code)."""
    guard = session_guard(conn)
    if guard is not None:
        return guard.run(conn, name, {} if params is None else params, prepare)
    return conn.execute(query(name), {} if params is None else params, prepare=prepare)


def execute(conn: psycopg.Connection, name: str, /, **params: Any) -> None:
    with refusals():
        run(conn, name, params)


def one(conn: psycopg.Connection, name: str, /, **params: Any) -> tuple[Any, ...] | None:
    """The first row, or None."""
    with refusals():
        return run(conn, name, params).fetchone()


def all(conn: psycopg.Connection, name: str, /, **params: Any) -> list[tuple[Any, ...]]:
    with refusals():
        return run(conn, name, params).fetchall()


def value(conn: psycopg.Connection, name: str, /, **params: Any) -> Any:
    """The first column of the first row (the query must return a row)."""
    with refusals():
        row = run(conn, name, params).fetchone()
    if row is None:
        raise RuntimeError(f"query {name!r} returned no row")
    return row[0]


async def all_async(conn: psycopg.AsyncConnection, name: str, /,
                    **params: Any) -> list[tuple[Any, ...]]:
    """``all`` on an asyncio connection; a statement without a result (LISTEN)
    returns []."""
    with refusals():
        cur = await conn.execute(query(name), params)
        return await cur.fetchall() if cur.description else []
