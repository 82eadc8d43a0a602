"""The monitor with commits, two sessions, the CLI and the --every loop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import psycopg
import pytest

DRIFT = """
SET session_replication_role = replica;
INSERT INTO calls (external_call_id, direction, session_outcome, appointment_made,
                   appointment_link_status, created_at)
SELECT 'drift-' || g, 'inbound', 'appointment_booked', false, 'unlinked',
       now() - interval '5 minutes'
  FROM generate_series(1, %(n)s) g;
SET session_replication_role = origin;
"""


def drift(conn: psycopg.Connection, n: int = 5) -> None:
    conn.execute(DRIFT.replace("%(n)s", str(n)))
    conn.commit()


def test_concurrent_runs_do_not_double_correct_or_alert(conn, connect) -> None:
    drift(conn, 20)
    conn.execute("""
        SET session_replication_role = replica;
        INSERT INTO calls (external_call_id, direction)
        SELECT 'no-direction-' || g, NULL FROM generate_series(1, 5) g;
        SET session_replication_role = origin;""")
    conn.commit()
    first, second = connect(), connect()
    first.execute("SELECT * FROM consistency.run_check()")  # holds the run lock
    result: list = []

    def other() -> None:
        result.extend(second.execute(
            "SELECT rule, found, corrected, alerted FROM consistency.run_check()").fetchall())
        second.commit()

    thread = threading.Thread(target=other)
    thread.start()
    time.sleep(0.3)
    assert thread.is_alive(), "the second run did not wait for the first"
    first.commit()
    thread.join(timeout=30)
    by_rule = {r[0]: r[1:] for r in result}
    assert by_rule["missing_direction"] == (0, 0, 0), "corrected twice"
    assert by_rule["session_outcome_mismatch"] == (20, 0, 0)
    alerts = conn.execute("SELECT count(*) FROM consistency.alerts "
                          "WHERE alert_type = 'session_outcome_mismatch'").fetchone()[0]
    assert alerts == 20
    waited = conn.execute("SELECT max(waited_ms) FROM consistency.check_runs").fetchone()[0]
    assert waited >= 200


def test_check_cli_exit_codes_and_json(conn, dsn, run_cli) -> None:
    clean = run_cli("check", "--dsn", dsn)
    assert clean.code == 0, clean
    drift(conn, 3)
    found = run_cli("check", "--dsn", dsn, "--json", "--window", "1h")
    assert found.code == 1, found
    assert '"critical_remaining": 3' in found.out
    table = run_cli("check", "--dsn", dsn)
    assert table.code == 1 and "session_outcome_mismatch" in table.out


def test_check_cli_rejects_bad_window(dsn, run_cli) -> None:
    result = run_cli("check", "--dsn", dsn, "--window", "soon")
    assert result.code == 2 and result.err.startswith("error: invalid window 'soon'")


def test_report_cli(conn, dsn, run_cli) -> None:
    drift(conn, 2)
    run_cli("check", "--dsn", dsn)
    data = run_cli("report", "--dsn", dsn, "--json")
    assert data.code == 0 and '"consistency_rate_pct"' in data.out
    table = run_cli("report", "--dsn", dsn)
    assert table.code == 0 and "consistency rate" in table.out
    bad = run_cli("report", "--dsn", dsn, "--day", "yesterday")
    assert bad.code == 2 and "YYYY-MM-DD" in bad.err


def test_retention_moves_old_alerts_in_batches(conn, dsn, run_cli) -> None:
    conn.execute("""
        INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id, description,
                                        detected_at)
        SELECT 'old', 'info', 'system', g, 'x', now() - interval '100 days'
          FROM generate_series(1, 25) g;
        INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id, description)
        VALUES ('fresh', 'info', 'system', 1, 'x');""")
    conn.commit()
    dry = run_cli("retention", "run", "--dsn", dsn, "--dry-run")
    assert dry.code == 0 and "would archive 25" in dry.out
    assert conn.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 26
    done = run_cli("retention", "run", "--dsn", dsn, "--batch", "10")
    assert done.code == 0 and "archived 25" in done.out
    assert conn.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 1
    assert conn.execute("SELECT count(*) FROM consistency.alerts_archive").fetchone()[0] == 25
    bad = run_cli("retention", "run", "--dsn", dsn, "--older-than", "-5d")
    assert bad.code == 2


def test_schedule_install_without_pg_cron_is_a_clear_error(dsn, run_cli) -> None:
    result = run_cli("schedule", "install", "--dsn", dsn)
    assert result.code == 2 and "pg_cron is not installed" in result.err


@pytest.mark.stress
def test_every_loop_survives_a_server_restart_and_stops_on_sigterm(own_cluster) -> None:
    own, dsn = own_cluster, own_cluster.dsn()

    def runs() -> int:
        with psycopg.connect(dsn) as c:
            return c.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0]

    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "check", "--every", "1s", "--dsn", dsn,
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "DATABASE_URL": ""})
    deadline = time.monotonic() + 30
    while runs() < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert runs() >= 2
    own.stop()
    time.sleep(1.0)
    own.start()
    before = runs()
    deadline = time.monotonic() + 30
    while runs() < before + 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert runs() >= before + 2, "the loop did not come back after the restart"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped after" in err and "database unavailable" in err
    assert "Traceback" not in err


def test_retention_keeps_alerts_a_sink_still_waits_for(conn, dsn, run_cli) -> None:
    conn.execute("SELECT consistency.relay_register_sink(%s, 'webhook+http://x', 'webhook')",
                 ["a" * 64])
    conn.execute("SET consistency.fake_now = '2001-01-01 00:00:00+00'")
    pending, delivered = (
        conn.execute(f"SELECT consistency.raise_alert('old', 'warning', 'system', {i}, 'x')"
                     ).fetchone()[0] for i in (1, 2))
    conn.execute("RESET consistency.fake_now")
    conn.execute("UPDATE consistency.relay_deliveries SET status = 'delivered', "
                 "delivered_at = now() WHERE alert_id = %s", [delivered])
    conn.commit()
    assert "archived 1 alert(s)" in run_cli("retention", "run", "--dsn", dsn).out
    left = [r[0] for r in conn.execute("SELECT id FROM consistency.alerts")]
    assert left == [pending]


def test_bench_check_smoke(cluster, run_cli) -> None:
    result = run_cli("bench", "check", "--dsn", cluster.dsn(), "--calls", "2000", "--repeat", "2",
                     "--json")
    assert result.code == 0, result
    assert '"scope": "whole table"' in result.out and '"found": ' in result.out


def test_an_appointment_committed_during_the_check_is_not_rolled_back(conn, connect) -> None:
    call_id = conn.execute(
        "INSERT INTO calls (external_call_id, session_outcome, created_at) "
        "VALUES ('late-booking', 'appointment_booked', now() - interval '10 minutes') RETURNING id"
    ).fetchone()[0]
    conn.commit()
    writer, checker = connect(), connect()
    writer.execute("INSERT INTO appointments (call_id, external_booking_id, source) "
                   "VALUES (%s, 'late-1', 'voice_agent')", [call_id])  # not committed yet
    result: list = []

    def check() -> None:
        result.extend(checker.execute("SELECT rule, found FROM consistency.run_check()"))
        checker.commit()

    thread = threading.Thread(target=check)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the check waits for the writer's row lock
        waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = "
                               "'Lock' AND pid = %s", [checker.info.backend_pid]).fetchone()[0]
        conn.commit()
        if waiting:
            break
        time.sleep(0.05)
    assert waiting, "the check did not wait for the writer"
    writer.commit()
    thread.join(timeout=30)
    assert dict(result)["missing_appointment"] == 0
    status, failed = conn.execute("SELECT appointment_link_status, booking_failed FROM calls "
                                  "WHERE id = %s", [call_id]).fetchone()
    assert (status, failed) == ("linked", False)
    assert conn.execute("SELECT count(*) FROM consistency.alerts "
                        "WHERE alert_type = 'appointment_rollback'").fetchone()[0] == 0


def test_the_every_loop_survives_any_database_error(dsn, caplog) -> None:
    from datetime import timedelta

    from orchestrator import monitor

    with psycopg.connect(dsn, autocommit=True) as admin:
        # A step of the batched run the loop makes (monitor.run_check).
        admin.execute("ALTER FUNCTION consistency._check_detect(text, timestamptz, timestamptz) "
                      "RENAME TO check_detect_away")
    stop, reports = threading.Event(), []

    def on_result(report) -> None:
        reports.append(report)
        stop.set()

    loop = threading.Thread(target=monitor.check_loop,
                            args=(dsn, timedelta(seconds=0.05), stop),
                            kwargs={"on_result": on_result, "max_backoff": 0.05})
    loop.start()
    deadline = time.monotonic() + 10
    while caplog.text.count("check failed") < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert caplog.text.count("check failed") >= 2 and "_check_detect" in caplog.text
    assert loop.is_alive(), "an error that is not a lost connection ended the loop"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("ALTER FUNCTION consistency.check_detect_away(text, timestamptz, "
                      "timestamptz) RENAME TO _check_detect")
    loop.join(timeout=10)
    stop.set()
    assert reports and not loop.is_alive(), "the loop did not run again once the error was gone"


def test_the_every_loop_ended_by_a_bug_leaves_no_connection_behind(dsn) -> None:
    """An error that is no database error escapes check_loop (here from the
    caller's on_result; `up` restarts the part): its connection is closed,
    not left to the garbage collector while the error (its traceback, the
    loop's frame) is still held somewhere."""
    from datetime import timedelta

    from orchestrator import monitor

    class Bug(Exception):
        pass

    def on_result(report) -> None:
        raise Bug("a bug in the caller")

    def loop_connections() -> int:
        with psycopg.connect(dsn) as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity"
                                " WHERE application_name = 'consistency check --every'"
                                ).fetchone()[0]

    held = []
    for _ in range(3):  # as `up` restarting the part would
        with pytest.raises(Bug) as escaped:
            monitor.check_loop(dsn, timedelta(seconds=60), threading.Event(),
                               on_result=on_result)
        held.append(escaped.value)
    deadline = time.monotonic() + 5
    while loop_connections() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert loop_connections() == 0, f"{len(held)} errors held, their connections still open"


def test_a_failed_correction_is_shown_and_exits_1(conn, dsn, run_cli) -> None:
    conn.execute("""
        INSERT INTO calls (external_call_id, session_outcome, created_at)
        VALUES ('refuses', 'appointment_booked', now() - interval '30 minutes');
        ALTER TABLE calls ADD CONSTRAINT app_rule
            CHECK (external_call_id <> 'refuses' OR session_outcome <> 'creation_failed')""")
    conn.commit()
    result = run_cli("check", "--dsn", dsn)
    assert result.code == 1, result
    assert "could not correct: missing_appointment, call" in result.out and "app_rule" in result.out
    as_json = json.loads(run_cli("check", "--dsn", dsn, "--json").out)
    assert as_json["failed"] == 1 and as_json["rules"][1]["failed"] == 1


@pytest.mark.parametrize(("args", "message"), [
    (["check", "--window", "999999999999d"],
     "invalid window '999999999999d': must be at most 36500d"),
    (["check", "--every", "0.0001s"], "invalid interval '0.0001s': must be at least 1s"),
    (["check", "--every", "8d"], "invalid interval '8d': must be at most 7d"),
    (["retention", "run", "--older-than", "99999999999d"],
     "invalid age '99999999999d': must be at most 36500d"),
])
def test_a_duration_out_of_range_is_one_line_and_changes_nothing(conn, dsn, run_cli, args,
                                                               message) -> None:
    result = run_cli(*args, "--dsn", dsn)
    assert (result.code, result.err) == (2, f"error: {message}\n"), result
    assert conn.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0] == 0


# A bulk fix made behind the triggers' back: calls that have an appointment
# but say they have none (inconsistent_link_status: resynced, alerted). An
# application trigger that takes 20 ms per written call makes the run long
# enough to watch.
SLOW_DRIFT = """
INSERT INTO calls (id, external_call_id, created_at)
SELECT g, 'slow-' || g, now() - interval '5 minutes' FROM generate_series(1, %(n)s) g;
INSERT INTO appointments (call_id, external_booking_id, source)
SELECT g, 'slow-b' || g, 'voice_agent' FROM generate_series(1, %(n)s) g;
SET session_replication_role = replica;
UPDATE calls SET appointment_made = false, appointment_link_status = 'unlinked';
SET session_replication_role = origin;
CREATE FUNCTION public.slow_write() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.02); RETURN NEW; END $$;
CREATE TRIGGER app_slow_write BEFORE UPDATE ON calls
    FOR EACH ROW WHEN (NEW.appointment_made) EXECUTE FUNCTION public.slow_write();
"""


def _slow_drift(conn: psycopg.Connection, n: int) -> None:
    conn.execute(SLOW_DRIFT.replace("%(n)s", str(n)))
    conn.commit()


def _linked(conn: psycopg.Connection) -> int:
    count = conn.execute("SELECT count(*) FROM calls WHERE appointment_made").fetchone()[0]
    conn.commit()
    return int(count)


def test_a_batched_check_commits_as_it_goes(conn, connect) -> None:
    from datetime import timedelta

    from orchestrator import monitor

    _slow_drift(conn, 100)
    checker, writer = connect(), connect(autocommit=True)
    report: list = []
    run = threading.Thread(target=lambda: report.append(
        monitor.run_check(checker, timedelta(hours=1), slice_ms=50)))
    run.start()
    deadline = time.monotonic() + 20
    while _linked(conn) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    corrected = conn.execute("SELECT min(id) FROM calls WHERE appointment_made").fetchone()[0]
    conn.commit()
    assert corrected is not None and run.is_alive(), "no slice was committed during the run"
    assert conn.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0] == 0
    # A write to a call the run already corrected does not wait for its end.
    writer.execute("INSERT INTO appointments (call_id, external_booking_id) VALUES (%s, 'new')",
                   [corrected])
    assert run.is_alive(), "the application write waited for the whole run"
    run.join(timeout=60)
    (result,) = report
    rules = {r.rule: r for r in result.rules}
    assert (rules["inconsistent_link_status"].found,
            rules["inconsistent_link_status"].corrected,
            rules["inconsistent_link_status"].alerted) == (100, 100, 100)
    assert _linked(conn) == 100
    assert conn.execute("SELECT count(*) FROM consistency.violations()").fetchone()[0] == 0


def test_batched_checks_run_one_at_a_time_and_correct_once(conn, connect) -> None:
    from datetime import timedelta

    from orchestrator import monitor

    _slow_drift(conn, 100)
    first, second = connect(), connect()
    reports: dict[str, object] = {}

    def check(name: str, session: psycopg.Connection) -> None:
        reports[name] = monitor.run_check(session, timedelta(hours=1), slice_ms=50)

    one = threading.Thread(target=check, args=("first", first))
    one.start()
    deadline = time.monotonic() + 20
    while _linked(conn) == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    two = threading.Thread(target=check, args=("second", second))
    two.start()
    waiting = 0
    while not waiting and one.is_alive():
        waiting = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s "
                               "AND wait_event = 'advisory'",
                               [second.info.backend_pid]).fetchone()[0]
        conn.commit()
    assert waiting == 1, "the second run did not wait for the first"
    one.join(timeout=60)
    two.join(timeout=60)
    rules = {r.rule: r for r in reports["second"].rules}  # type: ignore[attr-defined]
    assert (rules["inconsistent_link_status"].found,
            rules["inconsistent_link_status"].corrected) == (0, 0), "corrected twice"
    assert reports["second"].waited_ms >= 100  # type: ignore[attr-defined]
    alerts = conn.execute("SELECT count(*) FROM consistency.alerts "
                          "WHERE alert_type = 'inconsistent_link_status'").fetchone()[0]
    assert alerts == 100
