"""`consistency relay` (deliver alerts) and `relay sinks|status|redrive|forget-sink`."""

from __future__ import annotations

import copy
import logging
import signal
import sys
from datetime import datetime
from typing import Any

import click

from orchestrator import config, db, durations
from orchestrator.cli.common import connect, dsn_option, example, json_option, require_owner
from orchestrator.durations import parse_duration
from orchestrator.output import Styled, age, print_json, say, table, timestamp

# orchestrator.relay (aiohttp, aiosmtplib) is imported by the commands that
# use it: every other command starts without it.


def _seconds(text: str, bounds: durations.Bounds) -> float:
    return parse_duration(text, bounds).total_seconds()


@example("consistency relay --sinks-file /etc/consistency/sinks --sink stdout://")
@click.group("relay", invoke_without_command=True)
@dsn_option
@click.option("--sink", "sinks", multiple=True, metavar="URL",
              help="Where to deliver alerts (repeatable). Schemes: webhook+http(s), slack+https, "
                   "smtp, smtps, alertmanager+http(s), stdout; others via Apprise when "
                   "installed. A URL holding a secret is visible in ps: use --sinks-file or "
                   "$CONSISTENCY_SINKS (space-separated, used when neither option is given).")
@click.option("--sinks-file", metavar="FILE", default=None,
              help="Sink URLs, one a line (# comments); refused when group or others may "
                   "read it (chmod 600).")
@click.option("--once", is_flag=True,
              help="One pass over what is due now, one attempt each, then exit: 0 when "
                   "nothing due is left undelivered, 1 otherwise.")
@click.option("--batch", type=click.IntRange(1, 10000), default=200, show_default=True,
              help="Most deliveries one claim takes for a sink (a sink never holds more than "
                   "--concurrency at once).")
@click.option("--concurrency", type=click.IntRange(1, 256), default=16, show_default=True,
              help="Sends in parallel, per sink.")
@click.option("--lease", "lease_seconds", type=click.FloatRange(min=1.0, max=86400),
              default=30.0, show_default=True,
              help="Seconds a claim is leased; renewed every third of it while the send runs. "
                   "A crashed relay's claims come back after it.")
@click.option("--poll", "poll_seconds", type=click.FloatRange(min=0.05, max=3600), default=2.0,
              show_default=True, help="Poll interval when no notification arrives.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=3600), default=10.0,
              show_default=True,
              help="Hard deadline of one send in seconds: connect and the whole response.")
@click.option("--give-up-after", default="24h", show_default=True, metavar="DURATION",
              help="Retry a delivery until it is this old; then it is dead (relay redrive).")
@click.option("--max-attempts", type=click.IntRange(1, 1_000_000), default=None,
              help="Also give up after this many attempts (default: the give-up age decides).")
@click.option("--retry-delay", "base_delay", type=click.FloatRange(min=0.0, max=3600),
              default=1.0, show_default=True,
              help="First retry delay in seconds; doubles with each attempt.")
@click.option("--backoff-cap", default="5m", show_default=True, metavar="DURATION",
              help="Longest wait between two attempts (a later Retry-After still wins).")
@click.option("--backlog", default=None, metavar="DURATION",
              help="A sink seen for the first time also receives the alerts of this last "
                   "period (default: only alerts raised from then on).")
@click.option("-q", "--quiet", is_flag=True, help="Log only failures.")
@click.pass_context
def relay(ctx: click.Context, dsn: str | None, sinks: tuple[str, ...], sinks_file: str | None,
          once: bool, batch: int, concurrency: int, lease_seconds: float, poll_seconds: float,
          timeout: float, give_up_after: str, max_attempts: int | None, base_delay: float,
          backoff_cap: str, backlog: str | None, quiet: bool) -> None:
    """Deliver alerts to sinks, at least once per (alert, sink).

    Subcommands: sinks, status, redrive, forget-sink. SIGTERM stops claiming,
    lets the sends in flight end (each within --timeout), records them, then
    exits 0. Runs as the guard's owner."""
    if ctx.invoked_subcommand is not None:
        return
    from orchestrator import relay as relay_mod

    sources = relay_mod.collect_sink_urls(sinks, sinks_file)
    parsed = relay_mod.parse_sinks(sources.urls)
    options = relay_mod.RelayOptions(
        batch=batch, concurrency=concurrency, lease_seconds=lease_seconds,
        poll_seconds=poll_seconds, timeout=timeout,
        give_up_after=_seconds(give_up_after, durations.GIVE_UP), max_attempts=max_attempts,
        base_delay=base_delay, max_delay=_seconds(backoff_cap, durations.BACKOFF_CAP),
        backlog_seconds=_seconds(backlog, durations.BACKLOG) if backlog else None)
    options.check()
    for warning in sources.warnings:
        say(warning, to_stderr=True)
    target = db.resolve_dsn(dsn)
    require_owner(target, "consistency relay")
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s relay %(levelname)s %(message)s")
    runner = relay_mod.Relay(target, parsed, options)
    previous = {sig: signal.signal(sig, lambda *_: runner.stop())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stats = runner.run(once=once)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if once:
        say(f"delivered {stats.delivered}, retried {stats.retried}, dead {stats.dead}",
            to_stderr=True)
        sys.exit(1 if stats.undelivered else 0)


def _cell(value: Any) -> Any:
    return timestamp(value) if isinstance(value, datetime) else value


@example("consistency relay sinks --json")
@relay.command("sinks")
@dsn_option
@json_option
def relay_sinks(dsn: str | None, as_json: bool) -> None:
    """Registered sinks (redacted name, no secret is stored), their deliveries
    by status and when a relay last served them."""
    from orchestrator.relay import state

    with connect(dsn) as conn:
        rows = state.sinks(conn)
    if as_json:
        print_json(rows)
        return
    table(("id", "sink", "min", "status", "n", "oldest", "last seen"),
          [[_cell(r[k]) for k in state.SINK_COLUMNS] for r in rows])


@example("consistency relay status")
@relay.command("status")
@dsn_option
@json_option
def relay_status(dsn: str | None, as_json: bool) -> None:
    """Per sink: pending, in flight, retrying (oldest age), dead, delivered in
    the last hour, last success, last error. Exit 1 when a delivery is dead."""
    from orchestrator.relay import state

    with connect(dsn) as conn:
        sinks = state.per_sink(conn)
    if as_json:
        print_json(sinks)
    elif not sinks:
        say("no relay sink registered yet")
    else:
        rows = []
        for s in sinks:
            retrying = str(s["retrying"]) + (f" ({age(s['retrying_oldest_seconds'])})"
                                             if s["retrying"] else "")
            rows.append([s["sink_id"], s["sink"], s["pending"], s["in_flight"], retrying,
                         Styled(s["dead"], "red") if s["dead"] else 0,
                         s["delivered_last_hour"], timestamp(s["last_success_at"]),
                         timestamp(s["last_seen_at"]), s["last_error"]])
        table(("id", "sink", "pending", "in flight", "retrying (oldest)", "dead",
               "delivered 1h", "last success", "last seen", "last error"), rows)
    if any(s["dead"] for s in sinks):
        sys.exit(1)


@example("consistency relay redrive --sink 2 --since 2h")
@relay.command("redrive")
@dsn_option
@click.option("--sink", "sink_id", type=click.IntRange(min=1), default=None,
              help="Only this sink (see relay status).")
@click.option("--since", default=None, metavar="DURATION",
              help="Only deliveries that died within this last period, e.g. 2h.")
@click.option("--type", "alert_type", default=None, help="Only alerts of this type.")
@click.option("--actor", default=None, help="Recorded in the audit log (default cli:$USER).")
@json_option
def relay_redrive(dsn: str | None, sink_id: int | None, since: str | None,
                  alert_type: str | None, actor: str | None, as_json: bool) -> None:
    """Put dead deliveries back to pending (audited): attempts and the
    give-up age start over; a running relay picks them up."""
    from orchestrator.relay import state

    since_td = parse_duration(since, durations.SINCE) if since else None
    with connect(dsn) as conn:
        count = state.redrive(conn, sink_id=sink_id, since=since_td, alert_type=alert_type,
                              actor=actor or config.default_actor())
    if as_json:
        print_json({"redriven": count})
    else:
        say(f"re-drove {count} dead deliver{'y' if count == 1 else 'ies'}")


@example("consistency relay forget-sink 3")
@relay.command("forget-sink")
@dsn_option
@click.argument("sink_id", type=click.IntRange(min=1))
@click.option("--force", is_flag=True,
              help="Also a sink a relay served within the last minute (its pending "
                   "deliveries are dropped; a relay still serving it registers it again).")
@json_option
def relay_forget_sink(dsn: str | None, sink_id: int, force: bool, as_json: bool) -> None:
    """Forget a sink no relay serves any more, with its pending deliveries
    (they would otherwise hold old alerts back from retention). A sink a relay
    served within the last minute is refused without --force."""
    from orchestrator.relay import state

    with connect(dsn) as conn:
        state.forget_sink(conn, sink_id, force=force)
    if as_json:
        print_json({"forgotten": sink_id})
    else:
        say(f"forgot sink {sink_id}")


def _hidden(command: click.Command) -> click.Command:
    alias = copy.copy(command)
    alias.hidden = True
    return alias


# relay-sinks and relay-forget-sink: the names these commands had before the
# relay group held them, kept as hidden aliases.
ALIASES = {"relay-sinks": _hidden(relay_sinks), "relay-forget-sink": _hidden(relay_forget_sink)}
COMMANDS = [relay]
