"""`consistency up`'s supervisor: a part that ends is restarted with backoff
and reported, and stops when the process does."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


def wait_for(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_part_that_crashes_is_restarted_and_reported() -> None:
    from orchestrator import server, up

    health = server.Health()
    halt = threading.Event()
    calls: list[float] = []
    release = threading.Event()

    def run() -> None:
        calls.append(time.monotonic())
        if len(calls) == 1:
            raise RuntimeError("lost the database")
        release.wait(10)

    part = up.Part("worker", run, release.set, health, halt, max_backoff=0.2)
    part.start()
    wait_for(lambda: len(calls) == 2, timeout=10, what="the restart")
    state = health.snapshot()["worker"]
    assert state["state"] == "running" and state["restarts"] == 1
    assert "RuntimeError: lost the database" in state["last_error"]
    halt.set()
    part.stop(timeout=5)
    assert not part.thread.is_alive()
    assert health.snapshot()["worker"]["state"] == "stopped"
