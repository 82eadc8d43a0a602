"""A session that is not the guard's owner runs none of the owner's code with
its own rights.

The guard's owner (the role owning calls and appointments, rarely a
superuser) controls everything in schema ``consistency``: it may turn a table
into a view, replace a function's body, add a trigger. A DBA (superuser) or a
monitoring login running ``consistency ...`` would run such code with its own
rights: the owner would get them.

``SET ROLE <owner>`` alone is no barrier: code running in the session may
``RESET ROLE`` (or SET SESSION AUTHORIZATION back). What is one: PostgreSQL
refuses both inside a SECURITY DEFINER routine, so the owner's code there
keeps the owner's rights, whatever it does. So such a session (``Guard``):

- reads only relations that run no code when read: plain tables (no view, no
  row security, no rules, no child tables, no column of a type of the
  owner's), whose indexes, statistics and CHECK constraints (evaluated by the
  planner while it plans a read) call nothing but built-in functions without
  side effects or SECURITY DEFINER routines;
- calls only routines that are SECURITY DEFINER, or SQL-standard bodies that
  call nothing else;
- checks, before each named query, the relations and routines it names, in
  the catalog alone (queries/owner_code.sql), and refuses with one line
  naming what it found;
- after a query that ran any of the owner's code: pins search_path again (a
  SECURITY DEFINER routine may set session settings that outlive it) and
  looks for deferrable triggers that would run other code at COMMIT, outside
  any SECURITY DEFINER routine; if there is one, the transaction is aborted
  in the server, so that no COMMIT can fire it;
- sets ``restrict_nonsystem_relation_kind = view`` where the server has it
  (15.8 and later), and, when it may (a superuser, a member of the owner),
  ``SET ROLE`` to the owner, so that what runs does so with the owner's rights
  in the first place.

migrate, which writes the owner's tables itself, calls ``check`` with the
tables it writes (orchestrator.migrate).

What this does not close: the check and the statement it clears are two
steps. An owner who keeps redefining a function (SECURITY DEFINER one moment,
not the next) may now and then slip between them, the more often a session
runs (``check --every``). Closing that needs every statement run where
PostgreSQL refuses RESET ROLE (inside a SECURITY DEFINER routine of the
owner's); until then, what runs for long runs as the owner: ``relay`` and
``up`` refuse any other login (orchestrator.cli.common.require_owner).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import cache
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from orchestrator import db
from orchestrator.errors import GuardError

BECOME, CHECK, OFF = "become", "check", "off"

_COMMENT = re.compile(r"--[^\n]*")
_REFERENCE = re.compile(r"\b(consistency|public)\.(\w+)(\s*\()?")


_WRITTEN = re.compile(r"\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+((?:consistency|public)\.\w+)",
                      re.IGNORECASE)


@cache
def references(text: str) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """The relations and the routines of schemas consistency and public that
    a query's text names (comments aside), as ``schema.name``, and the
    relations it writes itself (their triggers and defaults run too)."""
    relations: dict[str, None] = {}
    routines: dict[str, None] = {}
    code = _COMMENT.sub("", text)
    for schema, name, call in _REFERENCE.findall(code):
        (routines if call else relations)[f"{schema}.{name}"] = None
    written = dict.fromkeys(_WRITTEN.findall(code))
    for name in written:  # INSERT INTO t (columns) is no call of t
        routines.pop(name, None)
        relations[name] = None
    return tuple(relations), tuple(routines), tuple(written)


@dataclass
class Guard:
    """What a session that is not the guard's owner checks (module docstring)."""

    session_role: str
    owner: str
    restrict_views: bool

    def pin(self, conn: psycopg.Connection, search_path: str = db.SEARCH_PATH) -> None:
        conn.execute(db.query("owner_code_pin"), {"search_path": search_path,
                                                  "restrict_views": self.restrict_views})

    def hazards(self, conn: psycopg.Connection, *, relations: Iterable[str] = (),
                writes: Iterable[str] = (), routines: Iterable[str] = (),
                known: Iterable[str] | None = None) -> list[str]:
        """What of the owner's code the session would run with its own rights
        (queries/owner_code.sql, owner_code)."""
        rows = conn.execute(db.query("owner_code"), {
            "relations": list(relations), "writes": list(writes), "routines": list(routines),
            "known": None if known is None else list(known)}).fetchall()
        return [r[0] for r in rows]

    def refusal(self, found: list[str]) -> GuardError:
        return GuardError(
            f"refusing to run code that {self.owner} controls with the rights of "
            f"{self.session_role}: {'; '.join(found)}; run this as {self.owner}, or have "
            f"{self.owner} restore what the guard installed (`consistency migrate --reapply`) "
            f"and make its own functions SECURITY DEFINER")

    def check(self, conn: psycopg.Connection, **what: Any) -> None:
        found = self.hazards(conn, **what)
        if found:
            raise self.refusal(found)

    def after(self, conn: psycopg.Connection) -> None:
        """Once the owner's code ran: settings pinned again, and no deferrable
        trigger left that COMMIT would fire with this session's rights."""
        self.pin(conn)
        found = self.hazards(conn)
        if not found:
            return
        try:
            conn.execute(db.query("owner_code_abort"))
        except psycopg.Error as exc:
            raise self.refusal(found) from exc
        raise self.refusal(found)

    def run(self, conn: psycopg.Connection, name: str, params: db.Params,
            prepare: bool | None) -> psycopg.Cursor[Any]:
        text = db.query(name)
        relations, routines, writes = references(text)
        self.check(conn, relations=relations, routines=routines, writes=writes)
        if not routines and not writes:
            return conn.execute(text, params, prepare=prepare)
        idle = conn.info.transaction_status == TransactionStatus.IDLE
        with conn.transaction() if conn.autocommit and idle else nullcontext():
            cursor = conn.execute(text, params, prepare=prepare)
            self.after(conn)
        return cursor


def _session(conn: psycopg.Connection) -> tuple[str, str, str | None, bool, bool]:
    session_role, current_role, owner, superuser, restrict_views = conn.execute(
        db.query("owner_code_session")).fetchone()
    return session_role, current_role, owner, bool(superuser), bool(restrict_views)


def guard_for(conn: psycopg.Connection, owner: str) -> Guard | None:
    """The guard of a session acting for ``owner`` (migrate: the owner of
    calls and appointments, before the schema is its), or None when the
    session is that role."""
    session_role, current_role, _, _, restrict_views = _session(conn)
    if session_role == current_role == owner:
        return None
    return Guard(session_role, owner, restrict_views)


@contextmanager
def pinned(conn: psycopg.Connection, guard: Guard, search_path: str) -> Iterator[None]:
    """search_path pinned for the checks of a session that uses another one
    (yoyo's); ``search_path`` afterwards."""
    guard.pin(conn)
    try:
        yield
    finally:
        guard.pin(conn, search_path)


def enter(conn: psycopg.Connection, *, become_owner: bool) -> Guard | None:
    """The guard of a new session (registered for db.run), or None when the
    session is the owner itself or the guard is not installed. The session is
    left as it came: outside any transaction."""
    try:
        session_role, current_role, owner, superuser, restrict_views = _session(conn)
        if owner is None or session_role == current_role == owner:
            return None
        guard = Guard(session_role, owner, restrict_views)
        guard.pin(conn)
        if become_owner and current_role != owner and (
                superuser or conn.execute(db.query("owner_code_may_become"),
                                          {"role": owner}).fetchone()[0]):
            conn.execute(db.compose("owner_code_set_role", role=owner))
    finally:
        if not conn.autocommit:
            conn.commit()
    db.guard_session(conn, guard)
    return guard


__all__ = ["BECOME", "CHECK", "OFF", "Guard", "enter", "guard_for", "pinned", "references"]
