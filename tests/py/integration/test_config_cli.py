"""consistency config show | set | sync."""

from __future__ import annotations

import psycopg


def _value(dsn: str, key: str):
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT value FROM consistency.settings WHERE key = %s",
                            [key]).fetchone()[0]


def _audit_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM consistency.audit_log").fetchone()[0]


def test_show_lists_every_setting(dsn: str, run_cli) -> None:
    result = run_cli("config", "show", "--dsn", dsn, "--json")
    assert result.code == 0
    assert '"circuit_breaker.failure_threshold": 3' in result.out
    table = run_cli("config", "show", "--dsn", dsn)
    assert table.code == 0 and "VALIDATION_MAX_AGE" in table.out


def test_set_changes_and_audits(dsn: str, run_cli) -> None:
    result = run_cli("config", "set", "--dsn", dsn, "circuit_breaker.cooldown_seconds", "12.5",
                     "--actor", "ops:alice")
    assert result.code == 0, result
    assert _value(dsn, "circuit_breaker.cooldown_seconds") == 12.5
    with psycopg.connect(dsn) as conn:
        actor, before, after = conn.execute(
            "SELECT actor, before, after FROM consistency.audit_log ORDER BY id DESC LIMIT 1"
        ).fetchone()
    assert (actor, before, after) == ("ops:alice", {"value": 30}, {"value": 12.5})
    again = run_cli("config", "set", "--dsn", dsn, "circuit_breaker.cooldown_seconds", "12.5")
    assert again.code == 0 and "unchanged" in again.out


def test_set_refuses_bad_input_with_one_line(dsn: str, run_cli) -> None:
    audit = _audit_count(dsn)
    for key, value, message in [
        ("no.such.key", "1", 'unknown setting "no.such.key"'),
        ("monitoring.recent_hours", "abc", "must be a number"),
        ("monitoring.recent_hours", "-3", "must be greater than 0"),
        ("validation.max_retry_attempts", "0", "must be greater than 0"),
    ]:
        result = run_cli("config", "set", "--dsn", dsn, key, value)
        assert result.code == 2, result
        assert result.err.startswith("error: ") and message in result.err, result
        assert result.err.count("\n") == 1 and "Traceback" not in result.err
    assert _value(dsn, "monitoring.recent_hours") == 1
    assert _audit_count(dsn) == audit


def test_sync_applies_env_all_or_nothing(dsn: str, run_cli, monkeypatch) -> None:
    monkeypatch.setenv("CIRCUIT_BREAKER_FAILURE_THRESHOLD", "5")
    monkeypatch.setenv("RETENTION_ALERT_DAYS", "-1")
    bad = run_cli("config", "sync", "--dsn", dsn)
    assert bad.code == 2 and "RETENTION_ALERT_DAYS" in bad.err
    assert _value(dsn, "circuit_breaker.failure_threshold") == 3, "partial sync was committed"

    monkeypatch.setenv("RETENTION_ALERT_DAYS", "30")
    good = run_cli("config", "sync", "--dsn", dsn)
    assert good.code == 0, good
    assert _value(dsn, "circuit_breaker.failure_threshold") == 5
    assert _value(dsn, "retention.alert_days") == 30
    assert "nothing to change" in run_cli("config", "sync", "--dsn", dsn).out


def test_usage_errors_exit_2(run_cli) -> None:
    result = run_cli("config", "set", "only-a-key")
    assert result.code == 2 and "Missing argument" in result.err and result.err.count("\n") == 1
    assert run_cli("no-such-command").code == 2
