"""The command line as a new user meets it, against a real database: the DSN
before the command, a database without the guard, JSON from every command
that reports something (timestamps in ISO 8601), `alerts list`, the calls a
check names, and which role runs what."""

from __future__ import annotations

import json
import re

import psycopg
import pytest
from conftest import as_role

from orchestrator import db

NOT_INSTALLED = "error: the guard is not installed here: run `consistency migrate`\n"
SPACED_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")
ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?[+-]\d\d:\d\d")


def call(conn: psycopg.Connection, external_id: str, **columns: object) -> int:
    names = ", ".join(["external_call_id", *columns])
    marks = ", ".join(["%s"] * (1 + len(columns)))
    row = conn.execute(f"INSERT INTO calls ({names}) VALUES ({marks}) RETURNING id",
                       [external_id, *columns.values()]).fetchone()
    conn.commit()
    return row[0]


def behind_the_triggers(conn: psycopg.Connection, statement: str) -> None:
    conn.execute("SET session_replication_role = replica")
    conn.execute(statement)
    conn.execute("SET session_replication_role = origin")
    conn.commit()


def test_the_dsn_may_come_before_the_command(dsn, run_cli) -> None:
    shown = run_cli("--dsn", dsn, "config", "show", "--json")
    assert shown.code == 0 and json.loads(shown.out)["circuit_breaker.failure_threshold"] == 3
    assert run_cli("--dsn", dsn, "relay", "status", "--json").out.strip() == "[]"
    assert run_cli("relay", "--dsn", dsn, "sinks", "--json").out.strip() == "[]"
    assert json.loads(run_cli("--dsn", dsn, "migrate", "status", "--json").out)["up_to_date"]
    # The command's own --dsn wins.
    own = run_cli("--dsn", "host=/nowhere port=1", "config", "show", "--dsn", dsn, "--json")
    assert own.code == 0, own


@pytest.mark.parametrize("args", [
    ("check",), ("check", "--window", "1h", "--json"), ("report",), ("config", "show"),
    ("config", "set", "monitoring.recent_hours", "2"), ("alerts", "list"),
    ("circuit", "status"), ("circuit", "force", "k", "closed", "--actor", "a", "--reason", "r"),
    ("relay", "status"), ("relay", "sinks"), ("relay", "redrive"), ("review", "list"),
    ("review", "claim", "--reviewer", "ann"), ("validate", "1"), ("retention", "run"),
], ids=" ".join)
def test_a_database_without_the_guard_says_to_migrate(empty_db, run_cli, args) -> None:
    result = run_cli(*args, "--dsn", empty_db)
    assert (result.code, result.err) == (2, NOT_INSTALLED), result
    assert result.out == ""


def test_commands_that_change_something_report_it_as_json(conn, dsn, run_cli) -> None:
    changed = json.loads(run_cli("config", "set", "monitoring.recent_hours", "3", "--json",
                                 "--dsn", dsn).out)
    assert changed == {"key": "monitoring.recent_hours", "value": 3, "changed": True}
    forced = run_cli("circuit", "force", "calendar:1", "forced_open", "--actor", "ops",
                     "--reason", "maintenance", "--json", "--dsn", dsn)
    assert json.loads(forced.out) == {"circuit_key": "calendar:1", "state": "forced_open",
                                      "changed": True}
    conn.execute("INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id,"
                 " description, detected_at) VALUES ('old', 'info', 'system', 1, 'x',"
                 " now() - interval '200 days')")
    conn.commit()
    assert json.loads(run_cli("retention", "run", "--dry-run", "--json", "--dsn", dsn).out) == \
        {"dry_run": True, "archived": 1}
    assert json.loads(run_cli("retention", "run", "--json", "--dsn", dsn).out) == \
        {"dry_run": False, "archived": 1}
    sink = conn.execute("SELECT consistency.relay_register_sink(%s, 'stdout://', 'stdout')",
                        ["e" * 64]).fetchone()[0]
    conn.commit()
    assert json.loads(run_cli("relay", "redrive", "--json", "--dsn", dsn).out) == \
        {"redriven": 0}
    assert json.loads(run_cli("relay", "forget-sink", str(sink), "--force", "--json",
                              "--dsn", dsn).out) == {"forgotten": sink}


def test_every_json_timestamp_is_iso_8601(conn, dsn, run_cli) -> None:
    booked = call(conn, "iso-1", session_outcome="appointment_booked")
    conn.execute("INSERT INTO appointments (call_id, external_booking_id, source) "
                 "VALUES (%s, 'iso-b1', 'voice_agent')", [booked])
    conn.execute("SELECT consistency.review_enqueue(%s, 'service_not_found')", [booked])
    conn.execute("SELECT consistency.circuit_record_failure('calendar:9', 'timeout')")
    conn.execute("SELECT consistency.relay_register_sink(%s, 'stdout://', 'stdout')", ["f" * 64])
    conn.execute("SELECT consistency.raise_alert('iso', 'critical', 'system', 1, 'd')")
    conn.commit()
    outputs = {" ".join(args): run_cli(*args, "--json", "--dsn", dsn) for args in [
        ("circuit", "status"), ("review", "list"), ("alerts", "list"), ("relay", "sinks"),
        ("relay", "status"), ("report",), ("check",), ("validate", str(booked)),
        ("review", "claim", "--reviewer", "postgres")]}
    for command, result in outputs.items():
        json.loads(result.out)
        assert not SPACED_TIMESTAMP.search(result.out), f"{command}: {result.out}"
    for command in ("circuit status", "review list", "alerts list", "relay sinks",
                    "relay status", "report", "review claim --reviewer postgres"):
        assert ISO_TIMESTAMP.search(outputs[command].out), command


def test_alerts_list_filters_by_age_severity_and_type(conn, dsn, run_cli) -> None:
    conn.execute("""
        INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id,
                                        description, detected_at)
        VALUES ('a_info', 'info', 'system', 1, 'fyi', now() - interval '10 minutes'),
               ('a_warn', 'warning', 'call', 2, 'look', now() - interval '20 minutes'),
               ('a_crit', 'critical', 'call', 3, 'act [bold]now[/]', now() - interval '30 minutes'),
               ('a_old', 'critical', 'call', 4, 'old', now() - interval '3 days')""")
    conn.commit()

    def listed(*args: str) -> list[str]:
        result = run_cli("alerts", "list", *args, "--json", "--dsn", dsn)
        assert result.code == 0, result
        return [a["alert_type"] for a in json.loads(result.out)]

    assert listed() == ["a_info", "a_warn", "a_crit"], "newest first, the last 24 h"
    assert listed("--severity", "warning") == ["a_warn", "a_crit"]
    assert listed("--severity", "critical", "--since", "7d") == ["a_crit", "a_old"]
    assert listed("--since", "15m") == ["a_info"]
    assert listed("--type", "a_warn") == ["a_warn"]
    assert listed("--limit", "1") == ["a_info"]
    table = run_cli("alerts", "list", "--dsn", dsn)
    assert table.code == 0 and "call/3" in table.out and "act [bold]now[/]" in table.out
    bad = run_cli("alerts", "list", "--since", "soon", "--dsn", dsn)
    assert bad.code == 2 and bad.err.startswith("error: invalid --since 'soon'")


def test_check_names_the_calls_each_rule_found(conn, dsn, run_cli) -> None:
    no_direction = [call(conn, f"nd-{i}") for i in range(2)]
    behind_the_triggers(conn, f"UPDATE calls SET direction = NULL "
                              f"WHERE id IN ({no_direction[0]}, {no_direction[1]})")
    phantom = call(conn, "phantom")
    behind_the_triggers(conn, "UPDATE calls SET session_outcome = 'appointment_booked', "
                              f"appointment_made = false WHERE id = {phantom}")
    orphan = conn.execute("INSERT INTO appointments (external_booking_id, source) "
                          "VALUES ('nobody', 'voice_agent') RETURNING id").fetchone()[0]
    conn.commit()

    result = run_cli("check", "--json", "--dsn", dsn)
    rules = {r["rule"]: r for r in json.loads(result.out)["rules"]}
    assert rules["missing_direction"]["ids"] == no_direction
    assert rules["missing_direction"]["entity_type"] == "call"
    assert rules["missing_direction"]["found"] == len(no_direction)
    assert rules["session_outcome_mismatch"]["ids"] == [phantom]
    assert rules["orphaned_appointment"] == {**rules["orphaned_appointment"],
                                             "entity_type": "appointment", "ids": [orphan]}
    assert rules["recent_failure"]["ids"] == []

    table = run_cli("check", "--dsn", dsn)
    assert f"calls {phantom}" in table.out and f"appointments {orphan}" in table.out
    assert "found at start" in table.out


def test_check_names_at_most_a_few_calls_in_its_table(conn, dsn, run_cli) -> None:
    behind_the_triggers(conn, "INSERT INTO calls (external_call_id, direction) "
                              "SELECT 'many-' || g, NULL FROM generate_series(1, 8) g")
    ids = [r[0] for r in conn.execute("SELECT id FROM calls ORDER BY id")]
    table = run_cli("check", "--dsn", dsn)
    assert f"calls {', '.join(map(str, ids[:5]))} (+3)" in table.out


def test_report_says_its_circuit_opens_are_automatic(conn, dsn, run_cli) -> None:
    for _ in range(3):
        conn.execute("SELECT consistency.circuit_record_failure('calendar:2', 'down')")
    conn.execute("SELECT consistency.circuit_force('calendar:3', 'forced_open', 'ops', 'test')")
    conn.commit()
    table = run_cli("report", "--dsn", dsn)
    assert table.code == 0
    line = next(line for line in table.out.splitlines() if line.startswith("circuit opens"))
    assert line.split("\t") == ["circuit opens (automatic)", "1"]


def test_a_monitor_login_reports_and_lists_but_cannot_check(conn, dsn, run_cli,
                                                            sandbox) -> None:
    watcher = sandbox.role("watcher", "IN ROLE consistency_monitor")
    as_watcher = as_role(dsn, watcher)
    call(conn, "watched", session_outcome="appointment_booked")
    conn.execute("SELECT consistency.raise_alert('seen', 'warning', 'system', 1, 'd')")
    conn.commit()
    runs = conn.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0]

    report = run_cli("report", "--json", "--dsn", as_watcher)
    assert report.code == 0, report
    assert json.loads(report.out)["totals"]["calls"] == 1
    listed = run_cli("alerts", "list", "--json", "--dsn", as_watcher)
    assert listed.code == 0 and [a["alert_type"] for a in json.loads(listed.out)] == ["seen"]
    for args in (("circuit", "status"), ("relay", "status"), ("relay", "sinks"),
                 ("review", "list")):
        assert run_cli(*args, "--dsn", as_watcher).code == 0, args

    check = run_cli("check", "--dsn", as_watcher)
    assert check.code == 2 and check.err.count("\n") == 1
    assert "permission denied for function _check_begin" in check.err
    assert "runs as the guard's owner" in check.err
    assert conn.execute("SELECT count(*) FROM consistency.check_runs").fetchone()[0] == runs


def test_percent_signs_mean_one_thing_in_every_query(conn) -> None:
    # Both hold %% for a literal %: a query sent without its (empty) mapping of
    # parameters would reach the server as `id %% 400` and fail.
    with conn.transaction(force_rollback=True):
        db.execute(conn, "bench_check_drift")
    conn.execute("INSERT INTO calls (external_call_id) VALUES ('pc')")
    assert db.all(conn, "bench_validation_unlinked") != []
    assert db.all(conn, "bench_validation_linked") == []
