"""The day's script: its timing (real seconds against the played day), the
guard's timers for the run, and what happened, for the live view."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

KEY = "appointment_booking:service:1"
DAY_START = 8 * 3600          # the played day starts at 08:00
CALLS_PER_HOUR = 90           # a busy practice's phone line, in simulated time
MAX_CALLS_PER_SECOND = 8.0    # real time: what 2 shared cores play comfortably
AGENT_LINES = 6               # calls handled at once
OUTAGE = (0.35, 0.55)         # the calendar's outage, as fractions of the run
LEGACY_AT, IMPORT_AT = 0.25, 0.70
ACTOR = "consistency demo"


@dataclass(frozen=True)
class DemoOptions:
    dsn: str | None = None
    minutes: float = 2.0
    speed: float = 300.0
    serve: bool = False
    keep: bool = False
    sinks: tuple[str, ...] = ()
    seed: int = 13


@dataclass(frozen=True)
class Timers:
    """The guard's timers for the run, in real seconds."""

    max_age: int
    cooldown: float
    timeout: float
    check_every: float

    @classmethod
    def for_run(cls, speed: float, seconds: float) -> Timers:
        outage = (OUTAGE[1] - OUTAGE[0]) * seconds
        return cls(max_age=max(3, round(300 / speed)),
                   # Short enough for probes within the outage, long enough
                   # for some bookings to be refused in between.
                   cooldown=min(max(1.0, 30 / speed), max(outage / 3, 0.2)),
                   timeout=max(0.5, min(10.0, 10 / speed)),
                   check_every=max(0.5, 300 / speed))

    def settings(self) -> dict[str, float | int]:
        return {"validation.max_appointment_age_seconds": self.max_age,
                "circuit_breaker.cooldown_seconds": round(self.cooldown, 3),
                "circuit_breaker.timeout_seconds": round(self.timeout, 3)}


@dataclass
class Clock:
    seconds: float
    speed: float
    started: float = field(default_factory=time.monotonic)
    started_wall: datetime = field(default_factory=lambda: datetime.now(UTC))

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def fraction(self) -> float:
        return min(1.0, self.elapsed() / self.seconds)

    def label(self, real_offset: float | None = None) -> str:
        offset = self.elapsed() if real_offset is None else real_offset
        total = int(DAY_START + offset * self.speed) % 86400
        return f"{total // 3600:02d}:{total % 3600 // 60:02d}"

    def label_at(self, wall: datetime | None) -> str:
        if wall is None:
            return "-"
        return self.label((wall - self.started_wall).total_seconds())

    def outage(self) -> bool:
        return OUTAGE[0] <= self.elapsed() / self.seconds < OUTAGE[1]


@dataclass
class Events:
    """What the script did, for the live view (the summary reads the database)."""

    lines: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, line: str) -> None:
        with self._lock:
            self.lines.append(line)

    def last(self, n: int) -> list[str]:
        with self._lock:
            return self.lines[-n:]
