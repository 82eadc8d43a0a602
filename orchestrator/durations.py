"""Durations on the command line: ``90s``, ``5m``, ``1h``, ``2d``.

One parser for every duration option, each option with its own minimum and
maximum (a ``Bounds``): a value out of range is a usage error (one line,
exit 2), never an overflow deeper down.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal

from orchestrator.errors import GuardError


@dataclass(frozen=True)
class Bounds:
    what: str
    minimum: timedelta = timedelta(seconds=1)
    maximum: timedelta = timedelta(days=36500)


# check --window: the whole table is "since the oldest call"; a century covers it.
WINDOW = Bounds("window")
# check --every: more often than once a second only fills check_runs.
INTERVAL = Bounds("interval", maximum=timedelta(days=7))
# retention run --older-than: as far back as retention.alert_days may reach.
AGE = Bounds("age")
ANY = Bounds("duration")
# relay: a delivery is retried until this age; a month outlasts any outage worth waiting for.
GIVE_UP = Bounds("--give-up-after", maximum=timedelta(days=30))
# relay: the longest wait between two attempts.
BACKOFF_CAP = Bounds("--backoff-cap", maximum=timedelta(days=1))
# relay: what a new sink also receives, and which dead deliveries a redrive takes.
BACKLOG = Bounds("--backlog")
SINCE = Bounds("--since")

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def describe(value: timedelta) -> str:
    """The largest unit of ``s``, ``m``, ``h``, ``d`` that says ``value`` exactly."""
    seconds = Decimal(str(value.total_seconds()))
    for unit in ("d", "h", "m"):
        count = seconds / _SECONDS[unit]
        if count >= 1 and count == count.to_integral_value():
            return f"{int(count)}{unit}"
    return f"{seconds.normalize():f}s"


def parse_duration(text: str, bounds: Bounds = ANY) -> timedelta:
    """``text`` as a timedelta within ``bounds``, else GuardError. The bounds
    are checked on the exact decimal value, before any timedelta exists (one
    of 999999999999 days would overflow)."""
    what = bounds.what
    match = _DURATION.match(text or "")
    if not match:
        raise GuardError(f"invalid {what} {text!r}: use a number and a unit, e.g. 30s, 5m, 1h, 2d")
    seconds = Decimal(match.group(1)) * _SECONDS[match.group(2)]
    if seconds <= 0:
        raise GuardError(f"invalid {what} {text!r}: must be greater than 0")
    if seconds < Decimal(str(bounds.minimum.total_seconds())):
        raise GuardError(f"invalid {what} {text!r}: must be at least {describe(bounds.minimum)}")
    if seconds > Decimal(str(bounds.maximum.total_seconds())):
        raise GuardError(f"invalid {what} {text!r}: must be at most {describe(bounds.maximum)}")
    return timedelta(seconds=float(seconds))
