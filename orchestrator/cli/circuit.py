"""`consistency circuit status|force`."""

from __future__ import annotations

import dataclasses

import click

from orchestrator import breaker
from orchestrator.cli.common import connect, dsn_option, example, json_option
from orchestrator.output import Styled, print_json, say, table, timestamp

_COLOUR = {"closed": "green", "half_open": "yellow", "disabled": "yellow"}


@example("consistency circuit status appointment_booking:service:42")
@click.group()
def circuit() -> None:
    """Circuit breakers shared by every worker (consistency.circuit_breaker_states)."""


@example("consistency circuit status --json")
@circuit.command("status")
@dsn_option
@json_option
@click.argument("key", required=False)
def circuit_status(dsn: str | None, as_json: bool, key: str | None) -> None:
    """Every circuit, or KEY only (an unknown key is closed)."""
    with connect(dsn) as conn:
        rows = breaker.status(conn, key)
    if as_json:
        print_json([dataclasses.asdict(r) for r in rows])
        return
    if not rows:
        say("no circuit has recorded anything yet")
        return
    table(("key", "state", "failures", "successes", "last failure", "opened", "closed"),
          [(r.circuit_key, Styled(r.state, _COLOUR.get(r.state, "red")), r.failure_count,
            r.success_count, timestamp(r.last_failure_at), timestamp(r.opened_at),
            timestamp(r.closed_at))
           for r in rows], title="circuits")


@example("consistency circuit force appointment_booking:service:42 forced_open \\\n"
         '    --actor ops:ann --reason "calendar maintenance"')
@circuit.command("force")
@dsn_option
@click.argument("key")
@click.argument("state", type=click.Choice(breaker.FORCEABLE_STATES))
@click.option("--actor", required=True, help="Who forces it (recorded in the audit log).")
@click.option("--reason", required=True, help="Why (recorded in the event and the audit log).")
@json_option
def circuit_force(dsn: str | None, key: str, state: str, actor: str, reason: str,
                  as_json: bool) -> None:
    """Operator override: forced_open (refuse every call), disabled (permit
    every call, count nothing) or closed (reset)."""
    with connect(dsn) as conn:
        changed = breaker.force(conn, key, state, actor, reason)
    if as_json:
        print_json({"circuit_key": key, "state": state, "changed": changed})
    else:
        say(f"circuit {key}: {state}" if changed else f"circuit {key} already {state}: unchanged")


COMMANDS = [circuit]
