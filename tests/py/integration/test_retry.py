"""orchestrator.retry: backoff with jitter, only transient errors, the last
error re-raised unchanged. The sleep is injected: nothing really sleeps."""

from __future__ import annotations

from orchestrator.retry import RetryPolicy


def test_policy_from_settings(conn) -> None:
    assert RetryPolicy.from_settings(conn) == RetryPolicy(3, 1.0)
    conn.execute("SELECT consistency.set_setting('validation.max_retry_attempts', '5')")
    conn.execute("SELECT consistency.set_setting('validation.base_delay_seconds', '0.25')")
    assert RetryPolicy.from_settings(conn) == RetryPolicy(5, 0.25)


def test_a_lost_connection_is_retried_on_a_new_one(connect) -> None:
    admin = connect(autocommit=True)
    sleeps: list[float] = []
    attempts: list[int] = []

    def work() -> int:
        attempts.append(1)
        worker = connect(autocommit=True)
        if len(attempts) == 1:
            pid = worker.info.backend_pid
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        return worker.execute("SELECT 42").fetchone()[0]

    assert RetryPolicy(3, 0.01, sleep=sleeps.append).call(work) == 42
    assert len(attempts) == 2 and len(sleeps) == 1
