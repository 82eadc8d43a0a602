"""`consistency migrate [status]`."""

from __future__ import annotations

import sys

import click

from orchestrator import migrate as migrate_mod
from orchestrator import output
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
@click.option("--profile", "profile_file", metavar="FILE", default=None,
              type=click.Path(dir_okay=False),
              help="Adoption profile (TOML): where an existing application differs from the "
                   "guard's vocabulary; stored, and used by later runs.")
@json_option
@click.pass_context
def migrate(ctx: click.Context, dsn: str | None, dry_run: bool, reapply: bool,
            owner: str | None, profile_file: str | None, as_json: bool) -> None:
    """Apply pending migrations and current definitions (one transaction)."""
    if ctx.invoked_subcommand is not None:
        return
    result = migrate_mod.migrate(dsn, dry_run=dry_run, reapply=reapply, owner=owner,
                                 profile=profile_file)
    for note in [*result.notes, *(use.note() for use in result.roles)]:
        output.err.print(f"note: {output.clean(note)}", markup=False)
    if as_json:
        print_json({"dry_run": dry_run, "migrations": result.migrations_applied,
                    "roles": [{"role": u.role, "members": u.members,
                               "other_databases": u.other_databases} for u in result.roles],
                    "definitions": result.definitions_applied,
                    "settings": result.settings_changed, "profile": result.profile,
                    "profile_changed": result.profile_changed,
                    "backfill": [vars(c) for c in result.backfill],
                    "backfill_rows_per_column": result.backfill_rows_per_column(),
                    "notes": result.notes})
        return
    verb = "would apply" if dry_run else "applied"
    if not result.changed:
        say("nothing to do: the database is up to date")
        return
    if result.profile_changed:
        say(f"{'would store' if dry_run else 'stored'} adoption profile {result.profile}")
    if result.migrations_applied:
        say(f"{verb} {len(result.migrations_applied)} migration(s): "
            + ", ".join(result.migrations_applied))
    if result.definitions_applied:
        say(f"{verb} {len(result.definitions_applied)} definition(s): "
            + ", ".join(result.definitions_applied))
    if result.settings_changed:
        say(("settings from environment (would change): " if dry_run
             else "settings from environment: ") + ", ".join(result.settings_changed))
    if result.backfill:
        say(f"{'would back-fill' if dry_run else 'back-filled'} existing rows to G1-G7 "
            "(rows per column):")
        table(("column", "rows"), sorted(result.backfill_rows_per_column().items()))


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
                    "catalog_drift": st.catalog_drift, "profile": st.profile,
                    "up_to_date": st.up_to_date})
    else:
        profile = st.profile
        say("adoption profile: " + (
            f"{profile['name']} (from {profile['file']}, applied {profile['applied_at']})"
            if profile else "none (the guard's own vocabulary)"))
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
