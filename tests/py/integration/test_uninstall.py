"""`consistency uninstall`: the guard goes, the application's tables,
columns and rows stay; refused (nothing changed) when something outside the
guard needs it or the session may not drop it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import psycopg
from conftest import Sandbox, as_role

from orchestrator import migrate

APPLICATION_ROWS = """
INSERT INTO calls (external_call_id, direction, session_outcome, customer_id)
SELECT 'u-' || g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'outbound' END,
       CASE WHEN g % 2 = 0 THEN 'appointment_booked' ELSE 'information_only' END, g
  FROM generate_series(1, 40) g;
INSERT INTO appointments (call_id, external_booking_id, source, status)
SELECT id, 'b-' || id, 'voice_agent', CASE WHEN id % 5 = 0 THEN 'cancelled' ELSE 'scheduled' END
  FROM calls WHERE session_outcome = 'appointment_booked';
"""

# The application's view of its rows: every column but the guard's bookkeeping.
ROWS = """
SELECT to_jsonb(c) - 'active_appointment_count' - 'active_appointment_refs' FROM calls c ORDER BY id
"""
APPOINTMENTS = "SELECT to_jsonb(a) FROM appointments a ORDER BY id"


def rows(conn: psycopg.Connection) -> tuple[list[Any], list[Any]]:
    return ([r[0] for r in conn.execute(ROWS)], [r[0] for r in conn.execute(APPOINTMENTS)])


def guard_objects(conn: psycopg.Connection) -> dict[str, bool]:
    """Which kinds of the guard's objects are present."""
    return {kind: n > 0 for kind, n in conn.execute("""
        SELECT 'schema', count(*) FROM pg_namespace WHERE nspname = 'consistency'
        UNION ALL
        SELECT 'triggers', count(*) FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relname IN ('calls', 'appointments') AND NOT t.tgisinternal
        UNION ALL
        SELECT 'counter', count(*) FROM pg_attribute
         WHERE attrelid = 'public.calls'::regclass AND attname = 'active_appointment_count'
               AND NOT attisdropped
        UNION ALL
        SELECT 'monitor_indexes', count(*) FROM pg_class
         WHERE relname IN ('appointments_orphan_idx', 'calls_missing_direction_idx')
        UNION ALL
        SELECT 'app_grants', count(*) FROM pg_roles r
         WHERE r.rolname = 'consistency_app'
           AND has_table_privilege(r.oid, 'public.calls', 'INSERT')
    """).fetchall()}


INSTALLED = {"schema": True, "triggers": True, "counter": True, "monitor_indexes": True,
             "app_grants": True}


def test_uninstall_removes_the_guard_and_keeps_the_application_rows(
        conn: psycopg.Connection, dsn: str, run_cli: Callable[..., Any]) -> None:
    conn.autocommit = True
    conn.execute(APPLICATION_ROWS)
    before = rows(conn)
    assert guard_objects(conn) == INSTALLED

    result = run_cli("uninstall", "--dsn", dsn)
    assert result.code == 0, result
    assert guard_objects(conn) == dict.fromkeys(INSTALLED, False)
    assert rows(conn) == before
    # Roles are cluster-wide: kept, and said so.
    assert conn.execute("SELECT count(*) FROM pg_roles WHERE rolname LIKE 'consistency\\_%'"
                        ).fetchone()[0] == 3
    assert "kept role consistency_app" in result.out
    # Writes work without the guard, and nothing corrects them any more.
    conn.execute("INSERT INTO calls (external_call_id, direction) VALUES ('after', NULL)")
    assert conn.execute("SELECT direction FROM calls WHERE external_call_id = 'after'"
                        ).fetchone()[0] is None
    conn.execute("DELETE FROM calls WHERE external_call_id = 'after'")


def test_migrate_after_uninstall_reinstalls_and_keeps_the_rows(
        conn: psycopg.Connection, dsn: str, run_cli: Callable[..., Any]) -> None:
    conn.autocommit = True
    conn.execute(APPLICATION_ROWS)
    before = rows(conn)
    assert run_cli("uninstall", "--dsn", dsn).code == 0
    migrate.migrate(dsn, env={})
    assert guard_objects(conn) == INSTALLED
    assert rows(conn) == before
    assert conn.execute("SELECT count(*) FROM consistency.violations()").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM calls WHERE active_appointment_count > 0"
                        ).fetchone()[0] > 0


def test_dry_run_changes_nothing_and_says_what_it_would_do(
        conn: psycopg.Connection, dsn: str, run_cli: Callable[..., Any]) -> None:
    conn.autocommit = True
    result = run_cli("uninstall", "--dsn", dsn, "--dry-run", "--json")
    assert result.code == 0, result
    plan = json.loads(result.out)
    assert plan["dry_run"] and plan["schema"] == "consistency"
    assert "public.calls.active_appointment_count" in plan["columns"]
    assert "appointments_link_sync_insert ON public.appointments" in plan["triggers"]
    assert "TABLE public.calls FROM consistency_app" in plan["revoked"]
    assert guard_objects(conn) == INSTALLED


def test_refuses_when_an_application_object_needs_the_guard(
        conn: psycopg.Connection, dsn: str, run_cli: Callable[..., Any]) -> None:
    conn.autocommit = True
    conn.execute("CREATE VIEW public.open_alerts AS SELECT id FROM consistency.alerts")
    result = run_cli("uninstall", "--dsn", dsn)
    assert result.code == 2
    assert "view public.open_alerts" in result.err and "nothing was changed" in result.err, result
    assert len(result.err.strip().splitlines()) == 1
    assert guard_objects(conn) == INSTALLED
    assert conn.execute("SELECT count(*) FROM public.open_alerts").fetchone()[0] == 0


def test_refuses_a_session_that_does_not_own_the_guard(
        conn: psycopg.Connection, dsn: str, sandbox: Sandbox,
        run_cli: Callable[..., Any]) -> None:
    conn.autocommit = True
    stranger = sandbox.role("stranger")
    sandbox.borrow(dsn)
    result = run_cli("uninstall", "--dsn", as_role(dsn, stranger))
    assert result.code == 2
    assert "owned by postgres" in result.err and stranger in result.err, result
    assert guard_objects(conn) == INSTALLED


def test_nothing_to_uninstall_on_a_database_without_the_guard(
        empty_db: str, run_cli: Callable[..., Any]) -> None:
    result = run_cli("uninstall", "--dsn", empty_db)
    assert result.code == 0, result
    assert "not installed here" in result.out


def test_an_adopted_application_gets_back_exactly_its_own_tables(
        empty_db: str, run_cli: Callable[..., Any]) -> None:
    """On tables the application had, uninstall drops exactly the columns and
    indexes migrate added (consistency.installed_objects), nothing of the
    application's."""
    shape = """
        SELECT c.relname, string_agg(a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
                                     || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END,
                                     ', ' ORDER BY a.attnum)
          FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid
         WHERE c.relname IN ('calls', 'appointments') AND a.attnum > 0 AND NOT a.attisdropped
         GROUP BY c.relname
        UNION ALL
        SELECT 'index ' || i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
          FROM pg_index i WHERE i.indrelid IN ('calls'::regclass, 'appointments'::regclass)
        UNION ALL
        SELECT 'constraint ' || conname, pg_get_constraintdef(oid) FROM pg_constraint
         WHERE conrelid IN ('calls'::regclass, 'appointments'::regclass)
        ORDER BY 1"""
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("""
            CREATE TABLE calls (id bigserial PRIMARY KEY, external_call_id text NOT NULL UNIQUE,
                                note text, created_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX calls_note_idx ON calls (note);
            CREATE TABLE appointments (id bigserial PRIMARY KEY, call_id bigint REFERENCES calls,
                                       status text NOT NULL DEFAULT 'scheduled',
                                       created_at timestamptz NOT NULL DEFAULT now());
            CREATE INDEX appointments_call_idx ON appointments (call_id);
            INSERT INTO calls (external_call_id, note) SELECT 'x-' || g, 'n' || g
              FROM generate_series(1, 20) g;
            INSERT INTO appointments (call_id) SELECT id FROM calls WHERE id % 2 = 0;""")
        before = conn.execute(shape).fetchall()
        data = conn.execute("SELECT to_jsonb(c) FROM calls c ORDER BY id").fetchall()

        migrate.migrate(empty_db, env={})
        installed = conn.execute(shape).fetchall()
        assert installed != before
        assert conn.execute("SELECT count(*) FROM consistency.installed_objects "
                            "WHERE kind = 'column'").fetchone()[0] > 0

        result = run_cli("uninstall", "--dsn", empty_db)
        assert result.code == 0, result
        assert "added by migrate" in result.out
        assert conn.execute(shape).fetchall() == before
        assert conn.execute("SELECT to_jsonb(c) FROM calls c ORDER BY id").fetchall() == data

        # And back again.
        migrate.migrate(empty_db, env={})
        assert conn.execute(shape).fetchall() == installed
        assert conn.execute("SELECT * FROM consistency.violations()").fetchall() == []
