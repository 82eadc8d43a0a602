"""Where an existing application's tables differ from what the guard would
write into them (DESIGN.md, "Installing on an existing application").

Read before anything is written, as the owner: every difference is one line
naming the profile key that resolves it, and migrate refuses them all at
once. Constraints, enum types and domains are recognised by what they allow:
each value the guard writes is cast to the column's type (enum labels,
domain checks, length) and every CHECK on that column alone is evaluated for
it, whatever the constraint's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
from psycopg import sql

from orchestrator import db
from orchestrator.profile import DEFAULT, Profile

TEXT, BOOL, INT, TIME = "text", "boolean", "integer", "timestamp"

# The guard's CHECKs on the status columns it creates itself.
GUARD_CHECKS = {
    ("calls", "appointment_link_status"): {"unlinked", "pending_creation", "linked", "cancelled",
                                           "creation_failed", "not_applicable"},
    ("calls", "customer_link_status"): {"unlinked", "linked", "failed", "not_applicable"},
}


# The triggers sql/triggers creates on the application's tables (it drops a
# trigger of the same name first).
GUARD_TRIGGERS = {
    "calls": ("calls_rules_insert", "calls_rules_inserted", "calls_rules_update",
              "calls_link_guard"),
    "appointments": ("appointments_link_sync_insert", "appointments_link_sync_update",
                     "appointments_link_sync_delete", "appointments_link_sync_truncate"),
}


@dataclass(frozen=True)
class Column:
    table: str
    name: str
    type: str
    category: str
    base: str
    not_null: bool
    max_length: int | None

    @property
    def family(self) -> str:
        if self.category in ("S", "E"):
            return TEXT
        if self.base == "boolean":
            return BOOL
        if self.base in ("smallint", "integer", "bigint"):
            return INT
        if self.base in ("timestamp without time zone", "timestamp with time zone"):
            return TIME
        return self.base


@dataclass(frozen=True)
class Write:
    """What the guard writes into one column: values (each with the profile
    key that names it and why), NULL or not, and the type family it needs."""

    table: str
    column: str
    family: str
    values: tuple[tuple[str, str, str], ...] = ()
    writes_null: str | None = None


def _writes(p: Profile) -> list[Write]:
    ls, so = p.link_status, p.session_outcome
    return [
        Write("calls", "appointment_link_status", TEXT, (
            (ls.linked, "link_status.linked", "a call with an active appointment (G1)"),
            (ls.unlinked, "link_status.unlinked", "a call without one (G1)"),
            (ls.pending_creation, "link_status.pending_creation",
             "a booking whose appointment has not arrived (G4)"),
            (ls.cancelled, "link_status.cancelled",
             "a call that lost its last active appointment (G3)"),
            (ls.creation_failed, "link_status.creation_failed",
             "a booking rolled back (rollback_booking)"))),
        Write("calls", "session_outcome", TEXT, (
            (so.appointment_booked, "session_outcome.appointment_booked",
             "a call with an active appointment (G5)"),
            (so.creation_failed, "session_outcome.creation_failed",
             "a booking rolled back (rollback_booking)"))),
        Write("calls", "customer_link_status", TEXT, (
            (p.customer_link_status.linked, "customer_link_status.linked",
             "a call with a customer (G7)"),
            (p.customer_link_status.unlinked, "customer_link_status.unlinked",
             "a call whose customer is cleared (G7)"))),
        Write("calls", "customer_link_method", TEXT, (
            (p.customer_link_method.phone_match, "customer_link_method.phone_match",
             "a customer linked without a method (G7)"),), "a call whose customer is cleared (G7)"),
        Write("calls", "customer_linked_at", TIME, (), "a call whose customer is cleared (G7)"),
        Write("calls", "direction", TEXT, (
            (p.direction.inbound, "direction.inbound", "a call without a direction (G6)"),)),
        Write("calls", "appointment_made", BOOL),
        Write("calls", "booking_failed", BOOL),
        Write("calls", "requires_manual_processing", BOOL),
        Write("calls", "booking_failure_reason", TEXT),
        Write("calls", "appointment_linked_at", TIME),
        Write("calls", "updated_at", TIME),
        Write("calls", "created_at", TIME),
        Write("calls", p.calls.call_id, TEXT),
        Write("calls", p.calls.booking_id, TEXT),
        Write("appointments", "call_id", INT),
        Write("appointments", "status", TEXT),
        Write("appointments", "source", TEXT),
        Write("appointments", "deleted_at", TIME),
        Write("appointments", "created_at", TIME),
        Write("appointments", p.appointments.booking_id, TEXT),
        *(Write("calls", link, INT) for link in p.links),
    ]


@dataclass
class Differences:
    blocking: list[str]
    notes: list[str]


def differences(conn: psycopg.Connection, p: Profile) -> Differences:
    """Every difference between the tables as they are and what the guard,
    configured by ``p``, would add or write. Reads only."""
    found = Differences([], [])
    calls_exist, appointments_exist = conn.execute(db.query("adoption_tables")).fetchone()
    columns = {(r[0], r[1]): Column(*r) for r in conn.execute(db.query("adoption_columns"))}
    checks: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for table, column, name, expression in conn.execute(db.query("adoption_checks")):
        checks.setdefault((table, column), []).append((name, expression))

    _names(found, p, calls_exist, appointments_exist, columns)
    if calls_exist and p.calls.appointment_links is None:
        for column, constraint in conn.execute(db.query("adoption_link_fks")):
            found.blocking.append(
                f"calls.{column} references appointments (constraint {constraint}): a call may "
                f"point at its appointment there, which G1 and the monitor must count; list it "
                f"in [calls] appointment_links (appointment_links = [] if it is no such link)")
    names = [n for t in GUARD_TRIGGERS.values() for n in t]
    for table, trigger in conn.execute(db.query("adoption_foreign_triggers"), {"names": names}):
        found.blocking.append(
            f"{table} has a trigger {trigger} of its own: the guard's trigger of that name would "
            f"replace it; rename the application's trigger (ALTER TRIGGER {trigger} ON {table} "
            f"RENAME TO ...)")
    for write in _writes(p):
        column = columns.get((write.table, write.column))
        if column is None:
            _guard_added(found, write)
        else:
            _existing(found, conn, write, column, checks.get((write.table, write.column), []))
    try:
        with conn.transaction():
            conn.execute(db.query("adoption_time_zone"), {"zone": p.time_zone})
    except psycopg.Error:
        found.blocking.append(f"time_zone: PostgreSQL knows no time zone {p.time_zone!r} "
                              "(see pg_timezone_names)")
    return found


def _names(found: Differences, p: Profile, calls_exist: bool, appointments_exist: bool,
           columns: dict[tuple[str, str], Column]) -> None:
    named = [("calls", p.calls.call_id, "calls.call_id", DEFAULT.calls.call_id, calls_exist),
             ("calls", p.calls.booking_id, "calls.booking_id", DEFAULT.calls.booking_id,
              calls_exist),
             ("appointments", p.appointments.booking_id, "appointments.booking_id",
              DEFAULT.appointments.booking_id, appointments_exist),
             *(("calls", link, "calls.appointment_links", None, calls_exist)
               for link in p.links)]
    for table, column, key, default, table_exists in named:
        if column == default or (table, column) in columns:
            continue
        where = "" if table_exists else f" ({table} does not exist yet: the guard creates it)"
        section, name = key.split(".")
        found.blocking.append(f"{table}.{column} does not exist{where}: correct [{section}] {name}")
    if calls_exist and ("calls", DEFAULT.calls.call_id) not in columns \
            and p.calls.call_id == DEFAULT.calls.call_id:
        found.notes.append(
            "calls has no column external_call_id: the guard adds it NOT NULL (existing calls get "
            "legacy-<id>), so every INSERT must then give it; if the application keeps the voice "
            "platform's call id in another column, name it in [calls] call_id")


def _guard_added(found: Differences, write: Write) -> None:
    allowed = GUARD_CHECKS.get((write.table, write.column))
    if allowed is None:
        return
    for value, key, _why in write.values:
        if value not in allowed:
            found.blocking.append(
                f"{key} = {value!r}: {write.table}.{write.column} does not exist, and the guard "
                f"creates it with a CHECK allowing only {', '.join(sorted(allowed))}")


def _existing(found: Differences, conn: psycopg.Connection, write: Write, column: Column,
              checks: list[tuple[str, str]]) -> None:
    where = f"{write.table}.{write.column}"
    if column.family != write.family:
        found.blocking.append(f"{where} is {column.type}: the guard needs a {write.family} "
                              f"column there")
        return
    if write.writes_null and column.not_null:
        found.blocking.append(f"{where} is NOT NULL, but the guard clears it for "
                              f"{write.writes_null}")
    for value, key, why in write.values:
        refusal = _refused(conn, column, value, checks)
        if refusal:
            in_use = _values_in_use(conn, column)
            found.blocking.append(
                f"{where}: {refusal} {value!r}, which the guard writes for {why}: set {key} to "
                f"a value it allows" + (f" (in use: {in_use})" if in_use else ""))


def _refused(conn: psycopg.Connection, column: Column, value: str,
             checks: list[tuple[str, str]]) -> str | None:
    """Why ``column`` cannot hold ``value`` (None: it can)."""
    if column.max_length is not None and len(value) > column.max_length:
        return f"{column.type} is too short for"
    try:
        with conn.transaction():
            conn.execute(sql.SQL("SELECT CAST({} AS {})").format(sql.Literal(value),
                                                                 sql.SQL(column.type)))
    except psycopg.Error:
        return f"its type {column.type} does not allow"
    for name, expression in checks:
        probe = sql.SQL(
            "SELECT ({}) IS NOT FALSE FROM (SELECT CAST({} AS {}) AS {}) AS probe").format(
                sql.SQL(expression), sql.Literal(value), sql.SQL(column.type),
                sql.Identifier(column.name))
        try:
            with conn.transaction():
                allowed = conn.execute(probe).fetchone()[0]
        except psycopg.Error:
            allowed = False
        if not allowed:
            return f"the CHECK constraint {name} does not allow"
    return None


def _values_in_use(conn: psycopg.Connection, column: Column) -> str | None:
    query = sql.SQL(db.query("adoption_values_in_use")).format(
        column=sql.Identifier(column.name), table=sql.Identifier("public", column.table))
    return conn.execute(query).fetchone()[0]
