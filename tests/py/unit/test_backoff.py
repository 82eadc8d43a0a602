"""orchestrator.backoff, the one backoff of the orchestrator: base * 2^(n-1),
capped, plus 0-10 % jitter; and the loops that wait with it."""

from __future__ import annotations

import threading

import pytest

from orchestrator import backoff, server, up


@pytest.mark.parametrize("attempt", [1, 2, 3, 7])
def test_delays_double_within_the_jitter(attempt: int) -> None:
    nominal = 0.25 * 2 ** (attempt - 1)
    assert backoff.delay(attempt, 0.25, rand=lambda: 0.0) == pytest.approx(nominal)
    assert backoff.delay(attempt, 0.25, rand=lambda: 1.0) == pytest.approx(nominal * 1.1)
    for _ in range(100):
        assert nominal <= backoff.delay(attempt, 0.25) <= nominal * 1.1


def test_the_cap_bounds_the_nominal_delay() -> None:
    assert backoff.delay(30, 0.5, 10.0, rand=lambda: 0.0) == 10.0
    assert backoff.delay(30, 0.5, 10.0, rand=lambda: 1.0) == pytest.approx(11.0)


@pytest.mark.parametrize("attempt", [0, -3])
def test_an_attempt_below_one_waits_the_base(attempt: int) -> None:
    assert backoff.delay(attempt, 2.0, rand=lambda: 0.0) == 2.0


def test_any_number_of_failures_gives_a_finite_wait() -> None:
    # A loop that fails for days counts thousands of failures: 0.5 * 2 ** 1100
    # does not fit in a float.
    assert backoff.delay(100_000, 0.5, 30.0, rand=lambda: 0.0) == 30.0
    assert backoff.delay(100_000, 0.5) < float("inf")


def test_a_part_of_up_survives_thousands_of_failures() -> None:
    health = server.Health()
    halt = threading.Event()
    failures = 0

    def run() -> None:
        nonlocal failures
        failures += 1
        if failures >= 1500:
            halt.set()
        raise RuntimeError("still no database")

    part = up.Part("worker", run, halt.set, health, halt, max_backoff=1e-6)
    part.start()
    part.thread.join(timeout=60)
    assert not part.thread.is_alive() and failures >= 1500
    assert health.snapshot()["worker"]["restarts"] >= 1499
    assert health.snapshot()["worker"]["state"] == "stopped"
