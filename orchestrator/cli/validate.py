"""`consistency validate CALL_ID`."""

from __future__ import annotations

import json
import sys

import click

from orchestrator import config, validation
from orchestrator.cli.common import BigInt, connect, dsn_option, example, json_option
from orchestrator.output import print_json, say, say_markup


def _print_validation(result: validation.ValidationResult) -> None:
    if result.ok:
        say(f"call {result.call_id}: ok (appointment {result.appointment_id})")
        return
    details = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(result.details.items())
                        if k != "call_id")
    say_markup("call {}: [red]{}[/] {}", result.call_id, result.reason, details)


@example("consistency validate 4711 --external-id cal-8812 --rollback-on-failure")
@click.command("validate")
@dsn_option
@json_option
@click.argument("call_id", type=BigInt())
@click.option("--appointment", "appointment_id", type=BigInt(), default=None,
              help="Validate this appointment (default: the newest active one of the call).")
@click.option("--external-id", "external_booking_id", default=None,
              help="Booking id the calendar returned; must match the appointment's.")
@click.option("--rollback-on-failure", is_flag=True,
              help="When validation fails, roll the booking back (alert + review item).")
@click.option("--actor", default=None, help="Recorded in the audit log (default cli:$USER).")
def validate(dsn: str | None, as_json: bool, call_id: int, appointment_id: int | None,
             external_booking_id: str | None, rollback_on_failure: bool,
             actor: str | None) -> None:
    """Validate the booking of CALL_ID; exit 1 when it fails."""
    with connect(dsn, autocommit=True) as conn:
        result = validation.validate_booking(conn, call_id, appointment_id, external_booking_id)
        alert_id = None
        if not result.ok and rollback_on_failure:
            alert_id = validation.rollback_booking(conn, call_id, result.reason or "invalid",
                                                   actor=actor or config.default_actor())
    if as_json:
        print_json({**result.as_dict(), "rollback_alert_id": alert_id})
    else:
        _print_validation(result)
        if alert_id is not None:
            say(f"rolled back: alert {alert_id}, queued for manual review")
    if not result.ok:
        sys.exit(1)


COMMANDS = [validate]
