"""Smoke test of `consistency bench serve` with tiny sizes (coverage, not
measurement)."""

from __future__ import annotations

import json


def test_bench_serve_runs_and_reports(cluster, run_cli, capsys) -> None:
    result = run_cli("bench", "serve", "--dsn", cluster.dsn(), "--calls", "2000",
                     "--alerts", "3000", "--repeat", "2", "--write-repeat", "3", "--json")
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["calls"] == 2000
    assert report["alerts"] + report["alerts_archived"] == 3000
    assert report["deliveries"] > 0
    assert [v["n"] for v in report["variants"]] == [2] * 6
    # The harness's admin is a superuser: the scrape also runs from a role that
    # is not the guard's owner (owner_code's check), and that role is gone after.
    assert "metrics() from a login not the owner (checked)" in [
        v["variant"] for v in report["variants"]]
    import psycopg

    with psycopg.connect(cluster.dsn()) as conn:
        assert conn.execute("SELECT count(*) FROM pg_roles"
                            " WHERE rolname = 'cg_bench_watcher'").fetchone()[0] == 0
    assert report["variants"][0]["ratio"] == 1.0
    assert [w["n"] for w in report["write_cost"]] == [3, 3]
    from orchestrator.bench import serve

    serve.print_report(report)
    printed = capsys.readouterr().out
    assert "scrape query < 50 ms" in printed and "raising 20 alerts" in printed
