"""Installing, upgrading and re-running migrations."""

from __future__ import annotations

import difflib
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
from conftest import HARNESS, ROOT

from orchestrator import migrate
from orchestrator.errors import GuardError
from orchestrator.pgcluster import bindir

SNAPSHOT = (HARNESS / "catalog_snapshot.sql").read_text()
MIGRATION_IDS = sorted(p.stem for p in (Path(migrate.db.sql_dir()) / "migrations").glob("*.sql"))


def snapshot(dsn: str) -> set[str]:
    with psycopg.connect(dsn) as conn:
        return {row[0] for row in conn.execute(SNAPSHOT)}


# The schema a fresh install with the default profile leaves, committed so
# that a change to it shows in review as a diff of this file.
SCHEMA_SNAPSHOT = ROOT / "tests" / "schema.snapshot"
REGENERATE = "make schema-snapshot"


def test_the_schema_is_the_committed_snapshot(dsn: str) -> None:
    """`make schema-snapshot` (CONSISTENCY_WRITE_SCHEMA_SNAPSHOT=1) writes
    the file instead of comparing."""
    lines = [f"{line}\n" for line in sorted(snapshot(dsn))]
    if os.environ.get("CONSISTENCY_WRITE_SCHEMA_SNAPSHOT") == "1":
        SCHEMA_SNAPSHOT.write_text("".join(lines), encoding="utf-8")
        return
    committed = (SCHEMA_SNAPSHOT.read_text(encoding="utf-8").splitlines(keepends=True)
                 if SCHEMA_SNAPSHOT.exists() else [])
    if lines != committed:
        diff = "".join(difflib.unified_diff(committed, lines, "tests/schema.snapshot (committed)",
                                            "tests/schema.snapshot (this tree)"))
        pytest.fail(f"the schema differs from tests/schema.snapshot; if the change is meant, "
                    f"run `{REGENERATE}` and commit the file\n{diff}", pytrace=False)


def pg_dump_schema(dsn: str) -> str:
    out = subprocess.run(
        [str(bindir() / "pg_dump"), "--schema-only", "--no-owner", "-n", "consistency",
         "-n", "public", "-d", dsn],
        check=True, capture_output=True, text=True).stdout
    # \restrict carries a random key per dump (pg_dump >= 15.14)
    return "\n".join(line for line in out.splitlines()
                     if not line.startswith(("-- Dumped", "\\restrict", "\\unrestrict")))


def test_fresh_install_applies_everything(empty_db: str) -> None:
    result = migrate.migrate(empty_db, env={})
    assert result.migrations_applied == MIGRATION_IDS
    assert "privileges.sql" in result.definitions_applied
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT count(*) FROM consistency.settings").fetchone()[0] == 11
        assert conn.execute("SELECT to_regclass('public.calls') IS NOT NULL").fetchone()[0]


def test_migrate_twice_is_a_no_op(empty_db: str) -> None:
    migrate.migrate(empty_db, env={})
    before = pg_dump_schema(empty_db)
    again = migrate.migrate(empty_db, env={})
    assert not again.changed
    assert pg_dump_schema(empty_db) == before
    assert migrate.status(empty_db, env={}).up_to_date


@pytest.mark.parametrize("upto", MIGRATION_IDS[:-1])
def test_upgrade_gives_the_same_schema_as_a_fresh_install(empty_db_factory, upto: str) -> None:
    fresh, upgraded = empty_db_factory(), empty_db_factory()
    migrate.migrate(fresh, env={})
    first = migrate.migrate(upgraded, upto=upto, env={})
    assert first.migrations_applied[-1] == upto
    assert not migrate.status(upgraded, env={}).up_to_date
    rest = migrate.migrate(upgraded, env={})
    assert rest.migrations_applied and rest.migrations_applied[0] > upto
    assert pg_dump_schema(upgraded) == pg_dump_schema(fresh)
    assert snapshot(upgraded) == snapshot(fresh)


APP_SCHEMA = """
CREATE TABLE calls (
    id bigserial PRIMARY KEY,
    customer_id bigint,
    direction text,
    session_outcome text,
    created_at timestamptz NOT NULL DEFAULT now(),
    app_notes text
);
CREATE TABLE appointments (
    id bigserial PRIMARY KEY,
    call_id bigint REFERENCES calls (id) ON DELETE SET NULL,
    status text NOT NULL DEFAULT 'scheduled',
    created_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz
);
INSERT INTO calls (customer_id, direction, session_outcome, app_notes) VALUES
    (10, NULL, 'appointment_booked', 'one'),
    (NULL, 'outbound', 'information_only', 'two'),
    (NULL, '', NULL, 'three'),
    (11, 'inbound', 'appointment_booked', 'four');
INSERT INTO appointments (call_id, status, deleted_at) VALUES
    (1, 'scheduled', NULL),
    (2, 'cancelled', NULL),
    (4, 'confirmed', now());
"""


def test_install_on_an_existing_application_keeps_rows_and_backfills(empty_db: str) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute(APP_SCHEMA)
    migrate.migrate(empty_db, env={})
    with psycopg.connect(empty_db) as conn:
        rows = conn.execute("""
            SELECT id, external_call_id, direction, appointment_made, appointment_link_status,
                   appointment_linked_at IS NOT NULL, customer_link_status, customer_link_method,
                   app_notes
              FROM calls ORDER BY id""").fetchall()
        appointments = conn.execute("SELECT count(*) FROM appointments").fetchone()[0]
    assert rows == [
        (1, "legacy-1", "inbound", True, "linked", True, "linked", "phone_match", "one"),
        (2, "legacy-2", "outbound", False, "unlinked", False, "unlinked", None, "two"),
        (3, "legacy-3", "inbound", False, "unlinked", False, "unlinked", None, "three"),
        # Booked, and its only appointment was deleted: the booking existed and
        # went away (G3), so it is cancelled, not a booking in flight (G4).
        (4, "legacy-4", "inbound", False, "cancelled", False, "linked", "phone_match", "four"),
    ]
    assert appointments == 3


def test_existing_application_gets_the_same_guard_schema(empty_db_factory) -> None:
    fresh, existing = empty_db_factory(), empty_db_factory()
    migrate.migrate(fresh, env={})
    with psycopg.connect(existing) as conn:
        conn.execute(APP_SCHEMA)
    migrate.migrate(existing, env={})
    extra = snapshot(existing) - snapshot(fresh)
    missing = snapshot(fresh) - snapshot(existing)
    # The application keeps its own column; everything of the guard is there.
    assert {line for line in extra if "app_notes" not in line} == set()
    assert missing == set()


def test_dry_run_changes_nothing(empty_db: str) -> None:
    result = migrate.migrate(empty_db, dry_run=True, env={})
    assert result.dry_run and result.migrations_applied == MIGRATION_IDS
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('public.calls')").fetchone()[0] is None
    assert migrate.status(empty_db, env={}).pending == MIGRATION_IDS


def test_a_failing_definition_rolls_back_everything(empty_db: str, monkeypatch) -> None:
    real = migrate.repeatable_definitions

    def broken(root=None):
        return [*real(root), migrate.Definition("functions/zz_broken.sql", "SELECT 1/0;")]

    monkeypatch.setattr(migrate, "repeatable_definitions", broken)
    with pytest.raises(GuardError, match=r"zz_broken\.sql: division by zero"):
        migrate.migrate(empty_db, env={})
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regclass('public.calls')").fetchone()[0] is None
        assert conn.execute("SELECT to_regclass('consistency.settings')").fetchone()[0] is None
    monkeypatch.setattr(migrate, "repeatable_definitions", real)
    assert migrate.status(empty_db, env={}).pending == MIGRATION_IDS


def test_changed_definition_is_reapplied_alone_with_privileges(dsn: str, monkeypatch) -> None:
    real = migrate.repeatable_definitions

    def edited(root=None):
        defs = real(root)
        return [migrate.Definition(d.path, d.text + "\n-- edited\n")
                if d.path == "functions/alerts.sql" else d for d in defs]

    monkeypatch.setattr(migrate, "repeatable_definitions", edited)
    assert migrate.status(dsn, env={}).definitions_changed == ["functions/alerts.sql"]
    result = migrate.migrate(dsn, env={})
    assert result.migrations_applied == []
    assert result.definitions_applied == ["functions/alerts.sql", "privileges.sql"]
    assert not migrate.migrate(dsn, env={}).changed


def test_refuses_a_database_migrated_by_a_newer_release(dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("""INSERT INTO consistency._yoyo_migration (migration_hash, migration_id,
                        applied_at_utc) VALUES ('ffff', '9999_from_the_future', now())""")
    with pytest.raises(GuardError, match="9999_from_the_future"):
        migrate.migrate(dsn, env={})


def test_migrate_applies_settings_from_the_environment(dsn: str) -> None:
    result = migrate.migrate(dsn, env={"VALIDATION_MAX_AGE": "600"})
    assert result.settings_changed == ["validation.max_appointment_age_seconds"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "SELECT consistency.setting_int('validation.max_appointment_age_seconds')"
        ).fetchone()[0] == 600
        actor = conn.execute("SELECT actor FROM consistency.audit_log ORDER BY id DESC LIMIT 1"
                             ).fetchone()[0]
    assert actor == "consistency migrate"


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DATABASE_URL": ""})


def test_two_concurrent_migrate_processes(empty_db: str) -> None:
    procs = [_cli("migrate", "--dsn", empty_db) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    stdouts = sorted(out for out, _ in outputs)
    applied = f"applied {len(MIGRATION_IDS)} migration(s)"
    assert sum(applied in out for out in stdouts) == 1, stdouts
    assert sum("nothing to do" in out for out in stdouts) == 1, stdouts
    with psycopg.connect(empty_db) as conn:
        count = conn.execute("SELECT count(*) FROM consistency._yoyo_migration").fetchone()[0]
    assert count == len(MIGRATION_IDS)


def test_cli_migrate_then_nothing_to_do(empty_db: str, run_cli) -> None:
    dry = run_cli("migrate", "--dsn", empty_db, "--dry-run")
    assert dry.code == 0 and f"would apply {len(MIGRATION_IDS)} migration(s)" in dry.out
    status = run_cli("migrate", "status", "--dsn", empty_db)
    assert status.code == 1 and "pending" in status.out
    first = run_cli("migrate", "--dsn", empty_db)
    assert first.code == 0 and f"applied {len(MIGRATION_IDS)} migration(s)" in first.out
    second = run_cli("migrate", "--dsn", empty_db)
    assert second.code == 0 and "nothing to do" in second.out
    status = run_cli("migrate", "--dsn", empty_db, "status", "--json")
    assert status.code == 0 and '"up_to_date": true' in status.out


def test_dsn_from_database_url_and_pg_variables(empty_db: str, run_cli, monkeypatch) -> None:
    params = dict(item.split("=", 1) for item in empty_db.split())
    monkeypatch.setenv("DATABASE_URL",
                       f"postgresql+psycopg://{params['user']}@{quote(params['host'], safe='')}"
                       f":{params['port']}/{params['dbname']}")
    assert run_cli("migrate").code == 0
    monkeypatch.delenv("DATABASE_URL")
    for var, key in [("PGHOST", "host"), ("PGPORT", "port"), ("PGUSER", "user"),
                     ("PGDATABASE", "dbname")]:
        monkeypatch.setenv(var, params[key])
    result = run_cli("migrate")
    assert result.code == 0 and "nothing to do" in result.out


def test_a_definition_changed_by_hand_is_detected_and_restored(dsn: str, run_cli) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TRIGGER audit_log_append_only ON consistency.audit_log")
    status = run_cli("migrate", "status", "--dsn", dsn)
    assert status.code == 1 and "changed outside migrate" in status.out
    result = migrate.migrate(dsn, env={})
    assert "triggers/audit_log_append_only.sql" in result.definitions_applied
    assert migrate.status(dsn, env={}).up_to_date
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("DELETE FROM consistency.audit_log")


def test_an_upgrade_brings_settings_within_their_new_bounds(empty_db: str) -> None:
    bounds = MIGRATION_IDS.index("0008_setting_bounds")
    migrate.migrate(empty_db, upto=MIGRATION_IDS[bounds - 1], env={})
    with psycopg.connect(empty_db) as conn:
        conn.execute("UPDATE consistency.settings SET value = '2147483647' "
                     "WHERE key = 'monitoring.recent_hours'")
    migrate.migrate(empty_db, env={})
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT value FROM consistency.settings "
                            "WHERE key = 'monitoring.recent_hours'").fetchone()[0] == 8760
        audit = conn.execute("SELECT actor, action, target_id, before, after "
                             "FROM consistency.audit_log").fetchall()
    assert audit == [("consistency migrate", "setting.clamp", "monitoring.recent_hours",
                      {"value": 2147483647}, {"value": 8760})]


def test_an_upgrade_drops_the_link_state_indexes_migrate_created_only(empty_db: str) -> None:
    # An install made before 0013: indexes on the sync's columns that migrate
    # created (recorded), and one of the application's own on the same column.
    migrate.migrate(empty_db, upto="0012_adoption", env={})
    with psycopg.connect(empty_db) as conn:
        conn.execute("""
            CREATE INDEX calls_appointment_made_created_at_idx
                ON calls (appointment_made, created_at);
            CREATE INDEX calls_outcome_mismatch_idx ON calls (created_at)
                WHERE session_outcome = 'appointment_booked' AND NOT appointment_made;
            CREATE INDEX calls_created_at_idx ON calls (created_at);
            CREATE INDEX app_link_status_idx ON calls (appointment_link_status);
            INSERT INTO consistency.installed_objects (kind, table_name, name)
            VALUES ('index', 'calls', 'calls_appointment_made_created_at_idx'),
                   ('index', 'calls', 'calls_outcome_mismatch_idx'),
                   ('index', 'calls', 'calls_created_at_idx');""")
    migrate.migrate(empty_db, env={})
    with psycopg.connect(empty_db) as conn:
        indexes = {r[0] for r in conn.execute(
            "SELECT indexrelid::regclass::text FROM pg_index "
            "WHERE indrelid = 'public.calls'::regclass")}
        recorded = {r[0] for r in conn.execute(
            "SELECT name FROM consistency.installed_objects WHERE kind = 'index'")}
    assert {"calls_appointment_made_created_at_idx", "calls_outcome_mismatch_idx"}.isdisjoint(
        indexes | recorded)
    assert {"calls_created_at_idx", "app_link_status_idx"} <= indexes
    assert "app_link_status_idx" not in recorded


def test_an_upgrade_drops_the_functions_the_definitions_no_longer_create(
        empty_db: str) -> None:
    # An install made before 0014 still holds what its definitions created then.
    migrate.migrate(empty_db, upto="0013_hot_link_updates", env={})
    retired = {
        "_raise_alerts(text, text, text, bigint[], text[], jsonb[], boolean)": "SETOF bigint",
        "_insert_alert(text, text, text, bigint, text, jsonb, boolean, timestamptz)": "bigint",
        "_archivable(bigint)": "boolean",
        "_relay_sinks_configured()": "boolean",
    }
    with psycopg.connect(empty_db) as conn:
        for signature, returns in retired.items():
            value = returns.removeprefix("SETOF ")
            conn.execute(f"CREATE FUNCTION consistency.{signature} RETURNS {returns}"
                         f" LANGUAGE sql AS 'SELECT NULL::{value}'")
    migrate.migrate(empty_db, env={})
    with psycopg.connect(empty_db) as conn:
        left = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'consistency'::regnamespace"
            " AND proname = ANY (%s)",
            [[s.split("(")[0] for s in retired]]).fetchall()
    assert left == []


def _checks(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        return dict(conn.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE contype = 'c' AND conrelid IN ('public.calls'::regclass,"
            " 'consistency.alerts'::regclass,"
            " 'consistency.relay_deliveries'::regclass)").fetchall())


@pytest.mark.parametrize("guard_made", [True, False])
def test_an_upgrade_compacts_the_guards_check_constraints_only(empty_db: str,
                                                              guard_made: bool) -> None:
    migrate.migrate(empty_db, upto="0014_retired_functions", env={})
    if not guard_made:
        # As if the application had created calls with these constraints itself.
        with psycopg.connect(empty_db) as conn:
            conn.execute("DELETE FROM consistency.installed_objects WHERE table_name = 'calls'")
    before = _checks(empty_db)
    assert "ARRAY['unlinked'::text" in before["calls_appointment_link_status_check"]
    migrate.migrate(empty_db, env={})
    after = _checks(empty_db)
    assert after["alerts_severity_check"] == (
        "CHECK ((severity = ANY ('{critical,warning,info}'::text[])))")
    assert "'{pending,in_flight,delivered,dead}'::text[]" in after["relay_deliveries_status_check"]
    for name in ("calls_appointment_link_status_check", "calls_customer_link_status_check"):
        if guard_made:
            assert "'::text[]" in after[name] and "ARRAY[" not in after[name]
        else:
            assert after[name] == before[name]
    with psycopg.connect(empty_db) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("INSERT INTO calls (external_call_id, appointment_link_status)"
                     " VALUES ('c-1', 'bogus')")


def test_an_upgrade_drops_the_statement_triggers_on_alerts(empty_db: str) -> None:
    # An install made before 0015 still holds the triggers (and their
    # functions) that counted and enqueued alerts: left behind, every alert
    # would be counted and enqueued twice.
    migrate.migrate(empty_db, upto="0014_retired_functions", env={})
    with psycopg.connect(empty_db) as conn:
        for name in ("_count_alerts", "_relay_enqueue"):
            conn.execute(f"CREATE FUNCTION consistency.{name}() RETURNS trigger LANGUAGE plpgsql"
                         " AS 'BEGIN RETURN NULL; END'")
        conn.execute("CREATE TRIGGER alerts_count AFTER INSERT ON consistency.alerts"
                     " REFERENCING NEW TABLE AS new_alerts FOR EACH STATEMENT"
                     " EXECUTE FUNCTION consistency._count_alerts()")
        conn.execute("CREATE TRIGGER alerts_relay_enqueue AFTER INSERT ON consistency.alerts"
                     " REFERENCING NEW TABLE AS new_alerts FOR EACH STATEMENT"
                     " EXECUTE FUNCTION consistency._relay_enqueue()")
    migrate.migrate(empty_db, env={})
    with psycopg.connect(empty_db) as conn:
        triggers = conn.execute(
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'consistency.alerts'::regclass"
            " AND NOT tgisinternal").fetchall()
        functions = conn.execute(
            "SELECT proname FROM pg_proc WHERE pronamespace = 'consistency'::regnamespace"
            " AND proname IN ('_count_alerts', '_relay_enqueue')").fetchall()
        conn.execute("SELECT consistency.raise_alert('after_upgrade', 'info', 'system', 1, 'd')")
        counted = conn.execute("SELECT count(*) FROM consistency.metric_counter_deltas"
                               " WHERE label1 = 'after_upgrade'").fetchone()[0]
    assert triggers == [] and functions == [] and counted == 1


@pytest.mark.parametrize("in_use", [False, True], ids=["no-row-yet", "rows-use-it"])
def test_an_upgrade_keeps_a_check_the_application_changed(empty_db: str, in_use: bool) -> None:
    # The guard created calls; the application later widened one of its
    # CHECKs for a value of its own. Recognised by what it says, not by its
    # name, it is the application's now: 0016 leaves it, and compacts the other.
    migrate.migrate(empty_db, upto="0014_retired_functions", env={})
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("ALTER TABLE calls DROP CONSTRAINT calls_customer_link_status_check,"
                     " ADD CONSTRAINT calls_customer_link_status_check CHECK (customer_link_status"
                     " IN ('unlinked', 'linked', 'failed', 'not_applicable', 'pending_review'))")
        if in_use:
            conn.execute("INSERT INTO calls (external_call_id, customer_link_status)"
                         " VALUES ('c-0', 'pending_review')")
    widened = _checks(empty_db)["calls_customer_link_status_check"]
    migrate.migrate(empty_db, env={})
    after = _checks(empty_db)
    assert after["calls_customer_link_status_check"] == widened
    assert "'::text[]" in after["calls_appointment_link_status_check"]
    with psycopg.connect(empty_db, autocommit=True) as conn:
        conn.execute("INSERT INTO calls (external_call_id, customer_link_status)"
                     " VALUES ('c-1', 'pending_review')")
