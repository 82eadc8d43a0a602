"""`consistency up` as a real process on a cluster of its own: it delivers an
alert to a stdout sink, serves /metrics behind the token from
CONSISTENCY_TOKEN, reports each part on /healthz, comes back after the
database restarts, and exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
import psycopg
import pytest

from orchestrator.pgcluster import free_port

TOKEN = "up-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def wait_for(predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def get(url: str, **kwargs: object) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=10, **kwargs)
    except httpx.TransportError:
        return None


def raise_alert(dsn: str, entity: int) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute("SELECT consistency.raise_alert('up_test', 'critical', 'system',"
                            " %s, 'from the up test')", [entity]).fetchone()[0]


@pytest.mark.stress
def test_up_runs_every_part_and_stops_on_sigterm(own_cluster) -> None:
    own, dsn = own_cluster, own_cluster.dsn()
    proc = None
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        proc = subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "up", "--dsn", dsn, "--sink",
             "stdout://", "--every", "1s", "--port", str(port)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "CONSISTENCY_TOKEN": TOKEN, "DATABASE_URL": ""})
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                                  daemon=True)
        reader.start()

        def delivered(alert_id: int) -> bool:
            return any(json.loads(line).get("id") == alert_id for line in list(lines)
                       if line.startswith("{"))

        def healthz() -> dict | None:
            response = get(f"{base}/healthz")
            return response.json() if response is not None else None

        wait_for(lambda: (h := healthz()) and h["status"] == "ok"
                 and h["parts"].get("check", {}).get("last_run_id"), what="a healthy start")
        parts = healthz()["parts"]
        assert {name: p["state"] for name, p in parts.items()} == {
            "serve": "running", "check": "running", "relay": "running"}

        first = raise_alert(dsn, 1)
        wait_for(lambda: delivered(first), what="the alert on stdout")
        assert get(f"{base}/metrics").status_code == 401, "the token from CONSISTENCY_TOKEN"
        metrics = get(f"{base}/metrics", headers=AUTH)
        assert metrics.status_code == 200
        assert "consistency_check_runs_total" in metrics.text
        assert 'consistency_alerts_total{severity="critical",type="up_test"} 1.0' in metrics.text

        own.stop()
        wait_for(lambda: (h := healthz()) is not None and h["status"] == "unavailable",
                 what="healthz to see the database down")
        own.start()
        wait_for(lambda: (h := healthz()) is not None and h["status"] == "ok",
                 what="healthz to see the database back")
        runs_before = healthz()["parts"]["check"]["last_run_id"]
        second = raise_alert(dsn, 2)
        wait_for(lambda: delivered(second), what="delivery after the restart")
        wait_for(lambda: healthz()["parts"]["check"]["last_run_id"] > runs_before,
                 what="a check after the restart")

        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert "stopped" in err and "Traceback" not in err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


def test_up_refuses_a_bad_sink_before_starting(dsn, run_cli) -> None:
    result = run_cli("up", "--dsn", dsn, "--sink", "nope://x", "--port", str(free_port()))
    assert result.code == 2 and "Traceback" not in result.err
    bad_every = run_cli("up", "--dsn", dsn, "--every", "soon", "--port", str(free_port()))
    assert bad_every.code == 2 and "invalid interval" in bad_every.err
