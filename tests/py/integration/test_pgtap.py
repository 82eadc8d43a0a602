"""Runs every pgTAP file of tests/sql in its own fresh database clone."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT
from tap.parser import Parser

from orchestrator.pgcluster import bindir

SQL_TESTS = sorted((ROOT / "tests" / "sql").glob("*.sql"))
assert SQL_TESTS, "no pgTAP file found"


@pytest.mark.parametrize("path", SQL_TESTS, ids=[p.stem for p in SQL_TESTS])
def test_pgtap_file(path: Path, dsn: str) -> None:
    options = "-c search_path=public,testing -c client_min_messages=warning"
    env = {**os.environ, "PGOPTIONS": options}
    proc = subprocess.run(
        [str(bindir() / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", dsn,
         "-f", str(path)],
        capture_output=True, text=True, env=env, timeout=240,
    )
    output = proc.stdout
    assert proc.returncode == 0, f"psql failed on {path.name}:\n{proc.stderr}\n{output}"

    plan = None
    failures, passed = [], 0
    for line in Parser().parse_text(output):
        if line.category == "plan":
            plan = line.expected_tests
        elif line.category == "test":
            if line.ok:
                passed += 1
            else:
                failures.append(f"not ok {line.number} {line.description}")
        elif line.category == "bail":
            pytest.fail(f"{path.name} bailed out: {line.reason}")
    assert plan is not None, f"{path.name} printed no plan:\n{output}"
    assert not failures, f"{path.name}:\n" + "\n".join(failures) + "\n\n" + output
    assert passed == plan, f"{path.name}: planned {plan}, passed {passed}\n{output}"
