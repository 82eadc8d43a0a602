"""Circuit breaker: what needs real sessions (locks, races, NOTIFY, commits),
the Python wrapper (deadlines, fallback, booking helper) and the CLI.
Transitions with moved time are in tests/sql/circuit.sql."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable

import psycopg
import pytest

from orchestrator import breaker as breaker_mod
from orchestrator.bench import circuit_client
from orchestrator.breaker import (
    CallTimeoutError,
    CircuitBreaker,
    CircuitOpenError,
    book_or_queue,
    book_or_queue_async,
)

KEY = "appointment_booking:service:1"


@pytest.fixture(autouse=True)
def _fresh_pools():
    yield
    breaker_mod.close_pools()


def state_row(conn: psycopg.Connection, key: str = KEY) -> dict:
    cur = conn.execute("SELECT * FROM consistency.circuit_status(%s)", (key,))
    names = [d.name for d in cur.description]
    return dict(zip(names, cur.fetchone(), strict=True))


def fail(conn: psycopg.Connection, key: str = KEY, times: int = 1) -> None:
    for _ in range(times):
        conn.execute("SELECT consistency.circuit_record_failure(%s, 'boom')", (key,))
    conn.commit()


def elapse_cooldown(conn: psycopg.Connection, key: str = KEY) -> None:
    """Move the circuit's clock marks into the past instead of sleeping."""
    conn.execute("""UPDATE consistency.circuit_breaker_states
                       SET opened_at = opened_at - interval '1 hour',
                           probe_started_at = probe_started_at - interval '1 hour'
                     WHERE circuit_key = %s""", (key,))
    conn.commit()


def seen_by(breaker: CircuitBreaker, state: str, timeout: float = 1.0) -> None:
    """Another connection changed the circuit: wait until this process's
    mirror has read it (the window documented in orchestrator/circuit_mirror.py)."""
    end = time.monotonic() + timeout
    while breaker.mirror.known_state(breaker.key) != state:
        assert time.monotonic() < end, f"the mirror never saw {state!r}"
        time.sleep(0.005)


def set_setting(conn: psycopg.Connection, key: str, value: object) -> None:
    conn.execute("SELECT consistency.set_setting(%s, %s::jsonb, 'test')", (key, json.dumps(value)))
    conn.commit()


class Boom(Exception):
    pass


# --- SQL under real sessions ----------------------------------------------------

def test_closed_path_takes_no_row_lock_and_writes_nothing(conn, connect) -> None:
    fail(conn)  # a row exists, closed, one failure
    reader = connect()
    with reader.transaction():
        assert reader.execute("SELECT consistency.circuit_acquire(%s)", (KEY,)).fetchone()[0]
        assert reader.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is None, \
            "acquire on a closed circuit assigned a transaction id (it wrote or locked a row)"
        other = connect(autocommit=True)
        other.execute("SET lock_timeout = '1s'")
        # Would fail with lock_not_available if acquire had taken the row lock.
        other.execute("SELECT 1 FROM consistency.circuit_breaker_states WHERE circuit_key = %s "
                      "FOR UPDATE NOWAIT", (KEY,))


def test_eight_sessions_on_an_elapsed_cooldown_make_exactly_one_probe(conn, connect) -> None:
    sessions = [connect(autocommit=True) for _ in range(8)]
    for rnd in range(10):
        conn.execute("SELECT consistency.circuit_force(%s, 'closed', 'test', 'reset')", (KEY,))
        fail(conn, times=3)
        elapse_cooldown(conn)
        barrier = threading.Barrier(len(sessions))
        results: list[bool] = []

        def acquire(s: psycopg.Connection, barrier: threading.Barrier, results: list) -> None:
            barrier.wait()
            row = s.execute("SELECT consistency.circuit_acquire(%s)", (KEY,)).fetchone()
            results.append(row[0])

        threads = [threading.Thread(target=acquire, args=(s, barrier, results))
                   for s in sessions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(results) == [False] * 7 + [True], f"round {rnd}: {results}"
        assert state_row(conn)["state"] == "half_open"
    probes = conn.execute("SELECT count(*) FROM consistency.circuit_breaker_events "
                          "WHERE to_state = 'half_open'").fetchone()[0]
    assert probes == 10


@pytest.mark.stress
def test_concurrent_failures_from_many_threads_open_it_once(dsn, conn) -> None:
    def worker() -> None:
        with psycopg.connect(dsn, autocommit=True) as c:
            for _ in range(10):
                c.execute("SELECT consistency.circuit_record_failure(%s, 'e')", (KEY,))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    row = state_row(conn)
    assert (row["state"], row["failure_count"]) == ("open", 3)
    events = conn.execute("SELECT from_state, to_state FROM consistency.circuit_breaker_events"
                          ).fetchall()
    assert events == [("closed", "open")]


def test_every_transition_notifies_after_commit(conn, connect) -> None:
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_circuit")
    for _ in range(3):
        conn.execute("SELECT consistency.circuit_record_failure(%s)", (KEY,))
    conn.execute("SELECT set_config('consistency.fake_now', "
                 "(clock_timestamp() + interval '1 minute')::text, true)")
    conn.execute("SELECT consistency.circuit_acquire(%s)", (KEY,))
    conn.execute("SELECT consistency.circuit_record_success(%s)", (KEY,))
    conn.execute("SELECT consistency.circuit_acquire(%s)", (KEY,))
    conn.execute("SELECT consistency.circuit_record_success(%s)", (KEY,))
    assert list(listener.notifies(timeout=0.3, stop_after=1)) == [], "notified before commit"
    conn.commit()
    got = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=3)]
    assert [(g["from_state"], g["to_state"]) for g in got] == [
        ("closed", "open"), ("open", "half_open"), ("half_open", "closed")]
    event_ids = [r[0] for r in conn.execute(
        "SELECT id FROM consistency.circuit_breaker_events ORDER BY id")]
    assert [g["id"] for g in got] == event_ids
    assert {g["circuit_key"] for g in got} == {KEY}
    alerts = conn.execute("SELECT alert_type, severity FROM consistency.alerts ORDER BY id"
                          ).fetchall()
    assert alerts == [("circuit_opened", "critical"), ("circuit_closed", "info")]


def test_app_role_uses_the_breaker_but_cannot_force_it(conn) -> None:
    conn.execute("SET ROLE consistency_app")
    assert conn.execute("SELECT consistency.circuit_acquire('k')").fetchone()[0] is True
    conn.execute("SELECT consistency.circuit_record_failure('k', 'e')")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT consistency.circuit_force('k', 'disabled', 'app', 'x')")
    conn.rollback()
    conn.execute("SET ROLE consistency_monitor")
    assert conn.execute("SELECT count(*) FROM consistency.circuit_status()").fetchone()[0] == 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT consistency.circuit_acquire('k')")


# --- the Python breaker ---------------------------------------------------------

def test_opens_at_threshold_and_rejects_without_running(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    ran: list[int] = []

    def failing() -> None:
        ran.append(1)
        raise Boom("calendar down")

    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(failing)
    assert state_row(conn)["state"] == "open"
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(failing)
    assert len(ran) == 3, "the call ran although the circuit was open"
    assert refused.value.state == "open" and refused.value.key == KEY
    assert breaker.state() == "open"


def test_stays_closed_on_success_and_success_resets_failures(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(lambda: (_ for _ in ()).throw(Boom()))
    assert breaker.call(lambda: "booked") == "booked"
    assert state_row(conn)["failure_count"] == 0
    for _ in range(2):
        with pytest.raises(Boom):
            breaker.call(lambda: (_ for _ in ()).throw(Boom()))
    assert state_row(conn)["state"] == "closed"


def test_half_open_probe_runs_and_two_successes_close(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    fail(conn, times=3)
    elapse_cooldown(conn)
    assert breaker.call(lambda: 1) == 1, "the probe did not run"
    assert state_row(conn)["state"] == "half_open"
    assert breaker.call(lambda: 2) == 2
    row = state_row(conn)
    assert (row["state"], row["failure_count"]) == ("closed", 0)
    assert row["closed_at"] is not None


def test_probe_failure_reopens(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    fail(conn, times=3)
    first_opened = state_row(conn)["opened_at"]
    elapse_cooldown(conn)
    with pytest.raises(Boom):
        breaker.call(lambda: (_ for _ in ()).throw(Boom()))
    row = state_row(conn)
    assert row["state"] == "open" and row["opened_at"] > first_opened


def test_only_one_probe_while_it_is_in_flight(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)
    fail(conn, times=3)
    elapse_cooldown(conn)
    in_probe, release = threading.Event(), threading.Event()

    def slow_probe() -> str:
        in_probe.set()
        release.wait(5)
        return "ok"

    result: list[str] = []
    probe = threading.Thread(target=lambda: result.append(breaker.call(slow_probe)))
    probe.start()
    assert in_probe.wait(5)
    ran: list[int] = []
    with pytest.raises(CircuitOpenError) as refused:
        breaker.call(lambda: ran.append(1))
    assert refused.value.state == "half_open" and ran == []
    release.set()
    probe.join(5)
    assert result == ["ok"]


def test_a_lost_probe_stops_blocking_after_timeout(dsn, conn) -> None:
    fail(conn, times=3)
    elapse_cooldown(conn)
    # A worker became the probe and died before reporting.
    assert conn.execute("SELECT consistency.circuit_acquire(%s)", (KEY,)).fetchone()[0]
    conn.commit()
    breaker = CircuitBreaker(KEY, dsn=dsn)
    with pytest.raises(CircuitOpenError):
        breaker.call(lambda: None)
    conn.execute("UPDATE consistency.circuit_breaker_states "
                 "SET probe_started_at = probe_started_at - interval '11 seconds'")
    conn.commit()
    assert breaker.call(lambda: "probe") == "probe"


def test_keys_are_isolated_and_data_only(dsn, conn) -> None:
    nasty = "x'); DROP TABLE consistency.settings; -- \"; SELECT 1"
    bad, good = CircuitBreaker(nasty, dsn=dsn), CircuitBreaker(KEY + "0", dsn=dsn)
    for _ in range(3):
        with pytest.raises(Boom):
            bad.call(lambda: (_ for _ in ()).throw(Boom()))
    assert state_row(conn, nasty)["state"] == "open"
    assert good.call(lambda: "fine") == "fine"
    assert conn.execute("SELECT to_regclass('consistency.settings') IS NOT NULL").fetchone()[0]
    with pytest.raises(ValueError):
        CircuitBreaker("  ", dsn=dsn)


def test_exceptions_propagate_unchanged_and_exclude(dsn, conn) -> None:
    class SlotTaken(Exception):
        pass

    breaker = CircuitBreaker(KEY, dsn=dsn, exclude=[SlotTaken])
    original = Boom("the very object")
    with pytest.raises(Boom) as caught:
        breaker.call(lambda: (_ for _ in ()).throw(original))
    assert caught.value is original
    for _ in range(5):
        with pytest.raises(SlotTaken):
            breaker.call(lambda: (_ for _ in ()).throw(SlotTaken()))
    row = state_row(conn)
    assert (row["state"], row["failure_count"]) == ("closed", 0), \
        "excluded exceptions counted as failures"


def test_sync_timeout_returns_at_the_deadline_and_counts_as_failure(dsn, conn) -> None:
    set_setting(conn, "circuit_breaker.timeout_seconds", 0.5)
    breaker = CircuitBreaker(KEY, dsn=dsn)
    started = time.monotonic()
    with pytest.raises(CallTimeoutError):
        breaker.call(time.sleep, 5)
    assert time.monotonic() - started < 1.5
    row = state_row(conn)
    assert row["failure_count"] == 1
    last_error = conn.execute("SELECT last_error FROM consistency.circuit_breaker_states"
                              ).fetchone()[0]
    assert "CallTimeoutError" in last_error


def test_async_timeout_cancels_the_task_and_counts_as_failure(dsn, conn) -> None:
    set_setting(conn, "circuit_breaker.timeout_seconds", 0.5)
    breaker = CircuitBreaker(KEY, dsn=dsn)
    cancelled = threading.Event()

    async def slow() -> None:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            await breaker.call_async(slow)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.05)
        return elapsed

    assert asyncio.run(main()) < 1.5
    assert cancelled.is_set(), "the timed-out task was not cancelled"
    assert state_row(conn)["failure_count"] == 1


def test_async_deadline_holds_against_a_task_that_ignores_cancellation(dsn, conn) -> None:
    set_setting(conn, "circuit_breaker.timeout_seconds", 0.3)
    breaker = CircuitBreaker(KEY, dsn=dsn)

    async def stubborn() -> None:
        end = time.monotonic() + 2
        while time.monotonic() < end:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(0.05)

    async def main() -> float:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            await breaker.call_async(stubborn)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0


def test_decorator_and_context_managers_sync_and_async(dsn, conn) -> None:
    breaker = CircuitBreaker(KEY, dsn=dsn)

    @breaker
    def book(slot: str) -> str:
        return f"booked {slot}"

    @breaker
    async def abook(slot: str) -> str:
        await asyncio.sleep(0)
        return f"booked {slot}"

    assert book("9:00") == "booked 9:00"
    assert book.__name__ == "book"
    assert asyncio.run(abook("10:00")) == "booked 10:00"

    with pytest.raises(Boom), breaker:
        raise Boom()

    async def failing_block() -> None:
        async with breaker:
            raise Boom()

    with pytest.raises(Boom):
        asyncio.run(failing_block())
    assert state_row(conn)["failure_count"] == 2
    with breaker:
        pass
    assert state_row(conn)["failure_count"] == 0

    set_setting(conn, "circuit_breaker.timeout_seconds", 0.3)
    breaker_mod.close_pools()  # re-read the settings
    breaker = CircuitBreaker(KEY, dsn=dsn)

    async def slow_block() -> float:
        started = time.monotonic()
        with pytest.raises(CallTimeoutError):
            async with breaker:
                await asyncio.sleep(5)
        return time.monotonic() - started

    assert asyncio.run(slow_block()) < 1.5
    with breaker:
        time.sleep(0.4)  # a sync block cannot be interrupted, but it counts
    assert state_row(conn)["failure_count"] == 2
    fail(conn)  # the third failure opens it
    seen_by(breaker, "open")
    with pytest.raises(CircuitOpenError):
        book("12:00")


def test_pool_is_shared_no_connect_per_call(dsn, conn) -> None:
    a, b = CircuitBreaker("a", dsn=dsn), CircuitBreaker("b", dsn=dsn)
    for _ in range(30):
        a.call(lambda: None)
        b.call(lambda: None)
    backends = conn.execute("SELECT count(*) FROM pg_stat_activity "
                            "WHERE application_name = 'consistency-breaker'").fetchone()[0]
    assert 1 <= backends <= 2


# --- fallback when the database goes away ------------------------------------------

@pytest.mark.stress
def test_fallback_to_in_process_breaker_then_resync(own_cluster, monkeypatch, caplog) -> None:
    monkeypatch.setattr(breaker_mod, "RETRY_INTERVAL", 0.2)
    own, dsn = own_cluster, own_cluster.dsn()
    try:
        with psycopg.connect(dsn) as c:
            set_setting(c, "circuit_breaker.failure_threshold", 2)
        breaker = CircuitBreaker(KEY, dsn=dsn)
        assert breaker.call(lambda: "up") == "up"
        assert breaker.thresholds.failure_threshold == 2
        end = time.monotonic() + 5  # the server stops under a mirror that admits in-process
        while not breaker.mirror.admits(KEY):
            assert time.monotonic() < end
            time.sleep(0.01)

        own.stop()
        caplog.set_level(logging.WARNING, logger="orchestrator.breaker")
        started = time.monotonic()
        assert breaker.call(lambda: "still booking") == "still booking"
        assert breaker.degraded
        for _ in range(2):
            with pytest.raises(Boom):
                breaker.call(lambda: (_ for _ in ()).throw(Boom()))
        ran: list[int] = []
        with pytest.raises(CircuitOpenError):
            breaker.call(lambda: ran.append(1))  # same threshold (2) as the database
        assert ran == []
        for _ in range(20):
            with pytest.raises(CircuitOpenError):
                breaker.call(lambda: None)
        assert time.monotonic() - started < 10, "degraded calls waited for the database"
        down = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(down) == 1, "the outage must be logged once"

        own.start()
        time.sleep(0.3)
        # Back on the shared state, where the circuit never opened.
        assert breaker.call(lambda: "shared again") == "shared again"
        assert not breaker.degraded
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        with psycopg.connect(dsn) as c:
            assert state_row(c)["state"] == "closed"
        end = time.monotonic() + 15
        while not breaker.mirror.admits(KEY):
            assert time.monotonic() < end, "the mirror never listened again"
            time.sleep(0.05)
    finally:
        breaker_mod.close_pools()


# --- booking helper -------------------------------------------------------------

def test_booking_helper_queues_for_review_on_an_open_circuit(dsn, conn) -> None:
    call_id = conn.execute("INSERT INTO public.calls (external_call_id) VALUES ('c1') RETURNING id"
                           ).fetchone()[0]
    conn.commit()
    breaker = CircuitBreaker(KEY, dsn=dsn)
    outcome = book_or_queue(breaker, call_id, lambda slot: f"booked {slot}", "9:00")
    assert outcome.booked and outcome.result == "booked 9:00" and outcome.review_id is None

    fail(conn, times=3)
    seen_by(breaker, "open")
    ran: list[int] = []
    outcome = book_or_queue(breaker, call_id, lambda: ran.append(1),
                            review_context={"slot": "9:00"})
    assert not outcome.booked and ran == []
    row = conn.execute("SELECT id, call_id, reason, priority, context "
                       "FROM consistency.manual_review_queue").fetchone()
    assert row[:4] == (outcome.review_id, call_id, "circuit_open", 2)
    assert row[4]["circuit_key"] == KEY and row[4]["slot"] == "9:00"

    async def queued() -> int | None:
        async def abook() -> str:
            return "never"
        return (await book_or_queue_async(breaker, call_id, abook)).review_id

    # One open item per (call, reason): the second refusal finds the same one.
    assert asyncio.run(queued()) == outcome.review_id


# --- CLI ------------------------------------------------------------------------

def test_cli_status_and_force(dsn, conn, run_cli: Callable) -> None:
    key = "svc:1"  # short enough for an 80-column table
    fail(conn, key, times=3)
    res = run_cli("circuit", "status", "--dsn", dsn)
    assert res.code == 0, res
    for column in ("key", "state", "failures", "successes", "last", "failure", "opened", "closed"):
        assert column in res.out
    assert key in res.out and "open" in res.out

    res = run_cli("circuit", "status", key, "--json", "--dsn", dsn)
    data = json.loads(res.out)
    assert [(d["circuit_key"], d["state"], d["failure_count"]) for d in data] == [(key, "open", 3)]
    res = run_cli("circuit", "status", "never-seen", "--json", "--dsn", dsn)
    assert json.loads(res.out)[0]["state"] == "closed"

    res = run_cli("circuit", "force", key, "disabled", "--actor", "ops:ann", "--reason",
                  "calendar vendor says all good", "--dsn", dsn)
    assert res.code == 0 and "disabled" in res.out, res
    assert state_row(conn, key)["state"] == "disabled"
    audit = conn.execute("SELECT actor, after->>'state' FROM consistency.audit_log "
                         "WHERE action = 'circuit.force'").fetchall()
    assert audit == [("ops:ann", "disabled")]
    res = run_cli("circuit", "force", key, "disabled", "--actor", "ops:ann", "--reason", "x",
                  "--dsn", dsn)
    assert res.code == 0 and "unchanged" in res.out


def test_cli_force_refuses_bad_input_with_one_line(dsn, run_cli: Callable) -> None:
    res = run_cli("circuit", "force", KEY, "open", "--actor", "a", "--reason", "r", "--dsn", dsn)
    assert res.code == 2 and len(res.err.strip().splitlines()) == 1, res
    res = run_cli("circuit", "force", KEY, "closed", "--actor", "", "--reason", "r", "--dsn", dsn)
    assert res.code == 2 and res.err.strip() == "error: actor must not be empty", res
    res = run_cli("circuit", "status", "", "--dsn", dsn)
    assert res.code == 2 and "must not be empty" in res.err, res


# --- benchmark smoke ------------------------------------------------------------

def test_bench_circuit_runs_with_tiny_sizes(cluster, run_cli: Callable) -> None:
    res = run_cli("bench", "circuit", "--dsn", cluster.dsn(), "--repeat", "5",
                  "--seconds", "0.2", "--clients", "2", "--json")
    assert res.code == 0, res
    data = json.loads(res.out)
    assert set(data["latency_ms"]) == {"round trip", "closed path", "locking acquire",
                                       "transition path", "breaker.call"}
    assert all(v > 0 for v in data["per_second"].values())
    client = data["client"]
    ours = {"breaker.call(noop)", "with breaker:", "breaker.call(noop), no mirror",
            "with breaker:, no mirror"}
    peer = {"pybreaker + Redis: call(noop)", "pybreaker + Redis: with calling()"}
    # pybreaker, redis-py and redis-server come with the [bench] extra and
    # scripts/ensure-system-deps.sh; where they are, the variant must run.
    expected = ours if circuit_client.pybreaker_missing() else ours | peer
    assert set(client["latency_ms"]) == set(client["per_second"]) == expected
    assert all(v > 0 for v in client["per_second"].values())
    assert (client["pybreaker_skipped"] is None) == (expected == ours | peer)
    assert client["propagation_ms"]["n"] >= 2 and client["propagation_ms"]["median_ms"] > 0
    res = run_cli("bench", "circuit", "--dsn", cluster.dsn(), "--repeat", "3",
                  "--seconds", "0.1", "--clients", "1")
    assert res.code == 0 and "closed path" in res.out, res
    assert "client side" in res.out and "with breaker:" in res.out, res


def test_a_row_lock_held_elsewhere_does_not_hold_the_caller(dsn, conn, connect,
                                                            monkeypatch) -> None:
    monkeypatch.setattr(breaker_mod, "STATEMENT_TIMEOUT_MS", 300)
    fail(conn, times=3)
    elapse_cooldown(conn)
    operator = connect()
    operator.execute("SELECT 1 FROM consistency.circuit_breaker_states FOR UPDATE")
    breaker = CircuitBreaker(KEY, dsn=dsn)
    started = time.monotonic()
    assert breaker.call(lambda: "in-process probe") == "in-process probe"
    assert time.monotonic() - started < 2 and breaker.degraded
    operator.rollback()
    with pytest.raises(TypeError):
        breaker.call(asyncio.sleep, 0)
