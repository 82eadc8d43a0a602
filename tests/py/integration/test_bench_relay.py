"""Smoke test: the relay benchmark runs end to end with tiny sizes."""

from __future__ import annotations

import json


def test_bench_relay_smoke(run_cli, cluster) -> None:
    result = run_cli("bench", "relay", "--dsn", cluster.dsn(), "--alerts", "30", "--samples", "3",
                     "--hang-rounds", "1", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert [(r["relays"], r["hanging_sink"]) for r in data["throughput"]] == [
        (1, False), (2, False), (1, False), (1, True)]
    assert "hanging_sink_ratio" in data["targets"]
    assert all(r["alerts_per_s"] > 0 for r in data["throughput"])
    assert data["latency_ms"]["n"] == 3
    assert data["duplicates"] == 0


def test_bench_relay_table(run_cli, cluster) -> None:
    result = run_cli("bench", "relay", "--dsn", cluster.dsn(), "--alerts", "10", "--samples", "2",
                     "--hang-rounds", "1")
    assert result.code == 0, result
    assert "alerts/s" in result.out and "p99" in result.out
