"""`consistency check`, `report`, `retention run`, `schedule install`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import date
from typing import Any

import click

from orchestrator import db, durations, monitor, scheduling
from orchestrator.cli.common import connect, dsn_option, example, json_option
from orchestrator.durations import parse_duration
from orchestrator.errors import GuardError
from orchestrator.output import Styled, print_json, say, table

# Ids a table cell names before it says how many more there are.
SHOWN_IDS = 5


def _ids(r: monitor.RuleResult) -> str:
    if not r.ids:
        return ""
    shown = ", ".join(str(i) for i in r.ids[:SHOWN_IDS])
    more = f" (+{len(r.ids) - SHOWN_IDS})" if len(r.ids) > SHOWN_IDS else ""
    return f"{r.entity_type}s {shown}{more}"


def _print_check(report: monitor.CheckReport) -> None:
    def row(r: monitor.RuleResult) -> list[Any]:
        cells = [r.rule, r.severity, r.found, r.corrected, r.alerted, r.failed, _ids(r)]
        if r.severity == "critical" and r.remaining:
            return [Styled(c, "red") for c in cells]
        return cells

    table(("rule", "severity", "found", "corrected", "alerted", "failed", "found at start"),
          [row(r) for r in report.rules],
          title=f"consistency check #{report.run_id} ({report.duration_ms:.1f} ms)")
    for failure in report.failures:
        say(f"could not correct: {failure}")
    if report.waited_ms > 100:
        say(f"waited {report.waited_ms:.0f} ms for a concurrent check to finish")


@example("consistency check --window 2h --json")
@click.command()
@dsn_option
@click.option("--window", default=None, metavar="DURATION",
              help="Calls created within this window, e.g. 1h (default monitoring.recent_hours; "
                   "1s to 36500d).")
@click.option("--every", default=None, metavar="DURATION",
              help="Run forever at this interval (e.g. 5m; 1s to 7d); survives database errors "
                   "and restarts (logged, retried with backoff), stops on SIGTERM.")
@json_option
def check(dsn: str | None, window: str | None, every: str | None, as_json: bool) -> None:
    """Detect, auto-correct and alert; exit 1 when critical issues remain or a
    correction failed. Each rule names the calls (appointments, for
    orphaned_appointment) it found when the run started. Corrects: run it as
    the guard's owner."""
    window_td = parse_duration(window, durations.WINDOW) if window else None
    interval = parse_duration(every, durations.INTERVAL) if every else None
    conninfo = db.resolve_dsn(dsn)
    if interval is None:
        with connect(conninfo) as conn:
            report = monitor.run_check(conn, window_td, name_entities=True)
        if as_json:
            print_json(report.as_dict())
        else:
            _print_check(report)
        sys.exit(1 if report.critical_remaining or report.failed else 0)

    db.session_conninfo(conninfo)  # a malformed DSN is a usage error, not a retry loop
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    def show(report: monitor.CheckReport) -> None:
        if as_json:
            print_json(report.as_dict(), indent=None)
        else:
            _print_check(report)

    runs = monitor.check_loop(conninfo, interval, stop, window_td, on_result=show,
                              name_entities=True)
    say(f"stopped after {runs} run(s)", to_stderr=True)


@example("consistency report --day 2026-11-29 --json")
@click.command()
@dsn_option
@click.option("--day", default=None, metavar="YYYY-MM-DD", help="Default: today.")
@json_option
def report(dsn: str | None, day: str | None, as_json: bool) -> None:
    """The daily consistency report (reads only: consistency_monitor may run it)."""
    try:
        day_value = date.fromisoformat(day) if day else None
    except ValueError as exc:
        raise GuardError(f"invalid day {day!r}: use YYYY-MM-DD") from exc
    with connect(dsn) as conn:
        data = monitor.daily_report(conn, day_value)
    if as_json:
        print_json(data)
        return
    print_report(data)


def print_report(data: dict[str, Any]) -> None:
    """The daily report as tables (also the demo's ending)."""
    backlog = data["review_backlog"]
    table(("item", "value"), [
        ("calls", data["totals"]["calls"]),
        ("appointments", data["totals"]["appointments"]),
        ("consistency rate", f"{data['consistency_rate_pct']} %"),
        ("alerts", data["totals"]["alerts"]),
        *((f"  {severity}", n) for severity, n in data["alerts_by_severity"].items()),
        ("auto-corrected / manual", f"{data['auto_corrected']} / {data['manual']}"),
        # daily_report counts transitions to 'open'; forced opens are operators'.
        ("circuit opens (automatic)", data["circuit_opens"]),
        ("validation failures", data["validation_failures"]),
        ("review backlog", f"{backlog['pending']} pending, {backlog['in_progress']} in progress"),
    ], title=f"consistency report {data['period']['day']}", show_header=False)
    if data["top_issues"]:
        table(("alert type", "count"),
              [(item["alert_type"], item["count"]) for item in data["top_issues"]],
              title="top issues")


@example("consistency retention run --dry-run")
@click.group()
def retention() -> None:
    """Alert retention (retention.alert_days)."""


@example("consistency retention run --older-than 30d --batch 5000")
@retention.command("run")
@dsn_option
@click.option("--dry-run", is_flag=True, help="Count what would be archived.")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Override retention.alert_days, e.g. 30d (1s to 36500d).")
@click.option("--batch", default=10_000, show_default=True,
              type=click.IntRange(min=1, max=1_000_000))
@json_option
def retention_run(dsn: str | None, dry_run: bool, older_than: str | None, batch: int,
                  as_json: bool) -> None:
    """Move old alerts to alerts_archive, one short transaction per batch."""
    age = parse_duration(older_than, durations.AGE) if older_than else None
    with connect(dsn) as conn:
        n = monitor.archive_alerts(conn, age, batch, dry_run=dry_run)
    if as_json:
        print_json({"dry_run": dry_run, "archived": n})
    else:
        say(f"would archive {n} alert(s)" if dry_run else f"archived {n} alert(s)")


@example("consistency schedule install")
@click.group()
def schedule() -> None:
    """Register the periodic jobs in pg_cron."""


@example("consistency schedule install --json")
@schedule.command("install")
@dsn_option
@json_option
def schedule_install(dsn: str | None, as_json: bool) -> None:
    """Check every 5 minutes, daily report, nightly retention (needs pg_cron)."""
    with connect(dsn) as conn:
        jobs = scheduling.install(conn)
    if as_json:
        print_json([{"job": name, "schedule": spec, "command": command}
                    for name, spec, command in jobs])
        return
    for name, spec, _ in jobs:
        say(f"scheduled {name}: {spec}")


COMMANDS = [check, report, retention, schedule]
