"""A database that cannot be reached is one line on stderr and exit 2."""

from __future__ import annotations

import os
import subprocess
import sys


def _cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DATABASE_URL": ""})


def test_unreachable_database_is_one_line_and_exit_2() -> None:
    proc = _cli("migrate", "--dsn", "postgresql://nobody@127.0.0.1:1/x")
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.startswith("error: cannot connect to PostgreSQL"), err
