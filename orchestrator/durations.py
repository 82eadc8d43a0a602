"""Durations on the command line: ``90s``, ``5m``, ``1h``, ``2d``."""

from __future__ import annotations

import re
from datetime import timedelta

from orchestrator.errors import GuardError

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_duration(text: str, *, what: str = "duration") -> timedelta:
    match = _DURATION.match(text or "")
    if not match:
        raise GuardError(f"invalid {what} {text!r}: use a number and a unit, e.g. 30s, 5m, 1h, 2d")
    value = timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    if value <= timedelta(0):
        raise GuardError(f"invalid {what} {text!r}: must be greater than 0")
    return value
