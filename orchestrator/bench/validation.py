"""``consistency bench validation``: round trip of validate_booking on the
benchmark dataset (default 100k calls), per variant of the cascade.

The max age is raised for the run so that every validation of a linked call
walks all five steps (the dataset's appointments are days old): the worst
case, not the cheap early exit of appointment_too_old.
"""

from __future__ import annotations

import random
from typing import Any

from orchestrator import db
from orchestrator.bench import Stats, render, sample, scratch_database, server_info
from orchestrator.bench.dataset import load_dataset
from orchestrator.validation import validate_booking

TARGET_P95_MS = 5.0

__all__ = ["TARGET_P95_MS", "print_report", "run"]


def run(admin_dsn: str, calls: int = 100_000, repeat: int = 2000,
        seed: int = 42) -> dict[str, Any]:
    rng = random.Random(seed)
    with scratch_database(admin_dsn, "cg_bench_validation") as dsn, \
            db.connect(dsn, autocommit=True) as conn:
        load_dataset(conn, calls=calls)
        db.execute(conn, "bench_validation_max_age")
        linked = db.all(conn, "bench_validation_linked")
        unlinked = [r[0] for r in db.all(conn, "bench_validation_unlinked")]
        info = server_info(conn)

        def picker(rows: list[Any]) -> Any:
            return lambda: rows[rng.randrange(len(rows))]

        pick_linked, pick_unlinked = picker(linked), picker(unlinked)
        variants: dict[str, Any] = {
            "newest active appointment of the call":
                lambda: validate_booking(conn, pick_linked()[1]),
            "given appointment id and external id":
                lambda: validate_booking(conn, *_by_id(pick_linked())),
            "call without appointment (early exit)":
                lambda: validate_booking(conn, pick_unlinked()),
        }
        results: dict[str, Stats] = {name: sample(fn, repeat, warmup=min(50, repeat))
                                     for name, fn in variants.items()}
        outcome = validate_booking(conn, linked[0][1])

    base = results["newest active appointment of the call"].median_ms
    return {
        **info,
        "calls": calls,
        "repeat": repeat,
        "full_cascade_ok": outcome.ok,
        "target_p95_ms": TARGET_P95_MS,
        "meets_target": all(s.p95_ms < TARGET_P95_MS for s in results.values()),
        "variants": [{"variant": name, **stats.as_dict(),
                      "median_ratio": stats.median_ms / base if base else None}
                     for name, stats in results.items()],
    }


def _by_id(row: tuple[int, int, str]) -> tuple[int, int, str]:
    appointment_id, call_id, external_id = row
    return call_id, appointment_id, external_id


def print_report(report: dict[str, Any]) -> None:
    rows = [(v["variant"], v["n"], v["median_ms"], v["p95_ms"], v["p99_ms"], v["median_ratio"])
            for v in report["variants"]]
    render(f"validate_booking round trip, {report['calls']} calls "
           f"(PostgreSQL {report['server_version']}, {report['cpus']} cpus)",
           ["variant", "n", "median ms", "p95 ms", "p99 ms", "median ratio"], rows)
    verdict = "meets" if report["meets_target"] else "MISSES"
    print(f"p95 target < {report['target_p95_ms']} ms: {verdict}")
