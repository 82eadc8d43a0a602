"""`consistency bench` without a subcommand: every benchmark at a tiny scale,
one table (here its JSON) with every expected row, and the plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPECTED = {
    "triggers.first_1", "triggers.insert_select_100", "triggers.cancel_only",
    "triggers.delete_100_last", "validation.p95", "circuit.closed_path",
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

