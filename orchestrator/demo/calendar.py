"""The demo's fake calendar API: a local HTTP server that books, and has an
outage in the middle of the run."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib import error as urlerror
from urllib import request as urlrequest

from orchestrator.demo.script import Clock, Timers


class CalendarError(Exception):
    """The calendar answered with an error (a failure for the breaker)."""


class Calendar:
    """POST /bookings -> 201 {"booking_id": ...}; during the outage, 503 at
    once or no answer until well past the breaker's deadline."""

    def __init__(self, clock: Clock, timers: Timers, seed: int) -> None:
        self.clock = clock
        self.hang = timers.timeout * 1.5
        self.requests = 0
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        calendar = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("content-length", "0")))
                status, body = calendar._answer()
                payload = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/bookings"
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="demo-calendar", daemon=True)
        self._thread.start()

    def _answer(self) -> tuple[int, dict[str, str]]:
        with self._lock:
            self.requests += 1
            draw = self._rng.random()
        if self.clock.outage():
            if draw < 0.6:
                return 503, {"error": "calendar unavailable"}
            self._stopping.wait(self.hang)
            return 504, {"error": "gateway timeout"}
        time.sleep(0.005 + draw * 0.02)
        return 201, {"booking_id": f"cal-{uuid.uuid4().hex[:12]}"}

    def book(self, slot: str) -> str:
        data = json.dumps({"slot": slot, "service_id": 1}).encode()
        req = urlrequest.Request(self.url, data=data, method="POST",
                                 headers={"content-type": "application/json"})
        try:
            with urlrequest.urlopen(req, timeout=self.hang + 1) as resp:
                return str(json.loads(resp.read())["booking_id"])
        except urlerror.HTTPError as exc:
            raise CalendarError(f"calendar answered {exc.code}") from None
        except (urlerror.URLError, OSError) as exc:
            raise CalendarError(f"calendar unreachable: {exc}") from None

    def close(self) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
