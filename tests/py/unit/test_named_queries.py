"""The named queries of orchestrator/queries/*.sql: one way to pass
parameters (so %% means a literal % in every query), benchmark queries apart
from the production ones, every query used."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from orchestrator import db

QUERIES = Path(db.__file__).parent / "queries"
PACKAGE = Path(db.__file__).parent
HEADER = re.compile(r"^--\s*name:\s*([a-z_][a-z0-9_]*)", re.MULTILINE)


def names_in(path: Path) -> list[str]:
    return HEADER.findall(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(db.queries()))
def test_a_percent_sign_is_a_parameter_or_doubled(name: str) -> None:
    rest = re.sub(r"%%|%\([a-z_][a-z0-9_]*\)s", "", db.query(name))
    assert "%" not in rest, f"{name}: a lone % (write %% for a literal one)"


def test_benchmark_queries_live_in_bench_files_only() -> None:
    for path in QUERIES.glob("*.sql"):
        bench_file = path.name.startswith("bench_")
        for name in names_in(path):
            assert name.startswith("bench_") == bench_file, f"{name} in {path.name}"


def test_every_query_is_used_by_the_package() -> None:
    source = "\n".join(p.read_text(encoding="utf-8") for p in PACKAGE.rglob("*.py"))
    unused = [name for name in db.queries() if f'"{name}"' not in source]
    assert unused == []


def test_files_are_named_after_what_they_hold() -> None:
    files = {p.stem for p in QUERIES.glob("*.sql")}
    assert "foundation" not in files and {"migrate", "config"} <= files
