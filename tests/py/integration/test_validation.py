"""validate_booking / rollback_booking from Python: typed results, real
commits and rollbacks, NOTIFY on another connection, injected failures, the
CLI. The cascade itself is covered by tests/sql/validation.sql."""

from __future__ import annotations

import dataclasses
import json
import threading

import psycopg
import pytest

from orchestrator.errors import GuardError
from orchestrator.validation import (
    RollbackFailedError,
    ValidationResult,
    rollback_booking,
    validate_booking,
)

CALL_FIELDS = """SELECT appointment_made, appointment_link_status, session_outcome,
                        booking_failed, booking_failure_reason, requires_manual_processing
                   FROM calls WHERE id = %s"""


def make_call(conn: psycopg.Connection, call_id: int, *, appointment: int | None = None,
              booked: bool = True, age_seconds: int = 10) -> None:
    """A consistent call (and appointment), written with the guard's triggers
    bypassed so the fixture is exactly what the test says. Commits."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute(
            """INSERT INTO calls (id, external_call_id, session_outcome, appointment_made,
                                  appointment_link_status)
               VALUES (%s, %s, %s, %s, %s)""",
            (call_id, f"call-{call_id}", "appointment_booked" if booked else "information_only",
             appointment is not None, "linked" if appointment is not None else
             ("pending_creation" if booked else "unlinked")))
        if appointment is not None:
            conn.execute(
                """INSERT INTO appointments (id, call_id, external_booking_id, created_at)
                   VALUES (%s, %s, %s, consistency.now() - make_interval(secs => %s))""",
                (appointment, call_id, f"ext-{appointment}", age_seconds))


def counts(conn: psycopg.Connection) -> tuple[int, int, int]:
    return conn.execute("""SELECT (SELECT count(*) FROM consistency.alerts),
                                  (SELECT count(*) FROM consistency.manual_review_queue),
                                  (SELECT count(*) FROM consistency.audit_log)""").fetchone()


def alert_notifications(listener: psycopg.Connection, timeout: float = 1.0) -> list[dict]:
    return [json.loads(n.payload) for n in listener.notifies(timeout=timeout, stop_after=None)
            if n.channel == "consistency_alerts"]


# --- validate ------------------------------------------------------------------

def test_validate_returns_a_frozen_typed_result(conn) -> None:
    make_call(conn, 1, appointment=11)
    result = validate_booking(conn, 1)
    assert result == ValidationResult(1, True, None, result.details)
    assert result.appointment_id == 11 and result.details["max_age_seconds"] == 300
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.ok = False  # type: ignore[misc]

    failed = validate_booking(conn, 1, external_booking_id="other")
    assert (failed.ok, failed.reason) == (False, "external_booking_id_mismatch")
    assert failed.details["expected_id"] == "other" and failed.details["actual_id"] == "ext-11"
    assert failed.as_dict()["reason"] == "external_booking_id_mismatch"


def test_validation_uses_moved_time(conn) -> None:
    make_call(conn, 1, appointment=11, age_seconds=0)
    conn.execute("SET consistency.fake_now = '2999-01-01 00:00:00+00'")
    result = validate_booking(conn, 1)
    assert result.reason == "appointment_too_old" and result.details["age_seconds"] > 300


@pytest.mark.parametrize(("args", "message"), [
    ((999,), "call 999 does not exist"),
    ((-1,), "call -1 does not exist"),
    ((2**63,), "call_id is out of range for an id"),
    ((1, -2**63 - 1), "appointment_id is out of range for an id"),
])
def test_validate_bad_input_is_a_clear_error(conn, args, message) -> None:
    make_call(conn, 1, appointment=11)
    with pytest.raises(GuardError, match=message):
        validate_booking(conn, *args)


# --- rollback ------------------------------------------------------------------

def test_rollback_commits_all_of_it_and_notifies_once(conn, connect) -> None:
    make_call(conn, 5)
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_alerts")

    alert_id = rollback_booking(conn, 5, "calendar returned 500")
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, "committed"

    assert alert_notifications(listener) == [
        {"id": alert_id, "alert_type": "appointment_rollback", "severity": "critical"}]
    other = connect()
    assert other.execute(CALL_FIELDS, (5,)).fetchone() == (
        False, "creation_failed", "creation_failed", True, "calendar returned 500", True)
    assert other.execute("SELECT severity, entity_id FROM consistency.alerts WHERE id = %s",
                         (alert_id,)).fetchone() == ("critical", 5)
    items = other.execute("SELECT reason, priority, status FROM consistency.manual_review_queue"
                          " WHERE call_id = 5").fetchall()
    assert items == [("appointment_rollback", 1, "pending")]
    assert other.execute("SELECT actor FROM consistency.audit_log WHERE action = 'booking.rollback'"
                         " AND target_id = '5'").fetchall() == [("system",)]


def test_rollback_keeps_the_link_of_a_call_with_an_active_appointment(conn) -> None:
    make_call(conn, 6, appointment=60)
    rollback_booking(conn, 6, "late failure report", actor="worker-3")
    assert conn.execute(CALL_FIELDS, (6,)).fetchone() == (
        True, "linked", "appointment_booked", True, "late failure report", True)
    assert counts(conn) == (1, 1, 2)  # alert; review item; enqueue + rollback audit rows


@pytest.mark.parametrize("table", ["consistency.alerts", "consistency.manual_review_queue",
                                   "consistency.audit_log"])
def test_a_failure_midway_leaves_nothing_and_no_notification(conn, connect, table) -> None:
    make_call(conn, 7)
    conn.execute("""CREATE FUNCTION public.fail_insert() RETURNS trigger LANGUAGE plpgsql AS $$
                    BEGIN RAISE EXCEPTION 'injected failure'; END $$""")
    conn.execute(f"""CREATE TRIGGER inject BEFORE INSERT ON {table}
                     FOR EACH ROW EXECUTE FUNCTION public.fail_insert()""")
    conn.commit()
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_alerts")
    before = conn.execute(CALL_FIELDS, (7,)).fetchone()
    conn.commit()

    with pytest.raises(RollbackFailedError, match="injected failure") as exc:
        rollback_booking(conn, 7, "timeout")
    assert isinstance(exc.value.__cause__, psycopg.errors.RaiseException)
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE, "rolled back"

    other = connect()
    assert other.execute(CALL_FIELDS, (7,)).fetchone() == before
    assert counts(other) == (0, 0, 0)
    assert alert_notifications(listener, timeout=0.5) == []


def test_a_rollback_undone_by_the_callers_transaction_never_notifies(conn, connect) -> None:
    make_call(conn, 8)
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_alerts")
    with conn.transaction(force_rollback=True):
        assert rollback_booking(conn, 8, "timeout") is not None  # a savepoint inside ours
    assert alert_notifications(listener, timeout=0.5) == []
    assert counts(conn) == (0, 0, 0)
    assert conn.execute(CALL_FIELDS, (8,)).fetchone()[3] is False


@pytest.mark.parametrize(("call_id", "reason", "message"), [
    (999, "x", "call 999 does not exist"),
    (-4, "x", "call -4 does not exist"),
    (9, "", "rollback reason must not be empty"),
])
def test_rollback_bad_input_writes_nothing(conn, call_id, reason, message) -> None:
    make_call(conn, 9)
    with pytest.raises(RollbackFailedError, match=message) as exc:
        rollback_booking(conn, call_id, reason)
    assert isinstance(exc.value, GuardError) and exc.value.__cause__ is not None
    assert counts(conn) == (0, 0, 0)
    assert conn.execute(CALL_FIELDS, (9,)).fetchone()[3] is False


def test_two_concurrent_rollbacks_of_one_call_serialise(conn, connect) -> None:
    make_call(conn, 10)
    first, second = connect(), connect()
    first.execute("SELECT consistency.rollback_booking(10, 'first')")  # holds the call row
    result: dict[str, object] = {}

    def race() -> None:
        result["id"] = rollback_booking(second, 10, "second")

    thread = threading.Thread(target=race)
    thread.start()
    thread.join(timeout=0.3)
    assert thread.is_alive(), "the second rollback waits for the first"
    first.commit()
    thread.join(timeout=10)
    assert result["id"] is not None
    assert counts(conn)[:2] == (2, 1), "two alerts (never throttled), one open review item"


def test_the_application_role_validates_and_rolls_back(conn) -> None:
    make_call(conn, 12, appointment=120)
    make_call(conn, 13)
    conn.execute("SET ROLE consistency_app")
    assert validate_booking(conn, 12).ok
    assert rollback_booking(conn, 13, "timeout") > 0
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("SELECT count(*) FROM consistency.manual_review_queue")


# --- CLI -----------------------------------------------------------------------

def test_cli_validate(conn, dsn, run_cli) -> None:
    make_call(conn, 20, appointment=200)
    make_call(conn, 21)
    ok = run_cli("validate", "20", "--dsn", dsn)
    assert ok.code == 0 and "call 20: ok (appointment 200)" in ok.out

    bad = run_cli("validate", "20", "--dsn", dsn, "--external-id", "nope")
    assert bad.code == 1 and "external_booking_id_mismatch" in bad.out and '"nope"' in bad.out

    as_json = json.loads(run_cli("validate", "20", "--appointment", "200", "--json",
                                 "--dsn", dsn).out)
    assert as_json["ok"] is True and as_json["details"]["appointment_id"] == 200
    assert counts(conn) == (0, 0, 0)


def test_cli_validate_with_rollback_on_failure(conn, dsn, run_cli) -> None:
    make_call(conn, 22)
    result = run_cli("validate", "22", "--rollback-on-failure", "--json", "--dsn", dsn)
    assert result.code == 1
    data = json.loads(result.out)
    assert data["reason"] == "appointment_not_linked" and data["rollback_alert_id"] is not None
    assert conn.execute(CALL_FIELDS, (22,)).fetchone()[:5] == (
        False, "creation_failed", "creation_failed", True, "appointment_not_linked")
    text = run_cli("validate", "22", "--rollback-on-failure", "--dsn", dsn)
    assert text.code == 1 and "rolled back: alert" in text.out


@pytest.mark.parametrize(("args", "message"), [
    (["404"], "error: call 404 does not exist"),
    (["--", "-5"], "error: call -5 does not exist"),
    (["99999999999999999999"], "is not in the range"),
    (["1", "--appointment", "9223372036854775808"], "is not in the range"),
    (["abc"], "is not a valid integer"),
])
def test_cli_validate_errors(conn, dsn, run_cli, args, message) -> None:
    make_call(conn, 1)
    result = run_cli("validate", "--dsn", dsn, *args)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_rollback_with_a_retry_policy(conn) -> None:
    from orchestrator.retry import RetryPolicy

    make_call(conn, 30)
    sleeps: list[float] = []
    policy = RetryPolicy(3, 0.01, sleep=sleeps.append)
    assert rollback_booking(conn, 30, "timeout", retry=policy) > 0
    with pytest.raises(RollbackFailedError, match="call 31 does not exist"):
        rollback_booking(conn, 31, "timeout", retry=policy)
    assert sleeps == [], "a refused rollback is not transient: no retry"
