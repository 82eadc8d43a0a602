"""orchestrator.retry: backoff with jitter, only transient errors, the last
error re-raised unchanged. The sleep is injected: nothing really sleeps."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from orchestrator.retry import RetryPolicy, is_transient


class Flaky:
    """Fails with the given exceptions in turn, then returns 'done'."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "done"


def policy(max_attempts: int = 3, base: float = 1.0, rnd: float = 0.5,
           sleeps: list[float] | None = None) -> RetryPolicy:
    record = sleeps if sleeps is not None else []
    return RetryPolicy(max_attempts, base, sleep=record.append, random=lambda: rnd)


def test_success_on_first_try_does_not_sleep() -> None:
    sleeps: list[float] = []
    fn = Flaky()
    assert policy(sleeps=sleeps).call(fn) == "done"
    assert fn.calls == 1 and sleeps == []


def test_success_on_third_attempt_after_two_transient_errors() -> None:
    sleeps: list[float] = []
    fn = Flaky(errors.SerializationFailure("conflict"), errors.DeadlockDetected("deadlock"))
    assert policy(base=0.5, rnd=0.0, sleeps=sleeps).call(fn) == "done"
    assert fn.calls == 3
    assert sleeps == [0.5, 1.0], "base * 2^(attempt-1), no jitter when the draw is 0"


def test_gives_up_after_max_attempts_with_the_original_exception() -> None:
    sleeps: list[float] = []
    last = errors.SerializationFailure("third")
    fn = Flaky(errors.SerializationFailure("first"), errors.SerializationFailure("second"), last,
               errors.SerializationFailure("never reached"))
    with pytest.raises(errors.SerializationFailure) as exc:
        policy(max_attempts=3, sleeps=sleeps).call(fn)
    assert exc.value is last, "the last error itself, not a tenacity RetryError"
    assert fn.calls == 3 and len(sleeps) == 2


@pytest.mark.parametrize("failure", [errors.UniqueViolation("dup"), errors.QueryCanceled("t/o"),
                                     errors.InvalidParameterValue("bad"), ValueError("bug")])
def test_non_transient_errors_are_not_retried(failure: BaseException) -> None:
    sleeps: list[float] = []
    fn = Flaky(failure)
    with pytest.raises(type(failure)) as exc:
        policy(sleeps=sleeps).call(fn)
    assert exc.value is failure and fn.calls == 1 and sleeps == []


@pytest.mark.parametrize("attempt", [1, 2, 3, 4, 6])
def test_delays_stay_within_the_jitter_bounds(attempt: int) -> None:
    base = 0.2
    nominal = base * 2 ** (attempt - 1)
    assert policy(base=base, rnd=0.0).delay(attempt) == pytest.approx(nominal)
    assert policy(base=base, rnd=0.999999).delay(attempt) == pytest.approx(nominal * 1.1, rel=1e-5)
    real = RetryPolicy(10, base)  # the real random source
    for _ in range(200):
        assert nominal <= real.delay(attempt) <= nominal * 1.1


def test_the_sleeps_of_a_run_follow_the_schedule_with_real_jitter() -> None:
    sleeps: list[float] = []
    fn = Flaky(*(errors.SerializationFailure(str(i)) for i in range(4)))
    RetryPolicy(5, 0.1, sleep=sleeps.append).call(fn)
    assert len(sleeps) == 4
    for i, slept in enumerate(sleeps, start=1):
        nominal = 0.1 * 2 ** (i - 1)
        assert nominal <= slept <= nominal * 1.1


def test_transient_classification() -> None:
    assert is_transient(errors.SerializationFailure())
    assert is_transient(errors.DeadlockDetected())
    assert is_transient(errors.AdminShutdown())
    assert is_transient(errors.CannotConnectNow())
    assert is_transient(psycopg.OperationalError("connection lost"))  # client side, no SQLSTATE
    assert not is_transient(errors.QueryCanceled())
    assert not is_transient(errors.UniqueViolation())
    assert not is_transient(RuntimeError())


def test_invalid_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(0, 1.0)
    with pytest.raises(ValueError, match="base_delay"):
        RetryPolicy(3, -1.0)
