"""Installing on the application the design comes from: the askproai schema
and data (tests/fixtures/askproai), owned by an application role that is
neither superuser nor CREATEROLE (the guard's roles made beforehand by a DBA,
as the README documents), and written by that owner and by a DML-only role
the way the application writes (naive UTC timestamps, its own values, links
through calls.appointment_id / converted_appointment_id)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from conftest import ROOT, as_role
from test_plpgsql_check import LINT

from orchestrator import migrate
from orchestrator.pgcluster import Cluster, bindir

FIXTURE = ROOT / "tests" / "fixtures" / "askproai"
# How Laravel writes a timestamp: naive, in UTC, whole seconds.
NAIVE_UTC_NOW = "(now() AT TIME ZONE 'UTC')::timestamp(0)"
PROFILE = ROOT / "profiles" / "askproai.toml"

@dataclass
class App:
    admin: str  # superuser
    owner: str  # the application's tables' owner
    dml: str    # a role with DML on calls/appointments only

    def connect(self, dsn: str | None = None) -> psycopg.Connection:
        return psycopg.connect(dsn or self.owner, autocommit=True)


@pytest.fixture(scope="session")
def askpro_template(cluster: Cluster) -> Iterator[tuple[str, str, str]]:
    """The fixture loaded once (a few seconds) into a template database."""
    suffix = uuid.uuid4().hex[:8]
    owner, dml, template = f"askpro_{suffix}", f"askpro_dml_{suffix}", f"askpro_tpl_{suffix}"
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        for role in migrate.ROLES:
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                admin.execute(f"CREATE ROLE {role} NOLOGIN")
        admin.execute(f'CREATE ROLE "{owner}" LOGIN')
        admin.execute(f'CREATE ROLE "{dml}" LOGIN')
        admin.execute(f'CREATE DATABASE "{template}" OWNER "{owner}"')
    owner_dsn = as_role(cluster.dsn(template), owner)
    subprocess.run([str(bindir() / "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", owner_dsn,
                    "-f", str(FIXTURE / "schema.sql"), "-f", str(FIXTURE / "data.sql")],
                   check=True, capture_output=True, text=True)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        # The application's runtime role: DML, nothing else.
        conn.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{dml}"')
        conn.execute(f'GRANT INSERT, UPDATE, DELETE ON calls, appointments TO "{dml}"')
        conn.execute(f'GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO "{dml}"')
    yield template, owner, dml
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
        admin.execute(f'DROP ROLE "{dml}", "{owner}"')


@pytest.fixture
def askpro(cluster: Cluster, askpro_template: tuple[str, str, str],
           request: pytest.FixtureRequest) -> Iterator[App]:
    """A clone of the loaded fixture; the database's TimeZone is the test's
    parameter (UTC when not parametrized)."""
    template, owner, dml = askpro_template
    name = f"askpro_{uuid.uuid4().hex[:12]}"
    zone = getattr(request, "param", "UTC")
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}" OWNER "{owner}"')
        admin.execute(f"ALTER DATABASE \"{name}\" SET timezone = '{zone}'")
    dsn = cluster.dsn(name)
    yield App(dsn, as_role(dsn, owner), as_role(dsn, dml))
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def catalog_and_data(dsn: str) -> tuple[str, list[tuple[str, str]]]:
    schema = subprocess.run([str(bindir() / "pg_dump"), "--schema-only", "-d", dsn],
                            check=True, capture_output=True, text=True).stdout
    schema = "\n".join(line for line in schema.splitlines()
                       if not line.startswith(("-- Dumped", "\\restrict", "\\unrestrict")))
    with psycopg.connect(dsn) as conn:
        data = conn.execute("""
            SELECT 'calls', md5(string_agg(c::text, E'\\n' ORDER BY c.id)) FROM calls c
            UNION ALL
            SELECT 'appointments', md5(string_agg(a::text, E'\\n' ORDER BY a.id))
              FROM appointments a""").fetchall()
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1")]
    return schema + "\n" + ",".join(schemas), data


def test_without_a_profile_each_difference_is_one_line_and_nothing_is_left(askpro: App,
                                                                           run_cli) -> None:
    before = catalog_and_data(askpro.admin)
    dry = run_cli("migrate", "--dry-run", "--dsn", askpro.owner)
    assert dry.code == 2 and "Traceback" not in dry.err, dry
    errors = [line for line in dry.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3, dry.err
    for key in ("[calls] appointment_links", "set link_status.cancelled",
                "set session_outcome.creation_failed"):
        assert sum(key in line for line in errors) == 1, (key, dry.err)
    assert "calls_appointment_link_status_check does not allow 'cancelled'" in dry.err
    # Not refused (today's installs rely on it), but said: the column the
    # guard would add NOT NULL, and the key that avoids it.
    assert any(line.startswith("note: ") and "[calls] call_id" in line
               for line in dry.err.splitlines()), dry.err

    wet = run_cli("migrate", "--dsn", askpro.owner)
    assert wet.code == 2 and wet.err == dry.err
    assert catalog_and_data(askpro.admin) == before, "a refused migrate left something behind"


def test_a_profile_with_a_bad_value_is_refused_before_anything_runs(tmp_path: Path,
                                                                    run_cli) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('time_zone = 3\nfoo = 1\n[calls]\nappointment_links = "appointment_id"\n'
                   '[link_status]\ncancelled = "unlinked"\n')
    result = run_cli("migrate", "--dsn", "host=127.0.0.1 port=1 dbname=x", "--profile", str(bad))
    assert result.code == 2 and "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 4, lines
    assert all(line.startswith(f"error: profile {bad}: ") for line in lines)
    joined = "\n".join(lines)
    for part in ("unknown key foo", "time_zone: Input should be a valid string",
                 "calls.appointment_links: Input should be a valid list",
                 "unlinked and cancelled are both 'unlinked'"):
        assert part in joined, joined
    assert "cannot connect" not in joined  # validated before connecting


def test_with_the_profile_a_dry_run_prints_the_backfill_and_changes_nothing(askpro: App,
                                                                           run_cli) -> None:
    before = catalog_and_data(askpro.admin)
    dry = run_cli("migrate", "--dry-run", "--dsn", askpro.owner, "--profile", str(PROFILE))
    assert dry.code == 0, dry
    assert "would store adoption profile askproai" in dry.out
    assert "would back-fill existing rows to G1-G7 (rows per column)" in dry.out
    rows = dict(line.split("\t") for line in dry.out.splitlines() if line.startswith("calls."))
    assert rows["calls.direction"] == "322" and rows["calls.appointment_link_status"] == "200"
    assert catalog_and_data(askpro.admin) == before, "the dry run left something behind"


def alerts(conn: psycopg.Connection, alert_type: str | None = None) -> int:
    return conn.execute("SELECT count(*) FROM consistency.alerts WHERE %(t)s::text IS NULL "
                        "OR alert_type = %(t)s", {"t": alert_type}).fetchone()[0]


def no_violations(conn: psycopg.Connection) -> None:
    assert conn.execute("SELECT * FROM consistency.violations()").fetchall() == []


def check(run_cli, dsn: str, window: str) -> dict[str, dict[str, int]]:
    result = run_cli("check", "--dsn", dsn, "--window", window, "--json")
    assert result.code in (0, 1), result
    report = json.loads(result.out)
    assert report["failed"] == 0, report
    return {r["rule"]: r for r in report["rules"]}


def index_signatures(conn: psycopg.Connection) -> dict[str, tuple[str, str]]:
    return {name: (table, sig) for name, table, sig in conn.execute("""
        SELECT c.relname, i.indrelid::regclass::text, consistency._index_signature(i.indexrelid)
          FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
         WHERE i.indrelid IN ('public.calls'::regclass, 'public.appointments'::regclass)""")}


@pytest.mark.parametrize("askpro", ["UTC", "Europe/Berlin"], indirect=True)
def test_install_then_the_application_writes_and_the_monitor_checks(askpro: App,
                                                                    run_cli) -> None:
    with askpro.connect(askpro.admin) as admin:
        indexes_before = {r[0] for r in admin.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid IN "
            "('calls'::regclass, 'appointments'::regclass)")}

    done = run_cli("migrate", "--dsn", askpro.owner, "--profile", str(PROFILE))
    assert done.code == 0, done
    status = run_cli("migrate", "status", "--dsn", askpro.owner)
    assert status.code == 0 and "adoption profile: askproai" in status.out, status
    assert "nothing to do" in run_cli("migrate", "--dsn", askpro.owner).out

    with askpro.connect() as conn:
        no_violations(conn)
        # The back-fill: one audit row per kind of change, one summary alert.
        kinds = conn.execute("""
            SELECT target_id, after ->> 'rule', after ->> 'value', (after ->> 'rows')::int,
                   jsonb_array_length(after -> 'call_ids')
              FROM consistency.audit_log WHERE action = 'adoption.backfill'""").fetchall()
        assert all(rows == ids for _, _, _, rows, ids in kinds)
        by_kind = {(column, rule, value): rows for column, rule, value, rows, _ in kinds}
        assert by_kind[("appointment_link_status", "G3", "not_applicable")] > 0
        assert by_kind[("appointment_link_status", "G4", "pending_creation")] > 0
        assert by_kind[("session_outcome", "G5", "appointment_booked")] > 0
        assert by_kind[("direction", "G6", "inbound")] == 322
        assert alerts(conn, "adoption_backfill") == 1 and alerts(conn) == 1

        # Indexes: only those without an equivalent among the application's.
        after = index_signatures(conn)
        added = set(after) - indexes_before
        old = {after[name] for name in indexes_before}
        assert added and all(after[name] not in old for name in added), added
        assert {"calls_created_at_idx", "calls_appointment_made_created_at_idx",
                "appointments_call_id_idx"}.isdisjoint(added)

    # The first whole-table check finds nothing the install left; a second
    # raises no new alert.
    first = check(run_cli, askpro.owner, "100000h")
    for rule in ("session_outcome_mismatch", "inconsistent_link_status", "missing_direction"):
        assert first[rule]["found"] == 0, first
    assert first["orphaned_appointment"]["found"] > 0
    with askpro.connect() as conn:
        assert conn.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0] == 1
        raised = alerts(conn)
    check(run_cli, askpro.owner, "100000h")
    with askpro.connect() as conn:
        assert alerts(conn) == raised
        no_violations(conn)

    for role, dsn in (("owner", askpro.owner), ("dml", askpro.dml)):
        application_writes(askpro, dsn, role, run_cli)

    # The day's report counts today's calls, written in naive UTC, in the
    # session's day (both clones' TimeZones): the ten written above, and those
    # of the fixture that fall on today so far (few just after midnight).
    report = run_cli("report", "--dsn", askpro.owner, "--json")
    assert report.code == 0, report
    with askpro.connect() as conn:
        today = conn.execute(
            "SELECT count(*) FROM calls"
            " WHERE created_at >= current_date::timestamptz AT TIME ZONE 'UTC'"
            "   AND created_at < (current_date + 1)::timestamptz AT TIME ZONE 'UTC'").fetchone()[0]
    assert json.loads(report.out)["totals"]["calls"] == today >= 10

    # A scrape counts the last 24 hours of the application's naive UTC
    # created_at, whatever the session's TimeZone.
    with askpro.connect() as conn:
        day = conn.execute("SELECT (consistency.metrics() -> 'day' ->> 'calls')::int").fetchone()[0]
        expected = conn.execute(
            "SELECT count(*) FROM calls WHERE created_at >= "
            "(consistency.now() - interval '24 hours') AT TIME ZONE 'UTC'").fetchone()[0]
        assert day == expected > 0
        assert conn.execute("SELECT consistency.status(24) ? 'check_runs'").fetchone()[0]

    # plpgsql_check on the functions as rendered for this application.
    with askpro.connect(askpro.admin) as admin:
        admin.execute("CREATE SCHEMA testing")
        admin.execute("CREATE EXTENSION plpgsql_check SCHEMA testing")
        problems = [f"{fn}: {msg}" for fn, level, msg in admin.execute(LINT) if level == "error"]
    assert not problems, problems


def application_writes(app: App, dsn: str, role: str, run_cli) -> None:
    """The application's own write shapes, each followed by violations() = 0."""
    # violations() and the alerts are the owner's to read; the writes are the role's.
    with app.connect(dsn) as conn, app.connect(app.owner) as guard:
        def call(outcome: str | None = "appointment_booked", **extra: object) -> int:
            # Call::create: retell_call_id, no external_call_id, naive UTC times.
            columns = {"retell_call_id": f"call_{role}_{uuid.uuid4().hex}",
                       "external_id": f"ext_{uuid.uuid4().hex}", "company_id": 1,
                       "from_number": "+4917000000", "to_number": "+493012341",
                       "direction": "inbound", "status": "ongoing", "call_status": "ongoing",
                       "session_outcome": outcome, **extra}
            names = ", ".join(columns)
            marks = ", ".join(["%s"] * len(columns))
            return conn.execute(
                f"INSERT INTO calls ({names}, created_at, updated_at) VALUES ({marks}, "
                f"{NAIVE_UTC_NOW}, {NAIVE_UTC_NOW}) RETURNING id",
                list(columns.values())).fetchone()[0]

        def appointment(call_id: int | None = None) -> int:
            return conn.execute("""
                INSERT INTO appointments (company_id, customer_id, call_id, starts_at, ends_at,
                                          status, source, calcom_v2_booking_id, created_at,
                                          updated_at)
                VALUES (1, 3, %s, (now() AT TIME ZONE 'UTC')::timestamp(0) + interval '1 day',
                        (now() AT TIME ZONE 'UTC')::timestamp(0) + interval '1 day 30 min',
                        'confirmed', 'retell_webhook', %s,
                        (now() AT TIME ZONE 'UTC')::timestamp(0),
                        (now() AT TIME ZONE 'UTC')::timestamp(0))
                RETURNING id""", [call_id, f"bk_{uuid.uuid4().hex}"]).fetchone()[0]

        def state(call_id: int) -> tuple[str, bool, bool]:
            return conn.execute("SELECT appointment_link_status, appointment_made, booking_failed "
                                "FROM calls WHERE id = %s", [call_id]).fetchone()

        # A booking: the call first (a booking in flight), the appointment
        # without call_id, then the call pointed at it.
        booked = call()
        assert state(booked) == ("pending_creation", False, False)
        linked_by_pointer = appointment()
        conn.execute("UPDATE calls SET appointment_id = %s, updated_at = now() WHERE id = %s",
                     [linked_by_pointer, booked])
        assert state(booked) == ("linked", True, False)
        assert guard.execute("SELECT ok, reason FROM consistency.validate_booking(%s)",
                             [booked]).fetchone() == (True, None)
        converted = call()
        conn.execute("UPDATE calls SET converted_to_appointment = true, "
                     "converted_appointment_id = %s WHERE id = %s", [appointment(), converted])
        assert state(converted)[:2] == ("linked", True)
        no_violations(guard)

        # The monitor sees these calls (naive UTC) in a one-hour window, and
        # neither rolls back the pointer-linked bookings nor a booking in
        # flight a few seconds old.
        fresh = call()
        undirected = call(outcome="information_only", direction=None)
        for window in ("1h", "2h", "100000h"):
            check(run_cli, app.owner, window)
        assert state(booked) == ("linked", True, False)
        assert state(converted) == ("linked", True, False)
        assert state(fresh) == ("pending_creation", False, False)
        assert conn.execute("SELECT direction FROM calls WHERE id = %s",
                            [undirected]).fetchone()[0] == "inbound"

        # Losing the last appointment: cancel, restore, soft delete, force delete.
        unlinked_before = alerts(guard, "appointment_unlinked")
        conn.execute("UPDATE appointments SET status = 'cancelled' WHERE id = %s",
                     [linked_by_pointer])
        assert state(booked)[:2] == ("not_applicable", False)
        conn.execute("UPDATE appointments SET status = 'confirmed' WHERE id = %s",
                     [linked_by_pointer])
        assert state(booked)[:2] == ("linked", True)
        conn.execute("UPDATE appointments SET deleted_at = now() WHERE id = %s",
                     [linked_by_pointer])
        assert state(booked)[:2] == ("not_applicable", False)
        conn.execute("UPDATE appointments SET deleted_at = NULL WHERE id = %s",
                     [linked_by_pointer])
        assert state(booked)[:2] == ("linked", True)
        conn.execute("DELETE FROM appointments WHERE id = %s", [linked_by_pointer])
        assert state(booked)[:2] == ("not_applicable", False)
        assert conn.execute("SELECT appointment_id FROM calls WHERE id = %s",
                            [booked]).fetchone()[0] is None
        assert alerts(guard, "appointment_unlinked") > unlinked_before
        no_violations(guard)

        # The same through appointments.call_id, and an upsert of the linked call.
        direct = call()
        appointment(direct)
        assert state(direct)[:2] == ("linked", True)
        retell_id = conn.execute("SELECT retell_call_id FROM calls WHERE id = %s",
                                 [direct]).fetchone()[0]
        mismatches = alerts(guard, "appointment_made_mismatch")
        conn.execute("""
            INSERT INTO calls (retell_call_id, company_id, appointment_made, created_at)
            VALUES (%s, 1, true, (now() AT TIME ZONE 'UTC')::timestamp(0))
            ON CONFLICT (retell_call_id) DO UPDATE SET appointment_made = excluded.appointment_made,
                                                      updated_at = excluded.created_at""",
                     [retell_id])
        assert alerts(guard, "appointment_made_mismatch") == mismatches
        assert state(direct)[:2] == ("linked", True)

        # A voice-agent appointment nobody links: an orphan the monitor finds.
        orphan = appointment()
        no_violations(guard)
    report = check(run_cli, app.owner, "1h")
    assert report["orphaned_appointment"]["found"] >= 1
    with app.connect() as conn:
        assert conn.execute("SELECT count(*) FROM consistency.alerts WHERE alert_type = "
                            "'orphaned_appointment' AND entity_id = %s",
                            [orphan]).fetchone()[0] == 1
        no_violations(conn)


def test_whole_table_checks_include_calls_without_created_at(askpro: App, run_cli) -> None:
    assert run_cli("migrate", "--dsn", askpro.owner, "--profile", str(PROFILE)).code == 0
    with askpro.connect(askpro.admin) as admin:
        # Written behind the guard's back (as a restore or a disabled trigger would).
        admin.execute("SET session_replication_role = replica")
        call = admin.execute("INSERT INTO calls (retell_call_id, company_id, direction) "
                             "VALUES ('no-time', 1, NULL) RETURNING id").fetchone()[0]
    assert check(run_cli, askpro.owner, "1h")["missing_direction"]["found"] == 0
    assert check(run_cli, askpro.owner, "100000h")["missing_direction"]["found"] == 1
    with askpro.connect() as conn:
        assert conn.execute("SELECT direction FROM calls WHERE id = %s",
                            [call]).fetchone()[0] == "inbound"
        assert conn.execute("SELECT * FROM consistency.check_call(%s)", [call]).fetchall() == []


def test_a_pointer_and_a_cancel_racing_end_right_in_both_orders(askpro: App, run_cli) -> None:
    assert run_cli("migrate", "--dsn", askpro.owner, "--profile", str(PROFILE)).code == 0
    with askpro.connect() as setup:
        calls = [r[0] for r in setup.execute(
            "SELECT id FROM calls WHERE appointment_id IS NULL AND appointment_link_status "
            "<> 'linked' ORDER BY id LIMIT 2")]
        targets = [setup.execute(
            "INSERT INTO appointments (company_id, status, source, created_at) "
            "VALUES (1, 'confirmed', 'calcom', now()) RETURNING id").fetchone()[0]
            for _ in calls]

    def race(first: str, second: str) -> None:
        with askpro.connect() as one, askpro.connect() as two:
            one.execute("BEGIN")
            one.execute(first)
            blocked = threading.Thread(target=lambda: two.execute(second))
            blocked.start()
            time.sleep(0.3)
            assert blocked.is_alive(), "the second writer should wait for the first"
            one.execute("COMMIT")
            blocked.join(timeout=30)

    cancel = "UPDATE appointments SET status = 'cancelled' WHERE id = {a}"
    point = "UPDATE calls SET appointment_id = {a} WHERE id = {c}"
    race(cancel.format(a=targets[0]), point.format(a=targets[0], c=calls[0]))
    race(point.format(a=targets[1], c=calls[1]), cancel.format(a=targets[1]))
    with askpro.connect() as conn:
        no_violations(conn)
        made = conn.execute("SELECT bool_or(appointment_made) FROM calls WHERE id = ANY (%s)",
                            [calls]).fetchone()[0]
    assert made is False


def test_a_changed_profile_is_rendered_again_and_stored(askpro: App, run_cli,
                                                       tmp_path: Path) -> None:
    assert run_cli("migrate", "--dsn", askpro.owner, "--profile", str(PROFILE)).code == 0
    before = check(run_cli, askpro.owner, "100000h")["orphaned_appointment"]["found"]
    wider = tmp_path / "askproai-phone.toml"
    wider.write_text(PROFILE.read_text().replace(
        'voice_agent_sources = ["retell_webhook", "retell_phone"]',
        'voice_agent_sources = ["retell_webhook", "retell_phone", "phone"]'))
    again = run_cli("migrate", "--dsn", askpro.owner, "--profile", str(wider))
    assert again.code == 0 and "stored adoption profile askproai" in again.out, again
    assert "functions/monitor.sql" in again.out and "back-filled" not in again.out
    status = run_cli("migrate", "status", "--dsn", askpro.owner)
    assert status.code == 0 and f"adoption profile: askproai (from {wider}" in status.out
    # The orphan rule now takes the appointments whose source is 'phone'.
    assert check(run_cli, askpro.owner, "100000h")["orphaned_appointment"]["found"] > before
    assert "nothing to do" in run_cli("migrate", "--dsn", askpro.owner,
                                      "--profile", str(wider)).out


def test_a_profile_naming_columns_of_a_new_database_is_refused(empty_db: str, run_cli) -> None:
    dry = run_cli("migrate", "--dry-run", "--dsn", empty_db, "--profile", str(PROFILE))
    assert dry.code == 2, dry
    errors = dry.err.splitlines()
    assert "error: calls.retell_call_id does not exist (calls does not exist yet: the guard " \
           "creates it): correct [calls] call_id" in errors
    assert sum("correct [calls] appointment_links" in line for line in errors) == 2
    with psycopg.connect(empty_db) as conn:
        assert conn.execute("SELECT to_regnamespace('consistency')").fetchone()[0] is None


def test_enums_domains_and_triggers_are_recognised_by_definition(empty_db: str,
                                                                      run_cli) -> None:
    with psycopg.connect(empty_db) as conn:
        conn.execute("""
            CREATE TYPE link_state AS ENUM ('unlinked', 'pending_creation', 'linked',
                                            'creation_failed', 'not_applicable');
            CREATE DOMAIN short_text AS varchar(12) CHECK (VALUE <> 'inbound');
            CREATE TABLE calls (id bigserial PRIMARY KEY, external_call_id text NOT NULL,
                                appointment_link_status link_state NOT NULL DEFAULT 'unlinked',
                                direction short_text, session_outcome varchar(16),
                                created_at timestamptz NOT NULL DEFAULT now());
            CREATE TABLE appointments (id bigserial PRIMARY KEY, call_id bigint,
                                       status text NOT NULL DEFAULT 'scheduled',
                                       created_at timestamptz NOT NULL DEFAULT now(),
                                       deleted_at timestamptz);
            -- The application's own trigger under a name the guard uses.
            CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS 'BEGIN RETURN NEW; END';
            CREATE TRIGGER calls_link_guard BEFORE UPDATE ON calls
                FOR EACH ROW EXECUTE FUNCTION touch()""")
    dry = run_cli("migrate", "--dry-run", "--dsn", empty_db)
    assert dry.code == 2, dry
    errors = dry.err.splitlines()
    assert len(errors) == 4, errors
    assert "error: calls has a trigger calls_link_guard of its own: the guard's trigger of that " \
           "name would replace it; rename the application's trigger (ALTER TRIGGER " \
           "calls_link_guard ON calls RENAME TO ...)" in errors
    assert any("its type public.link_state does not allow 'cancelled'" in e
               and "set link_status.cancelled" in e for e in errors), errors
    assert any("calls.direction: its type public.short_text does not allow 'inbound'" in e
               and "set direction.inbound" in e for e in errors), errors
    # varchar(16): 'creation_failed' (15 characters) fits, 'appointment_booked' does not.
    assert any("calls.session_outcome: character varying(16) is too short for "
               "'appointment_booked'" in e and "set session_outcome.appointment_booked" in e
               for e in errors), errors
