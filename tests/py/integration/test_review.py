"""The review queue with real sessions: concurrent claims and enqueues, the
reviewer role, the CLI. Ordering and rules are in tests/sql/review.sql."""

from __future__ import annotations

import json
import threading

import psycopg
import pytest
from conftest import as_role

from orchestrator import review
from orchestrator.errors import GuardError


@pytest.fixture
def calls(conn: psycopg.Connection) -> list[int]:
    ids = [r[0] for r in conn.execute(
        "INSERT INTO calls (external_call_id) SELECT 'rv-' || g FROM generate_series(1, 4) g"
        " RETURNING id").fetchall()]
    conn.commit()
    return ids


def audit_actions(conn: psycopg.Connection, item_id: int) -> list[tuple[str, str]]:
    return conn.execute("SELECT actor, action FROM consistency.audit_log WHERE target_type ="
                        " 'review_item' AND target_id = %s ORDER BY id", (str(item_id),)).fetchall()


def test_two_concurrent_claims_get_different_items(conn, connect, calls) -> None:
    for call_id in calls[:2]:
        review.enqueue(conn, call_id, "calendar_booking_failed")
    conn.commit()
    ann, bob = connect(), connect()
    first = review.claim(ann, "ann")  # transaction still open: the row stays locked
    assert first is not None

    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(item=review.claim(bob, "bob")))
    thread.start()
    thread.join(timeout=10)
    assert not thread.is_alive(), "SKIP LOCKED: the second claim does not wait"
    second = result["item"]
    assert second is not None and second.id != first.id
    ann.commit()
    bob.commit()
    assert review.claim(connect(), "carl") is None, "both items are taken"
    owners = conn.execute("SELECT assigned_to FROM consistency.manual_review_queue"
                          " ORDER BY assigned_to").fetchall()
    assert owners == [("ann",), ("bob",)]


def test_racing_enqueues_produce_one_item(connect, calls) -> None:
    first, second = connect(), connect()
    item = review.enqueue(first, calls[0], "service_not_found")
    result: dict[str, int] = {}
    thread = threading.Thread(target=lambda: result.update(
        id=review.enqueue(second, calls[0], "service_not_found")))
    thread.start()
    thread.join(timeout=0.3)
    assert thread.is_alive(), "the second enqueue waits for the first to commit"
    first.commit()
    thread.join(timeout=10)
    second.commit()
    assert result["id"] == item
    assert first.execute("SELECT count(*) FROM consistency.manual_review_queue").fetchone()[0] == 1


def test_python_api_round_trip_and_audit(conn, calls) -> None:
    item_id = review.enqueue(conn, calls[0], "customer_creation_failed", {"phone": "+1555"},
                             actor="worker-1")
    assert review.enqueue(conn, calls[0], "customer_creation_failed") == item_id
    [listed] = review.list_items(conn, "pending")
    assert (listed.id, listed.priority, listed.context) == (item_id, 3, {"phone": "+1555"})
    claimed = review.claim(conn, "ann")
    assert claimed is not None and claimed.status == "in_progress"
    conn.commit()
    with pytest.raises(GuardError, match="is assigned to ann, not to bob"):
        review.resolve(conn, item_id, "bob", "resolved", "mine")
    conn.rollback()
    done = review.resolve(conn, claimed.id, "ann", "dismissed", "duplicate customer")
    assert (done.status, done.resolution_notes) == ("dismissed", "duplicate customer")
    assert review.list_items(conn, "pending") == []
    assert audit_actions(conn, item_id) == [
        ("worker-1", "review.enqueue"), ("ann", "review.claim"), ("ann", "review.dismiss")]
    with pytest.raises(GuardError, match="must not be empty"):
        review.enqueue(conn, calls[0], " ")


def test_reviewer_role_uses_functions_not_tables(conn, calls) -> None:
    review.enqueue(conn, calls[1], "appointment_rollback")
    conn.commit()
    conn.execute("SET ROLE consistency_reviewer")
    assert [i.call_id for i in review.list_items(conn)] == [calls[1]]
    item = review.claim(conn, "rita")
    assert item is not None and item.priority == 1
    assert review.resolve(conn, item.id, "rita", "resolved", "called back").status == "resolved"
    conn.commit()
    for statement in ("SELECT * FROM consistency.manual_review_queue",
                      "UPDATE consistency.manual_review_queue SET status = 'pending'",
                      "SELECT * FROM consistency.audit_log",
                      "SELECT * FROM calls"):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
        conn.rollback()


# --- CLI -----------------------------------------------------------------------

def test_cli_review_list_claim_resolve(conn, dsn, run_cli, calls) -> None:
    empty = run_cli("review", "claim", "--reviewer", "ann", "--dsn", dsn)
    assert empty.code == 0 and "nothing to review" in empty.out
    low = review.enqueue(conn, calls[0], "other")
    high = review.enqueue(conn, calls[1], "appointment_validation_failed")
    conn.commit()

    listed = json.loads(run_cli("review", "list", "--json", "--dsn", dsn).out)
    assert [i["id"] for i in listed] == [high, low]
    table = run_cli("review", "list", "--status", "pending", "--dsn", dsn)
    assert table.code == 0 and "pending" in table.out and "in_progress" not in table.out

    claimed = run_cli("review", "claim", "--reviewer", "ann", "--dsn", dsn)
    assert claimed.code == 0 and f"claimed item {high}" in claimed.out
    as_json = json.loads(
        run_cli("review", "claim", "--reviewer", "bob", "--json", "--dsn", dsn).out)
    assert as_json["id"] == low and as_json["assigned_to"] == "bob"

    refused = run_cli("review", "resolve", str(high), "--reviewer", "bob", "--status", "resolved",
                      "--notes", "x", "--dsn", dsn)
    assert refused.code == 2
    assert f"error: review item {high} is assigned to ann, not to bob" in refused.err

    done = run_cli("review", "resolve", str(high), "--reviewer", "ann", "--status", "resolved",
                   "--notes", "rebooked by phone", "--dsn", dsn)
    assert done.code == 0 and f"item {high} resolved by ann" in done.out
    data = json.loads(run_cli("review", "resolve", str(low), "--reviewer", "bob", "--status",
                              "dismissed", "--notes", "spam", "--json", "--dsn", dsn).out)
    assert data["status"] == "dismissed"
    assert json.loads(run_cli("review", "list", "--status", "pending", "--json",
                              "--dsn", dsn).out) == []
    assert [a for _, a in audit_actions(conn, high)] == [
        "review.enqueue", "review.claim", "review.resolve"]


@pytest.mark.parametrize(("args", "message"), [
    (["resolve", "999", "--reviewer", "a", "--status", "resolved", "--notes", "n"],
     "error: review item 999 does not exist"),
    (["resolve", "1", "--reviewer", "a", "--status", "pending", "--notes", "n"],
     "'pending' is not one of"),
    (["resolve", "1", "--reviewer", "a", "--status", "resolved"], "Missing option '--notes'"),
    (["claim", "--reviewer", " "], "error: reviewer must not be empty"),
    (["list", "--status", "open"], "'open' is not one of"),
])
def test_cli_review_errors(dsn, run_cli, args, message) -> None:
    result = run_cli("review", *args, "--dsn", dsn)
    assert result.code == 2 and message in result.err and "Traceback" not in result.err


def test_a_reviewer_acts_as_its_own_login_only(conn, dsn, calls, sandbox) -> None:
    ann = sandbox.role("ann", "IN ROLE consistency_reviewer")
    bob = sandbox.role("bob", "IN ROLE consistency_reviewer")
    item = review.enqueue(conn, calls[0], "service_not_found")
    conn.commit()
    with psycopg.connect(as_role(dsn, ann), autocommit=True) as ann_conn, \
            psycopg.connect(as_role(dsn, bob), autocommit=True) as bob_conn:
        with pytest.raises(GuardError, match=f"reviewer must be your login {bob}, not {ann}"):
            review.claim(bob_conn, ann)
        assert review.claim(ann_conn, ann).id == item
        with pytest.raises(GuardError, match=f"reviewer must be your login {bob}, not {ann}"):
            review.resolve(bob_conn, item, ann, "resolved", "closed in ann's name")
        with pytest.raises(GuardError, match=f"is assigned to {ann}, not to {bob}"):
            review.resolve(bob_conn, item, bob, "resolved", "mine now")
        done = review.resolve(ann_conn, item, ann, "resolved", "done")
    assert (done.status, done.assigned_to) == ("resolved", ann)
    actions = conn.execute("SELECT actor, session_role, action FROM consistency.audit_log"
                           " WHERE target_id = %s AND action <> 'review.enqueue' ORDER BY id",
                           [str(item)]).fetchall()
    assert actions == [(ann, ann, "review.claim"), (ann, ann, "review.resolve")]
