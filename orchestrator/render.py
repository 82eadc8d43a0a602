"""Rendering the guard's SQL for one application: the adoption profile and the
catalog (column types) become the names and values in the SQL files, at
migrate time, so that the triggers stay static SQL with no per-row lookup.

The SQL files are Jinja templates. Everything a template prints is an
``SQL`` fragment built here: a profile value is quoted by the server
(``quote_ident`` / ``quote_literal``, the rules of the server that runs it),
never pasted; the environment refuses to print anything else. With the
default profile and the guard's own tables, every file renders to the SQL
it held before profiles existed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import jinja2
import psycopg

from orchestrator import db
from orchestrator.profile import Profile


class SQL(str):
    """Text that may be placed in SQL as it is: quoted by the server, or
    written by the guard's own templates."""


def _only_sql(value: Any) -> Any:
    if isinstance(value, SQL):
        return value
    raise TypeError(f"a template printed {type(value).__name__} {value!r}: only quoted "
                    "SQL fragments may be printed")


_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                          autoescape=False, finalize=_only_sql, trim_blocks=True,
                          lstrip_blocks=True)


UTC = SQL("'UTC'")


@dataclass(frozen=True)
class TimeColumn:
    """A timestamp column of calls or appointments: ``timestamptz``, or
    ``timestamp without time zone`` holding local times of the profile's zone."""

    naive: bool = False
    nullable: bool = False
    zone: SQL = UTC

    def now(self) -> SQL:
        """consistency.now() as a value of this column."""
        return self.convert("consistency.now()")

    def convert(self, expression: str) -> SQL:
        """A timestamptz expression as this column's type, or this column's
        value as a timestamptz (AT TIME ZONE goes both ways): a bound computed
        once, so that the comparison is an index condition on the column."""
        return SQL(f"({expression} AT TIME ZONE {self.zone})" if self.naive else expression)

    def since(self, column: str, bound: str) -> SQL:
        """``column`` at or after the timestamptz ``bound``; a bound of
        -infinity (a whole-table check) takes rows without a time too."""
        condition = f"{column} >= {self.convert(bound)}"
        if self.nullable:
            condition = f"({condition} OR ({column} IS NULL AND {bound} = '-infinity'))"
        return SQL(condition)


@dataclass(frozen=True)
class Table:
    """calls or appointments as the templates see them."""

    booking_id: SQL
    created_at: TimeColumn
    call_id: SQL | None = None
    links: list[SQL] = field(default_factory=list)
    updated_at: TimeColumn = TimeColumn()
    appointment_linked_at: TimeColumn = TimeColumn()
    customer_linked_at: TimeColumn = TimeColumn()
    voice_agent: SQL | None = None
    # appointments.call_id references calls: no appointment names a missing call.
    call_id_fk: bool = True


@dataclass(frozen=True)
class Facts:
    """What the catalog says about the application's tables; read once per run."""

    # (table, column) -> (is timestamp without time zone, is nullable)
    times: dict[tuple[str, str], tuple[bool, bool]]
    call_id_fk: bool


def read_facts(conn: psycopg.Connection) -> Facts:
    times = {(t, c): (naive, nullable)
             for t, c, naive, nullable in conn.execute(db.query("render_time_columns"))}
    fk = conn.execute(db.query("render_call_id_fk")).fetchone()[0]
    return Facts(times, bool(fk))


def _quoted(conn: psycopg.Connection, identifiers: Iterable[str],
            literals: Iterable[str]) -> tuple[dict[str, SQL], dict[str, SQL]]:
    rows = conn.execute(db.query("render_quote"),
                        {"identifiers": sorted(set(identifiers)),
                         "literals": sorted(set(literals))}).fetchall()
    if any("$" in q or not q.isprintable() for _, _, q in rows):
        # Rendered into dollar-quoted bodies, and no line break may reach the
        # SQL; the profile refuses both already.
        raise ValueError("a profile value contains '$' or a character that does not print")
    idents = {v: SQL(q) for kind, v, q in rows if kind == "i"}
    lits = {v: SQL(q) for kind, v, q in rows if kind == "l"}
    return idents, lits


class Namespace(dict[str, Any]):
    """Attribute access for templates (``link.cancelled``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as exc:
            raise AttributeError(name) from exc


def context(conn: psycopg.Connection, profile: Profile, facts: Facts) -> dict[str, Any]:
    """The names a template may use, every value already quoted."""
    p = profile
    value_sections = {"link": p.link_status, "outcome": p.session_outcome,
                      "customer": p.customer_link_status, "method": p.customer_link_method,
                      "direction": p.direction}
    literals = [v for s in value_sections.values() for v in s.model_dump().values()]
    literals += [*p.appointments.voice_agent_sources, p.time_zone]
    identifiers = [p.calls.call_id, p.calls.booking_id, p.appointments.booking_id, *p.links]
    ident, lit = _quoted(conn, identifiers, literals)

    def time(table: str, column: str) -> TimeColumn:
        naive, nullable = facts.times.get((table, column), (False, False))
        return TimeColumn(naive, nullable, lit[p.time_zone])

    sources = [lit[s] for s in p.appointments.voice_agent_sources]
    ctx: dict[str, Any] = {
        name: Namespace({k: lit[v] for k, v in section.model_dump().items()})
        for name, section in value_sections.items()}
    # The booking outcomes, the one list of them: for IN (...), and as a
    # NULL-safe "none of them" of plain comparisons (the call rules' WHEN).
    booking = list(dict.fromkeys([lit[p.session_outcome.appointment_booked],
                                  lit[p.session_outcome.appointment_rescheduled]]))
    ctx["outcome"]["booking"] = SQL(", ".join(booking))
    ctx["outcome"]["not_booking"] = lambda expr: SQL(
        " AND ".join(f"{expr} IS DISTINCT FROM {b}" for b in booking))
    ctx["calls"] = Table(
        booking_id=ident[p.calls.booking_id], created_at=time("calls", "created_at"),
        call_id=ident[p.calls.call_id], links=[ident[c] for c in p.links],
        updated_at=time("calls", "updated_at"),
        appointment_linked_at=time("calls", "appointment_linked_at"),
        customer_linked_at=time("calls", "customer_linked_at"))
    ctx["link_fields"] = _link_fields(ctx["link"], ctx["calls"].appointment_linked_at.now())
    ctx["appointments"] = Table(
        booking_id=ident[p.appointments.booking_id],
        created_at=time("appointments", "created_at"),
        voice_agent=SQL(f"= {sources[0]}" if len(sources) == 1
                        else f"IN ({', '.join(sources)})"),
        call_id_fk=facts.call_id_fk)
    return ctx


def _link_fields(link: Namespace, linked_at: SQL) -> Any:
    def link_fields(n: str, *, cancels: bool = True, stamps: bool = True) -> SQL:
        """The link fields G1 and G2 derive from a call's number of active
        appointments ``n`` (an expression over the call ``c``, the profile's
        link columns included), as the SET items of the UPDATE that changes
        ``n``: linked while n > 0; a linked call left with none cancelled
        (G3; ``cancels``); appointment_linked_at stamped when it becomes
        linked (``stamps``). Every write of these fields renders it, so they
        cannot disagree (the counter guard refuses a write that would)."""
        status = f"CASE WHEN {n} > 0 THEN {link.linked}"
        if cancels:
            status += f" WHEN c.appointment_link_status = {link.linked} THEN {link.cancelled}"
        items = [f"appointment_link_status = {status} ELSE c.appointment_link_status END",
                 f"appointment_made = {n} > 0"]
        if stamps:
            items.append(f"appointment_linked_at = CASE WHEN c.appointment_link_status <> "
                         f"{link.linked} AND {n} > 0 THEN {linked_at} "
                         f"ELSE c.appointment_linked_at END")
        return SQL(",\n               ".join(items))

    return link_fields


def _helpers(links: list[SQL]) -> dict[str, Any]:
    """Template functions; their arguments are the templates' own text."""

    def with_links(text: str) -> SQL:
        return SQL(text if links else "")

    def refs(alias: str) -> SQL:
        return with_links(f" + {alias}.active_appointment_refs")

    def link_array(alias: str) -> SQL:
        return SQL(f"ARRAY[{', '.join(f'{alias}.{c}' for c in links)}]::bigint[]")

    def active(alias: str = "") -> SQL:
        """The one statement of "an active appointment" (what G1 counts).
        Rendered as text, so the planner sees plain column tests, and the
        partial indexes rendered from it match the queries."""
        row = f"{alias}." if alias else ""
        return SQL(f"{row}deleted_at IS NULL AND {row}status <> 'cancelled'")

    def link_joins(alias: str) -> SQL:
        """One LEFT JOIN per link column to the active appointment it names
        (aliases r1, r2, ...), for link_count()."""
        return SQL("".join(
            f"\n      LEFT JOIN public.appointments r{i} ON r{i}.id = {alias}.{c}"
            f" AND {active(f'r{i}')}"
            for i, c in enumerate(links, 1)))

    def link_count() -> SQL:
        return SQL(" + ".join(f"(r{i}.id IS NOT NULL)::integer" for i in range(1, len(links) + 1))
                   or "0")

    return {"with_links": with_links, "refs": refs, "link_array": link_array,
            "active": active, "link_joins": link_joins, "link_count": link_count}


def render(text: str, ctx: dict[str, Any], source: str = "<sql>") -> str:
    """One SQL file rendered with ``ctx`` (see context())."""
    template = _ENV.from_string(text)
    try:
        return template.render(**ctx, **_helpers(ctx["calls"].links))
    except jinja2.TemplateError as exc:
        raise RuntimeError(f"{source}: {exc}") from exc
