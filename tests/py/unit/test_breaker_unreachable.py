"""A breaker whose database never answered decides in-process, with the
default thresholds."""

from __future__ import annotations

import pytest

from orchestrator.breaker import CircuitBreaker
from orchestrator.pgcluster import free_port

KEY = "appointment_booking:service:1"


class Boom(Exception):
    pass


def test_unreachable_from_the_start_degrades(monkeypatch) -> None:
    dead = f"host=127.0.0.1 port={free_port()} user=postgres dbname=postgres"
    breaker = CircuitBreaker(KEY, dsn=dead)
    assert breaker.call(lambda: 5) == 5
    assert breaker.degraded and breaker.state() == "closed"
    for _ in range(3):
        with pytest.raises(Boom):
            breaker.call(lambda: (_ for _ in ()).throw(Boom()))
    assert breaker.state() == "open"
