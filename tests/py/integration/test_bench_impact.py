"""`consistency bench` without a subcommand: every benchmark at a tiny scale,
one table (here its JSON) with every expected row, and the plot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = {
    "triggers.insert_1", "triggers.insert_select_100", "triggers.insert_100_single",
    "triggers.insert_10000", "triggers.delete_100", "validation.p95", "circuit.closed_path",
    "circuit.transition", "circuit.breaker_call", "check.window.500", "check.whole_table.500",
    "relay.throughput", "relay.hanging_sink", "relay.latency_p99", "serve.scrape",
    "serve.alert_writes",
}


def test_every_benchmark_in_one_table(run_cli: Callable[..., Any], cluster: Any,
                                      tmp_path: Path) -> None:
    plot = tmp_path / "bench.png"
    result = run_cli("bench", "--tiny", "--json", "--dsn", cluster.dsn(), "--plot", str(plot))
    # Exit 1 only for a missed target (figures at this scale mean nothing).
    report = json.loads(result.out)
    assert result.code == (0 if report["all_met"] else 1), result.err
    assert report["errors"] == {}
    rows = {row["id"]: row for row in report["rows"]}
    assert set(rows) == EXPECTED
    assert set(report["results"]) == {"triggers", "validation", "circuit", "check", "relay",
                                      "serve"}
    for row in rows.values():
        assert row["guard"] > 0, row
        if row["target"] is not None:
            assert row["met"] in (True, False), row
    insert = rows["triggers.insert_select_100"]
    assert insert["naive"] > 0 and insert["overhead"] == insert["guard"] / insert["baseline"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_options_before_a_subcommand_are_refused(run_cli: Callable[..., Any]) -> None:
    result = run_cli("bench", "--quick", "check")
    assert result.code == 2
    assert "put the options after `check`" in result.err


def test_sigterm_removes_the_bench_cluster() -> None:
    """Without --dsn the bench runs on a throwaway cluster of its own; SIGTERM
    (kill, systemd, docker stop) removes it as Ctrl-C does."""
    # The cluster's directory is made under TMPDIR: one of this test's own,
    # which the server's OS user may enter.
    holder = Path(tempfile.mkdtemp(prefix="bench-sigterm-"))
    holder.chmod(0o755)
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "bench", "--tiny"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "TMPDIR": str(holder)})
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if line.startswith("bench ("):
                break
        (base,) = holder.iterdir()
        postmaster = int((base / "data" / "postmaster.pid").read_text().split()[0])
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "".join(seen) + rest
    assert not base.exists(), "".join(seen) + rest
    holder.rmdir()
    deadline = time.monotonic() + 10
    while _alive(postmaster) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(postmaster)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True
