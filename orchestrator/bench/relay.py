"""``consistency bench relay``: alerts per second delivered to a local
webhook by 1 and by 2 relay processes, by 1 relay whose second sink never
answers (the healthy sink's rate against the first row's), and
commit-to-delivery latency through the LISTEN wake-up path (the poll interval
is set far beyond the test, so the poll cannot be what delivers)."""

from __future__ import annotations

import asyncio
import json
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from rich.console import Console

from orchestrator import db
from orchestrator.bench import Stats, render, scratch_database, server_info


class _LoopServer:
    """A TCP server on an asyncio loop in a thread of its own; subclasses
    say what a client gets (``_client``)."""

    path = "/"

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, args=(ready,), daemon=True)
        self._thread.start()
        ready.wait()
        self.url = f"webhook+http://127.0.0.1:{self.port}{self.path}"

    def _serve(self, ready: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._server.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)


class _Webhook(_LoopServer):
    """A minimal HTTP/1.1 receiver: it records the arrival time of every alert
    id (first arrival wins) and answers 200. Kept light on purpose, so the
    figures measure the relay, not a thread-per-connection http.server."""

    path = "/bench"

    def __init__(self) -> None:
        self.arrivals: dict[int, float] = {}
        self.posts = 0
        self._missing: set[int] = set()
        self._done = threading.Event()
        self._lock = threading.Lock()
        super().__init__()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                headers = {}
                for line in head.decode("latin-1").split("\r\n")[1:]:
                    if ":" in line:
                        key, value = line.split(":", 1)
                        headers[key.strip().lower()] = value.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                now = time.perf_counter()
                key = headers.get("idempotency-key")
                self._record(int(key) if key else int(json.loads(body)["id"]), now)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    def _record(self, alert_id: int, at: float) -> None:
        with self._lock:
            self.posts += 1
            self.arrivals.setdefault(alert_id, at)
            self._missing.discard(alert_id)
            if not self._missing:
                self._done.set()

    def wait_for(self, ids: set[int], timeout: float) -> bool:
        with self._lock:
            self._missing = ids - self.arrivals.keys()
            if not self._missing:
                return True
            self._done.clear()
        return self._done.wait(timeout)


class _Hang(_LoopServer):
    """Accepts connections and reads requests, never answers."""

    path = "/hang"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(65536):
            pass
        writer.close()


# The hanging sink's sends end at this deadline (then retry with backoff).
_HANG_TIMEOUT = 2.0


@contextmanager
def _relays(dsn: str, urls: Sequence[str], count: int, poll: float) -> Iterator[None]:
    sinks = [arg for url in urls for arg in ("--sink", url)]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "relay", "--dsn", dsn, *sinks, "-q",
         "--poll", str(poll), "--timeout", str(_HANG_TIMEOUT)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()


def _wait_listening(conn: psycopg.Connection, count: int, timeout: float = 30) -> None:
    # Each relay holds a work and a listen connection.
    deadline = time.monotonic() + timeout
    while db.value(conn, "bench_relay_listeners") < 2 * count:
        if time.monotonic() > deadline:
            raise RuntimeError("relays did not start")
        time.sleep(0.05)


def _throughput(dsn: str, hook: _Webhook, relays: int, alerts: int, first: int,
                hang: _Hang | None = None) -> dict[str, Any]:
    urls = [hook.url] + ([hang.url] if hang else [])
    with psycopg.connect(dsn, autocommit=True) as conn, _relays(dsn, urls, relays, 2.0):
        _wait_listening(conn, relays)  # sinks are registered before the relay listens
        warm = db.value(conn, "bench_relay_raise_one", entity=first)
        if not hook.wait_for({warm}, 30):
            raise RuntimeError("warm-up alert was not delivered")
        with conn.transaction():
            start_id = db.value(conn, "bench_relay_last_alert_id")
            db.execute(conn, "bench_relay_raise_many", first=first + 1, n=alerts)
        start = time.perf_counter()
        ids = set(range(start_id + 1, start_id + alerts + 1))
        if not hook.wait_for(ids, 120):
            raise RuntimeError("not every alert was delivered within 120 s")
        elapsed = max(hook.arrivals[i] for i in ids) - start
    return {"relays": relays, "hanging_sink": hang is not None, "alerts": alerts,
            "seconds": elapsed, "alerts_per_s": alerts / elapsed if elapsed > 0 else float("inf")}


def _latency(dsn: str, hook: _Webhook, samples: int, first: int) -> Stats:
    latencies = []
    # A poll of an hour: whatever arrives came through LISTEN/NOTIFY.
    with psycopg.connect(dsn, autocommit=True) as conn, _relays(dsn, [hook.url], 1, 3600):
        _wait_listening(conn, 1)
        time.sleep(0.2)
        for i in range(samples):
            # Taken before the autocommit statement, so the figure also holds
            # raise_alert and the commit itself: an upper bound.
            committed = time.perf_counter()
            alert_id = db.value(conn, "bench_relay_raise_one", entity=first + i)
            if not hook.wait_for({alert_id}, 30):
                raise RuntimeError(f"alert {alert_id} was not delivered through the wake-up")
            latencies.append((hook.arrivals[alert_id] - committed) * 1000.0)
            time.sleep(0.005)
    return Stats.of(latencies)


def run(admin_dsn: str, alerts: int = 3000, samples: int = 200,
        relay_counts: Sequence[int] = (1, 2), hang_rounds: int = 3) -> dict[str, Any]:
    hook, hang = _Webhook(), _Hang()
    try:
        with scratch_database(admin_dsn, "cg_bench_relay") as dsn:
            with db.connect(dsn, autocommit=True) as conn:
                info = server_info(conn)
            rows = []
            first = 1
            for count in relay_counts:
                rows.append(_throughput(dsn, hook, count, alerts, first))
                first += alerts + 10
            # One relay without and with a hanging second sink, alternated
            # (so both see the same table size and machine load), medians
            # compared; last, because the hanging sink keeps its backlog.
            pairs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for _ in range(hang_rounds):
                for with_hang in (None, hang):
                    pairs[with_hang is not None].append(
                        _throughput(dsn, hook, 1, alerts, first, with_hang))
                    first += alerts + 10
            for with_hang in (False, True):
                runs = pairs[with_hang]
                rates = sorted(r["alerts_per_s"] for r in runs)
                median = statistics.median(rates)
                rows.append({**runs[0], "rounds": len(runs), "alerts_per_s": median,
                             "seconds": statistics.median(r["seconds"] for r in runs)})
            latency = _latency(dsn, hook, samples, first)
            duplicates = hook.posts - len(hook.arrivals)
    finally:
        hook.close()
        hang.close()
    base = rows[0]["alerts_per_s"]
    for row in rows[:-1]:
        row["ratio"] = row["alerts_per_s"] / base if base else 0.0
    # The healthy sink's rate while the other hangs, against the row before.
    hanging = rows[-1]["ratio"] = rows[-1]["alerts_per_s"] / rows[-2]["alerts_per_s"]
    for row in rows:
        row.setdefault("rounds", 1)
    return {"server": info, "throughput": rows, "latency_ms": latency.as_dict(),
            "duplicates": duplicates,
            "targets": {"alerts_per_s": 1000, "p99_ms": 200, "hanging_sink_ratio": 0.8},
            "meets_targets": min(r["alerts_per_s"] for r in rows) >= 1000
            and latency.p99_ms < 200 and hanging >= 0.8}


def print_report(result: dict[str, Any], console: Console | None = None) -> None:
    render("relay throughput (local webhook; ratio: to the first row, the hanging row to the "
           "row before it)",
           ["relays", "second sink", "alerts", "runs (median)", "seconds", "alerts/s", "ratio"],
           [[r["relays"], "hanging" if r["hanging_sink"] else "-", r["alerts"], r["rounds"],
             r["seconds"], r["alerts_per_s"], r["ratio"]] for r in result["throughput"]],
           console)
    lat = result["latency_ms"]
    render("commit-to-delivery latency via LISTEN (ms)", ["n", "median", "p95", "p99", "min"],
           [[lat["n"], lat["median_ms"], lat["p95_ms"], lat["p99_ms"], lat["min_ms"]]], console)
    (console or Console()).print(
        f"duplicates: {result['duplicates']} · targets (>= 1000 alerts/s, p99 < 200 ms, "
        "healthy sink >= 80 % of its rate while the other hangs): "
        + ("met" if result["meets_targets"] else "NOT met"))
