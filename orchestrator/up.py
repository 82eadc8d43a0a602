"""`consistency up`: the check loop, the relay and serve in one process.

Each part runs in its own thread under a supervisor that restarts it (with
backoff and jitter) when it ends without being asked to, e.g. after losing
the database; /healthz reports each part. One shutdown path: ``stop()``
(SIGTERM, SIGINT) stops the check loop, lets the relay finish and record the
sends in flight, then stops the server.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from orchestrator import backoff, monitor, server

log = logging.getLogger("consistency.up")

RESTART_DELAY = 0.5  # first wait before a part that ended runs again; doubles up to max_backoff


@dataclass
class UpOptions:
    every: timedelta = timedelta(minutes=5)
    window: timedelta | None = None
    sinks: list[str] = field(default_factory=list)
    # None: no HTTP server (the demo without --serve).
    serve: server.ServeOptions | None = field(default_factory=server.ServeOptions)
    max_backoff: float = 30.0


class Part:
    """A named loop that is restarted until the process stops."""

    def __init__(self, name: str, run: Callable[[], object], stop: Callable[[], None],
                 health: server.Health, halt: threading.Event, max_backoff: float) -> None:
        self.name, self._run, self._stop = name, run, stop
        self.health, self.halt, self.max_backoff = health, halt, max_backoff
        self.thread = threading.Thread(target=self._supervise, name=f"up-{name}", daemon=True)

    def _supervise(self) -> None:
        failures = 0
        while not self.halt.is_set():
            self.health.set(self.name, "running")
            started = time.monotonic()
            try:
                self._run()
                if self.halt.is_set():
                    break
                reason = "returned"
            except Exception as exc:  # a crash of one part must not end the others
                reason = f"{exc.__class__.__name__}: {exc}"
            failures = 1 if time.monotonic() - started > 60 else failures + 1
            delay = backoff.delay(failures, RESTART_DELAY, self.max_backoff)
            log.error("%s stopped (%s); restarting in %.1f s", self.name, reason, delay)
            self.health.set(self.name, "restarting", last_error=reason)
            self.health.restarted(self.name)
            self.halt.wait(delay)
        self.health.set(self.name, "stopped")

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        self._stop()
        self.thread.join(timeout)


class Up:
    def __init__(self, dsn: str, options: UpOptions) -> None:
        self.dsn = dsn
        self.options = options
        self.health = server.Health()
        self.halt = threading.Event()
        self._check_stop = threading.Event()
        self._relay: object | None = None
        self._relay_lock = threading.Lock()
        self.parts: list[Part] = []
        self.server: server.ServerThread | None = None
        self.database: server.Database | None = None
        self.failed = False

    # -- the parts -------------------------------------------------------------

    def _run_check(self) -> None:
        monitor.check_loop(
            self.dsn, self.options.every, self._check_stop, self.options.window,
            on_result=lambda r: self.health.note(
                "check", last_run_id=r.run_id, last_run_at=time.time(),
                last_duration_ms=r.duration_ms, critical_remaining=r.critical_remaining),
            max_backoff=self.options.max_backoff)

    def _stop_check(self) -> None:
        self._check_stop.set()

    def _run_relay(self) -> None:
        from orchestrator import relay

        runner = relay.Relay(self.dsn, relay.parse_sinks(self.options.sinks),
                             relay.RelayOptions())
        with self._relay_lock:
            if self.halt.is_set():
                return
            self._relay = runner
        runner.run()

    def _stop_relay(self) -> None:
        with self._relay_lock:
            if self._relay is not None:
                self._relay.stop()  # type: ignore[attr-defined]

    # -- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        """Validate the sinks, listen, then start the loops. Errors here (a bad
        sink URL, a port in use, a database that refuses the monitor role) end
        the command before anything runs."""
        from orchestrator import relay

        if self.options.sinks:
            relay.parse_sinks(self.options.sinks)
        if self.options.serve is not None:
            self.server, self.database = server.start(self.dsn, self.options.serve, self.health)
            self.health.set("serve", "running", address=self.server.address)
        self.parts.append(Part("check", self._run_check, self._stop_check, self.health,
                               self.halt, self.options.max_backoff))
        if self.options.sinks:
            self.parts.append(Part("relay", self._run_relay, self._stop_relay, self.health,
                                   self.halt, self.options.max_backoff))
        for part in self.parts:
            part.start()

    def watch(self, stop: threading.Event, poll: float = 1.0) -> None:
        """Wait for ``stop``; a server thread that died is reported (the
        listening socket is the part a restart cannot fix by itself)."""
        while not stop.wait(poll):
            if self.server is not None and not self.server.alive:
                self.health.set("serve", "stopped")
                log.error("the HTTP server stopped; shutting down")
                self.failed = True
                return

    def stop(self) -> None:
        self.halt.set()
        for part in reversed(self.parts):  # relay first: it drains its sends
            part.stop()
        if self.server is not None:
            self.server.stop()
        if self.database is not None:
            self.database.close()
