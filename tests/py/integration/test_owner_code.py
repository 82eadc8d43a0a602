"""A session that is not the guard's owner (a superuser here) never runs code
the owner planted with its own rights (orchestrator/owner_code.py).

Each test gives the guard to a role of its own, neither superuser nor
CREATEROLE, lets that role plant something, runs what a DBA would run, and
checks that the owner did not become a superuser. The planted code RESETs
the role first: a session that only did SET ROLE to the owner would not
stop it."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg
import pytest
from conftest import Sandbox, as_role

from orchestrator import db, migrate, owner_code
from orchestrator.errors import GuardError

# Makes the owner a superuser when it runs with a superuser's rights (after
# undoing any SET ROLE of the session, which PostgreSQL allows anywhere but
# inside a SECURITY DEFINER function).
ESCALATE = """
CREATE FUNCTION public.escalate() RETURNS boolean LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    BEGIN
        RESET ROLE;
    EXCEPTION WHEN insufficient_privilege THEN NULL;  -- inside SECURITY DEFINER
    END;
    IF (SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user) THEN
        EXECUTE 'ALTER ROLE {owner} SUPERUSER';
    END IF;
    RETURN true;
END $$;
CREATE FUNCTION public.escalate_trigger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM public.escalate();
    RETURN NULL;
END $$;
-- The planner evaluates an immutable call with constant arguments while it
-- plans a query on the table of such an index.
CREATE FUNCTION public.escalate_immutable(text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
BEGIN
    PERFORM public.escalate();
    RETURN $1;
END $$;
"""


@dataclass
class Guard:
    owner: str
    admin_dsn: str  # a superuser's
    owner_dsn: str

    def plant(self, sql: str) -> None:
        with psycopg.connect(self.owner_dsn, autocommit=True) as conn:
            conn.execute(sql)

    def owner_is_superuser(self) -> bool:
        with psycopg.connect(self.admin_dsn) as conn:
            return conn.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s",
                                [self.owner]).fetchone()[0]


@pytest.fixture
def guard(sandbox: Sandbox) -> Guard:
    """The guard installed by its owner, app_owner_*, in a database it owns."""
    owner = sandbox.role("app_owner")
    admin_dsn = sandbox.database(owner=owner)
    installed = Guard(owner, admin_dsn, as_role(admin_dsn, owner))
    migrate.migrate(installed.owner_dsn, env={})
    installed.plant(ESCALATE.replace("{owner}", owner))
    return installed


def refused(result, *what: str) -> None:  # type: ignore[no-untyped-def]
    assert result.code == 2 and result.err.count("\n") == 1, result
    assert "refusing to run code that app_owner_" in result.err, result
    for text in what:
        assert text in result.err, result


def test_a_superuser_runs_the_cli_as_usual_on_an_untouched_guard(guard, run_cli) -> None:
    assert run_cli("migrate", "status", "--dsn", guard.admin_dsn).code == 0
    assert run_cli("migrate", "--reapply", "--owner", guard.owner,
                   "--dsn", guard.admin_dsn).code == 0
    assert run_cli("config", "set", "monitoring.recent_hours", "2",
                   "--dsn", guard.admin_dsn).code == 0
    assert "monitoring.recent_hours\t2" in run_cli("config", "show", "--dsn",
                                                   guard.admin_dsn).out
    assert run_cli("check", "--dsn", guard.admin_dsn).code == 0
    assert run_cli("alerts", "list", "--dsn", guard.admin_dsn).code == 0
    assert "call 1 does not exist" in run_cli("validate", "1", "--dsn", guard.admin_dsn).err
    assert run_cli("report", "--dsn", guard.admin_dsn).code == 0
    # What a superuser's session did, it did as the owner (SET ROLE).
    with psycopg.connect(guard.admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0] == 1


def test_every_query_passes_the_check_on_the_guard_as_installed(dsn: str) -> None:
    """The check refuses what the owner changed, never the guard as migrate
    installs it: each named query but the bench's and the demo's (they run as
    the owner, in databases of their own) names only plain tables and
    routines that are SECURITY DEFINER or call nothing else."""
    check = owner_code.Guard("a_dba", "the_owner", restrict_views=False)
    with db.connect(dsn, autocommit=True, owner_code=owner_code.OFF) as conn:
        found = {}
        for name, text in db.queries().items():
            relations, routines, writes = owner_code.references(text)
            if name.startswith(("bench_", "demo_")) or not (relations or routines):
                continue
            found[name] = check.hazards(conn, relations=relations, routines=routines,
                                        writes=writes)
    assert len(found) > 20 and not any(found.values()), {k: v for k, v in found.items() if v}


def test_relay_and_up_run_as_the_owner_only(guard, run_cli) -> None:
    """They call the owner's functions for as long as they run, on connections
    of their own: a superuser's would run whatever the owner puts there."""
    for command in (["relay", "--once", "--sink", "stdout://"], ["up", "--sink", "stdout://"]):
        result = run_cli(*command, "--dsn", guard.admin_dsn)
        assert result.code == 2 and result.err.count("\n") == 1, result
        assert f"runs as the guard's owner {guard.owner}, not as postgres" in result.err, result
    assert run_cli("relay", "--once", "--sink", "stdout://", "--dsn", guard.owner_dsn).code == 0


def test_a_view_standing_in_for_a_guard_table_is_refused(guard, run_cli) -> None:
    guard.plant("""
        ALTER TABLE consistency.schema_definitions RENAME TO schema_definitions_t;
        CREATE VIEW consistency.schema_definitions AS
            SELECT * FROM consistency.schema_definitions_t WHERE public.escalate();
        ALTER TABLE consistency.settings RENAME TO settings_t;
        CREATE VIEW consistency.settings AS
            SELECT * FROM consistency.settings_t WHERE public.escalate();
    """)
    refused(run_cli("migrate", "status", "--dsn", guard.admin_dsn),
            "consistency.schema_definitions is a view")
    refused(run_cli("migrate", "--dry-run", "--owner", guard.owner, "--dsn", guard.admin_dsn),
            "consistency.schema_definitions is a view")
    refused(run_cli("config", "show", "--dsn", guard.admin_dsn), "consistency.settings is a view")
    assert not guard.owner_is_superuser()


def test_a_function_the_cli_calls_runs_with_the_owners_rights_only(guard, run_cli) -> None:
    # An invoker function (consistency.now(), which alerts list calls) is refused.
    guard.plant("""
        CREATE OR REPLACE FUNCTION consistency.now() RETURNS timestamptz
            LANGUAGE plpgsql VOLATILE AS $$
        BEGIN
            PERFORM public.escalate();
            RETURN pg_catalog.clock_timestamp();
        END $$;
    """)
    refused(run_cli("alerts", "list", "--dsn", guard.admin_dsn),
            "the call of consistency.now runs consistency.now() (not SECURITY DEFINER)")
    assert not guard.owner_is_superuser()
    # A SECURITY DEFINER one (set_setting) runs, as its owner: it cannot RESET ROLE.
    guard.plant("""
        CREATE OR REPLACE FUNCTION consistency.set_setting(
            p_key text, p_value jsonb, p_actor text DEFAULT 'system') RETURNS boolean
            LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            RETURN public.escalate();
        END $$;
    """)
    assert run_cli("config", "set", "monitoring.recent_hours", "2",
                   "--dsn", guard.admin_dsn).code == 0
    assert not guard.owner_is_superuser()


def test_an_index_expression_the_planner_would_evaluate_is_refused(guard, run_cli) -> None:
    guard.plant("CREATE INDEX settings_bait ON consistency.settings "
                "((key || public.escalate_immutable('x')))")
    refused(run_cli("config", "show", "--dsn", guard.admin_dsn),
            "index consistency.settings_bait runs public.escalate_immutable(text)")
    assert not guard.owner_is_superuser()


def test_a_deferred_trigger_queued_by_the_owners_code_never_fires(guard, run_cli) -> None:
    # set_setting stays SECURITY DEFINER, but leaves a trigger event that
    # COMMIT would fire with the caller's rights.
    guard.plant("""
        CREATE TABLE public.bait (x int);
        CREATE OR REPLACE FUNCTION consistency.set_setting(
            p_key text, p_value jsonb, p_actor text DEFAULT 'system') RETURNS boolean
            LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            CREATE CONSTRAINT TRIGGER bait_later AFTER INSERT ON public.bait
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
                EXECUTE FUNCTION public.escalate_trigger();
            INSERT INTO public.bait VALUES (1);
            RETURN true;
        END $$;
    """)
    refused(run_cli("config", "set", "monitoring.recent_hours", "2", "--dsn", guard.admin_dsn),
            "deferrable trigger bait_later on public.bait runs public.escalate_trigger()")
    assert not guard.owner_is_superuser()
    with psycopg.connect(guard.admin_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM public.bait").fetchone()[0] == 0
    # An autocommit session (review, validate, uninstall) is no different.
    with db.connect(guard.admin_dsn, autocommit=True) as conn, \
            pytest.raises(GuardError, match="deferrable trigger bait_later"):
        db.value(conn, "set_setting", key="monitoring.recent_hours", value="2", actor="t")
    assert not guard.owner_is_superuser()


def test_a_query_that_writes_a_table_fires_none_of_the_owners_triggers(guard) -> None:
    guard.plant("""
        CREATE FUNCTION public.on_write() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM public.escalate();
            RETURN NEW;
        END $$;
        CREATE TRIGGER on_write BEFORE INSERT OR UPDATE ON consistency.schema_definitions
            FOR EACH ROW EXECUTE FUNCTION public.on_write();
    """)
    with db.connect(guard.admin_dsn, autocommit=True) as conn, pytest.raises(
            GuardError, match="trigger on_write on consistency.schema_definitions runs "
                              r"public.on_write\(\) \(not SECURITY DEFINER\)"):
        db.execute(conn, "record_definition", path="x", sha256="y")
    assert not guard.owner_is_superuser()


def test_a_search_path_set_by_the_owners_code_does_not_outlive_the_call(guard) -> None:
    # serve calls metrics(), then pg_is_in_recovery() without a schema.
    guard.plant("""
        CREATE FUNCTION public.pg_is_in_recovery() RETURNS boolean LANGUAGE sql
            RETURN public.escalate();
        CREATE OR REPLACE FUNCTION consistency.metrics() RETURNS jsonb
            LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM pg_catalog.set_config('search_path', 'public, pg_catalog', false);
            PERFORM pg_catalog.set_config('default_transaction_read_only', 'off', false);
            RETURN '{}';
        END $$;
        GRANT EXECUTE ON FUNCTION consistency.metrics() TO consistency_monitor;
    """)
    with db.connect(guard.admin_dsn, autocommit=True) as conn:
        db.execute(conn, "serve_session")
        assert db.value(conn, "serve_metrics") == {}
        assert db.value(conn, "serve_ping") is False
    assert not guard.owner_is_superuser()


def test_migrate_for_the_owner_refuses_the_owners_own_invoker_triggers(guard, run_cli) -> None:
    guard.plant("""
        CREATE FUNCTION public.on_calls() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM public.escalate();
            RETURN NEW;
        END $$;
        CREATE TRIGGER on_calls BEFORE UPDATE ON public.calls
            FOR EACH ROW EXECUTE FUNCTION public.on_calls();
        CREATE FUNCTION consistency.format(text, integer) RETURNS text LANGUAGE sql
            RETURN public.escalate()::text;
    """)
    result = run_cli("migrate", "--reapply", "--owner", guard.owner, "--dsn", guard.admin_dsn)
    refused(result,
            "trigger on_calls on public.calls runs public.on_calls() (not SECURITY DEFINER)",
            "routine consistency.format(text,integer) is not one of the guard's")
    assert not guard.owner_is_superuser()
    # The owner's code is the owner's business when the owner runs migrate.
    assert run_cli("migrate", "--reapply", "--dsn", guard.owner_dsn).code == 0


def test_uninstall_drops_only_indexes_of_calls_and_appointments(guard, run_cli) -> None:
    with psycopg.connect(guard.admin_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.precious (id int)")
        conn.execute("CREATE INDEX precious_idx ON public.precious (id)")
    guard.plant("INSERT INTO consistency.installed_objects (kind, table_name, name) "
                "VALUES ('index', 'calls', 'precious_idx'), ('index', 'precious', 'precious_idx')")
    assert run_cli("uninstall", "--dsn", guard.admin_dsn).code == 0
    with psycopg.connect(guard.admin_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.precious_idx')").fetchone()[0]
