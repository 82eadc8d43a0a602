"""Apply versioned migrations (yoyo) and the repeatable definitions.

Everything pending is applied in one transaction on one connection: the
versioned files of ``sql/migrations`` in order, then, when anything changed,
every repeatable file (``sql/functions``, ``sql/triggers``, ``sql/indexes.sql``,
``sql/privileges.sql``), then, on an install or a new adoption profile, the
back-fill of existing rows. A session advisory lock serialises concurrent
``consistency migrate`` runs.

Every file is a template rendered with the adoption profile (the one given,
else the one stored by the last migrate, else the guard's own vocabulary) and
the catalog (orchestrator.render); the stored hashes and the catalog
fingerprint are those of the rendered text.

yoyo provides the ordering, the ids and the bookkeeping tables (kept in schema
``consistency``, so ``yoyo list`` still works); the statements themselves are
sent by psycopg without parameters, so ``%`` and ``:name`` in SQL are literal.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from yoyo import internalmigrations, read_migrations
from yoyo.backends.core.postgresql import PostgresqlPsycopgBackend
from yoyo.connections import parse_uri
from yoyo.migrations import Migration, MigrationList

from orchestrator import adoption, config, db, owner_code, render
from orchestrator import profile as profiles
from orchestrator.errors import GuardError
from orchestrator.profile import Profile, ProfileError

MIGRATION_TABLE = "_yoyo_migration"
SCHEMA = "consistency"
# The search_path of migrate's connection: yoyo names its tables without a
# schema; pg_temp last, so that no temporary table stands in for one.
SEARCH_PATH = "consistency, pg_temp"
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
    # The adoption profile in force: name, where it came from, when applied
    # (None: the guard's own vocabulary).
    profile: dict[str, object] | None = None

    @property
    def up_to_date(self) -> bool:
        return not self.pending and not self.definitions_changed and not self.catalog_drift


@dataclass(frozen=True)
class BackfillChange:
    """One kind of change the back-fill made: rule, column, new value,
    {old value: rows}, rows."""

    rule: str
    column: str
    to_value: str | None
    from_values: dict[str, int]
    rows: int


# Members and databases a note names before it counts the rest.
NOTE_NAMES = 5


@dataclass(frozen=True)
class RoleUse:
    """What a guard role is to the rest of the cluster: roles are
    cluster-wide, so its members have its rights in every database where the
    guard is installed."""

    role: str
    other_databases: list[str]
    members: list[str]

    @property
    def unused(self) -> bool:
        return not self.other_databases and not self.members

    def note(self) -> str:
        where = [*(f"member {m}" for m in self.members),
                 *(f"database {d}" for d in self.other_databases)]
        shown = ", ".join(where[:NOTE_NAMES]) + (
            f" and {len(where) - NOTE_NAMES} more" if len(where) > NOTE_NAMES else "")
        return (f"role {self.role} is cluster-wide, used by {shown}: each member "
                f"has its rights in every database of the cluster that has the guard (REVOKE "
                f"CONNECT ON DATABASE ... FROM PUBLIC where they have no business)")


def role_uses(conn: psycopg.Connection) -> list[RoleUse]:
    return [RoleUse(name, list(dbs), list(members))
            for name, dbs, members in db.all(conn, "guard_role_uses", roles=list(ROLES))]


@dataclass
class MigrateResult:
    migrations_applied: list[str]
    definitions_applied: list[str]
    dry_run: bool = False
    settings_changed: list[str] = field(default_factory=list)
    profile: str | None = None
    profile_changed: bool = False
    backfill: list[BackfillChange] = field(default_factory=list)
    # Differences that do not stop the install, one line each.
    notes: list[str] = field(default_factory=list)
    # Who else the roles it grants to reach (printed as notes).
    roles: list[RoleUse] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.migrations_applied or self.definitions_applied or self.settings_changed
                    or self.profile_changed or self.backfill)

    def backfill_rows_per_column(self) -> dict[str, int]:
        rows: dict[str, int] = {}
        for change in self.backfill:
            rows[f"calls.{change.column}"] = rows.get(f"calls.{change.column}", 0) + change.rows
        return rows


# Applied first: other files' SQL-standard bodies call these, and such a body
# is resolved when it is created.
FIRST_DEFINITIONS = ("functions/settings.sql", "functions/arguments.sql")

# The guard's roles; created by migration 0003 when the owner may create roles.
ROLES = ("consistency_app", "consistency_reviewer", "consistency_monitor")


def repeatable_definitions(root: Path | None = None) -> list[Definition]:
    """Functions first (triggers need them; FIRST_DEFINITIONS before the
    others), then triggers, then indexes, then privileges, which must see
    every object. The texts are templates (see render())."""
    root = root or db.sql_dir()
    functions = sorted((root / "functions").glob("*.sql"),
                       key=lambda f: (str(f.relative_to(root)) not in FIRST_DEFINITIONS, f.name))
    files = functions + sorted((root / "triggers").glob("*.sql"))
    files += [f for f in (root / "indexes.sql", root / "privileges.sql") if f.exists()]
    return [Definition(str(f.relative_to(root)), f.read_text(encoding="utf-8")) for f in files]


def rendered(conn: psycopg.Connection, definitions: list[Definition],
             profile: Profile) -> list[Definition]:
    """The definitions as they are applied to this database: rendered with
    ``profile`` and the catalog as it is now."""
    ctx = render.context(conn, profile, render.read_facts(conn))
    return [Definition(d.path, render.render(d.text, ctx, d.path)) for d in definitions]


def _backend(conninfo: str) -> PostgresqlPsycopgBackend:
    class Backend(PostgresqlPsycopgBackend):
        # yoyo wants a URL; we accept any libpq conninfo (or PG* variables),
        # so the connection is made here rather than from the URL. yoyo's
        # init_connection then sets search_path to the guard's schema (after
        # pg_catalog, which PostgreSQL searches first when it is not named).
        def connect(self, dburi):  # type: ignore[no-untyped-def]
            self.schema = SEARCH_PATH
            # Who acts for whom is migrate's to check (_refuse_owner_code).
            return db.connect(conninfo, autocommit=True, application_name="consistency migrate",
                              owner_code=owner_code.OFF)

    # No init_database(): it would create yoyo's lock table in autocommit.
    # yoyo's bookkeeping tables are created inside the migrate transaction
    # instead (see _apply), so a dry run or a failed migrate leaves none.
    return Backend(parse_uri("postgresql+psycopg:///consistency_guard"), MIGRATION_TABLE)


@dataclass(frozen=True)
class Ownership:
    """Who installs, who owns the guard, and what migrate must do as whom."""

    session_role: str
    owner: str
    installed: bool
    schema_exists: bool
    create_roles_first: list[str]

    @property
    def set_role(self) -> bool:
        return self.owner != self.session_role


@dataclass(frozen=True)
class _InstallFacts:
    session_role: str
    calls_owner: str | None
    appointments_owner: str | None
    schema_owner: str | None
    installed: bool
    missing_roles: list[str]
    session_creates_roles: bool


def check_ownership(conn: psycopg.Connection, owner: str | None, *,
                    installing: bool) -> Ownership:
    """Read-only checks before anything is written. The guard's functions run
    as their owner (SECURITY DEFINER): that owner must be the role that owns
    calls and appointments, or the tables' owner could make the guard run its
    own triggers with more rights than it has; and the schema must hold
    nothing that another role put there. ``installing`` adds the checks of
    the role that runs migrate (status only reads)."""
    facts = _InstallFacts(*db.one(conn, "install_facts", roles=list(ROLES)))
    expected = _guard_owner(facts, owner)
    if installing and expected != facts.session_role:
        _check_set_role(conn, facts.session_role, expected, owner)
    _check_schema(conn, facts, expected)
    return Ownership(facts.session_role, expected, facts.installed,
                     facts.schema_owner is not None,
                     _roles_to_create(conn, facts, expected) if installing else [])


def _guard_owner(facts: _InstallFacts, owner: str | None) -> str:
    """The owner of calls and appointments; without them, ``--owner``, the
    installed guard's owner, or whoever runs migrate."""
    table_owners = {o for o in (facts.calls_owner, facts.appointments_owner) if o is not None}
    if len(table_owners) > 1:
        raise GuardError(f"public.calls is owned by {facts.calls_owner} and public.appointments "
                         f"by {facts.appointments_owner}: the guard needs one role owning both")
    table_owner = next(iter(table_owners), None)
    if owner is not None and table_owner is not None and owner != table_owner:
        raise GuardError(f"--owner {owner}, but public.calls is owned by {table_owner}: "
                         f"pass --owner {table_owner}")
    # A schema's owner says who owns the guard only once the guard is in it:
    # before that, whoever created the schema first would decide.
    installed_by = facts.schema_owner if facts.installed else None
    return table_owner or owner or installed_by or facts.session_role


def _check_set_role(conn: psycopg.Connection, session_role: str, expected: str,
                    owner: str | None) -> None:
    if owner is None:
        raise GuardError(f"the guard must be owned by {expected}, not by {session_role}: run "
                         f"migrate as {expected}, or pass --owner {expected} (you must be able "
                         f"to SET ROLE {expected})")
    facts = db.one(conn, "role_facts", role=expected)
    if facts is None:
        raise GuardError(f"--owner {expected}: no such role")
    if not facts[0]:
        raise GuardError(f"--owner {expected}: {session_role} cannot SET ROLE {expected} "
                         f"(GRANT {expected} TO {session_role}, or run migrate as {expected})")


def _check_schema(conn: psycopg.Connection, facts: _InstallFacts, expected: str) -> None:
    if facts.schema_owner is None:
        return
    if facts.schema_owner != expected:
        raise GuardError(f"schema consistency is owned by {facts.schema_owner}, not by "
                         f"{expected} (the guard's owner): refusing to install into it; check "
                         f"what it holds, then drop it or ALTER SCHEMA consistency OWNER TO "
                         f"{expected}")
    foreign = [r[0] for r in db.all(conn, "schema_objects", installed=facts.installed)]
    if foreign:
        what = ("holds objects of another owner" if facts.installed
                else "exists and holds objects that are not the guard's")
        raise GuardError(f"schema consistency {what}: {', '.join(foreign)}; "
                         "refusing to install beside them")


def _roles_to_create(conn: psycopg.Connection, facts: _InstallFacts, expected: str) -> list[str]:
    """The guard's missing roles that migrate creates as the connecting role
    before SET ROLE (migration 0003 creates them when the owner may)."""
    if not facts.missing_roles:
        return []
    if expected != facts.session_role and facts.session_creates_roles:
        return list(facts.missing_roles)
    owner_creates = (facts.session_creates_roles if expected == facts.session_role else
                     db.one(conn, "role_facts", role=expected)[1])
    if not owner_creates:
        statements = " ".join(f"CREATE ROLE {r} NOLOGIN;" for r in facts.missing_roles)
        raise GuardError(f"roles {', '.join(facts.missing_roles)} do not exist and {expected} "
                         f"may not create roles: a role with CREATEROLE must create them first "
                         f"({statements})")
    return []


class _Session:
    """Reads what is applied (writing nothing) and, for migrate, holds the
    migrate lock and a yoyo backend for the duration of a run."""

    def __init__(self, dsn: str | None, env: Mapping[str, str] | None = None, *,
                 lock: bool = True) -> None:
        self.conninfo = db.resolve_dsn(dsn, env)
        self.lock = lock
        self.lock_conn: psycopg.Connection | None = None
        self.backend: PostgresqlPsycopgBackend | None = None
        # Set when the session is not the guard's owner (_refuse_owner_code).
        self.guard: owner_code.Guard | None = None

    def __enter__(self) -> _Session:
        try:
            if self.lock:
                self.lock_conn = db.connect(self.conninfo, autocommit=True,
                                            application_name="consistency migrate (lock)",
                                            owner_code=owner_code.OFF)
                db.execute(self.lock_conn, "migrate_lock")
            self.backend = _backend(self.conninfo)
        except BaseException:
            self.__exit__()
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

    def repin(self) -> None:
        """After code of the owner's may have run (a migration's writes fire
        the guard's triggers): search_path is migrate's again."""
        if self.guard is not None:
            self.guard.pin(self.conn, SEARCH_PATH)

    def plan(self, profile: Profile,
             upto: str | None = None) -> tuple[MigrationList, MigrationStatus]:
        migrations = read_migrations(str(db.sql_dir() / "migrations"))
        known = {m.hash for m in migrations}
        applied = self._applied()
        status = MigrationStatus()
        status.applied = [m.id for m in migrations if m.hash in applied]
        status.unknown = [mid for h, mid in applied.items() if h not in known]
        pending = migrations.__class__([m for m in migrations if m.hash not in applied
                                        and (upto is None or m.id <= upto)])
        status.pending = [m.id for m in pending]

        definitions = rendered(self.conn, repeatable_definitions(), profile)
        stored = self._stored_definitions()
        status.definitions_total = len(definitions)
        status.definitions_changed = [d.path for d in definitions if stored.get(d.path) != d.sha256]
        recorded = stored.get(CATALOG)
        status.catalog_drift = recorded is not None and recorded != self.fingerprint()
        return pending, status

    def _applied(self) -> dict[str, str]:
        """Hash -> id of the applied migrations, in the order applied; read
        without yoyo, which would create its tables to answer."""
        if not db.value(self.conn, "migrations_table_exists"):
            return {}
        return dict(db.all(self.conn, "applied_migrations"))

    def fingerprint(self) -> str:
        return db.value(self.conn, "definitions_fingerprint")

    def _stored_definitions(self) -> dict[str, str]:
        if not db.value(self.conn, "definitions_table_exists"):
            return {}
        return dict(db.all(self.conn, "stored_definitions"))

    def stored_profile(self) -> tuple[Profile | None, dict[str, object] | None]:
        """The profile the last migrate stored, and how it is shown."""
        if not self.conn.execute(db.query("stored_profile_exists")).fetchone()[0]:
            return None, None
        row = self.conn.execute(db.query("stored_profile")).fetchone()
        if row is None:
            return None, None
        name, data, source_file, applied_at = row
        return Profile.from_json(data), {"name": name, "file": source_file,
                                         "applied_at": applied_at}


# Routines migrate's own statements call (the migrations and definitions
# call the guard's functions only after re-creating them, see migrate()).
MIGRATE_CALLS = ("consistency._adopt", "consistency._ensure_index", "consistency.set_setting")


def guard_routine_names(root: Path | None = None) -> list[str]:
    """The names of every routine the guard's SQL defines in its schema."""
    root = root or db.sql_dir()
    found: set[str] = set()
    for path in root.rglob("*.sql"):
        found.update(_DEFINED.findall(path.read_text(encoding="utf-8")))
    return sorted(found)


_DEFINED = re.compile(r"\b(?:FUNCTION|PROCEDURE)\s+consistency\.(\w+)\s*\(", re.IGNORECASE)


def _refuse_owner_code(session: _Session, ownership: Ownership, *, installing: bool) -> None:
    """Before anything else is read: a session that is not the guard's owner
    (a DBA migrating for it) refuses to run what the owner could have put in
    its way (orchestrator.owner_code): in what it reads (the guard's schema,
    calls, appointments), and, installing, in the tables it writes, and
    look-alikes of the guard's or PostgreSQL's functions."""
    session.guard = owner_code.guard_for(session.conn, ownership.owner)
    guard = session.guard
    if guard is None:
        return
    conn = session.conn
    with owner_code.pinned(conn, guard, SEARCH_PATH):
        relations = [r[0] for r in conn.execute(db.query("owner_code_guard_relations"))]
        relations += ["public.calls", "public.appointments"]
        guard.check(conn, relations=relations, writes=relations if installing else (),
                    routines=MIGRATE_CALLS if installing else (), known=guard_routine_names())


def _refuse_deferred_owner_code(session: _Session) -> None:
    """Last, inside the transaction: no deferrable trigger that COMMIT would
    fire with the session's rights (a function of the owner's may have
    created one)."""
    if session.guard is not None:
        with owner_code.pinned(session.conn, session.guard, SEARCH_PATH):
            session.guard.check(session.conn)


def status(dsn: str | None = None, env: Mapping[str, str] | None = None) -> MigrationStatus:
    """What is applied and pending. Reads only: on an empty database too, it
    creates nothing (no schema, no bookkeeping table)."""
    with _Session(dsn, env, lock=False) as session:
        ownership = check_ownership(session.conn, None, installing=False)
        _refuse_owner_code(session, ownership, installing=False)
        stored, shown = session.stored_profile()
        status = session.plan(stored or profiles.DEFAULT)[1]
        status.profile = shown
        return status


def migrate(dsn: str | None = None, *, dry_run: bool = False, reapply: bool = False,
            owner: str | None = None, upto: str | None = None,
            env: Mapping[str, str] | None = None, profile: str | Path | None = None,
            ) -> MigrateResult:
    """Bring the database to "migrations + current definitions".

    Everything is written in one transaction as ``owner`` (the role owning
    calls and appointments; SET ROLE when that is not the connecting role).
    ``dry_run`` runs that same transaction and rolls it back, so it fails
    exactly where migrate would and leaves nothing behind. ``upto`` stops
    after the migration with that id and applies no definitions: the state of
    a database installed by an older release, which the upgrade tests start
    from. ``profile`` is an adoption profile's TOML file (validated before
    connecting); without it the stored one (or the vocabulary) applies.
    """
    given = profiles.load(profile) if profile is not None else None
    with _Session(dsn, env) as session:
        ownership = check_ownership(session.conn, owner, installing=True)
        _refuse_owner_code(session, ownership, installing=True)
        stored, _ = session.stored_profile()
        effective = given[0] if given else stored or profiles.DEFAULT
        changed_profile = given is not None and (
            stored is None or stored.to_json() != given[0].to_json())
        pending, plan = session.plan(effective, upto)
        if plan.unknown:
            # graphile-worker's rule: never run older code against a schema
            # that a newer release has already changed.
            raise GuardError(
                "database has migrations this version does not know: "
                + ", ".join(plan.unknown) + "; upgrade consistency-guard first")
        definitions = repeatable_definitions()
        if upto is not None:
            to_define = []
        elif pending or reapply or plan.catalog_drift or changed_profile:
            to_define = definitions
        else:
            changed = set(plan.definitions_changed)
            # Privileges must follow any change, since a new function starts
            # with PUBLIC execute rights.
            to_define = [d for d in definitions
                         if d.path in changed or (changed and d.path == "privileges.sql")]
        if session.guard is not None and upto is None and (pending or to_define
                                                          or changed_profile):
            # For another role, every function is the guard's own text again
            # before a definition or the back-fill calls it.
            to_define = definitions
        result = MigrateResult([m.id for m in pending], [d.path for d in to_define], dry_run,
                               profile=effective.name, profile_changed=changed_profile)
        adopt = Adoption(effective, given[1] if given else None,
                         str(profile) if profile is not None else None,
                         store=changed_profile, backfill=upto is None and bool(
                             pending or changed_profile))
        _apply(session, ownership, pending, to_define, definitions,
               env if upto is None else {}, adopt, result, dry_run=dry_run)
        result.roles = [use for use in role_uses(session.conn) if not use.unused]
        return result


@dataclass(frozen=True)
class Adoption:
    """The profile of a migrate run and what to do with it."""

    profile: Profile
    source: str | None
    source_file: str | None
    store: bool
    backfill: bool


def _apply(session: _Session, ownership: Ownership, pending: MigrationList,
           to_define: list[Definition], definitions: list[Definition],
           env: Mapping[str, str] | None, adopt: Adoption, result: MigrateResult, *,
           dry_run: bool) -> None:
    """One transaction: the schema and the roles if missing, the differences
    between the application's tables and the profile (refused before any
    write), yoyo's tables, migrations, definitions, the back-fill, settings
    from the environment. Any error rolls all of it back; so does ``dry_run``
    at the end."""
    backend = session.backend
    assert backend is not None
    conn = session.conn
    with backend.transaction(rollback_on_exit=dry_run):
        # Done as the connecting role: it may create roles, or the schema,
        # where the owner may not. Nothing here runs the application's code.
        steps = [(f"creating role {role}", db.compose("create_role", role=role))
                 for role in ownership.create_roles_first]
        if not ownership.schema_exists:
            steps.append((f"creating schema consistency for {ownership.owner}",
                          db.compose("create_schema", owner=ownership.owner)))
        if ownership.set_role:
            steps.append((f"SET ROLE {ownership.owner}",
                          db.compose("set_local_role", role=ownership.owner)))
        for label, step in steps:
            try:
                conn.execute(step)
            except psycopg.Error as exc:
                raise GuardError(f"{label}: {db.describe_error(exc)}") from exc
        # As the owner, before anything is written: every difference at once.
        found = adoption.differences(conn, adopt.profile)
        if found.blocking:
            raise ProfileError(found.blocking, found.notes)
        result.notes = found.notes
        if internalmigrations.needs_upgrading(backend):
            internalmigrations.upgrade(backend)
        backend._internal_schema_updated = True
        ctx = render.context(conn, adopt.profile, render.read_facts(conn))
        for migration in pending:
            text = Path(migration.path).read_text(encoding="utf-8")
            _run_sql(conn, render.render(text, ctx, migration.id), migration.id)
            session.repin()
            backend.log_migration(migration, "apply")
            backend.mark_one(migration, log=False)
        if adopt.store:
            conn.execute(db.query("store_profile"), {
                "name": adopt.profile.name, "profile": adopt.profile.to_json(),
                "source": adopt.source or "", "source_file": adopt.source_file})
        # Rendered again: the migrations may have added columns.
        by_path = {d.path: d for d in rendered(conn, definitions, adopt.profile)}
        to_define = [by_path[d.path] for d in to_define]
        # Definition files reference each other in any order (a PL/pgSQL
        # function may call one defined in a later file); like pg_dump, defer
        # body checks. plpgsql_check in the test suite checks every body.
        # (SQL-standard bodies are resolved regardless: FIRST_DEFINITIONS.)
        if to_define:
            conn.execute("SET LOCAL check_function_bodies = off")
        for definition in to_define:
            _run_sql(conn, definition.text, definition.path)
            session.repin()
            db.execute(conn, "record_definition", path=definition.path, sha256=definition.sha256)
        if to_define:
            db.execute(conn, "record_definition", path=CATALOG, sha256=session.fingerprint())
            db.execute(conn, "forget_definitions",
                       paths=[d.path for d in definitions] + [CATALOG])
        if adopt.backfill:
            try:
                rows = conn.execute(db.query("adopt"), {"profile": adopt.profile.name}).fetchall()
            except psycopg.Error as exc:
                raise GuardError(f"back-fill: {db.describe_error(exc)}") from exc
            session.repin()
            result.backfill = [BackfillChange(r[0], r[1], r[2], dict(r[3] or {}), int(r[4]))
                               for r in rows]
        if env != {}:
            result.settings_changed = config.sync_from_env(conn, "consistency migrate", env)
        _refuse_deferred_owner_code(session)


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
