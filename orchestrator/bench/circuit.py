"""`consistency bench circuit`: what circuit_acquire costs.

Variants, in one run on a scratch database:
- round trip: ``SELECT $1`` (the floor: network + protocol, no function);
- closed path: circuit_acquire on a closed key (a snapshot read, no lock);
- locking acquire: the same read with FOR UPDATE (what the issue measured
  against: a transaction id and a WAL record per call, one writer at a time);
- transition path: every timed acquire moves open -> half_open (conditional
  UPDATE, event row, NOTIFY); the reopening failure runs untimed in between;
- breaker.call: the Python wrapper around a no-op on a closed circuit (the
  mirror admits it in-process, a pooled worker runs it under its deadline);
- client side (``bench/circuit_client.py``): ``breaker.call(noop)`` and
  ``with breaker:`` with and without the mirror, against pybreaker with its
  Redis storage when installed.

Latency: one client, median/p99 in ms. Throughput: N clients (threads, one
connection each) for a fixed time, and the same statements through pgbench
when it is installed (a C client: Python threads share the GIL and top out
at the round-trip floor long before the server does). The transition path
counts cycles of acquire (open -> half_open) + record_failure (half_open ->
open), one key per client.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from rich.console import Console

from orchestrator import breaker as breaker_mod
from orchestrator import db
from orchestrator.bench import Stats, circuit_client, render, sample, scratch_database, server_info

# No colon: pgbench would read ":closed" as one of its variables.
CLOSED_KEY = "bench_closed"


def _set(conn: psycopg.Connection, key: str, value: str) -> None:
    db.execute(conn, "set_setting", key=key, value=value, actor="bench")


def _throughput(dsn: str, clients: int, seconds: float,
                make_op: Callable[[psycopg.Connection, int], Callable[[], Any]]) -> float:
    """Operations per second of ``clients`` threads, one connection each."""
    conns = [psycopg.connect(dsn, autocommit=True) for _ in range(clients)]
    try:
        ops = [make_op(c, i) for i, c in enumerate(conns)]
        for op in ops:  # warm the prepared statements
            for _ in range(10):
                op()
        return circuit_client.rate(ops, seconds)
    finally:
        for c in conns:
            c.close()


def _pgbench_binary() -> str | None:
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        bindir = subprocess.run(["pg_config", "--bindir"], check=True, capture_output=True,
                                text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    candidate = Path(bindir) / "pgbench"
    return str(candidate) if candidate.exists() else None


def _pgbench(dsn: str, clients: int, seconds: float, statement: str) -> float | None:
    """Transactions per second of pgbench (a C client: no GIL between the
    threads, so this is what the server sustains). None without pgbench."""
    binary = _pgbench_binary()
    if binary is None:
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(statement + ";\n")
        script.flush()
        proc = subprocess.run(
            [binary, "-n", "-M", "prepared", "-c", str(clients), "-j", str(clients),
             "-T", str(max(1, round(seconds))), "-f", script.name, dsn],
            capture_output=True, text=True, timeout=seconds + 60)
    found = re.search(r"^tps = ([0-9.]+)", proc.stdout, re.MULTILINE)
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pgbench failed: {proc.stderr.strip()[-500:]}")
    return float(found.group(1))


def _call(conn: psycopg.Connection, name: str, key: str) -> Callable[[], Any]:
    params = {"key": key}
    return lambda: db.run(conn, name, params, prepare=True).fetchone()


def run(admin_dsn: str, *, repeat: int = 2000, seconds: float = 3.0,
        clients: int = 8) -> dict[str, Any]:
    with scratch_database(admin_dsn, "cg_bench_circuit") as dsn, \
            psycopg.connect(dsn, autocommit=True) as conn:
        info = server_info(conn)
        db.execute(conn, "bench_circuit_locking_acquire")
        # A cooldown of a microsecond: every acquire after a failure is a transition.
        _set(conn, "circuit_breaker.cooldown_seconds", "0.000001")
        _set(conn, "circuit_breaker.failure_threshold", "1")
        db.execute(conn, "bench_circuit_add_key", key=CLOSED_KEY)

        latency: dict[str, Stats] = {
            "round trip": sample(_call(conn, "bench_circuit_round_trip", CLOSED_KEY), repeat,
                                 warmup=50),
            "closed path": sample(_call(conn, "circuit_acquire", CLOSED_KEY), repeat, warmup=50),
            "locking acquire": sample(_call(conn, "bench_circuit_call_locking", CLOSED_KEY),
                                      repeat, warmup=50),
        }
        reopen = _call(conn, "bench_circuit_record_failure", "bench:transition")
        db.execute(conn, "circuit_record_failure", key="bench:transition", error=None)
        latency["transition path"] = sample(_call(conn, "circuit_acquire", "bench:transition"),
                                            repeat, warmup=5, setup=reopen)
        try:
            client = circuit_client.run(dsn, repeat=repeat, seconds=seconds, clients=clients)
        finally:
            breaker_mod.close_pools()
        latency["breaker.call"] = Stats(**client["latency_ms"][circuit_client.CALL])

        def transition_cycle(c: psycopg.Connection, i: int) -> Callable[[], Any]:
            acquire = _call(c, "circuit_acquire", f"bench:transition:{i}")
            fail = _call(c, "bench_circuit_record_failure", f"bench:transition:{i}")

            def cycle() -> None:
                fail()
                acquire()
            return cycle

        throughput = {
            "round trip": _throughput(dsn, clients, seconds, lambda c, _: _call(
                c, "bench_circuit_round_trip", CLOSED_KEY)),
            "closed path": _throughput(dsn, clients, seconds, lambda c, _: _call(
                c, "circuit_acquire", CLOSED_KEY)),
            "locking acquire": _throughput(dsn, clients, seconds, lambda c, _: _call(
                c, "bench_circuit_call_locking", CLOSED_KEY)),
            "transition path": _throughput(dsn, clients, seconds, transition_cycle),
        }
        # The statements are constants of this module, not input.
        pgbench = {
            "round trip": _pgbench(dsn, clients, seconds, "SELECT 1"),
            "closed path": _pgbench(dsn, clients, seconds,
                                    f"SELECT consistency.circuit_acquire('{CLOSED_KEY}')"),
            "locking acquire": _pgbench(
                dsn, clients, seconds,
                f"SELECT consistency._bench_locking_acquire('{CLOSED_KEY}')"),
        }
    return {
        "server": info,
        "client": client,
        "pgbench_per_second": pgbench,
        "repeat": repeat, "seconds": seconds, "clients": clients,
        "latency_ms": {name: s.as_dict() for name, s in latency.items()},
        "per_second": throughput,
        "ratios": {
            "closed path / round trip (median)":
                latency["closed path"].median_ms / latency["round trip"].median_ms,
            "locking / closed path (throughput, py threads)":
                throughput["locking acquire"] / throughput["closed path"],
            **({"locking / closed path (throughput, pgbench)":
                pgbench["locking acquire"] / pgbench["closed path"]}
               if pgbench["closed path"] and pgbench["locking acquire"] is not None else {}),
        },
    }


def print_result(result: dict[str, Any], console: Console | None = None) -> None:
    rows = []
    for name, stats in result["latency_ms"].items():
        rows.append([name, stats["median_ms"], stats["p99_ms"],
                     result["per_second"].get(name), result["pgbench_per_second"].get(name)])

    def rate(v: float | None) -> str:
        return "" if v is None else f"{v:,.0f}"

    render(f"circuit_acquire: latency (1 client) and throughput ({result['clients']} clients, "
           f"one connection each)",
           ["variant", "median ms", "p99 ms", "per s (py threads)", "per s (pgbench)"],
           [[r[0], r[1], r[2], rate(r[3]), rate(r[4])] for r in rows], console)
    render("ratios", ["ratio", "value"], [[k, v] for k, v in result["ratios"].items()], console)
    client = result["client"]
    render(f"client side: what the application pays per call on a closed circuit (1 thread; "
           f"{result['clients']} threads of one process for /s)",
           ["variant", "median ms", "p99 ms", "per s"],
           [[name, stats["median_ms"], stats["p99_ms"], rate(client["per_second"].get(name))]
            for name, stats in client["latency_ms"].items()], console)
    render("client-side ratios", ["ratio", "value"],
           [[k, v] for k, v in client["ratios"].items()], console)
    spread = client["propagation_ms"]
    (console or Console()).print(
        f"a state forced on another connection reaches this process's mirror in "
        f"{spread['median_ms']:.2f} ms (median), {spread['p99_ms']:.2f} ms (p99) of "
        f"{spread['n']} changes")
    if client["pybreaker_skipped"]:
        (console or Console()).print(
            f"pybreaker + Redis not measured: {client['pybreaker_skipped']}")
    (console or Console()).print(
        f"PostgreSQL {result['server']['server_version']}, {result['server']['cpus']} CPUs; "
        "transition path per second = acquire (open -> half_open) + failure (-> open) cycles; "
        "Python threads share the GIL, pgbench shows what the server sustains")
