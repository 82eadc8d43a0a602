"""What every command shares: where the database is, ids, JSON, and opening
a connection. Printing is orchestrator.output's."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

import click
import psycopg

from orchestrator import db
from orchestrator.errors import GuardError

F = TypeVar("F", bound=Callable[..., Any])

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"]}
DSN_HELP = "Connection string or URL; default DATABASE_URL, else libpq PG* variables."


def _inherited_dsn(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """``--dsn`` of the command, else the one given before it (``consistency
    --dsn X check``, ``consistency relay --dsn X status``)."""
    parent = ctx.parent
    while value is None and parent is not None:
        value = parent.params.get("dsn")
        parent = parent.parent
    return value


C = TypeVar("C", bound=click.Command)


def example(text: str) -> Callable[[C], C]:
    """End the command's --help with ``text``, one example of its use (a
    decorator above @click.command / @click.group)."""
    def add(command: C) -> C:
        shown = "\n".join(f"  {line}" for line in text.splitlines())
        # Dedented first: click dedents the whole help at once, and the
        # example's two-space indent would leave the docstring's own in it.
        command.help = f"{inspect.cleandoc(command.help or '')}\n\n\b\nExample:\n{shown}"
        return command
    return add


def dsn_option(func: F) -> F:
    return click.option("--dsn", metavar="DSN", default=None, callback=_inherited_dsn,
                        help=DSN_HELP)(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


class BigInt(click.IntRange):
    """An id: any PostgreSQL bigint (a row may hold a negative one), nothing
    beyond, so that the database is asked about a bigint, never a numeric."""

    def __init__(self) -> None:
        super().__init__(min=db.BIGINT_MIN, max=db.BIGINT_MAX)


def connect(dsn: str | None, **kwargs: Any) -> psycopg.Connection:
    """A connection to ``--dsn`` (or DATABASE_URL, or libpq's defaults) of a
    database where the guard is installed, else GuardError saying so."""
    conn = db.connect(db.resolve_dsn(dsn), **kwargs)
    try:
        installed = db.value(conn, "migrations_table_exists")
    except BaseException:
        conn.close()
        raise
    if not installed:
        conn.close()
        raise GuardError(db.NOT_INSTALLED)
    return conn


def require_owner(dsn: str, command: str) -> None:
    """Refuse, with one line, a long-running command (relay, up) whose login
    is not the guard's owner: it calls the owner's functions on connections
    of its own, which run none of the checks of orchestrator.owner_code. A
    wrong DSN is one line and exit 2 too, not a retry loop."""
    with connect(dsn) as conn:
        guard = db.session_guard(conn)
    if guard is not None:
        raise GuardError(f"{command} runs as the guard's owner {guard.owner}, not as "
                         f"{guard.session_role}: connect as {guard.owner}")

