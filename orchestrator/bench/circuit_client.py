"""What an application pays per protected call (part of `consistency bench
circuit`): ``breaker.call(noop)`` and ``with breaker:`` on a closed circuit,
with the in-process mirror (the default) and asking the database about every
call (``mirror=False``), against pybreaker with its Redis storage (the state a
peer system would share between workers) when pybreaker, redis-py and a
``redis-server`` binary are installed; the bench starts its own redis-server
on a free port and stops it.

Latency: one thread, median/p99. Throughput: N threads of one process (they
share the GIL, as an application's threads do). The variants take turns, in
blocks of calls for latency and in slices of time for throughput, so that a
busy spell of a shared machine falls on all of them alike.
Propagation: from the commit of a forced state on another connection until
this process's mirror holds it (NOTIFY, then the listener's read): the window
in which a call may still pass a circuit that was just opened elsewhere.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import psycopg

from orchestrator import breaker as breaker_mod
from orchestrator import db
from orchestrator.bench import Stats, sample

KEY = "bench:client"
CALL, WITH = "breaker.call(noop)", "with breaker:"
CALL_DB, WITH_DB = "breaker.call(noop), no mirror", "with breaker:, no mirror"
PB_CALL, PB_WITH = "pybreaker + Redis: call(noop)", "pybreaker + Redis: with calling()"


def rate(ops: Sequence[Callable[[], Any]], seconds: float) -> float:
    """Operations per second of one thread per op, run together for ``seconds``."""
    counts = [0] * len(ops)
    start = threading.Barrier(len(ops) + 1)
    stop = threading.Event()

    def work(i: int) -> None:
        op, n = ops[i], 0
        start.wait()
        while not stop.is_set():
            op()
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(ops))]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - began)


def _noop() -> None:
    return None


def _wrapped(breaker: Any, method: str) -> Callable[[], None]:
    """``with breaker:`` (or pybreaker's ``with breaker.calling():``) around nothing."""
    if method == "enter":
        def op() -> None:
            with breaker:
                pass
    else:
        def op() -> None:
            with breaker.calling():
                pass
    return op


def _ours(dsn: str) -> tuple[breaker_mod.CircuitBreaker, dict[str, Callable[[], Any]]]:
    mirrored = breaker_mod.CircuitBreaker(KEY, dsn=dsn)
    direct = breaker_mod.CircuitBreaker(KEY, dsn=dsn, mirror=False)
    mirrored.call(_noop)
    end = time.monotonic() + 10
    while not mirrored.mirror.admits(KEY) and time.monotonic() < end:
        time.sleep(0.01)
    return mirrored, {
        CALL: lambda: mirrored.call(_noop),
        WITH: _wrapped(mirrored, "enter"),
        CALL_DB: lambda: direct.call(_noop),
        WITH_DB: _wrapped(direct, "enter"),
    }


def interleaved_latency(ops: dict[str, Callable[[], Any]], repeat: int,
                        block: int = 50) -> dict[str, Stats]:
    """``repeat`` timed calls of each op, the ops taking turns every ``block`` calls."""
    for op in ops.values():
        sample(op, 1, warmup=min(200, repeat))
    samples: dict[str, list[float]] = {name: [] for name in ops}
    while any(len(v) < repeat for v in samples.values()):
        for name, op in ops.items():
            for _ in range(min(block, repeat - len(samples[name]))):
                started = time.perf_counter()
                op()
                samples[name].append((time.perf_counter() - started) * 1000.0)
    return {name: Stats.of(v) for name, v in samples.items()}


def interleaved_rate(ops: dict[str, Callable[[], Any]], clients: int, seconds: float,
                     slice_seconds: float = 0.5) -> dict[str, float]:
    """Calls per second of ``clients`` threads per op, over ``seconds`` per op
    taken in turns of ``slice_seconds``."""
    turns = max(1, round(seconds / slice_seconds))
    rates: dict[str, list[float]] = {name: [] for name in ops}
    for _ in range(turns):
        for name, op in ops.items():
            rates[name].append(rate([op] * clients, seconds / turns))
    return {name: sum(v) / len(v) for name, v in rates.items()}


def _propagation(dsn: str, breaker: breaker_mod.CircuitBreaker, samples: int) -> Stats:
    mirror = breaker.mirror
    timings: list[float] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        for i in range(samples + samples % 2):  # even: the circuit ends closed
            state = "forced_open" if i % 2 == 0 else "closed"
            db.execute(conn, "circuit_force", key=KEY, state=state, actor="bench",
                       reason="propagation")
            committed = time.perf_counter()
            end = time.monotonic() + 5
            while mirror.known_state(KEY) != state:
                if time.monotonic() > end:
                    raise RuntimeError("the mirror did not follow a forced state within 5 s")
                time.sleep(0.00005)
            timings.append((time.perf_counter() - committed) * 1000.0)
    return Stats.of(timings)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def redis_server() -> Iterator[int]:
    """A throwaway redis-server (no persistence) on a free port."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    import redis

    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="cg-bench-redis-") as workdir:
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            end = time.monotonic() + 10
            while True:
                try:
                    client.ping()
                    break
                except redis.ConnectionError:
                    if proc.poll() is not None or time.monotonic() > end:
                        raise RuntimeError("redis-server did not start") from None
                    time.sleep(0.05)
            client.close()
            yield port
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def pybreaker_missing() -> str | None:
    """Why the pybreaker variant cannot run here, or None."""
    try:
        import pybreaker  # noqa: F401
        import redis  # noqa: F401
    except ImportError:
        return "pybreaker and redis are not installed (pip install 'consistency-guard[bench]')"
    if not (shutil.which("redis-server") or shutil.which("/usr/bin/redis-server")):
        return "redis-server is not installed (apt-get install redis-server)"
    return None


def _pybreaker(port: int, stack: ExitStack) -> dict[str, Callable[[], Any]]:
    import pybreaker
    import redis

    client = redis.Redis(port=port)
    stack.callback(client.close)
    storage = pybreaker.CircuitRedisStorage(pybreaker.STATE_CLOSED, client, namespace=KEY)
    peer = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=30, state_storage=storage)
    return {PB_CALL: lambda: peer.call(_noop), PB_WITH: _wrapped(peer, "calling")}


def run(dsn: str, *, repeat: int, seconds: float, clients: int) -> dict[str, Any]:
    skipped = pybreaker_missing()
    with ExitStack() as stack:
        mirrored, ops = _ours(dsn)
        if skipped is None:
            ops.update(_pybreaker(stack.enter_context(redis_server()), stack))
        latency = interleaved_latency(ops, repeat)
        per_second = interleaved_rate(ops, clients, seconds)
        propagation = _propagation(dsn, mirrored, max(2, min(repeat // 10, 200)))
    ratios: dict[str, float] = {}
    if skipped is None:
        for ours, peer in ((CALL, PB_CALL), (WITH, PB_WITH)):
            ratios[f"{peer} / {ours} (median)"] = latency[peer].median_ms / latency[ours].median_ms
            ratios[f"{ours} / {peer} ({clients} threads)"] = per_second[ours] / per_second[peer]
    for ours, direct in ((CALL, CALL_DB), (WITH, WITH_DB)):
        ratios[f"{direct} / {ours} (median)"] = latency[direct].median_ms / latency[ours].median_ms
    return {
        "latency_ms": {name: s.as_dict() for name, s in latency.items()},
        "per_second": per_second,
        "ratios": ratios,
        "pybreaker_skipped": skipped,
        "propagation_ms": propagation.as_dict(),
        "workers": breaker_mod.WORKERS,
    }
