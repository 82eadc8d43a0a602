"""Installing is no path to more rights: the guard is owned by the role that
owns calls and appointments, a schema another role prepared is refused, and
`migrate --dry-run` / `migrate status` write nothing at all. (Roles and
databases of their own come from the ``sandbox`` fixture.)"""

from __future__ import annotations

import psycopg
import pytest
from conftest import as_role

from orchestrator import migrate
from orchestrator.errors import GuardError


def catalog_state(dsn: str) -> tuple[list[str], int]:
    with psycopg.connect(dsn) as conn:
        schemas = [r[0] for r in conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1")]
        relations = conn.execute("SELECT count(*) FROM pg_class").fetchone()[0]
    return schemas, relations


def test_dry_run_and_status_write_nothing_and_a_squatted_schema_is_refused(sandbox,
                                                                             run_cli) -> None:
    squat = sandbox.role("squat")
    admin_dsn = sandbox.database(owner=squat)
    squat_dsn = as_role(admin_dsn, squat)
    before = catalog_state(admin_dsn)

    dry = run_cli("migrate", "--dry-run", "--dsn", squat_dsn)
    assert dry.code == 0 and "would apply" in dry.out, dry
    status = run_cli("migrate", "status", "--dsn", squat_dsn)
    assert status.code == 1 and "pending" in status.out, status
    assert catalog_state(admin_dsn) == before, "a dry run or status left something behind"

    # The owner of the database takes the schema's name first; the DBA installs.
    with psycopg.connect(squat_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA consistency")
    refused = run_cli("migrate", "--dsn", admin_dsn)
    assert refused.code == 2 and refused.err.count("\n") == 1, refused
    assert f"schema consistency is owned by {squat}" in refused.err
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.calls')").fetchone()[0] is None
        assert conn.execute("SELECT count(*) FROM pg_class WHERE relnamespace = "
                            "'consistency'::regnamespace").fetchone()[0] == 0
    assert run_cli("migrate", "status", "--dsn", admin_dsn).code == 2


def test_a_schema_holding_what_the_guard_does_not_know_is_refused(sandbox) -> None:
    other = sandbox.role("other")
    fresh = sandbox.database()
    with psycopg.connect(fresh, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA consistency")
        conn.execute("CREATE TABLE consistency.someone_elses (x int)")
    with pytest.raises(GuardError, match="exists and holds objects that are not the guard's: "
                                         r"relation consistency.someone_elses \(owner postgres\)"):
        migrate.migrate(fresh, env={})

    installed = sandbox.database()
    migrate.migrate(installed, env={})
    with psycopg.connect(installed, autocommit=True) as conn:
        conn.execute("CREATE FUNCTION consistency._check_alert(text, integer) RETURNS void "
                     "LANGUAGE sql AS ''")
        conn.execute(f'ALTER FUNCTION consistency._check_alert(text, integer) OWNER TO "{other}"')
    with pytest.raises(GuardError, match=r"holds objects of another owner: routine "
                                         r"consistency._check_alert\(text, integer\) "
                                         rf"\(owner {other}\)"):
        migrate.migrate(installed, env={})


def test_schema_create_is_revoked_from_everyone_but_the_owner(sandbox) -> None:
    other = sandbox.role("other")
    dsn = sandbox.database()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA consistency")
        conn.execute(f'GRANT CREATE ON SCHEMA consistency TO PUBLIC, "{other}"')
    migrate.migrate(dsn, env={})
    with psycopg.connect(dsn) as conn:
        may_create = conn.execute(
            "SELECT has_schema_privilege(%s, 'consistency', 'CREATE'),"
            "       has_schema_privilege('consistency_app', 'consistency', 'CREATE')",
            [other]).fetchone()
    assert may_create == (False, False)


APP_TABLES = """
CREATE TABLE public.calls (id bigserial PRIMARY KEY, external_call_id text,
                           session_outcome text, created_at timestamptz DEFAULT now());
CREATE TABLE public.appointments (id bigserial PRIMARY KEY,
                                  call_id bigint REFERENCES public.calls (id),
                                  status text NOT NULL DEFAULT 'scheduled',
                                  created_at timestamptz DEFAULT now(), deleted_at timestamptz);
"""
# The table owner's own trigger: it runs as whoever updates calls (added once
# the guard is in: migrate run by a superuser refuses to fire such a trigger,
# tests/py/integration/test_owner_code.py).
NOTE_UPDATER = """
CREATE TABLE public.who_updated (role name, superuser boolean);
CREATE FUNCTION public.note_updater() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO public.who_updated
    SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user;
    RETURN NEW;
END $$;
CREATE TRIGGER note_updater BEFORE UPDATE ON public.calls
    FOR EACH ROW EXECUTE FUNCTION public.note_updater();
GRANT INSERT ON public.who_updated TO PUBLIC;
"""


def test_the_guard_is_owned_by_the_owner_of_the_tables(sandbox, run_cli, monkeypatch) -> None:
    owner = sandbox.role("app_owner")  # neither superuser nor CREATEROLE
    stranger = sandbox.role("dba2")
    admin_dsn = sandbox.database(owner=owner)
    owner_dsn = as_role(admin_dsn, owner)
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(APP_TABLES)

    refused = run_cli("migrate", "--dsn", admin_dsn)
    assert refused.code == 2 and refused.err.count("\n") == 1, refused
    assert f"must be owned by {owner}" in refused.err and f"--owner {owner}" in refused.err
    wrong = run_cli("migrate", "--dsn", admin_dsn, "--owner", stranger)
    assert wrong.code == 2 and f"public.calls is owned by {owner}" in wrong.err, wrong
    cannot = run_cli("migrate", "--dsn", as_role(admin_dsn, stranger), "--owner", owner)
    assert cannot.code == 2 and f"cannot SET ROLE {owner}" in cannot.err, cannot
    with psycopg.connect(admin_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('consistency')").fetchone()[0] is None

    done = run_cli("migrate", "--dsn", admin_dsn, "--owner", owner)
    assert done.code == 0, done
    with psycopg.connect(owner_dsn, autocommit=True) as conn:
        conn.execute(NOTE_UPDATER)
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        owners = conn.execute(
            "SELECT DISTINCT pg_get_userbyid(proowner) FROM pg_proc"
            " WHERE pronamespace = 'consistency'::regnamespace"
            " UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace"
            " WHERE nspname = 'consistency'"
            " UNION SELECT DISTINCT pg_get_userbyid(relowner) FROM pg_class"
            " WHERE relnamespace = 'consistency'::regnamespace").fetchall()
        assert owners == [(owner,)]
        # Any writer's appointment makes the guard update calls: as the owner
        # of the tables, never as the superuser who ran migrate.
        conn.execute("TRUNCATE public.who_updated")
        conn.execute("SET ROLE consistency_app")
        call = conn.execute("INSERT INTO public.calls (external_call_id) VALUES ('c1') "
                            "RETURNING id").fetchone()[0]
        conn.execute("INSERT INTO public.appointments (call_id) VALUES (%s)", [call])
        conn.execute("RESET ROLE")
        updaters = conn.execute("SELECT DISTINCT role::text, superuser FROM public.who_updated"
                                ).fetchall()
        conn.execute("DROP TRIGGER note_updater ON public.calls")
    assert updaters == [(owner, False)]

    # The owner upgrades without any help.
    assert "nothing to do" in run_cli("migrate", "--dsn", owner_dsn).out

    # Roles the owner may not create are refused up front, with what to run.
    monkeypatch.setattr(migrate, "ROLES", (*migrate.ROLES, "consistency_not_there"))
    with psycopg.connect(owner_dsn) as conn, pytest.raises(
            GuardError, match=r"roles consistency_not_there do not exist and .* may not create "
                              r"roles: .*CREATE ROLE consistency_not_there NOLOGIN;"):
        migrate.check_ownership(conn, None, installing=True)
    # A superuser installing for the owner creates them itself, inside the
    # migrate transaction (which a dry run rolls back).
    def exists() -> bool:
        with psycopg.connect(admin_dsn) as conn:
            return conn.execute("SELECT count(*) FROM pg_roles WHERE rolname = "
                                "'consistency_not_there'").fetchone()[0] == 1

    migrate.migrate(admin_dsn, owner=owner, dry_run=True, env={})
    assert not exists()
    sandbox.roles.append("consistency_not_there")
    migrate.migrate(admin_dsn, owner=owner, env={})
    assert exists()


def test_a_role_granted_update_on_calls_later_never_gets_the_counter(sandbox, dsn,
                                                                      run_cli) -> None:
    writer = sandbox.role("writer")
    sandbox.borrow(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f'GRANT SELECT, INSERT, UPDATE, DELETE ON calls, appointments TO "{writer}"')
        call = conn.execute("INSERT INTO calls (external_call_id) VALUES ('w1') RETURNING id"
                            ).fetchone()[0]
        conn.execute("INSERT INTO appointments (call_id) VALUES (%s)", [call])
    status = run_cli("migrate", "status", "--dsn", dsn)
    assert status.code == 1 and "changed outside migrate" in status.out, status
    assert "privileges.sql" in migrate.migrate(dsn, env={}).definitions_applied

    with psycopg.connect(as_role(dsn, writer), autocommit=True) as conn:
        conn.execute("CREATE TEMP TABLE forge (call_id bigint)")
        conn.execute("""CREATE FUNCTION pg_temp.forge() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                            UPDATE public.calls SET active_appointment_count = 7
                             WHERE id = NEW.call_id;
                            RETURN NULL;
                        END $$""")
        conn.execute("CREATE TRIGGER forge AFTER INSERT ON pg_temp.forge "
                     "FOR EACH ROW EXECUTE FUNCTION pg_temp.forge()")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("INSERT INTO pg_temp.forge VALUES (%s)", [call])
        conn.execute("UPDATE calls SET session_outcome = 'information_only' WHERE id = %s",
                     [call])  # every other column stays writable
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT active_appointment_count FROM calls WHERE id = %s",
                            [call]).fetchone()[0] == 1


def test_a_failing_dry_run_fails_where_migrate_would_and_leaves_nothing(empty_db: str,
                                                                       monkeypatch) -> None:
    before = catalog_state(empty_db)
    real = migrate.repeatable_definitions
    monkeypatch.setattr(migrate, "repeatable_definitions", lambda root=None: [
        *real(root), migrate.Definition("functions/zz_broken.sql", "SELECT 1/0;")])
    with pytest.raises(GuardError, match=r"zz_broken\.sql: division by zero"):
        migrate.migrate(empty_db, dry_run=True, env={})
    assert catalog_state(empty_db) == before


def test_migrate_names_who_else_the_guard_roles_reach(sandbox, run_cli) -> None:
    """Roles are cluster-wide: a login granted consistency_app for one
    database has its rights in every database with the guard. migrate says
    who they are."""
    member = sandbox.role("app_login")
    with psycopg.connect(sandbox.admin_dsn, autocommit=True) as admin:
        admin.execute(f'GRANT consistency_app TO "{member}"')
    done = run_cli("migrate", "--dsn", sandbox.database())
    assert done.code == 0, done
    notes = [line for line in done.err.splitlines()
             if line.startswith("note: role consistency_app is cluster-wide")]
    assert len(notes) == 1 and f"member {member}" in notes[0], done.err
    assert "REVOKE CONNECT ON DATABASE ... FROM PUBLIC" in notes[0]
