"""deploy/prometheus: the rules pass promtool's check and its unit tests."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import ROOT

RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
RULES_TEST = ROOT / "deploy" / "prometheus" / "rules_test.yml"
PROMTOOL = shutil.which("promtool")

needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian package prometheus; "
                             "scripts/ensure-system-deps.sh installs it as root)")


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([PROMTOOL, "check", "rules", str(RULES)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 6 rules found" in result.stdout


@needs_promtool
def test_promtool_unit_tests_of_the_rules() -> None:
    result = subprocess.run([PROMTOOL, "test", "rules", str(RULES_TEST)], capture_output=True,
                            text=True, timeout=60, cwd=RULES_TEST.parent)
    assert result.returncode == 0, result.stdout + result.stderr
