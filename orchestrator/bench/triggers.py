"""`consistency bench triggers`: what the guarantees cost a writer.

Three variants on the same data and the same workloads, in one run:
``baseline`` (no trigger at all), ``row_level`` (one UPDATE of calls per
appointment row, what the original system shipped) and ``guard`` (the
statement-level sync of sql/triggers/appointment_link_sync.sql). Each sample
runs in a transaction that is rolled back, so every sample and every variant
starts from the same loaded data set; variants are interleaved sample by
sample. Only the workload's statements are timed (not BEGIN / ROLLBACK, so
not the commit either: the ratios are those of the statements themselves).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from orchestrator import db
from orchestrator.bench import Stats, scratch_database, server_info
from orchestrator.bench.dataset import load_dataset

VARIANTS = ("baseline", "row_level", "guard")

# Upper bounds for guard / baseline (medians) from issue 3.
TARGETS = {
    "insert_1": 1.3,
    "insert_select_100": 1.5,
    "insert_10000": 1.4,
    "delete_100": 3.5,
}


@dataclass(frozen=True)
class Pools:
    """Ids the workloads draw from (fixed by the loaded data set)."""

    linked_calls: list[int]
    appointments: list[int]


Run = Callable[[psycopg.Connection, random.Random, str, Pools], None]


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    run: Run
    # Untimed run after each variant switch, so that re-planning after the
    # ALTER TABLE is not timed; a smaller one where the workload is large.
    warm: Run | None = None
    # Sub-millisecond workloads are sampled this many times more often.
    samples_factor: int = 1


def _insert_one(conn: psycopg.Connection, rnd: random.Random, tag: str, pools: Pools) -> None:
    db.run(conn, "bench_triggers_insert_one",
           {"call": rnd.choice(pools.linked_calls), "tag": tag}, prepare=True)


def _insert_many(n: int) -> Run:
    def run(conn: psycopg.Connection, rnd: random.Random, tag: str, pools: Pools) -> None:
        calls = rnd.sample(pools.linked_calls, n)
        db.run(conn, "bench_triggers_insert_many", {"calls": calls, "tag": tag}, prepare=True)
    return run


def _insert_single_rows(n: int) -> Run:
    def run(conn: psycopg.Connection, rnd: random.Random, tag: str, pools: Pools) -> None:
        for i, call in enumerate(rnd.sample(pools.linked_calls, n)):
            db.run(conn, "bench_triggers_insert_one", {"call": call, "tag": f"{tag}-{i}"},
                   prepare=True)
    return run


def _delete_many(n: int) -> Run:
    def run(conn: psycopg.Connection, rnd: random.Random, tag: str, pools: Pools) -> None:
        db.run(conn, "bench_triggers_delete_many", {"ids": rnd.sample(pools.appointments, n)},
               prepare=True)
    return run


WORKLOADS = (
    Workload("insert_1", "1-row INSERT", _insert_one, samples_factor=5),
    Workload("insert_select_100", "INSERT…SELECT 100 rows", _insert_many(100), samples_factor=3),
    Workload("insert_100_single", "100 single-row INSERTs, 1 tx", _insert_single_rows(100)),
    Workload("insert_10000", "INSERT 10,000 rows", _insert_many(10_000), _insert_many(100)),
    Workload("delete_100", "DELETE 100 rows", _delete_many(100), samples_factor=3),
)


def _sample(conn: psycopg.Connection, workload: Workload, rnd: random.Random, tag: str,
            pools: Pools) -> float:
    """One rolled-back run; returns the workload's milliseconds."""
    conn.execute("BEGIN")
    try:
        start = time.perf_counter()
        workload.run(conn, rnd, tag, pools)
        return (time.perf_counter() - start) * 1000.0
    finally:
        conn.execute("ROLLBACK")


def _violations_after(conn: psycopg.Connection, workload: Workload, rnd: random.Random,
                      pools: Pools) -> int:
    """Run the workload once more and count violations() before rolling back."""
    conn.execute("BEGIN")
    try:
        workload.run(conn, rnd, "check", pools)
        return db.value(conn, "bench_triggers_violations")
    finally:
        conn.execute("ROLLBACK")


def run(admin_dsn: str, calls: int = 100_000, repeat: int = 15, warmup: int = 1,
        seed: int = 1, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Build the data set in a scratch database, time every workload under
    every variant, return medians, ratios vs baseline and the targets."""
    say = progress or (lambda _msg: None)
    results: dict[str, Any] = {"calls": calls, "repeat": repeat, "workloads": {}}
    with scratch_database(admin_dsn, "cg_bench_triggers") as dsn, \
            db.connect(dsn, autocommit=True, application_name="consistency bench") as conn:
        results["server"] = server_info(conn)
        say(f"loading {calls} calls")
        load_dataset(conn, calls=calls)
        db.execute(conn, "bench_vacuum_analyze")
        db.execute(conn, "bench_triggers_setup")
        linked = [r[0] for r in db.all(conn, "bench_triggers_linked_calls")]
        if len(linked) < 10_000:
            # Small smoke runs: let the 10k workload draw calls more than once.
            linked = linked * (10_000 // len(linked) + 1)
        pools = Pools(linked, [r[0] for r in db.all(conn, "bench_triggers_appointment_ids")])
        for workload in WORKLOADS:
            entry: dict[str, Any] = {"label": workload.label}
            say(f"{workload.name}")
            samples: dict[str, list[float]] = {v: [] for v in VARIANTS}
            warm = Workload(workload.name, workload.label, workload.warm or workload.run)
            # Variants interleaved sample by sample (rotating which goes first),
            # so that load from elsewhere on the machine and the slow growth of
            # dead tuples from rolled-back samples hit every variant alike.
            rounds = warmup + repeat * workload.samples_factor
            for i in range(rounds):
                for k in range(len(VARIANTS)):
                    variant = VARIANTS[(i + k) % len(VARIANTS)]
                    db.execute(conn, "bench_triggers_set_variant", variant=variant)
                    _sample(conn, warm, random.Random(f"{seed}-{workload.name}-{i}-warm"),
                            f"w-{variant}-{workload.name}-{i}", pools)
                    # Same random draws for every variant.
                    ms = _sample(conn, workload, random.Random(f"{seed}-{workload.name}-{i}"),
                                 f"{variant}-{workload.name}-{i}", pools)
                    if i >= warmup:
                        samples[variant].append(ms)
            for variant in VARIANTS:
                entry[variant] = Stats.of(samples[variant]).as_dict()
            db.execute(conn, "bench_triggers_set_variant", variant="guard")
            entry["violations"] = _violations_after(conn, workload, random.Random(seed), pools)
            db.execute(conn, "bench_vacuum_analyze")
            base = entry["baseline"]["median_ms"]
            entry["ratio"] = {v: entry[v]["median_ms"] / base for v in VARIANTS}
            entry["target"] = TARGETS.get(workload.name)
            entry["met"] = (None if entry["target"] is None
                            else entry["ratio"]["guard"] <= entry["target"])
            results["workloads"][workload.name] = entry
        db.execute(conn, "bench_triggers_set_variant", variant="guard")
    return results


def table_rows(results: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for entry in results["workloads"].values():
        target = entry["target"]
        verdict = "" if target is None else ("yes" if entry["met"] else "NO")
        rows.append([entry["label"],
                     entry["baseline"]["median_ms"], entry["row_level"]["median_ms"],
                     entry["guard"]["median_ms"],
                     f"{entry['ratio']['row_level']:.2f}x", f"{entry['ratio']['guard']:.2f}x",
                     "" if target is None else f"<= {target}x", verdict,
                     entry["violations"]])
    return rows


COLUMNS = ("workload", "baseline ms", "row-level ms", "guard ms", "row-level/base",
           "guard/base", "target", "met", "violations")
