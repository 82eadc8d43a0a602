"""`consistency bench triggers`: what the guarantees cost a writer.

Three variants on the same data and the same workloads, in one run:
``baseline`` (no trigger at all), ``row_level`` (one UPDATE of calls per
appointment row and a plain row trigger for the call rules, what the original
system shipped) and ``guard``. The workloads are the writes of a booking
flow: a call's first appointment (one row, a batch of 100, an import of
10,000), a second appointment, cancelling or soft-deleting a call's only
appointment, deleting 100 appointments (random ones, or each its call's
last), moving an appointment to another call, and the agent reporting the
outcome on a call.

Each workload is measured twice, variants interleaved sample by sample:

- ``server``: the statements' own time, taken inside the server
  (clock_timestamp() around them, in a transaction that is rolled back, so
  every sample starts from the same data). A single-row workload runs
  ``STATEMENTS`` statements per sample, on distinct rows, and reports the
  time per statement; the targets are ratios of these medians.
- ``client``: one statement as an application sends it, in its own
  transaction, timed by the client from send to commit; what it changed is
  put back afterwards, untimed, on another connection.

``compare`` adds server-side variants of the guard: SQL (say, another
version of the sync's functions, as ``pg_get_functiondef`` prints them) run
inside each of their samples' transaction before the statements, rolled back
with them, so a change is measured against the guard as installed in one run.
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
from orchestrator.errors import GuardError

VARIANTS = ("baseline", "row_level", "guard")
MODES = ("server", "client")

# Single-row statements per server-side sample.
STATEMENTS = 50


@dataclass(frozen=True)
class Workload:
    name: str
    label: str
    # Statement in public.bench_workload().
    kind: str
    # Pool the rows come from (bench_triggers_pools); targets of a move from "open".
    pool: str
    # Rows per statement: 1 for single-row workloads.
    rows: int = 1
    # guard / baseline, server side, median.
    target: float | None = None
    # A client-side sample is one statement and its commit: sampled this many
    # times more often where that is sub-millisecond (a server-side sample
    # already averages STATEMENTS statements).
    samples_factor: int = 1
    # The rows' calls may change state, with the move's target calls.
    moves: bool = False

    @property
    def single(self) -> bool:
        return self.rows == 1


WORKLOADS = (
    Workload("first_1", "first appointment, 1 row", "insert_one", "open", target=2.0,
             samples_factor=3),
    Workload("first_select_100", "first appointments, INSERT…SELECT 100", "insert_many", "open",
             100, target=2.0),
    Workload("first_10000", "first appointments, import of 10,000", "insert_many", "open",
             10_000, target=2.0),
    Workload("insert_1", "second appointment, 1 row", "insert_one", "linked", samples_factor=3),
    Workload("insert_select_100", "second appointments, INSERT…SELECT 100", "insert_many",
             "linked", 100, target=1.4),
    Workload("insert_100_single", "second appointments, 100 single-row INSERTs",
             "insert_one", "linked"),
    Workload("insert_10000", "second appointments, INSERT 10,000", "insert_many", "linked",
             10_000, target=1.3),
    Workload("cancel_only", "cancel a call's only appointment (G3 alert)", "cancel", "only",
             target=3.0, samples_factor=3),
    Workload("soft_delete_only", "soft-delete a call's only appointment (G3 alert)",
             "soft_delete", "only", samples_factor=3),
    Workload("delete_100", "DELETE 100 appointments", "delete_many", "appointments", 100),
    Workload("delete_100_last", "DELETE 100 appointments, each its call's last",
             "delete_many", "only", 100, target=4.0),
    Workload("move_only", "move a call's only appointment to an open call", "move", "only",
             samples_factor=3, moves=True),
    Workload("outcome_booked", "agent sets outcome 'appointment_booked' (call side)",
             "outcome", "no_outcome", samples_factor=3),
)
# "100 single-row INSERTs" is a loop of 100 in any mode.
LOOPS = {"insert_100_single": 100}


Draw = tuple[list[int], list[int] | None]


def _rows(workload: Workload, calls: int) -> int:
    """Rows per statement: an import takes at most a tenth of the data set
    (a smoke run's 1,000 calls import 100)."""
    return workload.rows if workload.rows <= 100 else min(workload.rows, max(100, calls // 10))


def _draw(workload: Workload, pools: dict[str, list[int]], rnd: random.Random,
          mode: str, rows: int) -> Draw:
    """The rows of one sample: ids from the workload's pool (distinct while
    the pool allows), and the target calls of a move."""
    count = rows
    if workload.single:
        count = LOOPS.get(workload.name, STATEMENTS if mode == "server" else 1)
    pool = pools[workload.pool]
    ids = rnd.sample(pool, count) if count <= len(pool) else rnd.choices(pool, k=count)
    targets = rnd.sample(pools["open"], len(ids)) if workload.moves else None
    return ids, targets


def _statements(workload: Workload, ids: list[int]) -> int:
    return len(ids) if workload.single else 1


@dataclass
class Conns:
    bench: psycopg.Connection
    # Puts back what a committed sample changed; its own session, so that
    # bypassing the triggers there never invalidates the bench session's plans.
    restore: psycopg.Connection


def _server_sample(conns: Conns, workload: Workload, draw: Draw, tag: str) -> float:
    """One rolled-back run; ms per statement, taken inside the server."""
    ids, targets = draw
    with conns.bench.transaction(force_rollback=True):
        ms = db.value(conns.bench, "bench_triggers_sample", kind=workload.kind, ids=ids,
                      targets=targets, tag=tag)
    return float(ms) / _statements(workload, ids)


def _compare_sql(conn: psycopg.Connection, name: str, sql: str) -> None:
    """A compare variant's SQL, inside the transaction the caller opened. A
    mistake in it, or a COMMIT that would leave what follows it committed
    (the other variants then measured on a changed database), ends the run
    in one line."""
    try:
        conn.execute(sql.encode())
    except psycopg.Error as exc:
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GuardError(f"--compare {name}: {detail}") from None
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.INTRANS:
        raise GuardError(f"--compare {name}: its SQL ends the sample's transaction (COMMIT or "
                         "ROLLBACK), so what it changes would outlive the sample")


def _compared_sample(conns: Conns, workload: Workload, warm: Draw, draw: Draw, tag: str,
                     name: str, sql: str) -> float:
    """A compare variant's run: its SQL, an untimed warm-up (its functions'
    plans are new), the timed statements, all in one rolled-back transaction."""
    ids, targets = draw
    with conns.bench.transaction(force_rollback=True):
        _compare_sql(conns.bench, name, sql)
        db.value(conns.bench, "bench_triggers_sample", kind=workload.kind, ids=warm[0],
                 targets=warm[1], tag=f"w-{tag}")
        ms = db.value(conns.bench, "bench_triggers_sample", kind=workload.kind, ids=ids,
                      targets=targets, tag=tag)
    return float(ms) / _statements(workload, ids)


def _touched(workload: Workload, draw: Draw) -> tuple[list[int], list[int]]:
    """(calls, appointments) a committed sample may change."""
    ids, targets = draw
    if workload.kind in ("insert_one", "insert_many", "outcome"):
        return ids, []
    return list(targets or []), ids


def _client_sample(conns: Conns, workload: Workload, draw: Draw, tag: str,
                   check: bool = False) -> tuple[float, int | None]:
    """One committed run, timed by the client from send to commit, then put
    back; ms per statement, and violations() before putting back if asked."""
    calls, appointments = _touched(workload, draw)
    db.execute(conns.restore, "bench_triggers_save", calls=calls, appointments=appointments)
    ids, targets = draw
    start = time.perf_counter()
    db.run(conns.bench, "bench_triggers_sample",
           {"kind": workload.kind, "ids": ids, "targets": targets, "tag": tag})
    ms = (time.perf_counter() - start) * 1000.0
    violations = db.value(conns.bench, "bench_triggers_violations") if check else None
    db.execute(conns.restore, "bench_triggers_restore")
    return ms / _statements(workload, ids), violations


def _measure(conns: Conns, workload: Workload, pools: dict[str, list[int]], mode: str,
             rows: int, repeat: int, warmup: int, seed: int,
             compare: dict[str, str]) -> tuple[dict[str, list[float]], int]:
    variants = (*VARIANTS, *(compare if mode == "server" else ()))
    samples: dict[str, list[float]] = {v: [] for v in variants}
    rounds = warmup + repeat * (workload.samples_factor if mode == "client" else 1)
    for i in range(rounds):
        draw = _draw(workload, pools, random.Random(f"{seed}-{workload.name}-{mode}-{i}"), mode,
                     rows)
        for k in range(len(variants)):
            # Variants interleaved sample by sample (rotating which goes first),
            # so that load from elsewhere on the machine and the slow growth of
            # dead tuples hit every variant alike.
            variant = variants[(i + k) % len(variants)]
            db.execute(conns.bench, "bench_triggers_set_variant",
                       variant="guard" if variant in compare else variant)
            warm = _draw(workload, pools, random.Random(f"{seed}-{workload.name}-w{i}"), "server",
                         min(rows, 100))
            tag = f"{mode}-{variant}-{workload.name}-{i}"
            if variant in compare:
                ms = _compared_sample(conns, workload, warm, draw, tag, variant,
                                      compare[variant])
                if i >= warmup:
                    samples[variant].append(ms)
                continue
            # Untimed, so that re-planning after the ALTER TABLE is not timed.
            _server_sample(conns, workload, warm, f"w-{variant}-{workload.name}-{i}")
            if mode == "server":
                ms = _server_sample(conns, workload, draw, tag)
            else:
                ms, _ = _client_sample(conns, workload, draw, tag)
            if i >= warmup:
                samples[variant].append(ms)
    db.execute(conns.bench, "bench_triggers_set_variant", variant="guard")
    if mode != "client":
        return samples, 0
    # Once per workload, committed: violations() reads every call.
    draw = _draw(workload, pools, random.Random(seed), "client", rows)
    _, violations = _client_sample(conns, workload, draw, f"check-{workload.name}", check=True)
    return samples, int(violations or 0)


def _summary(samples: dict[str, list[float]]) -> dict[str, Any]:
    entry: dict[str, Any] = {v: Stats.of(vs).as_dict() for v, vs in samples.items()}
    base = entry["baseline"]["median_ms"]
    entry["ratio"] = {v: entry[v]["median_ms"] / base for v in samples}
    return entry


def run(admin_dsn: str, calls: int = 100_000, repeat: int = 15, warmup: int = 1,
        seed: int = 1, progress: Callable[[str], None] | None = None,
        workloads: tuple[str, ...] | None = None,
        compare: dict[str, str] | None = None) -> dict[str, Any]:
    """Build the data set in a scratch database, time every workload under
    every variant in both modes (the ``compare`` variants, name -> SQL, on
    the server side); medians, ratios vs baseline, the targets. The
    top-level figures of a workload are the server side's."""
    say = progress or (lambda _msg: None)
    compare = compare or {}
    chosen = [w for w in WORKLOADS if workloads is None or w.name in workloads]
    results: dict[str, Any] = {"calls": calls, "repeat": repeat,
                               "statements_per_sample": STATEMENTS, "compare": list(compare),
                               "workloads": {}}
    with scratch_database(admin_dsn, "cg_bench_triggers") as dsn, \
            db.connect(dsn, autocommit=True, application_name="consistency bench") as conn, \
            db.connect(dsn, autocommit=True, application_name="consistency bench restore") as rconn:
        conns = Conns(conn, rconn)
        results["server"] = server_info(conn)
        say(f"loading {calls} calls")
        load_dataset(conn, calls=calls)
        db.execute(conn, "bench_triggers_setup")
        db.execute(conn, "bench_vacuum_analyze")
        pools = {name: list(ids or []) for name, ids in db.all(conn, "bench_triggers_pools")}
        for name, sql in compare.items():
            _check_compare(conn, name, sql)
        for workload in chosen:
            say(workload.name)
            rows = _rows(workload, calls)
            label = workload.label.replace(f"{workload.rows:,}", f"{rows:,}")
            entry: dict[str, Any] = {"label": label, "rows": rows}
            violations = 0
            for mode in MODES:
                samples, found = _measure(conns, workload, pools, mode, rows, repeat, warmup,
                                          seed, compare)
                entry[mode] = _summary(samples)
                violations += found
                db.execute(conn, "bench_vacuum_analyze")
            entry.update({v: entry["server"][v] for v in (*VARIANTS, *compare, "ratio")})
            entry["violations"] = violations
            entry["target"] = workload.target
            entry["met"] = (None if workload.target is None
                            else entry["ratio"]["guard"] <= workload.target)
            entry["not_above_row_level"] = entry["ratio"]["guard"] <= entry["ratio"]["row_level"]
            results["workloads"][workload.name] = entry
        db.execute(conn, "bench_triggers_set_variant", variant="guard")
    return results


def _check_compare(conn: psycopg.Connection, name: str, sql: str) -> None:
    """A compare variant's SQL runs (and is rolled back) once before any
    timing, so that a mistake in it ends the run before any figure."""
    with conn.transaction(force_rollback=True):
        _compare_sql(conn, name, sql)


def columns(results: dict[str, Any]) -> tuple[str, ...]:
    """COLUMNS, and a µs and a ratio column per compare variant."""
    extra = [c for name in results.get("compare", []) for c in (f"{name} µs", f"{name}/base")]
    return (*COLUMNS[:6], *extra, *COLUMNS[6:])


def table_rows(results: dict[str, Any]) -> list[list[Any]]:
    """The server side: µs per statement, ratios, targets."""
    rows = []
    for entry in results["workloads"].values():
        target = entry["target"]
        server = entry["server"]
        extra = [x for name in results.get("compare", [])
                 for x in (server[name]["median_ms"] * 1000, f"{server['ratio'][name]:.2f}x")]
        rows.append([entry["label"], *(server[v]["median_ms"] * 1000 for v in VARIANTS),
                     f"{server['ratio']['row_level']:.2f}x", f"{server['ratio']['guard']:.2f}x",
                     *extra,
                     "" if target is None else f"<= {target}x",
                     "" if target is None else ("yes" if entry["met"] else "NO"),
                     "yes" if entry["not_above_row_level"] else "NO"])
    return rows


def client_rows(results: dict[str, Any]) -> list[list[Any]]:
    """The client side: ms per statement with its commit, ratios, violations."""
    rows = []
    for entry in results["workloads"].values():
        client = entry["client"]
        rows.append([entry["label"], *(client[v]["median_ms"] for v in VARIANTS),
                     f"{client['ratio']['row_level']:.2f}x", f"{client['ratio']['guard']:.2f}x",
                     entry["violations"]])
    return rows


COLUMNS = ("workload", "base µs", "row-level µs", "guard µs", "row-level/base", "guard/base",
           "target", "met", "<= row-level")
CLIENT_COLUMNS = ("workload", "base ms", "row-level ms", "guard ms", "row-level/base",
                  "guard/base", "violations")
