"""The `consistency` command. Parses and prints; the modules do the work."""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
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

from orchestrator import breaker as breaker_mod
from orchestrator import config, db, durations, monitor, output, review, scheduling, validation
from orchestrator import migrate as migrate_mod
from orchestrator.durations import parse_duration
from orchestrator.errors import GuardError
from orchestrator.output import Styled, print_json, say, table
from orchestrator.profile import ProfileError

F = TypeVar("F", bound=Callable[..., Any])

out = output.out
err = output.err


def dsn_option(func: F) -> F:
    return click.option(
        "--dsn", metavar="DSN", default=None,
        help="Connection string or URL; default DATABASE_URL, else libpq PG* variables.",
    )(func)


def json_option(func: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON.")(func)


class BigInt(click.IntRange):
    """An id: any PostgreSQL bigint (a row may hold a negative one), nothing
    beyond, so that the database is asked about a bigint, never a numeric."""

    def __init__(self) -> None:
        super().__init__(min=db.BIGINT_MIN, max=db.BIGINT_MAX)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="consistency-guard")
def cli() -> None:
    """consistency-guard: PostgreSQL keeps calls and appointments consistent."""


# --- migrate -----------------------------------------------------------------

@cli.group(invoke_without_command=True)
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
    ctx.obj = {"dsn": dsn}
    if ctx.invoked_subcommand is not None:
        return
    result = migrate_mod.migrate(dsn, dry_run=dry_run, reapply=reapply, owner=owner,
                                 profile=profile_file)
    for note in result.notes:
        output.err.print(f"note: {output.clean(note)}", markup=False)
    if as_json:
        print_json({"dry_run": dry_run, "migrations": result.migrations_applied,
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
    table(("key", "value", "min", "max", "env", "description"),
          [(s.key, json.dumps(s.value), s.min_value, s.max_value, s.env_var, s.description)
           for s in settings])


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
    say(f"{key} = {value}" if changed else f"{key} already {value}: unchanged")


@config_group.command("sync")
@dsn_option
@json_option
@click.option("--actor", default=None, help="Recorded in the audit log (default cli:$USER).")
def config_sync(dsn: str | None, as_json: bool, actor: str | None) -> None:
    """Apply the settings whose environment variables are set (all or nothing)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        changed = config.sync_from_env(conn, actor or config.default_actor())
    if as_json:
        print_json({"changed": changed})
    else:
        say("changed: " + ", ".join(changed) if changed else "nothing to change")


# --- validation and review ---------------------------------------------------------

def _print_validation(result: validation.ValidationResult) -> None:
    if result.ok:
        say(f"call {result.call_id}: ok (appointment {result.appointment_id})")
        return
    details = ", ".join(f"{k}={json.dumps(v)}" for k, v in sorted(result.details.items())
                        if k != "call_id")
    output.say_markup("call {}: [red]{}[/] {}", result.call_id, result.reason, details)


@cli.command("validate")
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
def validate_cmd(dsn: str | None, as_json: bool, call_id: int, appointment_id: int | None,
                 external_booking_id: str | None, rollback_on_failure: bool,
                 actor: str | None) -> None:
    """Validate the booking of CALL_ID; exit 1 when it fails."""
    with db.connect(db.resolve_dsn(dsn), autocommit=True) as conn:
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


@cli.group("review")
def review_group() -> None:
    """Work the manual review queue (consistency.manual_review_queue)."""


def _item_row(item: review.ReviewItem) -> list[Any]:
    return [item.id, item.call_id, item.reason, item.priority, item.status, item.assigned_to,
            f"{item.created_at:%Y-%m-%d %H:%M:%S}", item.resolution_notes]


@review_group.command("list")
@dsn_option
@json_option
@click.option("--status", type=click.Choice(review.STATUSES), default=None,
              help="Only items in this state (default: all, open ones first).")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
def review_list(dsn: str | None, as_json: bool, status: str | None, limit: int) -> None:
    """List review items: open ones in claim order, then closed ones."""
    with db.connect(db.resolve_dsn(dsn), autocommit=True) as conn:
        items = review.list_items(conn, status, limit)
    if as_json:
        print_json([item.as_dict() for item in items])
        return
    table(("id", "call", "reason", "prio", "status", "assigned", "created", "notes"),
          [_item_row(item) for item in items])


@review_group.command("claim")
@dsn_option
@json_option
@click.option("--reviewer", required=True,
              help="Who takes the item: your login, unless you connect as the guard's owner.")
def review_claim(dsn: str | None, as_json: bool, reviewer: str) -> None:
    """Take the most urgent pending item (highest priority, oldest)."""
    with db.connect(db.resolve_dsn(dsn), autocommit=True) as conn:
        item = review.claim(conn, reviewer)
    if as_json:
        print_json(item.as_dict() if item else None)
    elif item is None:
        say("nothing to review")
    else:
        say(f"claimed item {item.id}: call {item.call_id}, {item.reason} "
            f"(priority {item.priority}) context {json.dumps(item.context)}")


@review_group.command("resolve")
@dsn_option
@json_option
@click.argument("item_id", type=BigInt())
@click.option("--reviewer", required=True,
              help="Must be the assignee (or the item unassigned), and your login unless you "
                   "connect as the guard's owner.")
@click.option("--status", type=click.Choice(["resolved", "dismissed"]), required=True)
@click.option("--notes", required=True, help="What was done; kept with the item.")
def review_resolve(dsn: str | None, as_json: bool, item_id: int, reviewer: str, status: str,
                   notes: str) -> None:
    """Close ITEM_ID as resolved or dismissed."""
    with db.connect(db.resolve_dsn(dsn), autocommit=True) as conn:
        item = review.resolve(conn, item_id, reviewer, status, notes)
    if as_json:
        print_json(item.as_dict())
    else:
        say(f"item {item.id} {item.status} by {item.assigned_to}")

# --- circuit -------------------------------------------------------------------

def _when(value: Any) -> str:
    if value is None:
        return ""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@cli.group()
def circuit() -> None:
    """Circuit breakers shared by every worker (consistency.circuit_breaker_states)."""


@circuit.command("status")
@dsn_option
@json_option
@click.argument("key", required=False)
def circuit_status(dsn: str | None, as_json: bool, key: str | None) -> None:
    """Every circuit, or KEY only (an unknown key is closed)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        rows = breaker_mod.status(conn, key)
    if as_json:
        print_json([dataclasses.asdict(r) for r in rows])
        return
    if not rows:
        say("no circuit has recorded anything yet")
        return
    colour = {"closed": "green", "half_open": "yellow", "disabled": "yellow"}
    table(("key", "state", "failures", "successes", "last failure", "opened", "closed"),
          [(r.circuit_key, Styled(r.state, colour.get(r.state, "red")), r.failure_count,
            r.success_count, _when(r.last_failure_at), _when(r.opened_at), _when(r.closed_at))
           for r in rows], title="circuits")


@circuit.command("force")
@dsn_option
@click.argument("key")
@click.argument("state", type=click.Choice(breaker_mod.FORCEABLE_STATES))
@click.option("--actor", required=True, help="Who forces it (recorded in the audit log).")
@click.option("--reason", required=True, help="Why (recorded in the event and the audit log).")
def circuit_force(dsn: str | None, key: str, state: str, actor: str, reason: str) -> None:
    """Operator override: forced_open (refuse every call), disabled (permit
    every call, count nothing) or closed (reset)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        changed = breaker_mod.force(conn, key, state, actor, reason)
    say(f"circuit {key}: {state}" if changed else f"circuit {key} already {state}: unchanged")
# --- relay -----------------------------------------------------------------------

def _seconds(text: str, bounds: durations.Bounds) -> float:
    return parse_duration(text, bounds).total_seconds()


@cli.group("relay", invoke_without_command=True)
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
    exits 0."""
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
        err.print(warning, markup=False)
    target = db.resolve_dsn(dsn)
    db.connect(target).close()  # a wrong DSN is one line and exit 2, not a retry loop
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
        err.print(f"delivered {stats.delivered}, retried {stats.retried}, dead {stats.dead}",
                  markup=False)
        sys.exit(1 if stats.undelivered else 0)


_RELAY_STATUS_COLUMNS = ("sink_id", "sink", "min_severity", "status", "deliveries",
                         "oldest_created_at", "last_seen_at", "pending", "in_flight", "retrying",
                         "retrying_oldest_seconds", "dead", "delivered_last_hour",
                         "last_success_at", "last_error", "last_error_at")


def _relay_status_rows(dsn: str | None) -> list[dict[str, Any]]:
    with db.connect(db.resolve_dsn(dsn)) as conn:
        rows = conn.execute(db.query("relay_status")).fetchall()
    return [dict(zip(_RELAY_STATUS_COLUMNS, r, strict=True)) for r in rows]


def _age(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _cell(value: Any) -> Any:
    return _when(value) if isinstance(value, dt.datetime) else value


@relay.command("sinks")
@dsn_option
@json_option
def relay_sinks(dsn: str | None, as_json: bool) -> None:
    """Registered sinks (redacted name, no secret is stored), their deliveries
    by status and when a relay last served them."""
    rows = _relay_status_rows(dsn)
    keep = _RELAY_STATUS_COLUMNS[:7]
    if as_json:
        print_json([{k: r[k] for k in keep} for r in rows])
        return
    table(("id", "sink", "min", "status", "n", "oldest", "last seen"),
          [[_cell(r[k]) for k in keep] for r in rows])


@relay.command("status")
@dsn_option
@json_option
def relay_status(dsn: str | None, as_json: bool) -> None:
    """Per sink: pending, in flight, retrying (oldest age), dead, delivered in
    the last hour, last success, last error. Exit 1 when a delivery is dead."""
    per_sink: dict[int, dict[str, Any]] = {}
    for r in _relay_status_rows(dsn):
        per_sink.setdefault(r["sink_id"], {k: v for k, v in r.items()
                                           if k not in ("status", "deliveries",
                                                        "oldest_created_at")})
    sinks = list(per_sink.values())
    if as_json:
        print_json(sinks)
    elif not sinks:
        say("no relay sink registered yet")
    else:
        rows = []
        for s in sinks:
            retrying = str(s["retrying"]) + (f" ({_age(s['retrying_oldest_seconds'])})"
                                             if s["retrying"] else "")
            rows.append([s["sink_id"], s["sink"], s["pending"], s["in_flight"], retrying,
                         Styled(s["dead"], "red") if s["dead"] else 0,
                         s["delivered_last_hour"], _when(s["last_success_at"]),
                         _when(s["last_seen_at"]), s["last_error"]])
        table(("id", "sink", "pending", "in flight", "retrying (oldest)", "dead",
               "delivered 1h", "last success", "last seen", "last error"), rows)
    if any(s["dead"] for s in sinks):
        sys.exit(1)


@relay.command("redrive")
@dsn_option
@click.option("--sink", "sink_id", type=click.IntRange(min=1), default=None,
              help="Only this sink (see relay status).")
@click.option("--since", default=None, metavar="DURATION",
              help="Only deliveries that died within this last period, e.g. 2h.")
@click.option("--type", "alert_type", default=None, help="Only alerts of this type.")
@click.option("--actor", default=None, help="Recorded in the audit log (default cli:$USER).")
def relay_redrive(dsn: str | None, sink_id: int | None, since: str | None,
                  alert_type: str | None, actor: str | None) -> None:
    """Put dead deliveries back to pending (audited): attempts and the
    give-up age start over; a running relay picks them up."""
    since_td = parse_duration(since, durations.SINCE) if since else None
    with db.connect(db.resolve_dsn(dsn)) as conn:
        (count,), = conn.execute(db.query("relay_redrive"), {
            "sink_id": sink_id, "since": since_td, "alert_type": alert_type,
            "actor": actor or config.default_actor()}).fetchall()
    say(f"re-drove {count} dead deliver{'y' if count == 1 else 'ies'}")


@relay.command("forget-sink")
@dsn_option
@click.argument("sink_id", type=click.IntRange(min=1))
def relay_forget_sink(dsn: str | None, sink_id: int) -> None:
    """Forget a sink no relay serves any more, with its pending deliveries
    (they would otherwise hold old alerts back from retention)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        found = conn.execute(db.query("relay_forget_sink"), {"sink_id": sink_id}).fetchone()[0]
    if not found:
        raise GuardError(f"no relay sink with id {sink_id} (see consistency relay sinks)")
    say(f"forgot sink {sink_id}")


for _alias, _command in (("relay-sinks", relay_sinks), ("relay-forget-sink", relay_forget_sink)):
    _hidden = copy.copy(_command)
    _hidden.hidden = True
    cli.add_command(_hidden, _alias)


# --- monitor ---------------------------------------------------------------------

def _print_check(report: monitor.CheckReport) -> None:
    def row(r: monitor.RuleResult) -> list[Any]:
        cells = [r.rule, r.severity, r.found, r.corrected, r.alerted, r.failed]
        if r.severity == "critical" and r.remaining:
            return [Styled(c, "red") for c in cells]
        return cells

    table(("rule", "severity", "found", "corrected", "alerted", "failed"),
          [row(r) for r in report.rules],
          title=f"consistency check #{report.run_id} ({report.duration_ms:.1f} ms)")
    for failure in report.failures:
        say(f"could not correct: {failure}")
    if report.waited_ms > 100:
        say(f"waited {report.waited_ms:.0f} ms for a concurrent check to finish")


@cli.command()
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
    correction failed."""
    window_td = parse_duration(window, durations.WINDOW) if window else None
    interval = parse_duration(every, durations.INTERVAL) if every else None
    conninfo = db.resolve_dsn(dsn)
    if interval is None:
        with db.connect(conninfo) as conn:
            report = monitor.run_check(conn, window_td)
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
            output.print_json(report.as_dict(), indent=None)
        else:
            _print_check(report)

    runs = monitor.check_loop(conninfo, interval, stop, window_td, on_result=show)
    say(f"stopped after {runs} run(s)", to_stderr=True)


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
    _print_report(data)


def _print_report(data: dict[str, Any]) -> None:
    backlog = data["review_backlog"]
    table(("item", "value"), [
        ("calls", data["totals"]["calls"]),
        ("appointments", data["totals"]["appointments"]),
        ("consistency rate", f"{data['consistency_rate_pct']} %"),
        ("alerts", data["totals"]["alerts"]),
        *((f"  {severity}", n) for severity, n in data["alerts_by_severity"].items()),
        ("auto-corrected / manual", f"{data['auto_corrected']} / {data['manual']}"),
        ("circuit opens", data["circuit_opens"]),
        ("validation failures", data["validation_failures"]),
        ("review backlog", f"{backlog['pending']} pending, {backlog['in_progress']} in progress"),
    ], title=f"consistency report {data['period']['day']}", show_header=False)
    if data["top_issues"]:
        table(("alert type", "count"),
              [(item["alert_type"], item["count"]) for item in data["top_issues"]],
              title="top issues")


@cli.group()
def retention() -> None:
    """Alert retention (retention.alert_days)."""


@retention.command("run")
@dsn_option
@click.option("--dry-run", is_flag=True, help="Count what would be archived.")
@click.option("--older-than", default=None, metavar="DURATION",
              help="Override retention.alert_days, e.g. 30d (1s to 36500d).")
@click.option("--batch", default=10_000, show_default=True,
              type=click.IntRange(min=1, max=1_000_000))
def retention_run(dsn: str | None, dry_run: bool, older_than: str | None, batch: int) -> None:
    """Move old alerts to alerts_archive, one short transaction per batch."""
    age = parse_duration(older_than, durations.AGE) if older_than else None
    with db.connect(db.resolve_dsn(dsn)) as conn:
        n = monitor.archive_alerts(conn, age, batch, dry_run=dry_run)
    say(f"would archive {n} alert(s)" if dry_run else f"archived {n} alert(s)")


@cli.group()
def schedule() -> None:
    """Register the periodic jobs in pg_cron."""


@schedule.command("install")
@dsn_option
@json_option
def schedule_install(dsn: str | None, as_json: bool) -> None:
    """Check every 5 minutes, daily report, nightly retention (needs pg_cron)."""
    with db.connect(db.resolve_dsn(dsn)) as conn:
        jobs = scheduling.install(conn)
    if as_json:
        print_json([{"job": name, "schedule": spec, "command": command}
                    for name, spec, command in jobs])
        return
    for name, spec, _ in jobs:
        say(f"scheduled {name}: {spec}")


# --- bench -----------------------------------------------------------------------

@cli.group(invoke_without_command=True)
@dsn_option
@json_option
@click.option("--quick", is_flag=True, help="Small data sets: under 3 minutes on 2 cores.")
@click.option("--tiny", is_flag=True, hidden=True, help="Smaller still: the test suite's run.")
@click.option("--plot", metavar="FILE.png", default=None,
              help="Also draw the table (needs the plot extra: matplotlib).")
@click.pass_context
def bench(ctx: click.Context, dsn: str | None, as_json: bool, quick: bool, tiny: bool,
          plot: str | None) -> None:
    """Benchmarks: compare variants in one run on a scratch database.

    Without a subcommand: every benchmark, on the server of --dsn or on a
    throwaway cluster of its own, summed up in one table (baseline, with the
    guard, the naive variant, overhead, target, met). The subcommands take a
    DSN of a server where they may create and drop a database.
    """
    if ctx.invoked_subcommand is not None:
        if dsn or as_json or quick or tiny or plot:
            raise click.UsageError(f"put the options after `{ctx.invoked_subcommand}`: "
                                   "before it they belong to the run of every benchmark")
        return
    _bench_all(dsn, as_json, "tiny" if tiny else "quick" if quick else "full", plot)


def _emit(report: Any, as_json: bool, printer: Callable[[Any], None]) -> None:
    from orchestrator.bench import dump_json

    if as_json:
        click.echo(dump_json(report))
    else:
        printer(report)


@bench.command("check")
@dsn_option
@json_option
@click.option("--calls", "sizes", type=click.IntRange(min=100), multiple=True,
              help="Dataset sizes (repeatable; default 100000 and 1000000).")
@click.option("--repeat", type=click.IntRange(min=1), default=7, show_default=True)
def bench_check(dsn: str | None, as_json: bool, sizes: tuple[int, ...], repeat: int) -> None:
    """run_check on the last hour and on the whole table, ~1 % drift."""
    from orchestrator.bench import check as mod

    _emit(mod.run(db.resolve_dsn(dsn), sizes or (100_000, 1_000_000), repeat), as_json,
          mod.print_report)


@bench.command("validation")
@dsn_option
@json_option
@click.option("--calls", type=click.IntRange(min=10), default=100_000, show_default=True,
              help="Calls in the dataset.")
@click.option("--repeat", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Timed round trips per variant.")
def bench_validation(dsn: str | None, as_json: bool, calls: int, repeat: int) -> None:
    """validate_booking round trip: median and p95 per variant (target p95 < 5 ms)."""
    from orchestrator.bench import validation as mod

    _emit(mod.run(db.resolve_dsn(dsn), calls=calls, repeat=repeat), as_json, mod.print_report)


@bench.command("circuit")
@dsn_option
@json_option
@click.option("--repeat", default=2000, show_default=True, help="Timed calls per variant.")
@click.option("--seconds", default=3.0, show_default=True, help="Duration of each throughput run.")
@click.option("--clients", default=8, show_default=True, help="Threads in the throughput runs.")
def bench_circuit(dsn: str | None, as_json: bool, repeat: int, seconds: float,
                  clients: int) -> None:
    """circuit_acquire: closed path, transition path, locking variant, round-trip floor."""
    from orchestrator.bench import circuit as mod

    _emit(mod.run(db.resolve_dsn(dsn), repeat=repeat, seconds=seconds, clients=clients),
          as_json, lambda r: mod.print_result(r, out))


@bench.command("relay")
@dsn_option
@json_option
@click.option("--alerts", type=click.IntRange(1), default=3000, show_default=True,
              help="Alerts per throughput run.")
@click.option("--samples", type=click.IntRange(1), default=200, show_default=True,
              help="Alerts timed one by one for latency.")
@click.option("--hang-rounds", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Runs of 1 relay without and with a hanging second sink (medians compared).")
def bench_relay(dsn: str | None, as_json: bool, alerts: int, samples: int,
                hang_rounds: int) -> None:
    """Alerts/s to a local webhook with 1 and 2 relays, and with a second sink
    that never answers; commit-to-delivery latency."""
    from orchestrator.bench import relay as mod

    _emit(mod.run(db.resolve_dsn(dsn), alerts=alerts, samples=samples,
                  hang_rounds=hang_rounds), as_json, lambda r: mod.print_report(r, out))


@bench.command("serve")
@dsn_option
@json_option
@click.option("--calls", type=click.IntRange(min=100), default=1_000_000, show_default=True)
@click.option("--alerts", type=click.IntRange(min=100), default=1_000_000, show_default=True)
@click.option("--repeat", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--write-repeat", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Samples of raising 20 alerts with and without the metric counters.")
def bench_serve(dsn: str | None, as_json: bool, calls: int, alerts: int, repeat: int,
                write_repeat: int) -> None:
    """Cost of one scrape (consistency.metrics()) at 1M calls and 1M alerts (target < 50 ms),
    and what the metric counters cost the writers of alerts."""
    from orchestrator.bench import serve as mod

    _emit(mod.run(db.resolve_dsn(dsn), calls=calls, alerts=alerts, repeat=repeat,
                  progress=None if as_json else (lambda m: err.print(m, style="dim")),
                  write_repeat=write_repeat),
          as_json, mod.print_report)


@bench.command("triggers")
@dsn_option
@click.option("--calls", type=click.IntRange(min=100), default=100_000, show_default=True,
              help="Calls in the data set (as many appointments, ~60 % of calls linked).")
@click.option("--repeat", type=click.IntRange(min=1), default=15, show_default=True,
              help="Timed samples per workload and variant (after one warm-up round).")
@json_option
def bench_triggers(dsn: str | None, calls: int, repeat: int, as_json: bool) -> None:
    """Cost of the guarantees: no guard vs row-level triggers vs the guard."""
    from orchestrator.bench import render
    from orchestrator.bench import triggers as mod

    results = mod.run(db.resolve_dsn(dsn), calls=calls, repeat=repeat,
                      progress=None if as_json else (lambda m: err.print(m, style="dim")))
    _emit(results, as_json,
          lambda r: render(f"bench triggers: {calls} calls, median of {repeat} (ms)",
                           mod.COLUMNS, mod.table_rows(r), console=out))


# --- serve and up ------------------------------------------------------------------

def serve_options(func: F) -> F:
    for option in reversed([
        click.option("--host", default="127.0.0.1", show_default=True,
                     help="Address to listen on; anything but loopback wants a token."),
        click.option("--port", type=click.IntRange(0, 65535), default=9187, show_default=True),
        click.option("--token", envvar="CONSISTENCY_TOKEN", default=None, show_envvar=True,
                     help="Require Authorization: Bearer TOKEN (or a browser login with "
                          "TOKEN as password) on everything but /healthz."),
        click.option("--rate-limit", default="120/minute", show_default=True,
                     help="Requests per client, e.g. 120/minute; over it: 429 + Retry-After."),
        click.option("--refresh", "refresh_seconds", type=click.IntRange(2, 3600), default=30,
                     show_default=True, help="Dashboard refresh interval in seconds."),
    ]):
        func = option(func)
    return func


def _wait_for_signal(until: Callable[[threading.Event], None] | None = None) -> None:
    """Block until SIGTERM or SIGINT (or ``until`` returns)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set())
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        if until is None:
            while not stop.wait(1.0):
                pass
        else:
            until(stop)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@cli.command()
@dsn_option
@serve_options
def serve(dsn: str | None, host: str, port: int, token: str | None, rate_limit: str,
          refresh_seconds: int) -> None:
    """Prometheus /metrics, /healthz, /api/status and the dashboard at /.

    Reads as consistency_monitor (the login role needs membership), read-only:
    a hot standby will do. SIGTERM stops it."""
    from orchestrator import server

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s serve %(levelname)s %(message)s")
    options = server.ServeOptions(host, port, token, rate_limit, refresh_seconds)
    thread, database = server.start(db.resolve_dsn(dsn), options)
    err.print(f"serving http://{thread.address}/ (metrics at /metrics)", markup=False)
    try:
        _wait_for_signal()
    finally:
        thread.stop()
        database.close()
    err.print("stopped", markup=False)


@cli.command()
@dsn_option
@click.option("--sink", "sinks", multiple=True, metavar="URL",
              help="Relay alerts to this sink (repeatable); default $CONSISTENCY_SINKS. "
                   "Without sinks, no relay runs. A URL holding a secret is visible in ps: "
                   "use --sinks-file or $CONSISTENCY_SINKS.")
@click.option("--sinks-file", metavar="FILE", default=None,
              help="Sink URLs, one a line (# comments); refused when group or others may "
                   "read it (chmod 600).")
@click.option("--every", default="5m", show_default=True, metavar="DURATION",
              help="Interval of the consistency check.")
@click.option("--window", default=None, metavar="DURATION",
              help="Window of each check (default monitoring.recent_hours).")
@serve_options
def up(dsn: str | None, sinks: tuple[str, ...], sinks_file: str | None, every: str,
       window: str | None, host: str, port: int, token: str | None, rate_limit: str,
       refresh_seconds: int) -> None:
    """Check loop, relay and serve in one process.

    Each part restarts after losing the database; /healthz reports each one.
    SIGTERM stops the check loop, drains the relay, stops serving, exits 0."""
    from orchestrator import relay as relay_mod
    from orchestrator import server
    from orchestrator import up as up_mod

    sources = relay_mod.collect_sink_urls(sinks, sinks_file)
    options = up_mod.UpOptions(
        every=parse_duration(every, durations.INTERVAL),
        window=parse_duration(window, durations.WINDOW) if window else None,
        sinks=sources.urls,
        serve=server.ServeOptions(host, port, token, rate_limit, refresh_seconds))
    for warning in sources.warnings:
        err.print(warning, markup=False)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    runner = up_mod.Up(db.resolve_dsn(dsn), options)
    runner.start()
    err.print(f"up: serving http://{runner.server.address}/, check every {every}, "
              f"relay to {len(options.sinks)} sink(s)", markup=False)
    try:
        _wait_for_signal(runner.watch)
    finally:
        runner.stop()
    err.print("stopped", markup=False)
    if runner.failed:
        sys.exit(1)


# --- demo, the umbrella bench, uninstall ----------------------------------------------

@cli.command()
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
    back from the database. Exit 1 when violations() is not empty at the end."""
    from orchestrator import demo as demo_mod

    def note(text: str) -> None:
        say(text, to_stderr=True)

    options = demo_mod.DemoOptions(dsn=dsn, minutes=minutes, speed=speed, serve=serve,
                                   keep=keep, sinks=sinks)
    result = demo_mod.run(options, note)
    out.print()
    _print_report(result.report)
    for line in demo_mod.narrative(result):
        say(line)
    table(("what just happened", "count"), demo_mod.summary_rows(result),
          title="what just happened")
    if not result.ok:
        output.error(f"violations() lists {result.summary['violations']} call(s)")
        sys.exit(1)


def _bench_all(dsn: str | None, as_json: bool, profile: str, plot: str | None) -> None:
    from orchestrator import pgcluster
    from orchestrator.bench import impact

    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError as exc:
            raise GuardError("--plot needs matplotlib: pip install "
                             "'consistency-guard[plot]'") from exc

    def progress(message: str) -> None:
        err.print(message, style="dim", markup=False)

    cluster = None
    if dsn is None:
        cluster = pgcluster.Cluster(fast=False, prefix="consistency-guard-bench-")
        try:
            cluster.init()
            cluster.start()
        except BaseException:
            cluster.destroy()
            raise
        target, server = cluster.dsn(), f"throwaway PostgreSQL, {cluster.binaries.describe()}"
    else:
        target, server = db.resolve_dsn(dsn), "the server of --dsn"
        db.connect(target).close()  # unreachable: one line, exit 2
    try:
        progress(f"bench ({profile}) on {server}")
        report = impact.run(target, profile, server, progress)
    finally:
        if cluster is not None:
            cluster.destroy()
    if as_json:
        click.echo(output.to_json(report.as_dict()))
    else:
        table(impact.COLUMNS, impact.table_rows(report),
              title=f"consistency bench ({profile}): performance impact on {server}")
        for line in impact.LEGEND:
            say(line)
        say("seconds per benchmark: " + ", ".join(f"{k} {v:g}" for k, v in
                                                   report.seconds.items()))
    if plot is not None:
        impact.plot(report, plot)
        say(f"plot: {plot}", to_stderr=True)
    if not report.all_met:
        sys.exit(1)


@cli.command()
@dsn_option
@click.option("--dry-run", is_flag=True,
              help="Do everything in a transaction that is rolled back; change nothing.")
@json_option
def uninstall(dsn: str | None, dry_run: bool, as_json: bool) -> None:
    """Remove the guard: its triggers, bookkeeping columns and monitor indexes
    on calls and appointments, its roles' rights there, its pg_cron jobs and
    schema consistency (settings, alerts, audit log, review queue). Keeps the
    application's tables, columns and rows; keeps the roles (cluster-wide)."""
    from orchestrator import uninstall as uninstall_mod

    plan = uninstall_mod.uninstall(db.resolve_dsn(dsn), dry_run=dry_run)
    if as_json:
        print_json(plan.as_dict())
        return
    for line in uninstall_mod.describe(plan):
        say(line)


# --- entry point ---------------------------------------------------------------

def main(argv: list[str] | None = None) -> None:
    """Console script: user mistakes and unreachable databases become one line
    on stderr and exit code 2, never a traceback."""
    try:
        code = cli.main(args=argv, prog_name="consistency", standalone_mode=False)
    except ProfileError as exc:
        for line in exc.lines:
            output.error(line)
        for note in exc.notes:
            output.err.print(f"note: {output.clean(note)}", markup=False)
        sys.exit(exc.exit_code)
    except GuardError as exc:
        output.error(exc)
        sys.exit(exc.exit_code)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx else "consistency"
        output.error(f"{exc.format_message()} (see {where} --help)")
        sys.exit(2)
    except click.ClickException as exc:
        output.error(exc.format_message())
        sys.exit(2)
    except click.exceptions.Abort:
        say("aborted", to_stderr=True)
        sys.exit(130)
    except psycopg.OperationalError as exc:
        output.error(f"database unavailable: {db.describe_error(exc)}")
        sys.exit(2)
    except psycopg.Error as exc:
        output.error(f"database: {db.describe_error(exc)}")
        sys.exit(2)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
