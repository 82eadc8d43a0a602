"""What the command line prints: data from the database never becomes rich
markup or terminal control, a pipe gets whole values (tab-separated), and
JSON carries ISO 8601 timestamps."""

from __future__ import annotations

import json

import pytest

HOSTILE = "[/][bold red]boom\x1b[2J\x1b]0;owned\x07\x9b31m\u202eevil\r"


@pytest.fixture
def call_id(conn) -> int:
    row = conn.execute("INSERT INTO calls (external_call_id) VALUES ('out-1') RETURNING id")
    conn.commit()
    return row.fetchone()[0]


def no_control(text: str) -> bool:
    return not any(ch in text for ch in "\x1b\x07\x9b\r\u202e")


def test_review_items_with_markup_and_escapes_are_printed_as_text(conn, dsn, run_cli,
                                                                   call_id) -> None:
    conn.execute("SELECT consistency.review_enqueue(%s, %s, %s::jsonb)",
                 [call_id, HOSTILE, json.dumps({"note": HOSTILE})])
    conn.commit()
    listed = run_cli("review", "list", "--dsn", dsn)
    assert listed.code == 0 and "Traceback" not in listed.err, listed
    assert "[/][bold red]boom" in listed.out and no_control(listed.out)

    claimed = run_cli("review", "claim", "--dsn", dsn, "--reviewer", "[red]ann")
    assert claimed.code == 0, claimed
    assert "claimed item" in claimed.out and "[/][bold red]boom" in claimed.out
    assert no_control(claimed.out)

    item = conn.execute("SELECT id FROM consistency.manual_review_queue").fetchone()[0]
    done = run_cli("review", "resolve", str(item), "--dsn", dsn, "--reviewer", "[red]ann",
                   "--status", "dismissed", "--notes", HOSTILE)
    assert done.code == 0 and "by [red]ann" in done.out, done
    again = run_cli("review", "list", "--dsn", dsn)
    assert again.code == 0 and no_control(again.out), again


def test_validate_prints_an_external_id_with_markup(conn, dsn, run_cli, call_id) -> None:
    conn.execute("INSERT INTO appointments (call_id, external_booking_id) VALUES (%s, 'b-1')",
                 [call_id])
    conn.commit()
    result = run_cli("validate", str(call_id), "--external-id", HOSTILE, "--dsn", dsn)
    assert result.code == 1 and "Traceback" not in result.err, result
    assert "external_booking_id_mismatch" in result.out and no_control(result.out)


def test_errors_from_the_database_are_stripped_of_control(conn, dsn, run_cli, call_id) -> None:
    conn.execute("SELECT consistency.review_enqueue(%s, 'x')", [call_id])
    conn.execute("SELECT consistency.review_claim(%s)", [HOSTILE])
    conn.commit()
    item = conn.execute("SELECT id FROM consistency.manual_review_queue").fetchone()[0]
    refused = run_cli("review", "resolve", str(item), "--dsn", dsn, "--reviewer", "bob",
                      "--status", "resolved", "--notes", "n")
    assert refused.code == 2 and refused.err.count("\n") == 1, refused
    assert "is assigned to [/][bold red]boom" in refused.err and no_control(refused.err)


def test_a_pipe_gets_whole_values_tab_separated(conn, dsn, run_cli) -> None:
    shown = run_cli("config", "show", "--dsn", dsn)
    assert shown.code == 0
    header, *lines = shown.out.splitlines()
    assert header.split("\t") == ["key", "value", "min", "max", "env", "description"]
    [cooldown] = [line.split("\t") for line in lines
                  if line.startswith("circuit_breaker.cooldown_seconds\t")]
    description = conn.execute("SELECT description FROM consistency.settings WHERE key = "
                               "'circuit_breaker.cooldown_seconds'").fetchone()[0]
    assert cooldown == ["circuit_breaker.cooldown_seconds", "30", "0.000001", "86400",
                        "CIRCUIT_BREAKER_COOLDOWN", description]

    key = "appointment_booking:service:" + "7" * 300 + "\tand a tab"
    conn.execute("SELECT consistency.circuit_force(%s, 'forced_open', 'ops', 'test')", [key])
    conn.commit()
    circuits = run_cli("circuit", "status", "--dsn", dsn)
    assert circuits.code == 0 and "…" not in circuits.out and "─" not in circuits.out
    assert circuits.out.splitlines()[1].split("\t")[:2] == [key.replace("\t", "\\t"),
                                                            "forced_open"]


def test_json_timestamps_are_iso_8601(conn, dsn, run_cli, call_id) -> None:
    conn.execute("SELECT consistency.review_enqueue(%s, 'x')", [call_id])
    conn.commit()
    [item] = json.loads(run_cli("review", "list", "--dsn", dsn, "--json").out)
    created = conn.execute("SELECT created_at FROM consistency.manual_review_queue").fetchone()[0]
    assert item["created_at"] == created.isoformat() and "T" in item["created_at"]
