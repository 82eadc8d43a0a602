"""raise_alert behaviour that needs commits, NOTIFY and two real sessions."""

from __future__ import annotations

import json
import threading
import time

import psycopg

RAISE = "SELECT consistency.raise_alert('appointment_unlinked', 'warning', 'call', 7, 'lost')"


def _notifications(listener: psycopg.Connection, timeout: float = 1.0) -> list[dict]:
    return [json.loads(n.payload) for n in listener.notifies(timeout=timeout, stop_after=None)
            if n.channel == "consistency_alerts"]


def _raise_in_thread(session: psycopg.Connection) -> tuple[threading.Thread, dict[str, object]]:
    """RAISE and commit in ``session`` on a thread of its own (it may wait
    on another session's throttle row); the new alert's id lands in
    result["id"]."""
    result: dict[str, object] = {}

    def race() -> None:
        result["id"] = session.execute(RAISE).fetchone()[0]
        session.commit()

    thread = threading.Thread(target=race)
    thread.start()
    return thread, result


def test_notify_delivered_on_commit_and_never_on_rollback(connect) -> None:
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_alerts")
    writer = connect()

    alert_id = writer.execute(RAISE).fetchone()[0]
    assert _notifications(listener, timeout=0.3) == [], "notified before commit"
    writer.commit()
    assert _notifications(listener) == [
        {"id": alert_id, "alert_type": "appointment_unlinked", "severity": "warning"}]

    writer.execute(
        "SELECT consistency.raise_alert('circuit_opened', 'critical', 'circuit', 1, 'x')")
    writer.rollback()
    assert _notifications(listener, timeout=0.5) == []
    assert writer.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 1


def test_two_sessions_racing_produce_one_alert(connect) -> None:
    first, second = connect(), connect()
    assert first.execute(RAISE).fetchone()[0] is not None  # holds the throttle row

    thread, result = _raise_in_thread(second)
    time.sleep(0.3)
    assert thread.is_alive(), "second session did not wait for the first"
    first.commit()
    thread.join(timeout=10)
    assert result["id"] is None
    assert first.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 1


def test_racing_after_the_first_rolls_back_writes_one(connect) -> None:
    first, second = connect(), connect()
    first.execute(RAISE)
    thread, result = _raise_in_thread(second)
    time.sleep(0.3)
    first.rollback()
    thread.join(timeout=10)
    assert result["id"] is not None
    assert first.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 1


# _insert_alerts for a set, throttled: what the sync triggers write for G3.
RAISE_SET = ("SELECT cardinality(consistency._insert_alerts('appointment_unlinked', 'warning',"
             " 'call', %s::bigint[], NULL, NULL, false, consistency.now(), true))")


def test_set_notifies_every_inserted_alert_on_commit(connect) -> None:
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_alerts")
    writer = connect()
    writer.execute(RAISE)  # call 7: throttled in the set below
    writer.commit()
    _notifications(listener)

    assert writer.execute(RAISE_SET, ([9, 7, 8],)).fetchone()[0] == 2
    assert _notifications(listener, timeout=0.3) == [], "notified before commit"
    writer.commit()
    ids = [r[0] for r in writer.execute(
        "SELECT id FROM consistency.alerts WHERE entity_id IN (8, 9) ORDER BY entity_id")]
    assert _notifications(listener) == [
        {"id": i, "alert_type": "appointment_unlinked", "severity": "warning"} for i in ids]

    writer.execute(RAISE_SET, ([10, 11],))
    writer.rollback()
    assert _notifications(listener, timeout=0.5) == []



def test_payload_is_the_json_of_the_contract_whatever_the_alert_type(connect) -> None:
    """The payload is built by concatenation: byte for byte what
    json_build_object('id', .., 'alert_type', .., 'severity', ..) makes, for
    any text raise_alert accepts as a type."""
    listener = connect(autocommit=True)
    listener.execute("LISTEN consistency_alerts")
    writer = connect()
    hostile = ['quote " backslash \\ slash /', "new\nline\ttab\x01\x1f", "é ü 漢字 🙂",
               '{"id": 1}', "'; NOTIFY x; --"]
    for alert_type in hostile:
        writer.execute("SELECT consistency.raise_alert(%s, 'info', 'system', 1, 'd')",
                       (alert_type,))
    writer.execute("SELECT consistency._insert_alerts(%s, 'critical', 'call', ARRAY[1, 2], NULL,"
                   " NULL, false, consistency.now(), false)", (hostile[0],))
    writer.commit()
    expected = [r[0] for r in writer.execute(
        "SELECT json_build_object('id', id, 'alert_type', alert_type, 'severity', severity)::text"
        " FROM consistency.alerts ORDER BY id")]
    got = [n.payload for n in listener.notifies(timeout=1.0, stop_after=len(expected))]
    assert len(expected) == len(hostile) + 2 and got == expected
    assert [json.loads(p)["alert_type"] for p in got] == hostile + [hostile[0]] * 2


def test_sets_racing_in_opposite_orders_write_each_key_once(connect) -> None:
    first, second = connect(), connect()
    assert first.execute(RAISE_SET, (list(range(1, 21)),)).fetchone()[0] == 20
    result: dict[str, object] = {}

    def race() -> None:
        try:
            result["n"] = second.execute(RAISE_SET, (list(range(40, 0, -1)),)).fetchone()[0]
            second.commit()
        except psycopg.Error as exc:  # a deadlock would land here
            result["error"] = exc

    thread = threading.Thread(target=race)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "second session did not wait for the first"
    first.commit()
    thread.join(timeout=10)
    assert "error" not in result, result.get("error")
    assert result["n"] == 20  # 21..40: the first session's keys are throttled
    assert first.execute(
        "SELECT count(*), count(DISTINCT entity_id) FROM consistency.alerts").fetchone() == (40, 40)
