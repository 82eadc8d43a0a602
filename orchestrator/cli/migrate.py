"""`consistency migrate [status]`."""

from __future__ import annotations

import sys

import click

from orchestrator import migrate as migrate_mod
from orchestrator.cli.common import dsn_option, example, json_option
from orchestrator.output import Styled, print_json, say, table


@example("consistency migrate --dry-run --dsn postgresql://owner@db/app")
@click.group(invoke_without_command=True)
@dsn_option
@click.option("--dry-run", is_flag=True,
              help="Run everything in a transaction that is rolled back; change nothing.")
@click.option("--reapply", is_flag=True,
              help="Re-apply every function, trigger and privilege definition.")
@click.option("--owner", metavar="ROLE", default=None,
              help="Install as ROLE (SET ROLE), the owner of public.calls and "
                   "public.appointments, when connected as another role.")
@json_option
@click.pass_context
def migrate(ctx: click.Context, dsn: str | None, dry_run: bool, reapply: bool,
            owner: str | None, as_json: bool) -> None:
    """Apply pending migrations and current definitions (one transaction)."""
    if ctx.invoked_subcommand is not None:
        return
    result = migrate_mod.migrate(dsn, dry_run=dry_run, reapply=reapply, owner=owner)
    if as_json:
        print_json({"dry_run": dry_run, "migrations": result.migrations_applied,
                    "definitions": result.definitions_applied,
                    "settings": result.settings_changed})
        return
    verb = "would apply" if dry_run else "applied"
    if not result.changed:
        say("nothing to do: the database is up to date")
        return
    if result.migrations_applied:
        say(f"{verb} {len(result.migrations_applied)} migration(s): "
            + ", ".join(result.migrations_applied))
    if result.definitions_applied:
        say(f"{verb} {len(result.definitions_applied)} definition(s): "
            + ", ".join(result.definitions_applied))
    if result.settings_changed:
        say(("settings from environment (would change): " if dry_run
             else "settings from environment: ") + ", ".join(result.settings_changed))


@example("consistency migrate status --json")
@migrate.command("status")
@dsn_option
@json_option
def migrate_status(dsn: str | None, as_json: bool) -> None:
    """List applied and pending migrations; exit 1 when something is pending."""
    st = migrate_mod.status(dsn)
    if as_json:
        print_json({"applied": st.applied, "pending": st.pending, "unknown": st.unknown,
                    "definitions_changed": st.definitions_changed,
                    "catalog_drift": st.catalog_drift,
                    "up_to_date": st.up_to_date})
    else:
        table(("migration", "state"),
              [*([mid, "applied"] for mid in st.applied),
               *([mid, Styled("pending", "yellow")] for mid in st.pending),
               *([mid, Styled("unknown to this version", "red")] for mid in st.unknown)],
              title="migrations")
        if st.catalog_drift:
            say("functions, triggers or privileges were changed outside migrate: "
                "every definition will be re-applied")
        if st.definitions_changed:
            say("definitions to re-apply: " + ", ".join(st.definitions_changed))
        else:
            say(f"definitions: {st.definitions_total} current")
        say("up to date" if st.up_to_date else "run `consistency migrate` to apply")
    if not st.up_to_date:
        sys.exit(1)


COMMANDS = [migrate]
