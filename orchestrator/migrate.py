"""Apply versioned migrations (yoyo) and the repeatable definitions.

Everything pending is applied in one transaction on one connection: the
versioned files of ``sql/migrations`` in order, then, when anything changed,
every repeatable file (``sql/functions``, ``sql/triggers``, ``sql/privileges.sql``).
A session advisory lock serialises concurrent ``consistency migrate`` runs.

yoyo provides the ordering, the ids and the bookkeeping tables (kept in schema
``consistency``, so ``yoyo list`` still works); the statements themselves are
sent by psycopg without parameters, so ``%`` and ``:name`` in SQL are literal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri
from yoyo.migrations import Migration, MigrationList

from orchestrator import config, db
from orchestrator.errors import GuardError

MIGRATION_TABLE = "_yoyo_migration"
SCHEMA = "consistency"
# Row of schema_definitions holding the catalog fingerprint of the definitions.
CATALOG = "@catalog"


@dataclass(frozen=True)
class Definition:
    """A repeatable SQL file, identified by its path relative to ``sql/``."""

    path: str
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass
class MigrationStatus:
    applied: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    definitions_changed: list[str] = field(default_factory=list)
    definitions_total: int = 0
    # A function or trigger was changed, dropped or disabled outside migrate.
    catalog_drift: bool = False

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.definitions_changed and not self.catalog_drift


@dataclass
class MigrateResult:
    migrations_applied: list[str]
    definitions_applied: list[str]
    dry_run: bool = False
    settings_changed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.migrations_applied or self.definitions_applied or self.settings_changed)


def repeatable_definitions(root: Path | None = None) -> list[Definition]:
    """Functions first (triggers need them), then triggers, then privileges,
    which must see every object to grant on it."""
    root = root or db.sql_dir()
    files = sorted((root / "functions").glob("*.sql")) + sorted((root / "triggers").glob("*.sql"))
    privileges = root / "privileges.sql"
    if privileges.exists():
        files.append(privileges)
    return [Definition(str(f.relative_to(root)), f.read_text(encoding="utf-8")) for f in files]


def _backend(conninfo: str) -> PostgresqlPsycopgBackend:
    class Backend(PostgresqlPsycopgBackend):
        # yoyo wants a URL; we accept any libpq conninfo (or PG* variables),
        # so the connection is made here rather than from the URL.
        def connect(self, dburi):  # type: ignore[no-untyped-def]
            self.schema = SCHEMA
            return db.connect(conninfo, autocommit=True, application_name="consistency migrate")

    backend = Backend(parse_uri("postgresql+psycopg:///consistency_guard"), MIGRATION_TABLE)
    backend.init_database()
    return backend


class _Session:
    """Holds the migrate lock and a yoyo backend for the duration of a run."""

    def __init__(self, dsn: str | None, env: Mapping[str, str] | None = None) -> None:
        self.conninfo = db.resolve_dsn(dsn, env)
        self.lock_conn: psycopg.Connection | None = None
        self.backend: PostgresqlPsycopgBackend | None = None

    def __enter__(self) -> _Session:
        self.lock_conn = db.connect(self.conninfo, autocommit=True,
                                    application_name="consistency migrate (lock)")
        try:
            self.lock_conn.execute(db.query("migrate_lock"))
            self.lock_conn.execute(db.query("create_schema"))
            self.backend = _backend(self.conninfo)
            self.backend.ensure_internal_schema_updated()
        except BaseException:
            self.lock_conn.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.backend is not None:
            self.backend.connection.close()
        if self.lock_conn is not None:
            self.lock_conn.close()  # releases the advisory lock

    @property
    def conn(self) -> psycopg.Connection:
        assert self.backend is not None
        return self.backend.connection

    def plan(self, upto: str | None = None) -> tuple[MigrationList, MigrationStatus]:
        assert self.backend is not None
        migrations = read_migrations(str(db.sql_dir() / "migrations"))
        known = {m.hash for m in migrations}
        applied_hashes = self.backend.get_applied_migration_hashes()
        status = MigrationStatus()
        status.applied = [m.id for m in migrations if m.hash in applied_hashes]
        status.unknown = _unknown_applied(self.conn, applied_hashes, known)
        pending = self.backend.to_apply(migrations)
        if upto is not None:
            pending = pending.__class__([m for m in pending if m.id <= upto])
        status.pending = [m.id for m in pending]

        definitions = repeatable_definitions()
        stored = self._stored_definitions()
        status.definitions_total = len(definitions)
        status.definitions_changed = [d.path for d in definitions if stored.get(d.path) != d.sha256]
        recorded = stored.get(CATALOG)
        status.catalog_drift = recorded is not None and recorded != self.fingerprint()
        return pending, status

    def fingerprint(self) -> str:
        return self.conn.execute(db.query("definitions_fingerprint")).fetchone()[0]

    def _stored_definitions(self) -> dict[str, str]:
        if not self.conn.execute(db.query("definitions_table_exists")).fetchone()[0]:
            return {}
        return dict(self.conn.execute(db.query("stored_definitions")).fetchall())


def _unknown_applied(conn: psycopg.Connection, applied: list[str], known: set[str]) -> list[str]:
    unknown = [h for h in applied if h not in known]
    if not unknown:
        return []
    rows = conn.execute(
        f"SELECT migration_id FROM {SCHEMA}.{MIGRATION_TABLE} WHERE migration_hash = ANY(%s)",
        [unknown],
    ).fetchall()
    return [r[0] for r in rows]


def status(dsn: str | None = None, env: Mapping[str, str] | None = None) -> MigrationStatus:
    with _Session(dsn, env) as session:
        return session.plan()[1]


def migrate(dsn: str | None = None, *, dry_run: bool = False, reapply: bool = False,
            upto: str | None = None, env: Mapping[str, str] | None = None) -> MigrateResult:
    """Bring the database to "migrations + current definitions".

    ``upto`` stops after the migration with that id and applies no
    definitions: the state of a database installed by an older release,
    which the upgrade tests start from.
    """
    with _Session(dsn, env) as session:
        pending, plan = session.plan(upto)
        if plan.unknown:
            # graphile-worker's rule: never run older code against a schema
            # that a newer release has already changed.
            raise GuardError(
                "database has migrations this version does not know: "
                + ", ".join(plan.unknown) + "; upgrade consistency-guard first")
        definitions = repeatable_definitions()
        if upto is not None:
            to_define = []
        elif pending or reapply or plan.catalog_drift:
            to_define = definitions
        else:
            changed = set(plan.definitions_changed)
            # Privileges must follow any change, since a new function starts
            # with PUBLIC execute rights.
            to_define = [d for d in definitions
                         if d.path in changed or (changed and d.path == "privileges.sql")]
        result = MigrateResult([m.id for m in pending], [d.path for d in to_define], dry_run)
        if dry_run:
            return result
        result.settings_changed = _apply(session, pending, to_define, definitions,
                                         env if upto is None else {})
        return result


def _apply(session: _Session, pending: MigrationList, to_define: list[Definition],
           definitions: list[Definition], env: Mapping[str, str] | None) -> list[str]:
    """One transaction: migrations, definitions, settings from the environment.
    Any error rolls all of it back."""
    backend = session.backend
    assert backend is not None
    conn = session.conn
    with backend.transaction():
        for migration in pending:
            _run_sql_file(conn, Path(migration.path), migration.id)
            backend.log_migration(migration, "apply")
            backend.mark_one(migration, log=False)
        # Definition files reference each other in any order (a SQL function
        # may call one defined in a later file); like pg_dump, defer body
        # checks. plpgsql_check in the test suite checks every body.
        if to_define:
            conn.execute("SET LOCAL check_function_bodies = off")
        for definition in to_define:
            _run_sql(conn, definition.text, definition.path)
            conn.execute(db.query("record_definition"),
                         {"path": definition.path, "sha256": definition.sha256})
        if to_define:
            conn.execute(db.query("record_definition"),
                         {"path": CATALOG, "sha256": session.fingerprint()})
            conn.execute(db.query("forget_definitions"),
                         {"paths": [d.path for d in definitions] + [CATALOG]})
        if env == {}:
            return []
        return config.sync_from_env(conn, "consistency migrate", env)


def _run_sql_file(conn: psycopg.Connection, path: Path, label: str) -> None:
    _run_sql(conn, path.read_text(encoding="utf-8"), label)


def _run_sql(conn: psycopg.Connection, text: str, label: str) -> None:
    try:
        # No parameters: psycopg sends the whole file with the simple query
        # protocol, several statements at once, '%' left alone.
        conn.execute(text.encode("utf-8"))
    except psycopg.Error as exc:
        raise GuardError(f"{label}: {db.describe_error(exc)}") from exc


__all__ = [
    "MigrateResult",
    "Migration",
    "MigrationStatus",
    "migrate",
    "repeatable_definitions",
    "status",
]
