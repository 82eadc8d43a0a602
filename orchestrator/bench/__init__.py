"""Benchmarks are programs: each compares variants in one run and reports
medians and ratios (rich table, or JSON). Shared pieces live here; one module
per benchmark (``triggers``, ``validation``, ``circuit``, ``relay`` ...)."""

from __future__ import annotations

import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo
from rich.console import Console
from rich.table import Table

from orchestrator import db, migrate


@contextmanager
def scratch_database(admin_dsn: str, prefix: str = "cg_bench", *,
                     migrated: bool = True) -> Iterator[str]:
    """A new database on the server of ``admin_dsn``, migrated unless told
    otherwise, dropped afterwards whatever happens. Yields its DSN."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with db.connect(admin_dsn, autocommit=True) as admin:
        admin.execute(db.compose("bench_create_database", name=name))
    dsn = make_conninfo(admin_dsn, dbname=name)
    try:
        if migrated:
            migrate.migrate(dsn, env={})
        yield dsn
    finally:
        with db.connect(admin_dsn, autocommit=True) as admin:
            admin.execute(db.compose("bench_drop_database", name=name))


@dataclass(frozen=True)
class Stats:
    n: int
    median_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float

    @classmethod
    def of(cls, samples_ms: Sequence[float]) -> Stats:
        ordered = sorted(samples_ms)

        def pct(p: float) -> float:
            return ordered[min(len(ordered) - 1, round(p * (len(ordered) - 1)))]

        return cls(len(ordered), statistics.median(ordered), pct(0.95), pct(0.99), ordered[0])

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def sample(fn: Callable[[], Any], repeat: int, *, warmup: int = 1,
           setup: Callable[[], Any] | None = None) -> Stats:
    """Time ``fn`` ``repeat`` times (after ``warmup`` untimed runs); ``setup``
    runs untimed before every run (e.g. to reset data)."""
    samples = []
    for i in range(warmup + repeat):
        if setup is not None:
            setup()
        start = time.perf_counter()
        fn()
        elapsed = (time.perf_counter() - start) * 1000.0
        if i >= warmup:
            samples.append(elapsed)
    return Stats.of(samples)


def render(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]],
           console: Console | None = None) -> None:
    table = Table(*columns, title=title)
    for row in rows:
        table.add_row(*(f"{v:.3f}" if isinstance(v, float) else str(v) for v in row))
    (console or Console()).print(table)


def server_info(conn: psycopg.Connection) -> dict[str, str]:
    version = db.value(conn, "bench_server_version")
    return {"server_version": version, "cpus": str(os.cpu_count())}
