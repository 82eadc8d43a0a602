"""``stdout://``: one JSON line per alert on standard output (logs go to stderr)."""

from __future__ import annotations

import json
import sys
import threading

from orchestrator.relay.base import Alert, Sink, TransientError

_lock = threading.Lock()


class StdoutSink(Sink):
    def send(self, alert: Alert) -> None:
        line = json.dumps(alert.as_json(), sort_keys=True, default=str)
        try:
            with _lock:
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
        except OSError as exc:
            raise TransientError(f"stdout: {exc}") from None
