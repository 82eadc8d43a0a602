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

    result: dict[str, object] = {}

    def race() -> None:
        result["id"] = second.execute(RAISE).fetchone()[0]
        second.commit()

    thread = threading.Thread(target=race)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "second session did not wait for the first"
    first.commit()
    thread.join(timeout=10)
    assert result["id"] is None
    assert first.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 1


def test_racing_after_the_first_rolls_back_writes_one(connect) -> None:
    first, second = connect(), connect()
    first.execute(RAISE)
    result: dict[str, object] = {}

    def race() -> None:
        result["id"] = second.execute(RAISE).fetchone()[0]
        second.commit()

    thread = threading.Thread(target=race)
    thread.start()
    time.sleep(0.3)
    first.rollback()
    thread.join(timeout=10)
    assert result["id"] is not None
    assert first.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 1
