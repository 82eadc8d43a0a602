"""`consistency uninstall`: remove the guard, keep the application.

What goes, in one transaction (``dry_run`` runs it and rolls it back, so it
fails exactly where the real run would):

- the guard's triggers on the application's tables (those calling a function
  of schema ``consistency``);
- the columns only the guard writes (BOOKKEEPING_COLUMNS: counters its
  triggers keep, meaningless without them), and every column migrate added
  to a table the application already had (recorded in
  ``consistency.installed_objects``);
- the indexes migrate created on a table the application already had; on a
  table migrate created, the monitor's partial indexes (MONITOR_INDEXES:
  their predicates are the monitor's rules; they cost every write);
- what the guard's roles were granted on the application's tables and
  sequences;
- the monitor's pg_cron jobs of this database;
- schema ``consistency`` with everything in it: functions, settings, alerts,
  the audit log, the review queue, relay state, and the migration records
  (a later ``consistency migrate`` installs afresh).

What stays: ``calls`` and ``appointments`` with every row and every column
the application had before migrate (a table migrate created is the
application's, with all of its vocabulary columns), the indexes that may
serve the application's own lookups, and the guard's roles: they are
cluster-wide and another database may use them; uninstall says whether one
does and how to drop them.

Refused, with nothing changed: an object outside the schema that needs one in
it (a view on ``consistency.alerts``, a function calling
``consistency.now()``), which DROP SCHEMA ... CASCADE would silently take
along; a session that is neither the guard's owner (by membership) nor a
superuser.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from orchestrator import db
from orchestrator.errors import GuardError
from orchestrator.migrate import ROLES, RoleUse, role_uses
from orchestrator.scheduling import JOBS

BOOKKEEPING_COLUMNS = ("active_appointment_count", "active_appointment_refs")
MONITOR_INDEXES = (
    "calls_link_status_attention_idx",
    "calls_missing_direction_idx",
    "calls_booking_failed_idx",
    "calls_outcome_mismatch_idx",
    "appointments_orphan_idx",
    "appointments_active_call_idx",
)


@dataclass
class Plan:
    installed: bool
    owner: str | None = None
    triggers: list[tuple[str, str, str]] = field(default_factory=list)
    columns: list[tuple[str, str]] = field(default_factory=list)
    indexes: list[str] = field(default_factory=list)
    grants: list[tuple[str, str, str, str]] = field(default_factory=list)
    cron_jobs: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    roles: list[RoleUse] = field(default_factory=list)
    dry_run: bool = False

    def as_dict(self) -> dict[str, object]:
        return {
            "installed": self.installed, "dry_run": self.dry_run, "owner": self.owner,
            "triggers": [f"{name} ON {schema}.{table}" for schema, table, name in self.triggers],
            "columns": [f"public.{t}.{c}" for t, c in self.columns],
            "indexes": [f"public.{i}" for i in self.indexes],
            "revoked": [f"{kind} {schema}.{name} FROM {role}"
                        for schema, name, kind, role in self.grants],
            "cron_jobs": self.cron_jobs,
            "schema": "consistency" if self.installed else None,
            "guard_rows_dropped": self.rows,
            "roles_kept": [{"role": r.role, "other_databases": r.other_databases,
                            "members": r.members} for r in self.roles],
        }


def _plan(conn: psycopg.Connection) -> Plan:
    installed, owner, session_role, may_drop = db.run(conn, "uninstall_facts").fetchone()
    if not installed:
        return Plan(installed=False)
    if not may_drop:
        raise GuardError(f"the guard is owned by {owner}: run uninstall as {owner} (or a member "
                         f"of it) or as a superuser, not as {session_role}")
    plan = Plan(installed=True, owner=owner)
    plan.triggers = [tuple(r) for r in db.run(conn, "uninstall_triggers")]
    plan.columns = [(t, c) for t, c in db.run(conn, "uninstall_columns",
                                              {"columns": list(BOOKKEEPING_COLUMNS)})]
    plan.indexes = [r[0] for r in db.run(conn, "uninstall_indexes",
                                         {"indexes": list(MONITOR_INDEXES)})]
    plan.grants = [tuple(r) for r in db.run(conn, "uninstall_grants", {"roles": list(ROLES)})]
    if db.run(conn, "uninstall_cron_present").fetchone()[0]:
        plan.cron_jobs = [r[0] for r in db.run(conn, "uninstall_cron_jobs",
                                               {"jobs": [name for name, _, _ in JOBS]})]
    alerts, audit, review, runs = db.run(conn, "uninstall_guard_rows").fetchone()
    plan.rows = {"alerts": alerts, "audit log rows": audit, "open review items": review,
                 "check runs": runs}
    return plan


def _refuse_dependents(conn: psycopg.Connection) -> None:
    found = db.run(conn, "uninstall_dependents").fetchall()
    if found:
        listed = "; ".join(f"{dependent} needs {needs}" for dependent, needs in found[:10])
        more = f" (and {len(found) - 10} more)" if len(found) > 10 else ""
        raise GuardError(f"objects outside schema consistency depend on the guard: {listed}"
                         f"{more}; drop or change them first (nothing was changed)")


def _drop(conn: psycopg.Connection, plan: Plan) -> None:
    for schema, table, name in plan.triggers:
        conn.execute(db.compose("uninstall_drop_trigger", schema=schema, table=table,
                                trigger=name))
    _refuse_dependents(conn)
    for schema, name, kind, role in plan.grants:
        statement = "uninstall_revoke_sequence" if kind == "SEQUENCE" else "uninstall_revoke_table"
        conn.execute(db.compose(statement, schema=schema, object=name, role=role))
    for job in plan.cron_jobs:
        conn.execute(db.query("uninstall_unschedule"), {"job": job})
    # The schema first: its SQL-standard functions depend on the columns.
    conn.execute(db.query("uninstall_drop_schema"))
    for table, column in plan.columns:
        conn.execute(db.compose("uninstall_drop_column", table=table, column=column))
    for index in plan.indexes:
        conn.execute(db.compose("uninstall_drop_index", index=index))


def uninstall(dsn: str, *, dry_run: bool = False) -> Plan:
    """Remove the guard from the database of ``dsn`` (see the module
    docstring); with ``dry_run``, do all of it and roll it back. Returns what
    was (or would be) removed."""
    # Drops need the session's own rights: it checks what it reads, and
    # becomes no one (orchestrator.owner_code).
    with db.connect(dsn, autocommit=True, application_name="consistency uninstall",
                    owner_code="check") as conn:
        # The lock of `consistency migrate`: neither runs while the other does.
        db.run(conn, "migrate_lock")
        try:
            with conn.transaction(force_rollback=dry_run):
                plan = _plan(conn)
                plan.dry_run = dry_run
                if plan.installed:
                    _drop(conn, plan)
        except psycopg.Error as exc:
            raise GuardError(f"uninstall failed, nothing was changed: "
                             f"{db.describe_error(exc)}") from exc
        plan.roles = role_uses(conn)
    return plan


def describe(plan: Plan) -> list[str]:
    """What happened (or would), one line each."""
    if not plan.installed:
        return ["the guard is not installed here: nothing to uninstall"]
    verb = "would drop" if plan.dry_run else "dropped"
    lines = [f"{verb} trigger {name} on {schema}.{table}"
             for schema, table, name in plan.triggers]
    lines += [f"{verb} column public.{t}.{c} (" + ("the guard's bookkeeping" if c in
              BOOKKEEPING_COLUMNS else "added by migrate") + ")" for t, c in plan.columns]
    lines += [f"{verb} index public.{i} (created by migrate)" for i in plan.indexes]
    revoke = "would revoke" if plan.dry_run else "revoked"
    lines += [f"{revoke} {role}'s rights on {kind.lower()} {schema}.{name}"
              for schema, name, kind, role in plan.grants]
    unschedule = "would unschedule" if plan.dry_run else "unscheduled"
    lines += [f"{unschedule} pg_cron job {job}" for job in plan.cron_jobs]
    held = ", ".join(f"{n} {what}" for what, n in plan.rows.items())
    lines.append(f"{verb} schema consistency with everything in it ({held})")
    lines.append("kept: public.calls and public.appointments, their rows and every column of "
                 "the application's vocabulary")
    for use in plan.roles:
        if use.unused:
            lines.append(f"kept role {use.role} (roles are cluster-wide); nothing uses it any "
                         f"more: DROP ROLE {use.role}; to remove it")
        else:
            where = ", ".join([*(f"database {d}" for d in use.other_databases),
                               *(f"member {m}" for m in use.members)])
            lines.append(f"kept role {use.role} (roles are cluster-wide), still used by {where}")
    return lines


__all__ = ["BOOKKEEPING_COLUMNS", "MONITOR_INDEXES", "Plan", "describe", "uninstall"]
