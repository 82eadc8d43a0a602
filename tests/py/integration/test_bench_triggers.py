"""Smoke test of `consistency bench triggers` with tiny sizes (not a timing test)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import psycopg
from conftest import ROOT

from orchestrator.bench.triggers import WORKLOADS


def test_bench_triggers_runs_every_variant_and_workload(cluster, run_cli) -> None:
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "1000",
                     "--repeat", "1", "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert set(data["workloads"]) == {w.name for w in WORKLOADS}
    assert {"insert_1", "insert_select_100", "insert_100_single", "insert_10000",
            "delete_100"} <= set(data["workloads"]), "the workloads of issue 3 are kept"
    for name, entry in data["workloads"].items():
        for mode in ("server", "client"):
            assert {"baseline", "row_level", "guard"} <= set(entry[mode]), (name, mode)
            assert entry[mode]["ratio"]["baseline"] == 1.0
            assert entry[mode]["guard"]["n"] >= 1 and entry[mode]["guard"]["median_ms"] > 0
        assert entry["guard"] == entry["server"]["guard"], "top-level figures are server side"
        assert entry["violations"] == 0, f"the guard left a violation behind in {name}"


def test_bench_triggers_table_output(cluster, run_cli) -> None:
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                     "--repeat", "1", "--workload", "cancel_only")
    assert result.code == 0, result
    assert "guard" in result.out and "cancel" in result.out and "INSERT" not in result.out
    with_bad = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "5")
    assert with_bad.code == 2 and "--calls" in with_bad.err
    unknown = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--workload", "nope")
    assert unknown.code == 2 and "unknown workload 'nope'" in unknown.err


def test_bench_triggers_compares_a_changed_guard_in_the_same_run(cluster, run_cli,
                                                                  tmp_path) -> None:
    # Any SQL runs inside the variant's samples, e.g. a planner setting.
    changed = tmp_path / "no_index_scans.sql"
    changed.write_text("SET LOCAL enable_indexscan = off;\n")
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                     "--repeat", "1", "--workload", "first_1", "--compare", str(changed),
                     "--json")
    assert result.code == 0, result
    data = json.loads(result.out)
    assert data["compare"] == ["no_index_scans"]
    server = data["workloads"]["first_1"]["server"]
    assert server["no_index_scans"]["n"] == 1 and server["no_index_scans"]["median_ms"] > 0
    assert "no_index_scans" in server["ratio"]
    assert "no_index_scans" not in data["workloads"]["first_1"]["client"], "server side only"

    table = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                    "--repeat", "1", "--workload", "first_1", "--compare", str(changed))
    assert table.code == 0 and "no_i" in table.out, table  # a column of its own

    broken = tmp_path / "broken.sql"
    broken.write_text("CREATE OR REPLACE FUNCTION nope(;\n")
    bad = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                  "--repeat", "1", "--workload", "first_1", "--compare", str(broken))
    assert bad.code != 0 and "error: --compare broken: syntax error" in bad.err, bad
    assert "Traceback" not in bad.err
    clash = tmp_path / "guard.sql"
    clash.write_text("SELECT 1;\n")
    named = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--compare", str(clash))
    assert named.code == 2 and "two variants named 'guard'" in named.err


def test_sigterm_drops_the_scratch_database(cluster) -> None:
    """A subcommand killed mid-run (kill, a CI timeout) leaves nothing on the
    server it was given, as Ctrl-C does."""
    def scratch() -> list[str]:
        with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
            return [r[0] for r in admin.execute(
                "SELECT datname FROM pg_database WHERE datname LIKE 'cg\\_bench\\_triggers\\_%'")]

    assert scratch() == []
    proc = subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "bench", "triggers",
                             "--dsn", cluster.dsn(), "--calls", "50000", "--repeat", "50"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            if not line.startswith("loading"):
                break  # the data set is loaded, a workload runs
        assert scratch(), "".join(seen)
        proc.send_signal(signal.SIGTERM)
        _, rest = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, "".join(seen) + rest
    assert "Traceback" not in rest
    assert scratch() == []


def _scratch_databases(cluster) -> list[str]:
    with psycopg.connect(cluster.dsn(), autocommit=True) as admin:
        return [r[0] for r in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'cg\\_bench\\_triggers%'")]


def test_a_compare_file_that_commits_is_refused_before_any_figure(cluster, run_cli,
                                                                  tmp_path) -> None:
    # What follows its COMMIT would outlive the sample: the other variants
    # would be measured without the guard's insert trigger.
    escapes = tmp_path / "escapes.sql"
    escapes.write_text("COMMIT;\n"
                       "DROP TRIGGER appointments_link_sync_insert ON public.appointments;\n")
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                     "--repeat", "1", "--workload", "first_1", "--compare", str(escapes),
                     "--json")
    assert result.code != 0 and result.out == "", result
    assert "--compare escapes: its SQL ends the sample's transaction" in result.err, result
    assert "Traceback" not in result.err
    assert _scratch_databases(cluster) == []


def test_a_compare_file_that_fails_mid_run_is_one_line(cluster, run_cli, tmp_path) -> None:
    # The check before the timing passes; the first sample fails (a sequence
    # is not rolled back, so the check leaves the mark the sample finds).
    flaky = tmp_path / "flaky.sql"
    flaky.write_text("DO $$ BEGIN\n"
                     "  IF (SELECT last_value FROM consistency.alerts_id_seq) = 424242 THEN\n"
                     "    RAISE EXCEPTION 'second run fails';\n"
                     "  END IF;\n"
                     "  PERFORM setval('consistency.alerts_id_seq', 424242);\n"
                     "END $$;\n")
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--calls", "500",
                     "--repeat", "1", "--workload", "first_1", "--compare", str(flaky))
    assert result.code != 0, result
    assert "error: --compare flaky: second run fails" in result.err, result
    assert "Traceback" not in result.err
    assert _scratch_databases(cluster) == []


def test_a_compare_file_not_in_utf8_is_a_usage_error(cluster, run_cli, tmp_path) -> None:
    latin1 = tmp_path / "latin1.sql"
    latin1.write_bytes("SELECT 'caf\xe9';\n".encode("latin-1"))
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--compare", str(latin1))
    assert result.code == 2 and "latin1.sql: not UTF-8 text" in result.err, result
    assert "Traceback" not in result.err
    assert _scratch_databases(cluster) == []


def test_violations_fail_the_run(cluster, run_cli, monkeypatch) -> None:
    # Figures of a guard that broke a guarantee measure nothing: exit 1.
    from orchestrator.bench import triggers

    broken = {"calls": 100, "repeat": 1, "compare": [], "workloads": {
        "first_1": {"label": "first appointment, 1 row", "violations": 3}}}
    monkeypatch.setattr(triggers, "run", lambda *args, **kwargs: broken)
    result = run_cli("bench", "triggers", "--dsn", cluster.dsn(), "--json")
    assert result.code == 1, result
    assert json.loads(result.out) == broken
    assert "error: violations() found rows after first_1" in result.err
