"""`consistency serve` against real servers: exact metric values after known
events, counters through retention, a scrape that only reads (read-only
transaction, no transaction id, ACCESS SHARE only, no write counters, a hot
standby), the token, the rate limit, /healthz across a database restart."""

from __future__ import annotations

import base64
import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator import server
from orchestrator.pgcluster import Cluster, free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape, keyed by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Start serve on a free loopback port; returns its base URL."""
    running: list[tuple[server.ServerThread, server.Database]] = []

    def _start(dsn: str, **options: Any) -> str:
        opts = server.ServeOptions(**{"port": free_port(), **options})
        thread, database = server.start(dsn, opts)
        running.append((thread, database))
        return f"http://{opts.host}:{opts.port}"

    yield _start
    for thread, database in running:
        thread.stop()
        database.close()


def scrape(base: str, **headers: str) -> dict:
    response = httpx.get(f"{base}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return samples(response.text)


def known_events(conn: psycopg.Connection) -> None:
    """Alerts, circuit transitions, review items and a check run whose
    effects on the metrics are known exactly."""
    # One call of the last 24 h without direction (corrected by the check)
    # and one booked call whose booking failed.
    c1 = conn.execute("INSERT INTO public.calls (external_call_id, direction)"
                      " VALUES ('c-1', 'inbound') RETURNING id").fetchone()[0]
    conn.execute("SET session_replication_role = replica")  # past G6, as drift is
    conn.execute("UPDATE public.calls SET direction = NULL WHERE id = %s", [c1])
    conn.execute("RESET session_replication_role")
    c2 = conn.execute("INSERT INTO public.calls (external_call_id, session_outcome,"
                      " booking_failed) VALUES ('c-2', 'appointment_booked', true)"
                      " RETURNING id").fetchone()[0]
    # Alerts on entities that are not calls of the window.
    conn.execute("SELECT consistency.raise_alert('x_test', 'warning', 'call', -1, 'd')")
    conn.execute("SELECT consistency.raise_alert('x_test', 'warning', 'call', -2, 'd')")
    conn.execute("SELECT consistency.raise_alert('x_test', 'info', 'system', 3, 'd')")
    for _ in range(3):  # failure_threshold 3: closed -> open
        conn.execute("SELECT consistency.circuit_record_failure("
                     "'appointment_booking:service:42', 'timeout')")
    conn.execute("SELECT consistency.circuit_record_failure('calendar', 'timeout')")
    conn.execute("SELECT consistency.review_enqueue(%s, 'calendar_booking_failed')", [c1])
    conn.execute("SELECT consistency.review_enqueue(%s, 'service_not_found')", [c2])
    conn.execute("SELECT consistency.review_claim('ana')")
    conn.execute("SELECT count(*) FROM consistency.run_check()")
    conn.commit()


def test_scrape_reports_exact_values(conn, dsn, serve) -> None:
    known_events(conn)
    m = scrape(serve(dsn))
    assert value(m, "consistency_database_up") == 1
    assert value(m, "consistency_alerts_total", type="x_test", severity="warning") == 2
    assert value(m, "consistency_alerts_total", type="x_test", severity="info") == 1
    assert value(m, "consistency_alerts_total", type="circuit_opened", severity="critical") == 1
    # The key family, never the raw key with its id.
    fam = "appointment_booking:service"
    assert value(m, "consistency_circuit_transitions_total", key=fam, to="open") == 1
    assert value(m, "consistency_circuit_state", key=fam, state="open") == 1
    assert value(m, "consistency_circuit_state", key=fam, state="closed") == 0
    assert value(m, "consistency_circuit_state", key="calendar", state="closed") == 1
    assert value(m, "consistency_circuit_open_seconds", key="calendar") == 0
    assert 0 <= value(m, "consistency_circuit_open_seconds", key=fam) < 60
    assert not any("42" in dict(labels).get("key", "") for _, labels in m)
    assert value(m, "consistency_review_items", status="pending") == 1
    assert value(m, "consistency_review_items", status="in_progress") == 1
    assert value(m, "consistency_corrections_total", rule="missing_direction") == 1
    assert value(m, "consistency_check_runs_total") == 1
    assert 0 < value(m, "consistency_check_duration_seconds") < 30
    assert abs(value(m, "consistency_check_last_run_timestamp_seconds") - time.time()) < 60
    # Two calls, both of the last 5 minutes; neither has a warning alert on it.
    assert value(m, "consistency_window_calls", window="5m") == 2
    assert value(m, "consistency_window_booking_attempts", window="5m") == 1
    assert value(m, "consistency_window_booking_failures", window="5m") == 1
    assert value(m, "consistency_rate_ratio") == 1.0
    assert value(m, "consistency_scrape_errors_total") == 0
    assert any(name.startswith("process_") for name, _ in m), "the process's own metrics"


def test_consistency_rate_counts_calls_with_warning_alerts(conn, dsn, serve) -> None:
    ids = [conn.execute("INSERT INTO public.calls (external_call_id) VALUES (%s) RETURNING id",
                        [f"r-{i}"]).fetchone()[0] for i in range(4)]
    conn.execute("SELECT consistency.raise_alert('y', 'warning', 'call', %s, 'd')", [ids[0]])
    conn.execute("SELECT consistency.raise_alert('y', 'info', 'call', %s, 'd')", [ids[1]])
    conn.commit()
    m = scrape(serve(dsn))
    assert value(m, "consistency_rate_ratio") == 0.75
    assert value(m, "consistency_window_inconsistent_calls", window="10m") == 1


def test_counters_do_not_go_back_when_alerts_are_archived(conn, dsn, serve) -> None:
    conn.execute("SET consistency.fake_now = '2001-01-01 00:00:00+00'")
    for i in range(3):
        conn.execute("SELECT consistency.raise_alert('old', 'critical', 'call', %s, 'd')", [i])
    conn.execute("RESET consistency.fake_now")
    conn.commit()
    base = serve(dsn)
    before = value(scrape(base), "consistency_alerts_total", type="old", severity="critical")
    assert conn.execute("SELECT consistency.archive_alerts()").fetchone()[0] == 3
    conn.commit()
    assert conn.execute("SELECT count(*) FROM consistency.alerts").fetchone()[0] == 0
    after = value(scrape(base), "consistency_alerts_total", type="old", severity="critical")
    assert before == after == 3


def test_counter_deltas_fold_and_count_once(conn) -> None:
    for i in range(300):  # more than one fold (every 128th delta)
        conn.execute("SELECT consistency.raise_alert('fold', 'info', 'call', %s, 'd')", [i])
    conn.commit()
    folded, deltas = conn.execute(
        "SELECT (SELECT value FROM consistency.metric_counters"
        "         WHERE metric = 'alerts' AND label1 = 'fold'),"
        "       (SELECT count(*) FROM consistency.metric_counter_deltas)").fetchone()
    assert folded is not None and folded >= 128 and deltas < 128
    total = conn.execute("SELECT value FROM consistency._metric_counter_values('alerts')"
                         " WHERE label1 = 'fold'").fetchone()[0]
    assert total == 300


def test_counting_never_makes_a_repeatable_read_writer_fail(conn, connect) -> None:
    """A fold at REPEATABLE READ could meet another fold's deletes: it is
    skipped there, so an application's transaction never fails on it."""
    conn.execute("SELECT setval('consistency.metric_counter_deltas_id_seq', 1000)")
    for i in range(5):  # deltas the snapshot below sees, folded by another session after it
        conn.execute("SELECT consistency.raise_alert('pre', 'info', 'call', %s, 'd')", [i])
    conn.commit()
    rr = connect()
    rr.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    rr.execute("SELECT count(*) FROM consistency.metric_counter_deltas")  # takes the snapshot
    for i in range(130):  # another session folds meanwhile
        conn.execute("SELECT consistency.raise_alert('rc', 'info', 'call', %s, 'd')", [i])
    conn.commit()
    for i in range(130):
        rr.execute("SELECT consistency.raise_alert('rr', 'info', 'call', %s, 'd')", [i])
    rr.execute("COMMIT")
    totals = dict(conn.execute("SELECT label1, value FROM consistency._metric_counter_values"
                               "('alerts') WHERE label1 IN ('pre', 'rc', 'rr')").fetchall())
    assert totals == {"pre": 5, "rc": 130, "rr": 130}


def test_a_scrape_only_reads(conn, connect) -> None:
    known_events(conn)
    conn.execute("SELECT pg_stat_force_next_flush()")
    conn.commit()

    def writes() -> dict[str, tuple[int, ...]]:
        with psycopg.connect(conn.info.dsn, autocommit=True) as c:
            c.execute("SELECT pg_stat_clear_snapshot()")
            return {r[0]: tuple(r[1:]) for r in c.execute(
                "SELECT relid::regclass::text, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd"
                "  FROM pg_stat_user_tables")}

    time.sleep(1.1)  # stats of other sessions reach shared memory at most once a second
    before = writes()
    monitor = connect(autocommit=False)
    monitor.execute("SET ROLE consistency_monitor")
    monitor.execute("BEGIN READ ONLY")
    monitor.execute("SELECT consistency.metrics()")
    monitor.execute("SELECT consistency.status(48)")
    assert monitor.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()[0] is None
    modes = {r[0] for r in monitor.execute(
        "SELECT mode FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'relation'")}
    assert modes == {"AccessShareLock"}
    monitor.execute("COMMIT")
    monitor.execute("SELECT pg_stat_force_next_flush()")
    monitor.commit()
    time.sleep(0.2)
    assert writes() == before


def test_the_monitor_role_reads_nothing_else(conn, connect) -> None:
    monitor = connect(autocommit=True)
    monitor.execute("SET ROLE consistency_monitor")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        monitor.execute("SELECT * FROM consistency.metric_counters")
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        monitor.execute("SELECT consistency._fold_metric_counters()")


def test_hostile_circuit_keys_share_a_bounded_set_of_labels(conn, dsn, serve) -> None:
    for i in range(30):
        conn.execute("SELECT consistency.circuit_force(%s, 'forced_open', 'test', 'x')",
                     [f"hostile-{i:02d}\"\n{{x}}"])
    for sid in ("7", "8", "0f8fad5b-d9cb-469f-a165-70867728950e"):
        conn.execute("SELECT consistency.circuit_force(%s, 'disabled', 'test', 'x')",
                     [f"appointment_booking:service:{sid}"])
    conn.commit()
    m = scrape(serve(dsn))
    keys = {dict(labels)["key"] for name, labels in m if name == "consistency_circuit_state"}
    assert len(keys) == 21 and "other" in keys
    assert "appointment_booking:service" in keys
    assert value(m, "consistency_circuit_state", key="appointment_booking:service",
                 state="disabled") == 3
    assert sum(v for (name, labels), v in m.items() if name == "consistency_circuit_state"
               and dict(labels)["state"] == "forced_open") == 30


# --- hot standby ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def standby(cluster: Cluster) -> Iterator[Cluster]:
    """A streaming replica of the session's cluster (pg_basebackup -R)."""
    replica = cluster.replica()
    try:
        yield replica
    finally:
        replica.destroy()


def test_scrape_on_a_hot_standby(conn, dsn, cluster, standby, serve) -> None:
    known_events(conn)
    standby.wait_for_replay(cluster)
    base = serve(standby.dsn(conn.info.dbname))
    m = scrape(base)
    assert value(m, "consistency_database_standby") == 1
    assert value(m, "consistency_alerts_total", type="x_test", severity="warning") == 2
    assert value(m, "consistency_review_items", status="pending") == 1
    status = httpx.get(f"{base}/api/status", timeout=10).json()
    assert status["standby"] is True and status["circuits_total"] == 2
    page = httpx.get(base, timeout=10)
    assert page.status_code == 200 and "panel-circuits" in page.text
    assert httpx.get(f"{base}/healthz", timeout=10).json()["database"]["standby"] is True


# --- security ----------------------------------------------------------------------------

def test_token_is_required_everywhere_but_healthz(dsn, serve) -> None:
    base = serve(dsn, token="s3cret-token")
    for path in ("/metrics", "/api/status", "/"):
        refused = httpx.get(base + path, timeout=10)
        assert refused.status_code == 401, path
        assert "Bearer" in refused.headers["www-authenticate"]
        wrong = httpx.get(base + path, headers={"Authorization": "Bearer s3cret-tokem"},
                          timeout=10)
        assert wrong.status_code == 401, path
        ok = httpx.get(base + path, headers={"Authorization": "Bearer s3cret-token"},
                       timeout=10)
        assert ok.status_code == 200, path
    basic = base64.b64encode(b"anyone:s3cret-token").decode()
    assert httpx.get(base + "/", headers={"Authorization": f"Basic {basic}"},
                     timeout=10).status_code == 200
    assert httpx.get(base + "/", headers={"Authorization": "Basic !!!"},
                     timeout=10).status_code == 401
    assert httpx.get(base + "/healthz", timeout=10).status_code == 200


def test_rate_limit_answers_429_with_retry_after(dsn, serve) -> None:
    base = serve(dsn, rate_limit="5/minute")
    codes = [httpx.get(f"{base}/api/status", timeout=10).status_code for _ in range(5)]
    assert codes == [200] * 5
    over = httpx.get(f"{base}/metrics", timeout=10)
    assert over.status_code == 429
    assert 1 <= int(over.headers["retry-after"]) <= 60
    # Health checks are never limited.
    assert all(httpx.get(f"{base}/healthz", timeout=10).status_code == 200 for _ in range(10))


def test_binding_beyond_loopback_without_token_warns(dsn, serve, caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="consistency.serve"):
        serve(dsn, host="0.0.0.0")
    assert "WITHOUT A TOKEN" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="consistency.serve"):
        serve(dsn, host="0.0.0.0", token="t")
        serve(dsn)
    assert "WITHOUT A TOKEN" not in caplog.text


def test_bad_input_is_one_line_and_exit_2(dsn, run_cli) -> None:
    bad_rate = run_cli("serve", "--dsn", dsn, "--rate-limit", "lots", "--port", str(free_port()))
    assert bad_rate.code == 2 and "invalid rate limit" in bad_rate.err
    unreachable = run_cli("serve", "--dsn", f"host=127.0.0.1 port={free_port()} user=x",
                          "--port", str(free_port()))
    assert unreachable.code == 2 and "cannot connect" in unreachable.err
    assert "Traceback" not in bad_rate.err + unreachable.err


def test_status_rejects_bad_hours(dsn, serve) -> None:
    base = serve(dsn)
    assert httpx.get(f"{base}/api/status?hours=x", timeout=10).status_code == 400
    assert httpx.get(f"{base}/api/status?hours=0", timeout=10).status_code == 400
    data = httpx.get(f"{base}/api/status?hours=2", timeout=10).json()
    assert data["hours"] == 2 and len(data["series"]) == 2


def test_a_flood_of_healthz_looks_at_the_database_once_a_second(dsn, serve) -> None:
    """/healthz is open to anyone: 40 clients asking at once for ~2.5 s get
    answers from a handful of looks at the database (at most one a second,
    each at most a second old), and /metrics is still served meanwhile."""
    base = serve(dsn)
    answers: list[tuple[int, float, float]] = []
    stop = time.monotonic() + 2.5

    def ask() -> None:
        with httpx.Client(timeout=10) as client:
            while time.monotonic() < stop:
                answer = client.get(f"{base}/healthz")
                answers.append((answer.status_code, time.monotonic(),
                                answer.json()["database"].get("age_seconds", -1)))

    askers = [threading.Thread(target=ask) for _ in range(40)]
    for t in askers:
        t.start()
    assert scrape(base), "/metrics answers during the flood"
    for t in askers:
        t.join(15)
    assert len(answers) > 100 and {status for status, _, _ in answers} == {200}
    assert all(0 <= age < server.HEALTH_PROBE_SECONDS + 0.5 for _, _, age in answers)
    # serve runs in this process: one clock for when each answer's look was taken.
    instants = sorted(received - age for _, received, age in answers)
    looks = 1 + sum(b - a > 0.5 for a, b in itertools.pairwise(instants))
    assert looks <= 4, looks


# --- /healthz across a database restart ------------------------------------------------------

def test_healthz_follows_the_database_without_a_restart(own_cluster, serve) -> None:
    base = serve(own_cluster.dsn())
    assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
    own_cluster.stop()
    try:
        deadline = time.monotonic() + server.HEALTH_PROBE_SECONDS + 2
        while (down := httpx.get(f"{base}/healthz", timeout=15)).status_code == 200:
            assert time.monotonic() < deadline, "healthz went on reporting a stopped database"
            time.sleep(0.1)
        assert down.status_code == 503
        assert down.json()["database"]["state"] == "unavailable"
        metrics = scrape(base)
        assert value(metrics, "consistency_database_up") == 0
        page = httpx.get(base, timeout=15)
        assert page.status_code == 503 and "does not answer" in page.text
    finally:
        own_cluster.start()
    deadline = time.monotonic() + 20
    while httpx.get(f"{base}/healthz", timeout=15).status_code != 200:
        assert time.monotonic() < deadline, "healthz did not come back"
        time.sleep(0.2)
    assert value(scrape(base), "consistency_database_up") == 1
    assert json.loads(httpx.get(f"{base}/api/status", timeout=10).text)["standby"] is False
