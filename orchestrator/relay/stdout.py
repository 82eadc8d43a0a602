"""``stdout://``: one JSON line per alert on standard output (logs go to stderr)."""

from __future__ import annotations

import json
import sys
import threading

from orchestrator.alerts import Alert
from orchestrator.relay.base import Sink, TransientError

_lock = threading.Lock()


def _write(line: str) -> None:
    with _lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class StdoutSink(Sink):
    async def send(self, alert: Alert) -> None:
        # Off the event loop: a reader that stops reading fills the pipe and
        # blocks the write, which must not stall every other sink.
        line = json.dumps(alert.as_json(), sort_keys=True, default=str)
        try:
            await self.blocking.run(lambda: _write(line))
        except OSError as exc:
            raise TransientError(f"stdout: {exc}") from None
