"""Real local servers for the relay tests: an HTTP server that records every
POST (webhook, Slack and Alertmanager formats alike) and answers from a
per-path script, and an aiosmtpd SMTP server that records every message."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    body: Any
    at: float


@dataclass
class Recorder:
    posts: list[Post] = field(default_factory=list)
    # path -> list of (status, headers, body) answered in order; then 200.
    script: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(
        default_factory=lambda: defaultdict(list))
    always: dict[str, int] = field(default_factory=dict)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, path: str) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.path == path]

    def ids(self, path: str) -> list[int]:
        return [int(p.headers["Idempotency-Key"]) for p in self.to(path)]

    def wait_for(self, predicate, timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    recorder: Recorder

    def log_message(self, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        if len(raw) < length:
            # The client died mid-request (a killed relay): nothing was delivered.
            self.close_connection = True
            return
        rec = self.recorder
        if rec.delay:
            time.sleep(rec.delay)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        with rec.lock:
            rec.posts.append(Post(self.path.split("?")[0], dict(self.headers), body,
                                  time.monotonic()))
            queued = rec.script.get(self.path.split("?")[0])
            if queued:
                status, headers, payload = queued.pop(0)
            elif self.path.split("?")[0] in rec.always:
                status, headers, payload = rec.always[self.path.split("?")[0]], {}, b"nope"
            else:
                status, headers, payload = 200, {}, b"ok"
        try:
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            self.close_connection = True  # the relay was killed before reading the answer


class HttpRecorder:
    def __init__(self) -> None:
        self.recorder = Recorder()
        handler = type("Handler", (_Handler,), {"recorder": self.recorder})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, scheme: str, path: str = "") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> HttpRecorder:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpRecorder:
    """aiosmtpd on loopback; ``messages`` holds every message received."""

    def __init__(self, refuse: str | None = None, tls: tuple[str, str] | None = None) -> None:
        import ssl

        from aiosmtpd.controller import Controller

        self.tls_sessions: list[bool] = []
        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        outer = self

        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address == refuse:
                    return "550 5.1.1 no such user"
                envelope.rcpt_tos.append(address)
                return "250 OK"

            async def handle_DATA(self, server, session, envelope):
                outer.tls_sessions.append(session.ssl is not None)
                outer.messages.append(message_from_bytes(envelope.original_content))
                outer.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                return "250 OK"

        from pgcluster import free_port

        self.port = free_port()
        kwargs: dict = {}
        if tls:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*tls)
            kwargs = {"tls_context": context, "require_starttls": True}
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, **kwargs)

    def __enter__(self) -> SmtpRecorder:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
