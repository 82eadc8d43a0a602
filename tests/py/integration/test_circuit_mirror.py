"""The breaker's closed path without a round trip: the in-process mirror
(orchestrator/circuit_mirror.py), the versioned notifications it follows
(sql/functions/circuit_mirror.sql), two real processes on one key, the
listener killed, the shared worker pool, and database errors that must not
reach the booking code."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest
from conftest import HARNESS

from orchestrator import breaker as breaker_mod
from orchestrator import circuit_mirror
from orchestrator.breaker import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    WorkersBusyError,
)
from orchestrator.deadline_pool import DeadlinePool

KEY = "appointment_booking:service:7"
PEER = HARNESS / "circuit_peer.py"


@pytest.fixture(autouse=True)
def _fresh_pools(postgresql):
    # Closed before the test database is dropped, so no listener sees it go.
    yield
    breaker_mod.close_pools()


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom("calendar down")


def eventually(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, f"not within {timeout} s: {what}"
        time.sleep(0.002)


def warm(breaker: CircuitBreaker) -> None:
    """First use fills the mirror; wait until it admits in-process."""
    with breaker:
        pass
    eventually(lambda: breaker.mirror.admits(breaker.key), 5, "the mirror admits the key")


def fail_in_db(conn: psycopg.Connection, key: str = KEY, times: int = 1) -> None:
    for _ in range(times):
        conn.execute("SELECT consistency.circuit_record_failure(%s, 'elsewhere')", (key,))
    conn.commit()


def db_row(conn: psycopg.Connection, key: str = KEY) -> tuple[str, int]:
    return conn.execute("SELECT state, failure_count FROM consistency.circuit_status(%s)",
                        (key,)).fetchone()


def breaker_backends(conn: psycopg.Connection) -> list[tuple[int, object]]:
    return conn.execute("SELECT pid, state_change FROM pg_stat_activity "
                        "WHERE application_name = 'consistency-breaker' ORDER BY pid").fetchall()


# --- the closed path ------------------------------------------------------------

def test_closed_path_makes_no_round_trip(dsn, conn, monkeypatch) -> None:
    # Trusted for the whole test: on a loaded machine a re-read every second
    # may come late, the mirror stops trusting itself for a moment, and a
    # call rightly asks the database.
    monkeypatch.setattr(circuit_mirror, "RESYNC_INTERVAL", 60.0)
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    before = breaker_backends(conn)
    conn.commit()
    assert before, "the breaker's pool has no connection"
    results = [breaker.call(lambda i=i: i) for i in range(300)]
    for _ in range(300):
        with breaker:
            pass
    assert results == list(range(300))
    assert breaker_backends(conn) == before, "a call on a closed circuit queried the database"
    assert db_row(conn) == ("closed", 0)


def test_a_failure_elsewhere_makes_the_next_success_reset_it(dsn, conn, monkeypatch) -> None:
    # Only the notification may tell this process, not the periodic re-read.
    monkeypatch.setattr(circuit_mirror, "RESYNC_INTERVAL", 60.0)
    fail_in_db(conn)  # the row exists: what follows is an UPDATE, not its creation
    conn.execute("SELECT consistency.circuit_record_success(%s)", (KEY,))
    conn.commit()
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    fail_in_db(conn)
    eventually(lambda: not breaker.mirror.success_changes_nothing(KEY), 1,
               "the mirror knows the circuit has a failure")
    assert breaker.call(lambda: "booked") == "booked"
    assert db_row(conn) == ("closed", 0), "the success did not reset the failure made elsewhere"


def test_own_failure_that_opens_refuses_the_next_call_at_once(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    fail_in_db(conn, times=2)
    for _ in range(5):  # a success elsewhere, failures here: whatever the timing
        with pytest.raises((Boom, CircuitOpenError)):
            breaker.call(boom)
        if db_row(conn)[0] == "open":
            break
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(lambda: ran.append(1))
    assert ran == [] and refused.value.state == "open"


def test_a_forged_notification_is_only_a_hint(dsn, conn, connect) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    fail_in_db(conn, times=3)
    eventually(lambda: breaker.mirror.known_state(KEY) == "open", 1, "the mirror sees open")
    app = connect(autocommit=True)
    app.execute("SET ROLE consistency_app")
    forged = {"circuit_key": KEY, "state": "closed", "failing": False, "version": 2**62}
    app.execute("SELECT pg_notify('consistency_circuit_state', %s)", (json.dumps(forged),))
    time.sleep(0.2)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: ran.append(1))
    assert ran == [], "a forged notification made the mirror admit an open circuit"


def test_a_late_read_never_undoes_a_newer_one(dsn) -> None:
    mirror = breaker_mod.CircuitBreaker(KEY, dsn=dsn).mirror
    mirror.watch(KEY)
    mirror.apply([(KEY, "open", True, 10**12 + 5)])
    mirror.apply([(KEY, "closed", False, 10**12 + 3), ("never-watched", "open", True, 1)])
    assert mirror.known_state(KEY) == "open"
    assert mirror.known_state("never-watched") is None
    mirror.apply([(KEY, "closed", False, 10**12 + 6)])
    assert mirror.known_state(KEY) == "closed"


def test_every_change_a_mirror_acts_on_is_versioned_and_notified(conn, connect) -> None:
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_circuit_state")

    def heard() -> list[tuple[str, bool, int]]:
        got = [json.loads(n.payload) for n in listener.notifies(timeout=0.15)]
        assert all(g["circuit_key"] == KEY for g in got)
        return [(g["state"], g["failing"], g["version"]) for g in got]

    def version() -> int:
        return conn.execute("SELECT version FROM consistency.circuit_mirror(ARRAY[%s])",
                            (KEY,)).fetchone()[0]

    assert version() == 0
    fail_in_db(conn)                       # a new row: closed, failing
    first = heard()
    assert [(s, f) for s, f, _ in first] == [("closed", True)] and first[0][2] == version()
    fail_in_db(conn)                       # still closed and failing: nothing to say
    assert heard() == [] and version() == first[0][2]
    fail_in_db(conn)                       # opens
    opened = heard()
    assert [(s, f) for s, f, _ in opened] == [("open", True)] and opened[0][2] > first[0][2]
    conn.execute("UPDATE consistency.circuit_breaker_states SET opened_at = opened_at - "
                 "interval '1 hour'")
    conn.commit()
    assert heard() == [], "a change no mirror acts on was notified"
    conn.execute("SELECT consistency.circuit_force(%s, 'closed', 'test', 'reset')", (KEY,))
    conn.commit()
    closed = heard()
    assert [(s, f) for s, f, _ in closed] == [("closed", False)] and closed[0][2] > opened[0][2]
    conn.execute("DELETE FROM consistency.circuit_breaker_states")
    conn.commit()
    deleted = heard()
    assert [(s, f) for s, f, _ in deleted] == [("closed", False)] and deleted[0][2] > closed[0][2]


# --- two processes ----------------------------------------------------------------

class Peer:
    """A second worker process on the same key (tests/py/circuit_peer.py)."""

    def __init__(self, dsn: str, key: str) -> None:
        self.proc = subprocess.Popen([sys.executable, str(PEER), dsn, key],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._seen = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._seen:
                self.lines.append(line.strip())
                self._seen.notify_all()

    def wait_for(self, word: str, timeout: float = 20) -> list[str]:
        with self._seen:
            ok = self._seen.wait_for(
                lambda: any(line.split()[0] == word for line in self.lines), timeout)
            assert ok, f"the peer never printed {word!r}: {self.lines}"
            for i, line in enumerate(self.lines):
                if line.split()[0] == word:
                    return self.lines.pop(i).split()
        raise AssertionError("unreachable")

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def peer(dsn: str) -> Iterator[Peer]:
    p = Peer(dsn, KEY)
    try:
        p.wait_for("ready")
        yield p
    finally:
        p.close()


@pytest.mark.stress
def test_failures_in_one_process_open_the_circuit_for_another_within_100ms(
        dsn, conn, peer: Peer) -> None:
    # The peer's successes would reset a count of consecutive failures.
    conn.execute("SELECT consistency.set_setting('circuit_breaker.failure_threshold', '1', "
                 "'test')")
    conn.commit()
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    with pytest.raises(Boom):
        breaker.call(boom)
    opened = time.monotonic()  # the opening failure has committed
    assert db_row(conn)[0] == "open"
    line = peer.wait_for("refused", timeout=5)
    assert line[2] == "open"
    assert float(line[1]) - opened < 0.1, f"the peer refused {float(line[1]) - opened:.3f} s later"


@pytest.mark.stress
def test_a_state_forced_from_the_cli_reaches_a_running_process_within_100ms(
        dsn, conn, peer: Peer, run_cli: Callable) -> None:
    res = run_cli("circuit", "force", KEY, "forced_open", "--actor", "ops", "--reason",
                  "vendor maintenance", "--dsn", dsn)
    forced = time.monotonic()
    assert res.code == 0, res
    line = peer.wait_for("refused", timeout=5)
    assert line[2] == "forced_open"
    assert float(line[1]) - forced < 0.1, f"the peer refused {float(line[1]) - forced:.3f} s later"

    res = run_cli("circuit", "force", KEY, "closed", "--actor", "ops", "--reason", "back",
                  "--dsn", dsn)
    closed = time.monotonic()
    assert res.code == 0, res
    line = peer.wait_for("admitted", timeout=5)
    assert float(line[1]) - closed < 0.1


# --- the listener's connection -------------------------------------------------------

def listener_pids(conn: psycopg.Connection) -> list[int]:
    rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                        (circuit_mirror.LISTENER_NAME,)).fetchall()
    conn.commit()
    return [r[0] for r in rows]


@pytest.mark.stress
def test_listener_killed_polls_then_listens_again(dsn, conn, monkeypatch, caplog) -> None:
    monkeypatch.setattr(circuit_mirror, "RELISTEN_DELAY", 2.0)
    caplog.set_level(logging.WARNING, logger="orchestrator.circuit_mirror")
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    mirror = breaker.mirror
    assert mirror.mode == "listening"
    (pid,) = listener_pids(conn)
    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
    conn.commit()
    eventually(lambda: mirror.mode == "polling", 2, "the mirror polls")
    assert listener_pids(conn) == []

    fail_in_db(conn, times=3)  # nobody notifies this process now
    eventually(lambda: mirror.known_state(KEY) == "open", 0.5, "a poll reads the opening")
    assert mirror.mode == "polling"
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)

    eventually(lambda: mirror.mode == "listening", 5, "the mirror listens again")
    (new_pid,) = listener_pids(conn)
    assert new_pid != pid and mirror.listens == 2
    conn.execute("SELECT consistency.circuit_force(%s, 'closed', 'test', 'reset')", (KEY,))
    conn.commit()
    eventually(lambda: mirror.admits(KEY), 0.5, "the notification of the close arrives")
    messages = [r.getMessage() for r in caplog.records]
    assert any("polling every" in m for m in messages)
    assert any("listening again" in m for m in messages)


# --- the shared worker pool ------------------------------------------------------------

def _small_pool(monkeypatch, workers: int, per_key: int | None = None) -> DeadlinePool:
    pool = DeadlinePool(lambda: breaker_mod.WORKERS, "test-breaker-worker",
                        breaker_mod._per_key_workers)
    monkeypatch.setattr(breaker_mod, "_WORKER_POOL", pool)
    monkeypatch.setattr(breaker_mod, "_NOT_STARTED", breaker_mod._NotStarted())
    monkeypatch.setattr(breaker_mod, "WORKERS", workers)
    monkeypatch.setattr(breaker_mod, "WORKERS_PER_KEY", per_key)
    return pool


def test_sync_calls_share_a_bounded_pool_and_stuck_ones_cannot_grow_it(dsn, conn,
                                                                       monkeypatch) -> None:
    pool = _small_pool(monkeypatch, workers=2, per_key=2)
    for key, value in (("timeout_seconds", "0.3"), ("failure_threshold", "5")):
        conn.execute("SELECT consistency.set_setting(%s, %s::jsonb, 'test')",
                     (f"circuit_breaker.{key}", value))
    conn.commit()
    breaker = CircuitBreaker(KEY, dsn=dsn)
    names = {breaker.call(lambda: threading.current_thread().name) for _ in range(50)}
    assert pool.threads == 1 and names == {"test-breaker-worker-1"}

    release = threading.Event()
    errors: list[BaseException] = []

    def stuck() -> None:
        try:
            breaker.call(release.wait, 10)
        except CallTimeoutError as exc:
            errors.append(exc)

    callers = [threading.Thread(target=stuck) for _ in range(2)]
    for t in callers:
        t.start()
    for t in callers:
        t.join(5)
    assert [e.started for e in errors] == [True, True]
    assert db_row(conn) == ("closed", 2), "each call abandoned at its deadline is a failure"

    ran: list[int] = []
    started = time.monotonic()
    with pytest.raises(WorkersBusyError) as waited:
        breaker.call(lambda: ran.append(1))
    assert time.monotonic() - started < 1.5
    assert waited.value.started is False and "not started" in str(waited.value)
    assert isinstance(waited.value, CallTimeoutError), "callers catching timeouts still do"
    assert pool.threads == 2
    assert db_row(conn) == ("closed", 2), "the call dropped at its deadline is not a failure"
    assert breaker_mod.not_started(KEY) == 1
    release.set()
    assert breaker.call(lambda: "free again") == "free again"
    time.sleep(0.1)
    assert ran == [], "a call dropped at its deadline ran later"
    assert pool.threads == 2


def test_a_hanging_service_holds_its_share_of_workers_and_opens_no_other_circuit(
        dsn, conn, monkeypatch, caplog) -> None:
    """Four workers; four calls of calendar:A hang. A holds two workers (its
    share), its other two calls are dropped unstarted (no failure of A's);
    calendar:B's calls still get workers and run, and B stays closed."""
    pool = _small_pool(monkeypatch, workers=4)
    conn.execute("SELECT consistency.set_setting('circuit_breaker.timeout_seconds', '0.5', 't')")
    conn.commit()
    a, b = CircuitBreaker("calendar:A", dsn=dsn), CircuitBreaker("calendar:B", dsn=dsn)
    caplog.set_level(logging.WARNING, logger="orchestrator.breaker")
    release = threading.Event()
    outcomes: list[str] = []

    def hang() -> None:
        try:
            a.call(release.wait, 10)
        except CallTimeoutError as exc:
            outcomes.append(type(exc).__name__)

    callers = [threading.Thread(target=hang) for _ in range(4)]
    try:
        for t in callers:
            t.start()
        eventually(lambda: pool.busy("calendar:A") == 2, 1, "A holds its share")
        assert [b.call(lambda: "ok") for _ in range(4)] == ["ok"] * 4
        for t in callers:
            t.join(5)
        assert sorted(outcomes) == ["CallTimeoutError"] * 2 + ["WorkersBusyError"] * 2
        assert b.state() == "closed" and db_row(conn, "calendar:B") in (None, ("closed", 0))
        assert db_row(conn, "calendar:A") == ("closed", 2), "only A's started calls failed"
        assert breaker_mod.not_started("calendar:A") == 2 and breaker_mod.not_started() == 2
        assert any("not counted as failures" in r.getMessage() for r in caplog.records)
    finally:
        release.set()


# --- database errors never reach the booking code --------------------------------------

def force_setting(conn: psycopg.Connection, key: str, value: str) -> None:
    """As the owner, around set_setting and its checks."""
    conn.execute("UPDATE consistency.settings SET value = %s::jsonb WHERE key = %s", (value, key))
    conn.commit()


def test_a_cooldown_the_database_cannot_use_refuses_instead_of_raising(dsn, conn,
                                                                       caplog) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(boom)
    force_setting(conn, "circuit_breaker.cooldown_seconds", "1e300")
    with pytest.raises(psycopg.errors.DatetimeFieldOverflow):
        conn.execute("SELECT consistency.circuit_acquire(%s)", (KEY,))
    conn.rollback()
    caplog.set_level(logging.ERROR, logger="orchestrator.breaker")
    ran: list[int] = []
    for _ in range(3):
        with pytest.raises(CircuitOpenError) as refused:
            breaker.call(lambda: ran.append(1))
    assert ran == [] and refused.value.state == "open"
    assert breaker.state() == "open"
    logged = [r for r in caplog.records if "deciding in-process" in r.getMessage()]
    assert len(logged) == 1, "the error must be logged once, not per call"


def test_settings_the_database_cannot_use_leave_the_callers_exceptions_alone(dsn, conn,
                                                                             caplog) -> None:
    force_setting(conn, "circuit_breaker.failure_threshold", '"many"')
    force_setting(conn, "circuit_breaker.timeout_seconds", "1e300")
    caplog.set_level(logging.WARNING, logger="orchestrator.breaker")
    breaker = CircuitBreaker(KEY, dsn=dsn)
    assert breaker.call(lambda: "booked") == "booked"
    original = Boom("the caller's own")
    for _ in range(3):
        with pytest.raises(Boom) as caught:
            breaker.call(lambda: (_ for _ in ()).throw(original))
        assert caught.value is original
    # The database cannot count failures with that threshold: this process
    # counted them, with the default threshold.
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    assert breaker.thresholds.failure_threshold == 3
    assert breaker.thresholds.timeout_seconds == 365 * 86400.0
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "circuit_breaker.failure_threshold = 'many' is not a number" in messages
    assert "circuit_breaker.timeout_seconds = 1e+300 is outside" in messages, messages


def test_a_forked_worker_starts_its_own_pool_and_mirror(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    warm(breaker)
    assert breaker.call(lambda: "parent") == "parent"
    pid = os.fork()
    if pid == 0:  # the child: a prefork worker of gunicorn or celery
        code = 1
        try:
            warm(breaker)
            assert breaker.call(lambda: "child") == "child"
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the forked worker's breaker did not work"
    assert breaker.call(lambda: "parent again") == "parent again"
    backends = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
                            (circuit_mirror.LISTENER_NAME,)).fetchone()[0]
    assert backends == 1, "the child's listener outlived it, or the parent's died"


def test_a_schema_without_circuit_mirror_sends_every_call_to_the_database(dsn, conn,
                                                                         caplog) -> None:
    # The application upgraded before `consistency migrate` ran.
    conn.execute("DROP FUNCTION consistency.circuit_mirror(text[])")
    conn.commit()
    caplog.set_level(logging.WARNING, logger="orchestrator.breaker")
    breaker = CircuitBreaker(KEY, dsn=dsn)
    assert breaker.call(lambda: "booked") == "booked"
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(boom)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(lambda: ran.append(1))
    assert ran == [] and refused.value.state == "open"
    assert db_row(conn) == ("open", 3) and not breaker.mirror.trusted
    missing = [r for r in caplog.records if "circuit_mirror is missing" in r.getMessage()]
    assert len(missing) == 1
