"""`consistency alerts list`."""

from __future__ import annotations

import click

from orchestrator import alerts, durations
from orchestrator.cli.common import connect, dsn_option, example, json_option
from orchestrator.durations import parse_duration
from orchestrator.output import Styled, print_json, say, table, timestamp

_COLOUR = {"critical": "red", "warning": "yellow", "info": "default"}


@example("consistency alerts list --since 1h --severity warning")
@click.group("alerts")
def alerts_group() -> None:
    """The alerts the guard raised (consistency.alerts, the relay's outbox)."""


@example("consistency alerts list --since 2h --severity critical --json")
@alerts_group.command("list")
@dsn_option
@click.option("--since", default="24h", show_default=True, metavar="DURATION",
              help="Alerts detected within this last period, e.g. 2h, 7d (retention moves "
                   "older ones to alerts_archive).")
@click.option("--severity", type=click.Choice(alerts.SEVERITIES), default="info",
              show_default=True, help="This severity and above.")
@click.option("--type", "alert_type", default=None, help="Only alerts of this type.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@json_option
def alerts_list(dsn: str | None, since: str, severity: str, alert_type: str | None,
                limit: int, as_json: bool) -> None:
    """Alerts newest first: severity, type, entity, description."""
    window = parse_duration(since, durations.SINCE)
    with connect(dsn) as conn:
        found = alerts.list_alerts(conn, window, min_severity=severity, alert_type=alert_type,
                                   limit=limit)
    if as_json:
        print_json([a.as_json() for a in found])
        return
    if not found:
        say(f"no alert of severity {severity} or above in the last {since}")
        return
    table(("id", "detected", "severity", "type", "entity", "description"),
          [(a.id, timestamp(a.detected_at), Styled(a.severity, _COLOUR[a.severity]),
            a.alert_type, a.entity, a.description) for a in found])


COMMANDS = [alerts_group]
