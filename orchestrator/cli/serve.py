"""`consistency serve` and `consistency up`."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable

import click

from orchestrator import db, durations
from orchestrator.cli.common import F, dsn_option, example, require_owner
from orchestrator.durations import parse_duration
from orchestrator.output import say


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


@example("CONSISTENCY_TOKEN=s3cret consistency serve --dsn postgresql://scraper@db/app")
@click.command()
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
    say(f"serving http://{thread.address}/ (metrics at /metrics)", to_stderr=True)
    try:
        _wait_for_signal()
    finally:
        thread.stop()
        database.close()
    say("stopped", to_stderr=True)


@example("consistency up --sinks-file /etc/consistency/sinks --every 5m --port 9187")
@click.command()
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
    SIGTERM stops the check loop, drains the relay, stops serving, exits 0.
    Runs as the guard's owner (the check corrects, the relay records)."""
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
        say(warning, to_stderr=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    target = db.resolve_dsn(dsn)
    require_owner(target, "consistency up")
    runner = up_mod.Up(target, options)
    runner.start()
    say(f"up: serving http://{runner.server.address}/, check every {every}, "
        f"relay to {len(options.sinks)} sink(s)", to_stderr=True)
    try:
        _wait_for_signal(runner.watch)
    finally:
        runner.stop()
    say("stopped", to_stderr=True)
    if runner.failed:
        sys.exit(1)


COMMANDS = [serve, up]
