"""`consistency demo` and `consistency uninstall`."""

from __future__ import annotations

import sys

import click

from orchestrator import db, output
from orchestrator.cli.common import dsn_option, example, json_option
from orchestrator.cli.monitor import print_report
from orchestrator.output import print_json, say, table


@example("consistency demo --minutes 1 --serve")
@click.command()
@click.option("--dsn", metavar="DSN", default=None,
              help="Play on this server, in a database of its own (dropped at the end unless "
                   "--keep); default: a throwaway PostgreSQL of the demo's own.")
@click.option("--minutes", type=click.FloatRange(0, 24 * 60, min_open=True), default=2.0,
              show_default=True, help="Real time the day takes.")
@click.option("--speed", type=click.FloatRange(0, 100_000, min_open=True), default=300.0,
              show_default=True, help="Simulated seconds per real second.")
@click.option("--serve", is_flag=True, help="Also serve the dashboard and print its URL.")
@click.option("--keep", is_flag=True,
              help="Keep the database (and the throwaway cluster) and print how to connect.")
@click.option("--sink", "sinks", multiple=True, metavar="URL",
              help="Relay alerts here too (repeatable); they always go to stdout.")
def demo(dsn: str | None, minutes: float, speed: float, serve: bool, keep: bool,
         sinks: tuple[str, ...]) -> None:
    """A voice agent's day at high speed, with the guard on: bookings through
    the circuit breaker into a fake calendar that has an outage, phantom
    bookings, orphans, cancellations, moves, a batch import, the monitor and
    the relay running; then the daily report and what just happened, read
    back from the database. Exit 1 when violations() is not empty at the end.

    Only an explicit --dsn is used (not DATABASE_URL), so a demo never lands
    on a configured server by accident."""
    from orchestrator import demo as demo_mod

    def note(text: str) -> None:
        say(text, to_stderr=True)

    options = demo_mod.DemoOptions(dsn=dsn, minutes=minutes, speed=speed, serve=serve,
                                   keep=keep, sinks=sinks)
    result = demo_mod.run(options, note)
    output.out.print()
    print_report(result.report)
    for line in demo_mod.narrative(result):
        say(line)
    table(("what just happened", "count"), demo_mod.summary_rows(result),
          title="what just happened")
    if not result.ok:
        output.error(f"violations() lists {result.summary['violations']} call(s)")
        sys.exit(1)


@example("consistency uninstall --dry-run --dsn postgresql://owner@db/app")
@click.command()
@dsn_option
@click.option("--dry-run", is_flag=True,
              help="Do everything in a transaction that is rolled back; change nothing.")
@json_option
def uninstall(dsn: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove the guard: its triggers, the columns and indexes migrate added
    to the application's tables, its roles' rights there, its pg_cron jobs and
    schema consistency (settings, alerts, audit log, review queue). Keeps the
    application's tables, columns and rows; keeps the roles (cluster-wide)."""
    from orchestrator import uninstall as uninstall_mod

    plan = uninstall_mod.uninstall(db.resolve_dsn(dsn), dry_run=dry_run)
    if as_json:
        print_json(plan.as_dict())
        return
    for line in uninstall_mod.describe(plan):
        say(line)


COMMANDS = [demo, uninstall]
