"""Smoke test of `consistency bench triggers` with tiny sizes (not a timing test)."""

from __future__ import annotations

import json


def test_bench_triggers_runs_every_variant_and_workload(cluster, run_cli) -> None:
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "2000",
                     "--repeat", "2", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert set(data["workloads"]) == {"insert_1", "insert_select_100", "insert_100_single",
                                      "insert_10000", "delete_100"}
    for entry in data["workloads"].values():
        assert {"baseline", "row_level", "guard"} <= set(entry)
        assert entry["ratio"]["baseline"] == 1.0
        assert entry["guard"]["n"] >= 2 and entry["guard"]["median_ms"] > 0
        assert entry["violations"] == 0, "the guard left a violation behind"


def test_bench_triggers_table_output(cluster, run_cli) -> None:
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                     "--repeat", "1")
    assert result.code == 0, result
    assert "guard" in result.out and "INSERT" in result.out
    with_bad = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "5")
    assert with_bad.code == 2 and "--calls" in with_bad.err
