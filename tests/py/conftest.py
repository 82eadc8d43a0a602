"""Test harness: one throwaway cluster per run, one migrated template
database, a fresh clone of it for every test (pytest-postgresql noproc).

tests/py/unit/ holds the tests that need no database; tests/py/integration/
the others. The cluster starts only when an integration test is to run, and
a unit test that asks for a database fixture is refused at collection."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pytest_postgresql import factories

from orchestrator import migrate
from orchestrator.pgcluster import Cluster

# tests/py: the harness and the files tests read (catalog snapshot, lint, peers).
HARNESS = Path(__file__).resolve().parent
ROOT = HARNESS.parents[1]
CLUSTER = Cluster()


UNIT = Path(__file__).resolve().parent / "unit"
# Fixtures that reach the session's cluster.
DATABASE_FIXTURES = frozenset({"postgresql", "postgresql_noproc", "cluster", "conn", "dsn",
                               "connect", "empty_db", "empty_db_factory", "sandbox"})


def pytest_collection_finish(session: pytest.Session) -> None:
    unit = [item for item in session.items if UNIT in item.path.parents]
    for item in unit:
        used = DATABASE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if used:
            raise pytest.UsageError(f"{item.nodeid} is a unit test but uses "
                                    f"{', '.join(sorted(used))}: move it to tests/py/integration")
    if len(unit) < len(session.items) and not session.config.option.collectonly:
        CLUSTER.init()
        CLUSTER.start()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    CLUSTER.destroy()


def load_template(host: str, port: int, user: str, dbname: str, **_: Any) -> None:
    """Migrate the template once; pgTAP and plpgsql_check go to schema
    ``testing`` so they never show up in the guard's own schemas."""
    dsn = f"host={host} port={port} user={user} dbname={dbname}"
    migrate.migrate(dsn, env={})
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA testing")
        # pgTAP runs under SET ROLE in some tests; its functions must stay callable.
        conn.execute("GRANT USAGE ON SCHEMA testing TO PUBLIC")
        conn.execute("CREATE EXTENSION pgtap SCHEMA testing")
        conn.execute("CREATE EXTENSION plpgsql_check SCHEMA testing")


postgresql_noproc = factories.postgresql_noproc(
    host=CLUSTER.host, port=CLUSTER.port, user=CLUSTER.user, dbname="cg_test",
    load=[load_template])
postgresql = factories.postgresql("postgresql_noproc")


@pytest.fixture(scope="session")
def cluster() -> Cluster:
    return CLUSTER


@pytest.fixture
def conn(postgresql: psycopg.Connection) -> psycopg.Connection:
    """A connection to this test's fresh, migrated database."""
    return postgresql


@pytest.fixture
def dsn(postgresql: psycopg.Connection) -> str:
    return CLUSTER.dsn(postgresql.info.dbname)


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Open more connections to the test database (closed at teardown)."""
    opened: list[psycopg.Connection] = []

    def _connect(**kwargs: Any) -> psycopg.Connection:
        c = psycopg.connect(dsn, **kwargs)
        opened.append(c)
        return c

    yield _connect
    for c in opened:
        c.close()


@pytest.fixture
def empty_db_factory() -> Iterator[Callable[[], str]]:
    """Create new, empty databases; all dropped at teardown."""
    names: list[str] = []

    def _make() -> str:
        name = f"empty_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(CLUSTER.dsn(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        names.append(name)
        return CLUSTER.dsn(name)

    yield _make
    with psycopg.connect(CLUSTER.dsn(), autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def empty_db(empty_db_factory: Callable[[], str]) -> str:
    """A new, empty database (no migrations) for install/upgrade tests."""
    return empty_db_factory()


class CliResult:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def __repr__(self) -> str:
        return f"CliResult(code={self.code}, out={self.out!r}, err={self.err!r})"


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Run the `consistency` entry point in-process (so coverage sees it)."""
    from orchestrator.cli import main

    def _run(*args: str) -> CliResult:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(list(args))
        captured = capsys.readouterr()
        code = exc.value.code if isinstance(exc.value.code, int) else 1
        return CliResult(code, captured.out, captured.err)

    return _run


# --- roles and databases of a test's own (security tests) ----------------------

@dataclass
class Sandbox:
    admin_dsn: str
    dsn_of: Callable[[str], str]
    roles: list[str] = field(default_factory=list)
    databases: list[str] = field(default_factory=list)
    borrowed: list[str] = field(default_factory=list)

    def role(self, prefix: str, *options: str) -> str:
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE ROLE "{name}" LOGIN {" ".join(options)}')
        self.roles.append(name)
        return name

    def database(self, owner: str = "postgres") -> str:
        name = f"sec_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_dsn, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        self.databases.append(name)
        return self.dsn_of(name)

    def borrow(self, dsn: str) -> None:
        """A database made elsewhere in which our roles get rights."""
        self.borrowed.append(dsn)


def as_role(dsn: str, role: str) -> str:
    return dsn.replace("user=postgres", f"user={role}")


@pytest.fixture
def sandbox(cluster: Cluster) -> Iterator[Sandbox]:
    """Roles (cluster-wide, so random names) and databases of a test's own,
    dropped at teardown; the guard's roles exist."""
    box = Sandbox(cluster.dsn(), cluster.dsn)
    with psycopg.connect(box.admin_dsn, autocommit=True) as admin:
        # The guard's roles, as a DBA creates them before a non-superuser
        # installs (the first migrate of this run may not have happened yet).
        for role in migrate.ROLES:
            if not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [role]).fetchone():
                admin.execute(f"CREATE ROLE {role} NOLOGIN")
    yield box
    with psycopg.connect(box.admin_dsn, autocommit=True) as admin:
        for name in box.databases:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    if box.roles:
        listed = ", ".join(f'"{r}"' for r in box.roles)
        for dsn in box.borrowed:
            try:
                with psycopg.connect(dsn, autocommit=True) as conn:
                    conn.execute(f"DROP OWNED BY {listed}")
            except psycopg.OperationalError:
                pass  # already dropped, with whatever our roles had in it
        with psycopg.connect(box.admin_dsn, autocommit=True) as admin:
            admin.execute(f"DROP ROLE {listed}")


# --- a cluster of a test's own ---------------------------------------------------

@pytest.fixture
def own_cluster() -> Iterator[Cluster]:
    """A migrated cluster of the test's own, which it may stop and start (the
    session's cluster is shared by the whole run: never stop it)."""
    own = Cluster()
    own.init()
    own.start()
    try:
        migrate.migrate(own.dsn(), env={})
        yield own
    finally:
        own.destroy()
