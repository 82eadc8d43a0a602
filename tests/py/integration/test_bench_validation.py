"""Smoke test of `consistency bench validation` with tiny sizes (coverage,
not measurement)."""

from __future__ import annotations

import json


def test_bench_validation_runs_and_reports(cluster, run_cli) -> None:
    result = run_cli("bench", "validation", "--dsn", cluster.dsn(), "--calls", "200",
                     "--repeat", "5", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["calls"] == 200 and report["full_cascade_ok"] is True
    assert [v["n"] for v in report["variants"]] == [5, 5, 5]
    assert all(v["p95_ms"] >= v["median_ms"] > 0 for v in report["variants"])

    table = run_cli("bench", "validation", "--dsn", cluster.dsn(), "--calls", "100",
                    "--repeat", "3")
    assert table.code == 0 and "p95 target < 5.0 ms" in table.out
