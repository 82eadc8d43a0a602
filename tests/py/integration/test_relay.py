"""Alert relay against real local servers: delivery to every sink, retries,
permanent failures, dead letters, redaction, two relays, lost notifications,
a killed relay, a restarted PostgreSQL server, SIGTERM, a real Alertmanager."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import psycopg
import pytest
from conftest import ROOT
from relay_servers import DripServer, EchoAuthSmtp, HttpRecorder, SmtpRecorder

from orchestrator.pgcluster import free_port
from orchestrator.relay import Relay, RelayOptions, parse_sink, parse_sinks

FAST = RelayOptions(poll_seconds=0.2, base_delay=0.02, max_delay=0.2, lease_seconds=5,
                    probe_seconds=0.5, reconnect_max_delay=0.5, timeout=3)


def raise_alerts(dsn: str, n: int, *, first: int = 1, severity: str = "critical",
                 alert_type: str = "appointment_unlinked", at: str | None = None) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        if at:
            conn.execute("SELECT set_config('consistency.fake_now', %s, false)", (at,))
        return [conn.execute("SELECT consistency.raise_alert(%s, %s, 'call', %s, %s)",
                             (alert_type, severity, i, f"call {i} lost")).fetchone()[0]
                for i in range(first, first + n)]


def deliveries(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT d.alert_id, s.name, d.status, d.attempts, d.last_error, a.alert_type"
            "  FROM consistency.relay_deliveries d"
            "  JOIN consistency.relay_sinks s ON s.id = d.sink_id"
            "  JOIN consistency.alerts a ON a.id = d.alert_id"
            " ORDER BY d.alert_id, s.name").fetchall()


def make_relay(dsn: str, urls: list[str], options: RelayOptions = FAST) -> Relay:
    relay = Relay(dsn, parse_sinks(urls), options)
    relay.register()
    return relay


class Background:
    """A relay running in a thread until stopped."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.thread = threading.Thread(target=relay.run, daemon=True)

    def __enter__(self) -> Relay:
        self.thread.start()
        assert self.relay.listening.wait(10), "relay never started listening"
        return self.relay

    def __exit__(self, *exc: object) -> None:
        self.relay.stop()
        self.thread.join(timeout=20)
        assert not self.thread.is_alive()


@pytest.fixture
def http() -> HttpRecorder:
    with HttpRecorder() as server:
        yield server


def test_every_alert_reaches_every_sink_once(dsn, http) -> None:
    with SmtpRecorder() as smtp:
        urls = [http.url("webhook+http", "/hook"), http.url("alertmanager+http"),
                f"smtp://127.0.0.1:{smtp.port}?from=guard@example.com"
                "&to=ops@example.com,b@example.com",
                "stdout://"]
        relay = make_relay(dsn, urls)
        slack = parse_sink("slack+https://hooks.example.com/services/T/B/X"
                           "?dashboard_url=http://dash.example/")
        ids = raise_alerts(dsn, 5)
        relay.run(once=True)

        assert sorted(http.recorder.ids("/hook")) == ids
        assert sorted(http.recorder.ids("/api/v2/alerts")) == ids
        hook = http.recorder.to("/hook")[0]
        assert hook.body["id"] == int(hook.headers["Idempotency-Key"])
        assert hook.body["alert_type"] == "appointment_unlinked"
        am = http.recorder.to("/api/v2/alerts")[0].body[0]
        assert am["labels"]["alertname"] == "appointment_unlinked"
        assert am["labels"]["severity"] == "critical"
        assert am["labels"]["entity"].startswith("call/")
        assert len(smtp.messages) == 5
        assert sorted(m["Message-ID"] for m in smtp.messages) == sorted(
            f"<alert-{i}@consistency-guard>" for i in ids)
        assert smtp.envelopes[0] == ("guard@example.com", ["ops@example.com", "b@example.com"])
        assert {(s, st, n) for _, s, st, n, _, _ in deliveries(dsn)} == {
            (relay.sinks[i].name, "delivered", 1) for i in range(4)}
        with psycopg.connect(dsn) as conn:
            status = conn.execute("SELECT sink, status, deliveries"
                                  "  FROM consistency.relay_status()").fetchall()
        assert sorted(status) == sorted((s.name, "delivered", 5) for s in relay.sinks)

        # Block Kit: severity, type, entity, description, dashboard link.
        blocks = json.dumps(slack.payload(relay_alert(dsn, ids[0])))
        for needle in ("CRITICAL", "appointment_unlinked", "call/1", "call 1 lost",
                       "http://dash.example/", '"type": "header"'):
            assert needle in blocks


def relay_alert(dsn: str, alert_id: int):
    from orchestrator.relay import Alert

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT id, alert_type, severity, entity_type, entity_id, description,"
                           " metadata, detected_at, auto_corrected FROM consistency.alerts"
                           " WHERE id = %s", (alert_id,)).fetchone()
    return Alert(*row)


def test_slack_sink_posts_block_kit(dsn, http) -> None:
    """The Slack sink itself, aimed at the recorder over plain http."""
    from orchestrator.relay.base import SinkURL
    from orchestrator.relay.slack import SlackSink

    sink = SlackSink(SinkURL.parse(http.url("slack+http", "/services/T/B/X")))
    alert = relay_alert(dsn, raise_alerts(dsn, 1)[0])

    async def send_once() -> None:
        try:
            await sink.send(alert)
        finally:
            await sink.close()

    asyncio.run(send_once())
    post = http.recorder.to("/services/T/B/X")[0]
    assert post.body["blocks"][0]["type"] == "header"
    assert f"alert #{alert.id}" in post.body["text"]


def test_stdout_sink_through_the_cli(dsn, run_cli) -> None:
    assert run_cli("relay", "--dsn", dsn, "--sink", "stdout://", "--once").code == 0
    ids = raise_alerts(dsn, 2)
    result = run_cli("relay", "--dsn", dsn, "--sink", "stdout://", "--once", "-q")
    assert result.code == 0, result
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [line["id"] for line in lines] == ids
    assert "delivered 2" in result.err


def test_sinks_from_environment(dsn, run_cli, monkeypatch, http) -> None:
    monkeypatch.setenv("CONSISTENCY_SINKS",
                       f"stdout:// {http.url('webhook+http', '/env')}?min_severity=critical")
    assert run_cli("relay", "--dsn", dsn, "--once").code == 0
    raise_alerts(dsn, 1, severity="warning")
    crit = raise_alerts(dsn, 1, first=2)
    assert run_cli("relay", "--dsn", dsn, "--once").code == 0
    assert http.recorder.ids("/env") == crit, "min_severity=critical routes warnings away"


def test_server_error_twice_then_ok_is_delivered_with_attempts(dsn, http) -> None:
    http.recorder.script["/flaky"] = [(500, {}, b"boom"), (503, {}, b"busy")]
    relay = make_relay(dsn, [http.url("webhook+http", "/flaky")])
    with Background(relay):
        [alert_id] = raise_alerts(dsn, 1)
        assert http.recorder.wait_for(lambda: len(http.recorder.to("/flaky")) == 3)
        assert wait_until(lambda: [r[2] for r in deliveries(dsn)] == ["delivered"])
    assert http.recorder.ids("/flaky") == [alert_id] * 3, "same idempotency key every time"
    [(_, _, status, attempts, last_error, _)] = deliveries(dsn)
    assert (status, attempts, last_error) == ("delivered", 3, None)
    assert (relay.stats.delivered, relay.stats.retried) == (1, 2)


def test_too_many_requests_honours_retry_after(dsn, http) -> None:
    http.recorder.script["/limited"] = [(429, {"Retry-After": "30"}, b"slow down")]
    relay = make_relay(dsn, [http.url("webhook+http", "/limited")])
    raise_alerts(dsn, 1)
    assert relay.run(once=True).retried == 1
    with psycopg.connect(dsn) as conn:
        status, wait = conn.execute(
            "SELECT status, extract(epoch FROM next_attempt_at - clock_timestamp())"
            "  FROM consistency.relay_deliveries").fetchone()
    assert status == "pending"
    assert 25 < float(wait) <= 30


@pytest.mark.parametrize("value", ["1e300", "inf", "nan", "-5", "Fri, 31 Dec 9999 23:59:59 GMT"])
def test_a_retry_after_beyond_reason_waits_at_most_until_the_give_up_age(dsn, http,
                                                                        value) -> None:
    http.recorder.script["/limited"] = [(429, {"Retry-After": value}, b"slow down")]
    relay = make_relay(dsn, [http.url("webhook+http", "/limited")],
                       RelayOptions(**{**FAST.__dict__, "give_up_after": 3600.0}))
    raise_alerts(dsn, 1)
    assert relay.run(once=True).retried == 1
    with psycopg.connect(dsn) as conn:
        status, wait = conn.execute(
            "SELECT status, extract(epoch FROM next_attempt_at - created_at)"
            "  FROM consistency.relay_deliveries").fetchone()
    assert status == "pending"
    assert 0 <= float(wait) <= 3600, "never later than the give-up age"


def test_an_infinite_retry_after_stops_neither_of_two_relays(dsn, http) -> None:
    """A webhook answering 429 with Retry-After: inf, served by two relays
    (what `up` restarting a crashed relay amounts to): both keep running,
    the healthy sink gets every alert once, the limited one is retried."""
    http.recorder.always["/limited"] = 429
    http.recorder.always_headers["/limited"] = {"Retry-After": "inf"}
    urls = [http.url("webhook+http", "/limited"), http.url("webhook+http", "/ok")]
    first, second = make_relay(dsn, urls), make_relay(dsn, urls)
    with Background(first), Background(second):
        ids = raise_alerts(dsn, 5)
        assert http.recorder.wait_for(lambda: len(http.recorder.to("/limited")) >= 10)
        assert http.recorder.wait_for(lambda: sorted(http.recorder.accepted("/ok")) == ids)
        assert not first.stopping and not second.stopping
    assert sorted(http.recorder.accepted("/ok")) == ids
    assert first.stats.retried + second.stats.retried >= 10


def test_an_outcome_the_database_refuses_to_record_never_stops_the_relay(dsn, http,
                                                                        caplog) -> None:
    """Recording a failure fails in the database: for /poison because of what
    the server answered (recorded again without it), for /stuck whatever is
    written (left to its lease, retried, buried at the attempt limit). The
    relay goes on, and the healthy sink gets everything once."""
    http.recorder.always.update({"/poison": 500, "/stuck": 500})
    http.recorder.script["/poison"] = [(500, {}, b"poison")] * 50
    urls = [http.url("webhook+http", p) for p in ("/poison", "/stuck", "/ok")]
    relay = make_relay(dsn, urls, RelayOptions(**{**FAST.__dict__, "lease_seconds": 1.0,
                                                  "max_attempts": 2}))
    stuck = _sink_id(dsn, relay, 1)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE consistency.relay_deliveries ADD CONSTRAINT no_poison"
                     " CHECK (last_error NOT LIKE '%%poison%%')")
        conn.execute(f"ALTER TABLE consistency.relay_deliveries ADD CONSTRAINT stuck_never_fails"
                     f" CHECK (sink_id <> {stuck} OR status <> 'pending' OR attempts = 0)")
    caplog.set_level(logging.ERROR, logger="consistency.relay")

    def statuses() -> list[str]:
        return [status for a, name, status, *_ in deliveries(dsn) if a == alert_id]

    with Background(relay):
        [alert_id] = raise_alerts(dsn, 1)
        assert wait_until(lambda: sorted(statuses()) == ["dead", "dead", "delivered"]), \
            statuses()
        assert not relay.stopping
    rows = {name: (status, attempts, error) for a, name, status, attempts, error, _
            in deliveries(dsn) if a == alert_id}
    poison, stuck_row, ok = (rows[s.name] for s in relay.sinks)
    assert poison[0] == "dead" and "poison" not in poison[2]
    assert "could not be recorded" in poison[2]
    assert stuck_row[:2] == ("dead", 2)
    assert ok[:2] == ("delivered", 1)
    assert http.recorder.accepted("/ok")[0] == alert_id
    assert relay.stats.unrecorded >= 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "recording the failure failed (CheckViolation, SQLSTATE 23514)" in logged
    assert "the failure is not recorded" in logged


def test_client_error_is_dead_at_once_and_tells_the_other_sinks(dsn, http) -> None:
    http.recorder.always["/broken"] = 400
    relay = make_relay(dsn, [http.url("webhook+http", "/broken"), http.url("webhook+http", "/ok")])
    [alert_id] = raise_alerts(dsn, 1)
    assert relay.run(once=True).dead == 1
    relay.run(once=True)  # the notice was raised during the first pass
    assert http.recorder.ids("/broken") == [alert_id], "a 4xx is not retried"
    ok_ids = http.recorder.ids("/ok")
    assert ok_ids[0] == alert_id and len(ok_ids) == 2, "the healthy sink got it once, plus news"
    failed_note = http.recorder.to("/ok")[1].body
    assert failed_note["alert_type"] == "relay_delivery_failed"
    assert failed_note["metadata"]["alert_id"] == alert_id
    rows = {(a, t, st, n) for a, _, st, n, _, t in deliveries(dsn)}
    assert (alert_id, "appointment_unlinked", "dead", 1) in rows
    assert len([r for r in rows if r[1] == "relay_delivery_failed"]) == 1, \
        "the failure notice is not sent back to the failing sink"


def test_connection_refused_is_retried_then_dead(dsn) -> None:
    relay = make_relay(dsn, [f"webhook+http://127.0.0.1:{free_port()}/nobody"],
                       RelayOptions(**{**FAST.__dict__, "max_attempts": 2}))
    raise_alerts(dsn, 1)
    with Background(relay):
        assert wait_until(lambda: [r[2] for r in deliveries(dsn)
                                   if r[5] != "relay_delivery_failed"] == ["dead"])
    [(_, _, status, attempts, last_error, _)] = [
        r for r in deliveries(dsn) if r[5] != "relay_delivery_failed"]
    assert (status, attempts, relay.stats.retried) == ("dead", 2, 1)
    assert "connection error" in last_error


def test_smtp_refused_recipient_fails_without_retry(dsn) -> None:
    with SmtpRecorder(refuse="nobody@example.com") as smtp:
        relay = make_relay(dsn, [f"smtp://127.0.0.1:{smtp.port}?from=guard@example.com"
                                 "&to=nobody@example.com"])
        raise_alerts(dsn, 1)
        relay.run(once=True)
    [(_, _, status, attempts, last_error, _)] = [
        r for r in deliveries(dsn) if r[5] != "relay_delivery_failed"]
    assert (status, attempts) == ("dead", 1)
    assert "550" in last_error


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a cert")
def test_smtp_upgrades_with_starttls_when_offered(dsn, tmp_path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    # The server refuses mail before STARTTLS, so only an upgraded session delivers.
    with SmtpRecorder(tls=(str(cert), str(key))) as smtp:
        relay = make_relay(dsn, [f"smtp://127.0.0.1:{smtp.port}?from=guard@example.com"
                                 f"&to=ops@example.com&cafile={cert}"])
        raise_alerts(dsn, 1)
        relay.run(once=True)
        assert smtp.tls_sessions == [True]
    assert [st for _, _, st, *_ in deliveries(dsn)] == ["delivered"]


def test_smtp_digest_sends_warnings_as_one_message(dsn) -> None:
    with SmtpRecorder() as smtp:
        relay = make_relay(dsn, [f"smtp://127.0.0.1:{smtp.port}?from=guard@example.com"
                                 "&to=ops@example.com&digest=1"])
        # Raised inside one (past) window, so the test does not depend on
        # where a clock tick falls; the window itself is tested in pgTAP.
        warnings = raise_alerts(dsn, 3, severity="warning", at="2020-01-01 00:00:00.1+00")
        [critical] = raise_alerts(dsn, 1, first=10)
        relay.run(once=True)
        subjects = sorted(m["Subject"] for m in smtp.messages)
        assert subjects == ["[CRITICAL] appointment_unlinked on call/10",
                            "[DIGEST] 3 alert(s): 3 warning"], subjects
        digest = next(m for m in smtp.messages if m["Subject"].startswith("[DIGEST]"))
        assert digest["X-Idempotency-Key"] == ",".join(map(str, warnings))
        assert critical not in warnings
    assert {st for _, _, st, *_ in deliveries(dsn)} == {"delivered"}


def test_transient_failures_are_dead_lettered(dsn, http) -> None:
    http.recorder.always["/down"] = 503
    relay = make_relay(dsn, [http.url("webhook+http", "/down"), http.url("webhook+http", "/ok")],
                       RelayOptions(**{**FAST.__dict__, "max_attempts": 3}))
    [alert_id] = raise_alerts(dsn, 1, severity="warning")
    with Background(relay):
        assert http.recorder.wait_for(lambda: len(http.recorder.to("/ok")) == 2)
    assert http.recorder.ids("/down") == [alert_id] * 3
    assert relay.stats.dead == 1
    assert [p.body["alert_type"] for p in http.recorder.to("/ok")] == [
        "appointment_unlinked", "relay_delivery_failed"]


def test_secrets_never_reach_logs_errors_or_database(dsn, http, caplog) -> None:
    secret_path = "/services/T000/B000/s3cr3tT0k3n"
    http.recorder.always[secret_path] = 400
    url = (f"webhook+http://bob:hunter2pw@127.0.0.1:{http.port}{secret_path}"
           "?token=abcdef123456")
    http.recorder.script[secret_path] = [(400, {}, f"bad hook {secret_path}".encode())]
    relay = make_relay(dsn, [url, http.url("webhook+http", "/ok")])
    raise_alerts(dsn, 1)
    with caplog.at_level(logging.INFO, logger="consistency.relay"):
        relay.run(once=True)
        relay.run(once=True)  # the failure notice, raised during the first pass
    with psycopg.connect(dsn) as conn:
        dumped = json.dumps(conn.execute(
            "SELECT json_agg(t) FROM (SELECT * FROM consistency.relay_sinks) t").fetchone()[0]
            ) + json.dumps(conn.execute(
                "SELECT json_agg(t) FROM (SELECT * FROM consistency.relay_deliveries) t"
            ).fetchone()[0]) + json.dumps(conn.execute(
                "SELECT json_agg(t) FROM (SELECT * FROM consistency.alerts) t").fetchone()[0])
    text = dumped + caplog.text + json.dumps([p.body for p in http.recorder.to("/ok")])
    assert "bad hook ***" in text, "the error itself is kept, redacted"
    for secret in ("hunter2pw", "s3cr3tT0k3n", "abcdef123456", "bob"):
        assert secret not in text


@pytest.mark.parametrize("url", [
    "ftp://user:hunter2pw@example.com/x",
    "webhook+http://",
    "smtp://user:hunter2pw@mail.example.com:25?from=a@example.com",
    "webhook+https://h.example/x?min_severity=loud&token=hunter2pw",
    "https://hooks.example.com/hunter2pw",
    "no-scheme-hunter2pw",
    "webhook+https://h.example/hunter2pw?digest=60",
    "smtp://u:hunter2pw@h.example?from=a@example.com&to=b@example.com&digest=soon",
])
def test_invalid_sink_url_is_one_line_exit_2(dsn, run_cli, url) -> None:
    result = run_cli("relay", "--dsn", dsn, "--sink", url, "--once")
    assert result.code == 2, result
    assert result.err.startswith("error: ") and result.err.count("\n") == 1
    assert "hunter2pw" not in result.err


def test_no_sink_is_a_usage_error(dsn, run_cli, monkeypatch) -> None:
    monkeypatch.delenv("CONSISTENCY_SINKS", raising=False)
    result = run_cli("relay", "--dsn", dsn, "--once")
    assert result.code == 2 and "no sink" in result.err


def test_lost_notification_is_found_by_the_poll(dsn, http) -> None:
    relay = make_relay(dsn, [http.url("webhook+http", "/hook")])
    before = raise_alerts(dsn, 3)  # committed before any relay listened
    with Background(relay):
        assert http.recorder.wait_for(lambda: sorted(http.recorder.ids("/hook")) == before)
        # An alert and its delivery as _insert_alerts writes them, but without
        # the NOTIFY: only the poll can find it.
        with psycopg.connect(dsn, autocommit=True) as conn:
            silent = conn.execute(
                "WITH a AS (INSERT INTO consistency.alerts (alert_type, severity, entity_type,"
                " entity_id, description) VALUES ('silent', 'critical', 'system', 1, 'no notify')"
                " RETURNING id), d AS (INSERT INTO consistency.relay_deliveries (alert_id, sink_id)"
                " SELECT a.id, s.id FROM a, consistency.relay_sinks s)"
                " SELECT id FROM a").fetchone()[0]
        assert http.recorder.wait_for(lambda: silent in http.recorder.ids("/hook"), timeout=5)


def test_two_relays_never_send_an_alert_twice(dsn, http) -> None:
    urls = [http.url("webhook+http", "/a"), http.url("webhook+http", "/b")]
    options = RelayOptions(**{**FAST.__dict__, "batch": 7, "concurrency": 4})
    first, second = make_relay(dsn, urls, options), make_relay(dsn, urls, options)
    with Background(first), Background(second):
        ids = raise_alerts(dsn, 150)
        assert http.recorder.wait_for(
            lambda: len(http.recorder.to("/a")) + len(http.recorder.to("/b")) >= 300)
        time.sleep(0.3)
    for path in ("/a", "/b"):
        assert sorted(http.recorder.ids(path)) == ids, f"{path}: missing or duplicated"
    assert first.stats.delivered > 0 and second.stats.delivered > 0, "both relays shared the work"


def test_sigterm_finishes_the_send_in_flight_and_exits_0(dsn, http) -> None:
    http.recorder.delay = 1.0
    proc = _spawn_relay(dsn, [http.url("webhook+http", "/slow")])
    try:
        _wait_registered(dsn, 1)
        [alert_id] = raise_alerts(dsn, 1)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not _in_flight(dsn):
            time.sleep(0.02)
        assert _in_flight(dsn), "the relay never claimed the alert"
        # Claimed rows whose send has not started yet are handed back on
        # SIGTERM; give the send (1 s at the server) time to start.
        time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert [(a, st) for a, _, st, *_ in deliveries(dsn)] == [(alert_id, "delivered")]


def wait_until(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _in_flight(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM consistency.relay_deliveries"
                            " WHERE status = 'in_flight'").fetchone()[0] > 0


def _wait_registered(dsn: str, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with psycopg.connect(dsn) as conn:
            if conn.execute("SELECT count(*) FROM consistency.relay_sinks").fetchone()[0] >= n:
                return
        time.sleep(0.05)
    raise AssertionError("relay did not register its sinks")


def _spawn_relay(dsn: str, urls: list[str], *extra: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "orchestrator.cli", "relay", "--dsn", dsn, "-q",
            "--poll", "0.2", "--lease", "1", "--retry-delay", "0.05"]
    for url in urls:
        args += ["--sink", url]
    return subprocess.Popen([*args, *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


@pytest.mark.stress
def test_relay_killed_five_times_mid_stream_loses_nothing(dsn, http) -> None:
    url = http.url("webhook+http", "/hook")
    raised: list[int] = []
    done = threading.Event()

    def writer() -> None:
        n = 1
        while not done.is_set():
            raised.extend(raise_alerts(dsn, 5, first=n))
            n += 5
            time.sleep(0.02)

    proc = _spawn_relay(dsn, [url])
    _wait_registered(dsn, 1)
    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    try:
        for _ in range(5):
            target = len(http.recorder.to("/hook")) + 20
            assert http.recorder.wait_for(lambda t=target: len(http.recorder.to("/hook")) >= t)
            proc.kill()  # SIGKILL: no chance to finish or release anything
            proc.wait()
            proc = _spawn_relay(dsn, [url])
        done.set()
        thread.join()
        assert http.recorder.wait_for(
            lambda: set(http.recorder.ids("/hook")) >= set(raised), timeout=60)
        # A killed relay's last sends reached the hook unrecorded: the next
        # relay sends them again once their lease runs out, and records them.
        assert wait_until(lambda: {st for _, _, st, *_ in deliveries(dsn)} == {"delivered"},
                          timeout=20)
    finally:
        done.set()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    posts = http.recorder.to("/hook")
    assert all(p.body["id"] == int(p.headers["Idempotency-Key"]) for p in posts), \
        "a repeated delivery carries the alert's own idempotency key"
    assert {st for _, _, st, *_ in deliveries(dsn)} == {"delivered"}
    assert len(raised) > 100


@pytest.mark.stress
def test_postgresql_restart_under_a_running_relay(own_cluster, http) -> None:
    own, dsn = own_cluster, own_cluster.dsn()
    # A poll of 30 s: within this test only LISTEN (and its catch-up on
    # reconnect) can deliver.
    relay = make_relay(dsn, [http.url("webhook+http", "/hook")],
                       RelayOptions(**{**FAST.__dict__, "poll_seconds": 30}))
    with Background(relay):
        first = raise_alerts(dsn, 3)
        assert http.recorder.wait_for(lambda: sorted(http.recorder.ids("/hook")) == first)
        own.stop()
        time.sleep(0.5)
        own.start()
        second = raise_alerts(dsn, 3, first=10)
        assert http.recorder.wait_for(
            lambda: sorted(http.recorder.ids("/hook")) == first + second, timeout=30)
        third = raise_alerts(dsn, 1, first=20)
        assert http.recorder.wait_for(lambda: third[0] in http.recorder.ids("/hook"),
                                      timeout=10), "the listen connection came back"
    assert relay.stats.reconnects >= 1


ALERTMANAGER = shutil.which("prometheus-alertmanager") or "/usr/bin/prometheus-alertmanager"


@pytest.mark.skipif(not os.path.exists(ALERTMANAGER),
                    reason="prometheus-alertmanager is not installed (apt-get install "
                           "prometheus-alertmanager)")
def test_real_alertmanager_receives_alerts(dsn, tmp_path) -> None:
    port = free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n")
    proc = subprocess.Popen(
        [ALERTMANAGER, f"--config.file={config}", f"--storage.path={tmp_path}",
         f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{base}/-/ready", timeout=1).read()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("alertmanager did not start")
                time.sleep(0.1)
        relay = make_relay(dsn, [f"alertmanager+http://127.0.0.1:{port}"
                                 "?dashboard_url=http://dash.example/"])
        ids = raise_alerts(dsn, 2)
        relay.run(once=True)
        got = json.loads(urllib.request.urlopen(f"{base}/api/v2/alerts", timeout=5).read())
        labels = sorted((a["labels"] for a in got), key=lambda la: int(la["alert_id"]))
        assert [int(la["alert_id"]) for la in labels] == ids
        assert labels[0]["alertname"] == "appointment_unlinked"
        assert labels[0]["severity"] == "critical"
        assert labels[0]["entity"] == "call/1"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_relay_sinks_and_forget_sink_cli(dsn, run_cli) -> None:
    """`relay forget-sink`, and the hidden hyphenated aliases of before."""
    with psycopg.connect(dsn) as conn:
        sink_id = conn.execute(
            "SELECT consistency.relay_register_sink(%s, 'webhook+https://old.example/***', "
            "'webhook+https')", ["b" * 64]).fetchone()[0]
        conn.execute("SELECT consistency.raise_alert('x', 'warning', 'system', 1, 'd')")
    listed = run_cli("relay-sinks", "--dsn", dsn, "--json")
    assert listed.code == 0 and '"status": "pending"' in listed.out
    assert "pending" in run_cli("relay-sinks", "--dsn", dsn).out
    served = run_cli("relay", "forget-sink", "--dsn", dsn, str(sink_id))
    assert served.code == 2 and f"sink {sink_id} was served by a relay 0 s ago" in served.err
    assert "--force" in served.err
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM consistency.relay_deliveries").fetchone()[0] == 1
        conn.execute("UPDATE consistency.relay_sinks SET last_seen_at = now() - interval '61 s'")
        conn.commit()
    assert run_cli("relay", "forget-sink", "--dsn", dsn, str(sink_id)).code == 0, \
        "a sink no relay served for a minute is forgotten"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM consistency.relay_deliveries").fetchone()[0] == 0
    again = run_cli("relay-forget-sink", "--dsn", dsn, str(sink_id))
    assert again.code == 2 and "no relay sink" in again.err


def test_a_sink_forgotten_while_served_is_registered_again_with_what_it_missed(
        dsn, http, run_cli, caplog) -> None:
    """`relay forget-sink --force` under a running relay: its next heartbeat
    finds the sink gone, registers it again and hands it the alerts raised
    since, which the forgetting took away with the delivery rows."""
    caplog.set_level(logging.WARNING, logger="consistency.relay")
    relay = make_relay(dsn, [http.url("webhook+http", "/hook")],
                       RelayOptions(**{**FAST.__dict__, "heartbeat_seconds": 0.5}))
    old_id = _sink_id(dsn, relay, 0)
    with Background(relay):
        first = raise_alerts(dsn, 1)
        assert http.recorder.wait_for(lambda: http.recorder.accepted("/hook") == first)
        forgot = run_cli("relay", "forget-sink", "--dsn", dsn, str(old_id), "--force")
        assert forgot.code == 0, forgot
        missed = raise_alerts(dsn, 2, first=10)
        # At least once: what was raised shortly before the forgetting may
        # come again, under its own idempotency key.
        assert http.recorder.wait_for(
            lambda: set(http.recorder.accepted("/hook")) == {*first, *missed}, 10)
    assert sorted(i for i in http.recorder.accepted("/hook") if i in missed) == missed
    new_id = _sink_id(dsn, relay, 0)
    assert new_id != old_id
    assert {(status, n) for _, _, status, n, *_ in deliveries(dsn)} == {("delivered", 1)}
    assert any(f"(id {old_id}) was forgotten while this relay serves it: registered again as id "
               f"{new_id}" in r.getMessage() for r in caplog.records)


# --- outages, deadlines, hanging sinks, give-up and re-drive ---------------------

def _sink_id(dsn: str, relay: Relay, index: int) -> int:
    name = relay.sinks[index].name
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT id FROM consistency.relay_sinks WHERE name = %s",
                            (name,)).fetchone()[0]


@pytest.mark.stress
def test_outage_of_40_s_loses_nothing_and_give_up_then_redrive(dsn, http, run_cli) -> None:
    """Two outages of 40 s side by side: relay A retries until the webhook is
    back and delivers every alert once; relay B gives up after 10 s (dead,
    one relay_delivery_failed to the other sinks), and `relay redrive`
    delivers them once the webhook is up."""
    rec = http.recorder
    backoff = {"base_delay": 0.5, "max_delay": 4.0}
    relay_a = make_relay(dsn, [http.url("webhook+http", p) for p in ("/down-a", "/ok-a")],
                         RelayOptions(**{**FAST.__dict__, **backoff}))
    relay_b = make_relay(dsn, [http.url("webhook+http", p) for p in ("/down-b", "/ok-b")],
                         RelayOptions(**{**FAST.__dict__, **backoff, "give_up_after": 10.0}))
    down_b = _sink_id(dsn, relay_b, 0)
    outage_ends = time.monotonic() + 40
    rec.down_until.update({"/down-a": outage_ends, "/down-b": outage_ends})
    with Background(relay_a), Background(relay_b):
        ids = raise_alerts(dsn, 10)
        assert rec.wait_for(lambda: sorted(rec.accepted("/ok-b")) == ids, timeout=10)
        assert wait_until(lambda: sum(r[2] == "dead" for r in deliveries(dsn)) == 10, timeout=20)
        with psycopg.connect(dsn) as conn:
            notices = conn.execute(
                "SELECT id, entity_id FROM consistency.alerts"
                " WHERE alert_type = 'relay_delivery_failed'").fetchall()
        assert [entity for _, entity in notices] == [down_b], \
            "ten dead deliveries on one sink: one relay_delivery_failed about it"
        assert time.monotonic() < outage_ends, "give-up came during the outage"
        notice = notices[0][0]
        expected = sorted([*ids, notice])
        assert rec.wait_for(lambda: sorted(rec.accepted("/down-a")) == expected,
                            timeout=outage_ends - time.monotonic() + 15)
        assert rec.wait_for(lambda: sorted(rec.accepted("/ok-a")) == expected, timeout=5)
        assert rec.wait_for(lambda: sorted(rec.accepted("/ok-b")) == expected, timeout=5)
        assert len(rec.to("/down-a")) > len(expected) + 10, "the outage was real: many 500s"

        redriven = run_cli("relay", "redrive", "--dsn", dsn, "--sink", str(down_b),
                           "--actor", "ops")
        assert redriven.code == 0 and "re-drove 10 dead deliveries" in redriven.out
        assert rec.wait_for(lambda: sorted(rec.accepted("/down-b")) == ids, timeout=10)
        time.sleep(0.5)
    for path, want in (("/down-a", expected), ("/ok-a", expected), ("/ok-b", expected),
                       ("/down-b", ids)):
        assert sorted(rec.accepted(path)) == want, f"{path}: lost or duplicated"
    assert {r[2] for r in deliveries(dsn)} == {"delivered"}
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT actor, after ->> 'deliveries' FROM consistency.audit_log"
                            " WHERE action = 'relay_redrive'").fetchall() == [("ops", "10")]


def test_redrive_racing_retention_keeps_the_redriven_deliveries(dsn) -> None:
    """`relay redrive` not yet committed while archive_alerts runs: the
    re-driven alerts stay (skipped by the batch), and so do their deliveries,
    pending again once the re-drive commits."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT consistency.relay_register_sink(%s, 'webhook+https://x/***',"
                     " 'webhook+https')", ["c" * 64])
        ids = raise_alerts(dsn, 3)
        conn.execute("UPDATE consistency.relay_deliveries SET status = 'dead', dead_at = now()")
    archived: list[int] = []
    with psycopg.connect(dsn) as redrive, psycopg.connect(dsn, autocommit=True) as archive:
        assert redrive.execute("SELECT consistency.relay_redrive(NULL, NULL, NULL, 'ops')"
                               ).fetchone()[0] == 3
        batch = threading.Thread(target=lambda: archived.append(archive.execute(
            "SELECT consistency.archive_alerts('0 seconds')").fetchone()[0]))
        batch.start()
        batch.join(1.0)
        redrive.commit()
        batch.join(10)
    assert archived == [0], "the batch skipped the alerts being re-driven"
    assert [(alert_id, status) for alert_id, _, status, *_ in deliveries(dsn)] == [
        (i, "pending") for i in ids]


def test_a_redrive_committed_during_a_retention_batch_is_seen_before_the_delete(dsn) -> None:
    """The narrower window: the re-drive commits after an archive batch took
    its snapshot but before it locked the alerts (widened here by a pause in
    the batch's first archivability check). The batch checks again under
    its locks and leaves the alerts and their pending deliveries alone."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT consistency.relay_register_sink(%s, 'webhook+https://x/***',"
                     " 'webhook+https')", ["d" * 64])
        ids = raise_alerts(dsn, 2)
        conn.execute("UPDATE consistency.relay_deliveries SET status = 'dead', dead_at = now()")
        # STABLE: the pause keeps the batch's snapshot, as the SQL original does.
        conn.execute("""
            CREATE OR REPLACE FUNCTION consistency._alert_has_pending_delivery(p_alert_id bigint)
            RETURNS boolean LANGUAGE plpgsql STABLE AS $$
            BEGIN
                IF current_setting('test.pause_once', true) = 'on' THEN
                    PERFORM set_config('test.pause_once', 'off', false);
                    PERFORM pg_sleep(1.5);
                END IF;
                RETURN EXISTS (SELECT 1 FROM consistency.relay_deliveries AS d
                                WHERE d.alert_id = p_alert_id
                                  AND d.status IN ('pending', 'in_flight'));
            END $$""")
    archived: list[int] = []
    with psycopg.connect(dsn, autocommit=True) as archive:
        archive.execute("SET test.pause_once = 'on'")
        batch = threading.Thread(target=lambda: archived.append(archive.execute(
            "SELECT consistency.archive_alerts('0 seconds')").fetchone()[0]))
        batch.start()
        time.sleep(0.3)
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert conn.execute("SELECT consistency.relay_redrive(NULL, NULL, NULL, 'ops')"
                                ).fetchone()[0] == 2
        batch.join(10)
    assert archived == [0]
    assert [(alert_id, status) for alert_id, _, status, *_ in deliveries(dsn)] == [
        (i, "pending") for i in ids]


def test_once_attempts_each_due_delivery_once_and_exits_1_then_0(dsn, http, run_cli) -> None:
    url = http.url("webhook+http", "/flaky")
    http.recorder.always["/flaky"] = 503
    assert run_cli("relay", "--dsn", dsn, "--sink", url, "--once").code == 0, "nothing due: 0"
    [alert_id] = raise_alerts(dsn, 1)
    started = time.monotonic()
    # --retry-delay 0: the failed delivery is due again at once, yet the pass
    # attempts it only once (what became due after the pass began waits).
    first = run_cli("relay", "--dsn", dsn, "--sink", url, "--once", "--retry-delay", "0",
                    "--timeout", "2")
    assert first.code == 1, first
    assert time.monotonic() - started < 5, "--once never sleeps through backoff"
    assert [(a, st, n) for a, _, st, n, *_ in deliveries(dsn)] == [(alert_id, "pending", 1)]
    assert http.recorder.ids("/flaky") == [alert_id], "one attempt per pass"

    http.recorder.always.clear()
    second = run_cli("relay", "--dsn", dsn, "--sink", url, "--once")
    assert second.code == 0, second
    assert [(a, st, n) for a, _, st, n, *_ in deliveries(dsn)] == [(alert_id, "delivered", 2)]


def test_two_relays_with_a_hanging_sink_send_nothing_twice(dsn, http) -> None:
    """The reported scenario: sinks /hang (never answers) and /ok, two
    relays, --batch 40 --concurrency 4 --lease 5 --timeout 3, 20 critical
    alerts; at most 2 attempts, so the limit is reached within the test."""
    options = RelayOptions(**{**FAST.__dict__, "batch": 40, "concurrency": 4,
                              "lease_seconds": 5.0, "timeout": 3.0, "max_attempts": 2,
                              "base_delay": 0.2, "max_delay": 0.5})
    http.recorder.hang.add("/hang")
    urls = [http.url("webhook+http", "/hang"), http.url("webhook+http", "/ok")]
    first, second = make_relay(dsn, urls, options), make_relay(dsn, urls, options)
    hang = _sink_id(dsn, first, 0)
    worst_attempts, stuck = 0, set()
    in_flight_since: dict[tuple[int, int], float] = {}
    with Background(first), Background(second):
        ids = raise_alerts(dsn, 20)
        assert http.recorder.wait_for(lambda: set(http.recorder.accepted("/ok")) >= set(ids))
        watch_until = time.monotonic() + 7
        while time.monotonic() < watch_until:
            with psycopg.connect(dsn) as conn:
                rows = conn.execute("SELECT id, attempts, status FROM consistency.relay_deliveries"
                                    " WHERE sink_id = %s", (hang,)).fetchall()
            now = time.monotonic()
            worst_attempts = max([worst_attempts, *(n for _, n, _ in rows)])
            for row_id, attempts, status in rows:
                if status == "in_flight":
                    since = in_flight_since.setdefault((row_id, attempts), now)
                    if now - since > 3 + 1.5:
                        stuck.add(row_id)
            time.sleep(0.2)
    got = http.recorder.accepted("/ok")
    assert sorted(i for i in got if i in ids) == ids, "the healthy sink got each alert once"
    assert len(got) - len(ids) <= 1, "plus at most one relay_delivery_failed about /hang"
    assert worst_attempts == 2, "rows reach their attempt limit and never go past it"
    assert not stuck, "an attempt leaves in_flight at its deadline (3 s)"
    with psycopg.connect(dsn) as conn:
        errors = conn.execute("SELECT DISTINCT last_error FROM consistency.relay_deliveries"
                              " WHERE sink_id = %s AND last_error IS NOT NULL",
                              (hang,)).fetchall()
    assert errors and all("3 s deadline" in e or "attempt limit" in e for (e,) in errors), errors
    assert first.stats.deadlines + second.stats.deadlines >= 8


def test_a_slow_drip_sink_is_abandoned_at_the_deadline(dsn) -> None:
    with DripServer(interval=0.3) as drip:
        relay = make_relay(dsn, [drip.url()],
                           RelayOptions(**{**FAST.__dict__, "timeout": 1.5}))
        raise_alerts(dsn, 1)
        started = time.monotonic()
        stats = relay.run(once=True)
        took = time.monotonic() - started
    assert (stats.deadlines, stats.retried) == (1, 1)
    # The whole answer would take 0.3 s x 600 bytes: any bound far below 180 s shows it.
    assert 1.4 < took < 10, f"abandoned at the 1.5 s deadline ({took:.1f} s)"
    [(_, _, status, attempts, last_error, _)] = deliveries(dsn)
    assert (status, attempts) == ("pending", 1)
    assert "1.5 s deadline" in last_error


def test_sigterm_stops_within_the_deadline_while_a_send_hangs(dsn, http) -> None:
    http.recorder.hang.add("/hang")
    proc = _spawn_relay(dsn, [http.url("webhook+http", "/hang")], "--timeout", "3",
                        "--lease", "30")
    try:
        _wait_registered(dsn, 1)
        [alert_id] = raise_alerts(dsn, 1)
        assert wait_until(lambda: _in_flight(dsn), timeout=10), "never claimed"
        assert http.recorder.wait_for(lambda: len(http.recorder.to("/hang")) == 1)
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert time.monotonic() - sent < 3 + 1, "exits within the deadline + 1 s"
    finally:
        if proc.poll() is None:
            proc.kill()
    [(a, _, status, attempts, last_error, _)] = deliveries(dsn)
    assert (a, status, attempts) == (alert_id, "pending", 1), "its outcome was recorded"
    assert "deadline" in last_error


def test_lease_is_renewed_while_a_slow_send_runs(dsn, http) -> None:
    """A 1 s lease, sends of 2.5 s and a second relay polling: without
    renewal the other relay would claim the expired rows and send again."""
    http.recorder.delay = 2.5
    options = RelayOptions(**{**FAST.__dict__, "lease_seconds": 1.0, "timeout": 5.0,
                              "poll_seconds": 0.1})
    urls = [http.url("webhook+http", "/slow")]
    first, second = make_relay(dsn, urls, options), make_relay(dsn, urls, options)
    with Background(first), Background(second):
        ids = raise_alerts(dsn, 3)
        assert http.recorder.wait_for(lambda: sorted(set(http.recorder.ids("/slow"))) == ids)
        assert wait_until(lambda: {r[2] for r in deliveries(dsn)} == {"delivered"})
        time.sleep(1.5)
    assert sorted(http.recorder.ids("/slow")) == ids, "each alert sent once"


@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_echoing_smtp_server_never_sees_the_password_leave(dsn, http, run_cli, caplog,
                                                           mechanism) -> None:
    password = "S3cr3t/P@ss wörd"
    encoded = urllib.parse.quote(password, safe="")
    forms = {password, encoded, "S3cr3t",
             base64.b64encode(f"mailer:{password}".encode()).decode(),
             base64.b64encode(f"\0mailer\0{password}".encode()).decode(),
             base64.b64encode(password.encode()).decode()}
    caplog.set_level(logging.INFO, logger="consistency.relay")
    with EchoAuthSmtp(mechanism) as smtp:
        url = (f"smtp://mailer:{encoded}@127.0.0.1:{smtp.port}"
               "?from=guard@example.com&to=ops@example.com")
        args = ["relay", "--dsn", dsn, "--sink", url, "--sink",
                http.url("webhook+http", "/ok"), "--once"]
        assert run_cli(*args).code == 0  # registers the sinks
        raise_alerts(dsn, 1)
        first, second = run_cli(*args), run_cli(*args)
        assert smtp.auth_lines[0].startswith(f"AUTH {mechanism}"), "the server echoed AUTH"
    assert first.code == 1 and "dead 1" in first.err, first
    assert second.code == 0, "the failure notice went to the other sink"
    assert "warning: --sink smtp://127.0.0.1" in first.err, "a password on the command line"
    assert "535" in caplog.text, "the server's refusal is logged, redacted"
    with psycopg.connect(dsn) as conn:
        stored = json.dumps(conn.execute(
            "SELECT json_build_object("
            " 'deliveries', (SELECT json_agg(d) FROM consistency.relay_deliveries d),"
            " 'sinks', (SELECT json_agg(s) FROM consistency.relay_sinks s),"
            " 'alerts', (SELECT json_agg(a) FROM consistency.alerts a))").fetchone()[0],
            ensure_ascii=False)
    assert "535" in stored and "credentials rejected" in stored
    delivered = json.dumps([p.body for p in http.recorder.to("/ok")], ensure_ascii=False)
    for text, where in ((first.err + second.err + caplog.text, "stderr"),
                        (stored, "the database"),
                        (delivered, "the other sink")):
        for form in forms:
            assert form not in text, f"{form!r} reached {where}"


def test_webhook_user_info_goes_out_as_basic_auth(dsn, http) -> None:
    relay = make_relay(dsn, [f"webhook+http://hook%40user:pa%3Ass@127.0.0.1:{http.port}/auth"])
    raise_alerts(dsn, 1)
    relay.run(once=True)
    [post] = http.recorder.to("/auth")
    assert post.headers["Authorization"] == "Basic " + base64.b64encode(
        b"hook@user:pa:ss").decode()


def test_sinks_file_and_command_line_secrets(dsn, run_cli, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("CONSISTENCY_SINKS", raising=False)
    path = tmp_path / "sinks"
    path.write_text("# ops\n\nstdout://\n")
    path.chmod(0o644)
    refused = run_cli("relay", "--dsn", dsn, "--sinks-file", str(path), "--once")
    assert refused.code == 2 and refused.err.count("\n") == 1, refused
    assert "open to group or others (mode 0644): chmod 600" in refused.err
    path.chmod(0o600)
    ok = run_cli("relay", "--dsn", dsn, "--sinks-file", str(path), "--once")
    assert ok.code == 0 and "warning" not in ok.err, ok
    missing = run_cli("relay", "--dsn", dsn, "--sinks-file", str(tmp_path / "nope"), "--once")
    assert missing.code == 2 and "cannot read sinks file" in missing.err

    secret = "webhook+https://127.0.0.1:1/services/T0123/B0456/xoxbS3cretToken"
    warned = run_cli("relay", "--dsn", dsn, "--sink", secret, "--sinks-file", str(path),
                     "--once", "--timeout", "0.5")
    assert "a token in the path" in warned.err and "ps" in warned.err
    assert "xoxbS3cretToken" not in warned.err and "T0123" not in warned.err
    monkeypatch.setenv("CONSISTENCY_SINKS", secret)
    quiet = run_cli("relay", "--dsn", dsn, "--once", "--timeout", "0.5")
    assert "warning: --sink" not in quiet.err, "no warning for the environment"


@pytest.mark.parametrize("args, message", [
    (["--give-up-after", "1s", "--timeout", "10"], "shorter than one send's deadline"),
    (["--lease", "0.5"], "--lease"),
    (["--backlog", "soon"], "invalid --backlog"),
])
def test_impossible_options_are_refused_at_start(dsn, run_cli, args, message) -> None:
    result = run_cli("relay", "--dsn", dsn, "--sink", "stdout://", "--once", *args)
    assert result.code == 2 and message in result.err and result.err.count("\n") == 1, result
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM consistency.relay_sinks").fetchone()[0] == 0


def test_backlog_for_a_sink_seen_the_first_time(dsn, run_cli) -> None:
    ids = raise_alerts(dsn, 2)
    result = run_cli("relay", "--dsn", dsn, "--sink", "stdout://", "--once", "--backlog", "1h")
    assert [json.loads(line)["id"] for line in result.out.splitlines()] == ids
    again = run_cli("relay", "--dsn", dsn, "--sink", "stdout://", "--once", "--backlog", "1h")
    assert again.out == "", "a known sink gets no backlog twice"


def test_relay_status_sinks_and_heartbeat(dsn, http, run_cli) -> None:
    http.recorder.always["/refuses"] = 404
    relay = make_relay(dsn, [http.url("webhook+http", "/refuses"),
                             http.url("webhook+http", "/ok")],
                       RelayOptions(**{**FAST.__dict__, "heartbeat_seconds": 0.2}))
    with Background(relay):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("UPDATE consistency.relay_sinks"
                         "   SET last_seen_at = now() - interval '1 day'")
        raise_alerts(dsn, 2)
        assert http.recorder.wait_for(lambda: len(http.recorder.to("/ok")) == 3)
        time.sleep(0.5)
    status = run_cli("relay", "status", "--dsn", dsn, "--json")
    assert status.code == 1, "a dead delivery makes relay status exit 1"
    by_name = {s["sink"]: s for s in json.loads(status.out)}
    refuses, ok = (by_name[s.name] for s in relay.sinks)
    assert (refuses["dead"], refuses["pending"], refuses["in_flight"]) == (2, 0, 0)
    assert refuses["last_error"].startswith("refused: HTTP 404")
    assert (ok["dead"], ok["delivered_last_hour"], ok["last_error"]) == (0, 3, None)
    assert ok["last_success_at"] is not None
    assert all(s["last_seen_at"] > time.strftime("%Y-%m-%d") for s in by_name.values()), \
        "a running relay refreshes last_seen_at of the sinks it serves"
    table = run_cli("relay", "status", "--dsn", dsn)
    assert "404" in table.out and table.code == 1
    listed = run_cli("relay", "sinks", "--dsn", dsn, "--json")
    assert listed.code == 0 and {r["status"] for r in json.loads(listed.out)} == {
        "dead", "delivered"}
    assert run_cli("relay", "redrive", "--dsn", dsn, "--type", "nothing-like-it").code == 0
    assert "re-drove 2" in run_cli("relay", "redrive", "--dsn", dsn).out
    assert run_cli("relay", "status", "--dsn", dsn).code == 0


def test_forgetting_a_sink_while_a_relay_completes_its_send_does_not_deadlock(dsn) -> None:
    """A relay completing a send takes the delivery, then its sink
    (relay_complete); forget-sink takes the sink's deliveries before the
    sink, so the two queue instead of deadlocking."""
    with psycopg.connect(dsn, autocommit=True) as setup:
        sink = setup.execute("SELECT consistency.relay_register_sink(%s, 'stdout://', 'stdout')",
                             ["d" * 64]).fetchone()[0]
    raise_alerts(dsn, 1)
    with psycopg.connect(dsn) as relay, psycopg.connect(dsn, autocommit=True) as admin:
        delivery = relay.execute("SELECT id FROM consistency.relay_deliveries WHERE sink_id = %s",
                                 [sink]).fetchone()[0]
        # relay_complete's order, one step at a time: the delivery...
        relay.execute("UPDATE consistency.relay_deliveries SET attempts = attempts + 1"
                      " WHERE id = %s", [delivery])
        admin.execute("SET lock_timeout = '10s'")
        forgot: list[object] = []
        forget = threading.Thread(target=lambda: forgot.append(admin.execute(
            "SELECT consistency.relay_unregister_sink(%s)", [sink]).fetchone()[0]))
        forget.start()
        time.sleep(0.5)  # forget-sink now waits for the delivery
        # ...then its sink.
        relay.execute("UPDATE consistency.relay_sinks SET last_success_at = now() WHERE id = %s",
                      [sink])
        relay.commit()
        forget.join(timeout=15)
        assert forgot == [True], "forget-sink failed (a deadlock raises in one of the two)"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM consistency.relay_sinks WHERE id = %s",
                            [sink]).fetchone()[0] == 0
