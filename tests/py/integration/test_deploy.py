"""deploy/: the Prometheus rules pass promtool's check and unit tests, and
the rules and the Grafana dashboard only use metrics that a real scrape of
`consistency serve` exports."""

from __future__ import annotations

import json
import re
import shutil

import httpx
import pytest
from conftest import ROOT
from test_serve import known_events, samples

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
GRAFANA = ROOT / "deploy" / "grafana" / "consistency.json"
PROMTOOL = shutil.which("promtool")
METRIC = re.compile(r"\b((?:consistency|process)_[a-z_]+)\b")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus; "
                             "scripts/ensure-system-deps.sh installs it as root)")


def grafana_exprs() -> list[str]:
    dashboard = json.loads(GRAFANA.read_text())
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert dashboard["__inputs"][0]["pluginId"] == "prometheus"
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def rule_exprs() -> list[str]:
    return re.findall(r"expr: [|]?\s*\n?((?:.+\n)+?)\s+(?:for|labels):", RULES.read_text())


def test_rules_and_dashboard_use_only_exported_metrics(conn, dsn) -> None:
    from test_serve import scrape

    from orchestrator import server

    known_events(conn)
    conn.execute("SELECT consistency.relay_register_sink(%s, 'stdout://', 'stdout')", ["d" * 64])
    conn.execute("SELECT consistency.raise_alert('deploy', 'info', 'system', 1, 'd')")
    conn.commit()
    from orchestrator.pgcluster import free_port

    options = server.ServeOptions(port=free_port())
    thread, database = server.start(dsn, options)
    try:
        exported = {name for name, _ in scrape(f"http://127.0.0.1:{options.port}")}
        text = httpx.get(f"http://127.0.0.1:{options.port}/metrics", timeout=10).text
    finally:
        thread.stop()
        database.close()
    assert samples(text)
    exprs = grafana_exprs() + rule_exprs()
    assert len(rule_exprs()) == 6
    used = {m for expr in exprs for m in METRIC.findall(expr)}
    assert used - exported == set()
    assert len(used) >= 15
