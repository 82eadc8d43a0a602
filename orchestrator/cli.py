"""The `consistency` command. Parses and prints; the modules do the work."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from datetime import date
from typing import Any, TypeVar

import click
import psycopg
from rich.console import Console
from rich.table import Table

from orchestrator import config, db, monitor, scheduling
from orchestrator import migrate as migrate_mod
from orchestrator.durations import parse_duration
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


# --- monitor ---------------------------------------------------------------------

def _print_check(report: monitor.CheckReport) -> None:
    table = Table("rule", "severity", "found", "corrected", "alerted",
                  title=f"consistency check #{report.run_id} ({report.duration_ms:.1f} ms)")
    for r in report.rules:
        style = "red" if r.severity == "critical" and r.remaining else ""
        table.add_row(r.rule, r.severity, str(r.found), str(r.corrected), str(r.alerted),
                      style=style)
    out.print(table)
    if report.waited_ms > 100:
        out.print(f"waited {report.waited_ms:.0f} ms for a concurrent check to finish")


@cli.command()
@dsn_option
@click.option("--window", default=None, metavar="DURATION",
              help="Calls created within this window, e.g. 1h (default monitoring.recent_hours).")
@click.option("--every", default=None, metavar="DURATION",
              help="Run forever at this interval (e.g. 5m); reconnects after database restarts, "
                   "stops on SIGTERM.")
@json_option
def check(dsn: str | None, window: str | None, every: str | None, as_json: bool) -> None:
    """Detect, auto-correct and alert; exit 1 when critical issues remain."""
    window_td = parse_duration(window, what="window") if window else None
    conninfo = db.resolve_dsn(dsn)
    if every is None:
        with db.connect(conninfo) as conn:
            report = monitor.run_check(conn, window_td)
        if as_json:
            print_json(report.as_dict())
        else:
            _print_check(report)
        sys.exit(1 if report.critical_remaining else 0)

    interval = parse_duration(every, what="interval")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def show(report: monitor.CheckReport) -> None:
        if as_json:
            click.echo(json.dumps(report.as_dict(), sort_keys=True, default=str))
        else:
            _print_check(report)

    runs = monitor.check_loop(conninfo, interval, stop, window_td, on_result=show)
    err.print(f"stopped after {runs} run(s)")


@cli.command()
@dsn_option
@click.option("--day", default=None, metavar="YYYY-MM-DD", help="Default: today.")
@json_option
def report(dsn: str | None, day: str | None, as_json: bool) -> None:
    """The daily consistency report."""
    try:
        day_value = date.fromisoformat(day) if day else None
    except ValueError as exc:
        raise GuardError(f"invalid day {day!r}: use YYYY-MM-DD") from exc
    with db.connect(db.resolve_dsn(dsn)) as conn:
        data = monitor.daily_report(conn, day_value)
    if as_json:
        print_json(data)
        return
    summary = Table("", "", title=f"consistency report {data['period']['day']}",
                    show_header=False)
    summary.add_row("calls", str(data["totals"]["calls"]))
    summary.add_row("appointments", str(data["totals"]["appointments"]))
    summary.add_row("consistency rate", f"{data['consistency_rate_pct']} %")
    summary.add_row("alerts", str(data["totals"]["alerts"]))
    for severity, n in data["alerts_by_severity"].items():
        summary.add_row(f"  {severity}", str(n))
    summary.add_row("auto-corrected / manual", f"{data['auto_corrected']} / {data['manual']}")
    summary.add_row("circuit opens", str(data["circuit_opens"]))
    summary.add_row("validation failures", str(data["validation_failures"]))
    backlog = data["review_backlog"]
    summary.add_row("review backlog", f"{backlog['pending']} pending, "
                                      f"{backlog['in_progress']} in progress")
    out.print(summary)
    if data["top_issues"]:
        top = Table("alert type", "count", title="top issues")
        for item in data["top_issues"]:
            top.add_row(item["alert_type"], str(item["count"]))
        out.print(top)


@cli.group()
def retention() -> None:
    """Alert retention (retention.alert_days)."""


@retention.command("run")
@dsn_option
@click.option("--dry-run", is_flag=True, help="Count what would be archived.")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Override retention.alert_days, e.g. 30d.")
@click.option("--batch", default=10_000, show_default=True, type=click.IntRange(min=1))
def retention_run(dsn: str | None, dry_run: bool, older_than: str | None, batch: int) -> None:
    """Move old alerts to alerts_archive, one short transaction per batch."""
    age = parse_duration(older_than, what="age") if older_than else None
    with db.connect(db.resolve_dsn(dsn)) as conn:
        n = monitor.archive_alerts(conn, age, batch, dry_run=dry_run)
    out.print(f"would archive {n} alert(s)" if dry_run else f"archived {n} alert(s)")


@cli.group()
def schedule() -> None:
    """Register the periodic jobs in pg_cron."""


@schedule.command("install")
@dsn_option
def schedule_install(dsn: str | None) -> None:
    """Check every 5 minutes, daily report, nightly retention (needs pg_cron)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        jobs = scheduling.install(conn)
    for name, spec, _ in jobs:
        out.print(f"scheduled {name}: {spec}")


# --- bench -----------------------------------------------------------------------

@cli.group()
def bench() -> None:
    """Benchmarks: compare variants in one run on a scratch database.

    Each needs a DSN of a server where it may create and drop a database.
    """


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
