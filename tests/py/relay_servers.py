"""Real local servers for the relay tests: an HTTP server that records every
POST (webhook, Slack and Alertmanager formats alike) and answers from a
per-path script (or is down for a while, or never answers), a server that
drips its answer one byte at a time, an aiosmtpd SMTP server that records
every message, and an SMTP server that echoes AUTH back in its refusal."""

from __future__ import annotations

import base64
import json
import socketserver
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
    status: int = 0


@dataclass
class Recorder:
    posts: list[Post] = field(default_factory=list)
    # path -> list of (status, headers, body) answered in order; then 200.
    script: dict[str, list[tuple[int, dict[str, str], bytes]]] = field(
        default_factory=lambda: defaultdict(list))
    always: dict[str, int] = field(default_factory=dict)
    # path -> headers added to every answer an `always` status gives
    always_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    # path -> time.monotonic() until which the path answers 500
    down_until: dict[str, float] = field(default_factory=dict)
    # paths that never answer (until the server shuts down)
    hang: set[str] = field(default_factory=set)
    closing: threading.Event = field(default_factory=threading.Event)
    delay: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def to(self, path: str) -> list[Post]:
        with self.lock:
            return [p for p in self.posts if p.path == path]

    def ids(self, path: str) -> list[int]:
        return [int(p.headers["Idempotency-Key"]) for p in self.to(path)]

    def accepted(self, path: str) -> list[int]:
        """Alert ids the path answered 2xx to, in order."""
        return [int(p.headers["Idempotency-Key"]) for p in self.to(path)
                if 200 <= p.status < 300]

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
        path = self.path.split("?")[0]
        post = Post(path, dict(self.headers), body, time.monotonic())
        with rec.lock:
            rec.posts.append(post)
            queued = rec.script.get(path)
            if path in rec.hang:
                status, headers, payload = 0, {}, b""
            elif queued:
                status, headers, payload = queued.pop(0)
            elif path in rec.always:
                status, headers, payload = (rec.always[path], rec.always_headers.get(path, {}),
                                            b"nope")
            elif time.monotonic() < rec.down_until.get(path, 0):
                status, headers, payload = 500, {}, b"down"
            else:
                status, headers, payload = 200, {}, b"ok"
            post.status = status
        if status == 0:
            rec.closing.wait(120)
            self.close_connection = True
            return
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
        self.recorder.closing.set()
        self.server.shutdown()
        self.server.server_close()


class _Background(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, handler: type[socketserver.BaseRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.port = self.server_address[1]
        self.closing = threading.Event()
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.closing.set()
        self.shutdown()
        self.server_close()


class DripServer(_Background):
    """Reads a request, then answers ``HTTP/1.1 200 OK`` one byte every
    ``interval`` seconds: every read of the client gets a byte in time, the
    answer never completes."""

    def __init__(self, interval: float = 2.0) -> None:
        self.interval = interval
        self.connections = 0
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer.connections += 1
                self.request.recv(65536)
                answer = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" * 100
                for byte in answer:
                    if outer.closing.wait(outer.interval):
                        return
                    try:
                        self.request.sendall(bytes([byte]))
                    except OSError:
                        return

        super().__init__(Handler)

    def url(self, scheme: str = "webhook+http", path: str = "/drip") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


class EchoAuthSmtp(_Background):
    """An SMTP server that offers AUTH and refuses it by quoting what the
    client sent, base64 and decoded: the worst a server may do with a password."""

    def __init__(self, mechanism: str = "PLAIN") -> None:
        self.auth_lines: list[str] = []
        outer = self

        class Handler(socketserver.StreamRequestHandler):
            def say(self, line: str) -> None:
                self.wfile.write(line.encode() + b"\r\n")
                self.wfile.flush()

            def refuse(self, said: str, token: str) -> None:
                try:
                    decoded = base64.b64decode(token).decode("utf-8", "replace")
                except ValueError:
                    decoded = "?"
                self.say(f"535 5.7.8 credentials rejected: {said} "
                         f"(decoded {decoded!r}, {decoded.replace(chr(0), ' ')})")

            def handle(self) -> None:
                self.say("220 echo.example ESMTP")
                for raw in self.rfile:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    verb = line.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.say("250-echo.example")
                        self.say(f"250 AUTH {mechanism}")
                    elif verb == "AUTH" and line.upper().startswith("AUTH LOGIN"):
                        outer.auth_lines.append(line)
                        parts = line.split()
                        if len(parts) > 2:  # the user name came with the command
                            user = parts[2]
                        else:
                            self.say("334 VXNlcm5hbWU6")  # "Username:"
                            user = self.rfile.readline().decode().strip()
                        self.say("334 UGFzc3dvcmQ6")  # "Password:"
                        password = self.rfile.readline().decode().strip()
                        self.refuse(f"{line} {user} {password}", password)
                    elif verb == "AUTH":
                        outer.auth_lines.append(line)
                        self.refuse(line, line.split()[-1])
                    elif verb == "QUIT":
                        self.say("221 bye")
                        return
                    else:
                        self.say("250 OK")

        super().__init__(Handler)


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

        from orchestrator.pgcluster import free_port

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
