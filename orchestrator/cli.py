"""The `consistency` command. Parses and prints; the modules do the work."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.table import Table

from orchestrator import config, db
from orchestrator import migrate as migrate_mod
from orchestrator.errors import GuardError

F = TypeVar("F", bound=Callable[..., Any])

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn", metavar="DSN", default=None,
        help="Connection string or URL; default DATABASE_URL, else libpq PG* variables.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


def print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="consistency-guard")
def cli() -> None:
    """consistency-guard: PostgreSQL keeps calls and appointments consistent."""


# --- migrate -----------------------------------------------------------------

@cli.group(invoke_without_command=True)
@dsn_option
@click.option("--dry-run", is_flag=True, help="Show what would be applied; change nothing.")
@click.option("--reapply", is_flag=True,
              help="Re-apply every function, trigger and privilege definition.")
@click.pass_context
def migrate(ctx: click.Context, dsn: str | None, dry_run: bool, reapply: bool) -> None:
    """Apply pending migrations and current definitions (one transaction)."""
    ctx.obj = {"dsn": dsn}
    if ctx.invoked_subcommand is not None:
        return
    result = migrate_mod.migrate(dsn, dry_run=dry_run, reapply=reapply)
    verb = "would apply" if dry_run else "applied"
    if not result.changed:
        out.print("nothing to do: the database is up to date")
        return
    if result.migrations_applied:
        out.print(f"{verb} {len(result.migrations_applied)} migration(s): "
                  + ", ".join(result.migrations_applied))
    if result.definitions_applied:
        out.print(f"{verb} {len(result.definitions_applied)} definition(s): "
                  + ", ".join(result.definitions_applied))
    if result.settings_changed:
        out.print("settings from environment: " + ", ".join(result.settings_changed))


@migrate.command("status")
@dsn_option
@json_option
@click.pass_context
def migrate_status(ctx: click.Context, dsn: str | None, as_json: bool) -> None:
    """List applied and pending migrations; exit 1 when something is pending."""
    st = migrate_mod.status(dsn or ctx.obj["dsn"])
    if as_json:
        print_json({"applied": st.applied, "pending": st.pending, "unknown": st.unknown,
                    "definitions_changed": st.definitions_changed,
                    "up_to_date": st.up_to_date})
    else:
        table = Table("migration", "state", title="migrations")
        for mid in st.applied:
            table.add_row(mid, "applied")
        for mid in st.pending:
            table.add_row(mid, "[yellow]pending[/]")
        for mid in st.unknown:
            table.add_row(mid, "[red]unknown to this version[/]")
        out.print(table)
        if st.definitions_changed:
            out.print("definitions to re-apply: " + ", ".join(st.definitions_changed))
        else:
            out.print(f"definitions: {st.definitions_total} current")
        out.print("up to date" if st.up_to_date else "run `consistency migrate` to apply")
    if not st.up_to_date:
        sys.exit(1)


# --- config --------------------------------------------------------------------

@cli.group("config")
def config_group() -> None:
    """Show and change settings (consistency.settings)."""


@config_group.command("show")
@dsn_option
@json_option
def config_show(dsn: str | None, as_json: bool) -> None:
    """Print every setting with its value, env variable and meaning."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        settings = config.list_settings(conn)
    if as_json:
        print_json({s.key: s.value for s in settings})
        return
    table = Table("key", "value", "env", "description")
    for s in settings:
        table.add_row(s.key, json.dumps(s.value), s.env_var or "", s.description or "")
    out.print(table)


@config_group.command("set", context_settings={"ignore_unknown_options": True})
@dsn_option
@click.argument("key")
@click.argument("value")
@click.option("--actor", default=None, help="Recorded in the audit log (default cli:$USER).")
def config_set(dsn: str | None, key: str, value: str, actor: str | None) -> None:
    """Set KEY to VALUE (validated, audited)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        changed = config.set_setting(conn, key, config.parse_value(value),
                                     actor or config.default_actor())
    out.print(f"{key} = {value}" if changed else f"{key} already {value}: unchanged")


@config_group.command("sync")
@dsn_option
@click.option("--actor", default=None, help="Recorded in the audit log (default cli:$USER).")
def config_sync(dsn: str | None, actor: str | None) -> None:
    """Apply the settings whose environment variables are set (all or nothing)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        changed = config.sync_from_env(conn, actor or config.default_actor())
    out.print("changed: " + ", ".join(changed) if changed else "nothing to change")


# --- bench -----------------------------------------------------------------------

@cli.group()
def bench() -> None:
    """Benchmarks: compare variants in one run on a scratch database.

    Each needs a DSN of a server where it may create and drop a database.
    """


@bench.command("triggers")
@dsn_option
@click.option("--calls", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Calls in the data set (as many appointments, ~60 % of calls linked).")
@click.option("--repeat", type=click.IntRange(min=1), default=15, show_default=True,
              help="Timed samples per workload and variant (after one warm-up round).")
@json_option
def bench_triggers(dsn: str | None, calls: int, repeat: int, as_json: bool) -> None:
    """Cost of the guarantees: no guard vs row-level triggers vs the guard."""
    from orchestrator.bench import dump_json, render
    from orchestrator.bench import triggers as bench_mod

    results = bench_mod.run(db.resolve_dsn(dsn), calls=calls, repeat=repeat,
                            progress=None if as_json else (lambda m: err.print(m, style="dim")))
    if as_json:
        click.echo(dump_json(results))
        return
    render(f"bench triggers: {calls} calls, median of {repeat} (ms)", bench_mod.COLUMNS,
           bench_mod.table_rows(results), console=out)


# --- entry point ---------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Console script: user mistakes and unreachable databases become one line
    on stderr and exit code 2, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="consistency", standalone_mode=False)
    except GuardError as exc:
        err.print(f"error: {exc}", markup=False)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "consistency"
        err.print(f"error: {exc.format_message()} (see {where} --help)", markup=False)
        sys.exit(2)
    except click.ClickException as exc:
        err.print(f"error: {exc.format_message()}", markup=False)
        sys.exit(2)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except psycopg.OperationalError as exc:
        err.print(f"error: database unavailable: {db.describe_error(exc)}", markup=False)
        sys.exit(2)
    except psycopg.Error as exc:
        err.print(f"error: database: {db.describe_error(exc)}", markup=False)
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
