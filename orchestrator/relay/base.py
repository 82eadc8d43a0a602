"""What every sink shares: how a send fails, the sink URL (parsed once, with
its secrets known so they can be kept out of logs, errors and the database)
and the Sink interface. The alert a sink sends is orchestrator.alerts.Alert."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TypeVar
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit

from orchestrator.alerts import SEVERITIES, Alert
from orchestrator.errors import GuardError

# Query parameters the relay consumes itself; they are not part of the
# destination and do not change a sink's identity.
RELAY_OPTIONS = ("min_severity", "dashboard_url", "digest")
# Slow on purpose: the fingerprint is stored, and a URL may hold a short password.
_FINGERPRINT_SALT = b"consistency-guard relay sink v1"
_FINGERPRINT_ROUNDS = 100_000
# Path segments that look like a token (Slack's T.../B.../secret, a webhook
# key): long, or mixing letters and digits. Plain words (/services, /hooks)
# stay readable in errors.
_TOKEN_SEGMENT = re.compile(r"^(?=.*\d)(?=.*[A-Za-z])[A-Za-z0-9_\-.~%]{6,}$|^[^/]{20,}$")
# Query parameters whose value is a secret however short it is.
_SECRET_PARAMS = re.compile(r"pass|pwd|secret|token|key|auth|sig|cred", re.IGNORECASE)
# Shorter secrets would redact ordinary words out of error messages.
_MIN_SECRET = 3


class DeliveryError(Exception):
    """A send that did not go through. ``permanent`` failures are not retried."""

    permanent = False

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransientError(DeliveryError):
    """Connection errors, timeouts, 5xx, 429: worth trying again later."""


class PermanentError(DeliveryError):
    """Other 4xx, refused addresses, bad credentials: trying again changes nothing."""

    permanent = True


# Schemes the relay delivers itself; any other goes to Apprise.
OWN_SCHEMES = frozenset({"webhook+http", "webhook+https", "slack+https", "alertmanager+http",
                         "alertmanager+https", "smtp", "smtps", "stdout"})


@dataclass(frozen=True)
class SinkURL:
    raw: str
    scheme: str
    parts: SplitResult
    query: tuple[tuple[str, str], ...]
    min_severity: str = "info"
    dashboard_url: str | None = None
    digest_seconds: int | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)
    # What kinds of secret the URL holds ("password", "token in the path"...):
    # worth a warning when the URL was typed on a command line.
    cli_secrets: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: str) -> SinkURL:
        raw = raw.strip()
        scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
        if not scheme:
            raise GuardError("invalid sink URL: expected scheme://..., e.g. webhook+https://host/path")
        try:
            parts = urlsplit(raw)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as exc:
            raise GuardError(f"invalid sink URL {scheme}://***: {exc}") from None
        pairs = parse_qsl(parts.query, keep_blank_values=True)
        opts = dict(p for p in pairs if p[0] in RELAY_OPTIONS)
        rest = tuple(p for p in pairs if p[0] not in RELAY_OPTIONS)
        severity = opts.get("min_severity", "info").lower()
        if severity not in SEVERITIES:
            raise GuardError(f"invalid sink URL {scheme}://***: min_severity must be one of "
                             f"{', '.join(SEVERITIES)}, got {severity!r}")
        digest = None
        if "digest" in opts:
            try:
                digest = int(opts["digest"])
            except ValueError:
                digest = 0
            if digest <= 0:
                raise GuardError(f"invalid sink URL {scheme}://***: digest must be a positive "
                                 "number of seconds")
        secrets, on_command_line = _secrets(parts, rest)
        secrets.add(raw)
        return cls(raw=raw, scheme=scheme, parts=parts._replace(query=urlencode(rest)),
                   query=rest, min_severity=severity, dashboard_url=opts.get("dashboard_url"),
                   digest_seconds=digest, cli_secrets=on_command_line,
                   secrets=tuple(sorted((s for s in secrets if len(s) >= _MIN_SECRET),
                                        key=len, reverse=True)))

    @property
    def host(self) -> str:
        return self.parts.hostname or ""

    @property
    def port(self) -> int | None:
        return self.parts.port

    @property
    def name(self) -> str:
        """The URL as it may be shown and stored: scheme, host and port only,
        then ``#`` and the first hex digits of the fingerprint, so two sinks on
        one host stay apart. Schemes handed to Apprise often carry the secret
        in the host part (``pover://user@token``, ``ntfy://topic``): nothing
        of theirs is shown."""
        tag = f"#{self.fingerprint[:6]}"
        if self.scheme not in OWN_SCHEMES:
            return f"{self.scheme}://***{tag}"
        if self.scheme == "stdout":
            return "stdout://"
        where = self.host + (f":{self.port}" if self.port else "")
        hidden = "/***" if len(self.parts.path) > 1 or self.parts.query else ""
        return f"{self.scheme}://{where}{hidden}{tag}"

    @cached_property
    def fingerprint(self) -> str:
        """Identity in relay_sinks: a salted PBKDF2 of the destination (relay
        options excluded), so the database never holds the URL or its secrets."""
        canonical = self.parts._replace(scheme=self.scheme).geturl()
        return hashlib.pbkdf2_hmac("sha256", canonical.encode(), _FINGERPRINT_SALT,
                                   _FINGERPRINT_ROUNDS).hex()

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    def require_host(self) -> None:
        if not self.host:
            raise GuardError(f"invalid sink URL {self.name}: a host is required")


def _secrets(parts: SplitResult, rest: tuple[tuple[str, str], ...]
             ) -> tuple[set[str], tuple[str, ...]]:
    """Every form in which a secret of the URL may come back in an error, a
    log line or an echo of the server: raw, URL-decoded, URL-encoded, and for
    user info the base64 of ``user:pass`` (HTTP Basic) and of
    ``\\0user\\0pass`` (SMTP AUTH PLAIN) and of each half (AUTH LOGIN)."""
    found: set[str] = {parts.netloc} if parts.password else set()
    kinds: list[str] = []
    user = unquote(parts.username or "")
    password = unquote(parts.password or "")
    if password:
        kinds.append("a password")
        pairs = [f"{user}:{password}", f"\0{user}\0{password}", f"{user}\0{user}\0{password}",
                 user, password]
        found |= {password, user, f"{user}:{password}"}
        found |= {base64.b64encode(p.encode()).decode() for p in pairs if p}
    elif user:
        kinds.append("user info")
        found.add(user)
    segments = [seg for seg in parts.path.split("/") if _TOKEN_SEGMENT.match(seg)]
    if segments:
        kinds.append("a token in the path")
        found |= set(segments)
        found.add(parts.path)
    for key, value in rest:
        if len(value) >= 6 or (_SECRET_PARAMS.search(key) and value):
            found.add(value)
            if _SECRET_PARAMS.search(key):
                kinds.append(f"a {key}= parameter")
    if parts.query:
        found.add(parts.query)
    if parts.scheme not in OWN_SCHEMES and (parts.netloc or parts.path):
        # Apprise URLs hold their tokens anywhere (ntfy://topic, pover://user@token).
        kinds.append("a service token")
        found |= {parts.netloc, parts.path.strip("/")}
    every = set()
    for secret in found:
        every |= {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}
    return every, tuple(dict.fromkeys(kinds))


T = TypeVar("T")

# Threads one sink's blocking sends (Apprise, stdout) may hold at once,
# those abandoned at their deadline and still stuck included: a server that
# drips its answer, or a reader that stopped reading, holds that many, never
# more. A send waiting for one of them is cancelled at its deadline as well.
BLOCKING_THREADS = 16
_THREAD_WAIT = 0.05  # seconds between looks for a free thread while all are held

log = logging.getLogger("consistency.relay")


class BlockingThreads:
    """Runs a sink's blocking sends, each in a daemon thread of its own, at
    most ``limit`` of them alive at once."""

    def __init__(self, name: str, limit: int = BLOCKING_THREADS) -> None:
        self.name = name
        self.limit = limit
        self.alive = 0
        self._lock = threading.Lock()
        self._saturated = False

    def _take(self) -> bool:
        with self._lock:
            if self.alive < self.limit:
                self.alive += 1
                self._saturated = False
                return True
            first, self._saturated = not self._saturated, True
        if first:
            log.warning("%s: all %s threads of its blocking sends are held by sends past "
                        "their deadline; new sends wait for one", self.name, self.limit)
        return False

    def _give_back(self) -> None:
        with self._lock:
            self.alive -= 1

    async def run(self, fn: Callable[[], T]) -> T:
        """``fn()`` in a thread of its own. Cancelled at the deadline, the
        send is given up and its thread abandoned: unlike an executor's, a
        stuck thread never holds up the relay's exit."""
        while not self._take():
            await asyncio.sleep(_THREAD_WAIT)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()

        def settle(result: T | None, error: BaseException | None) -> None:
            if future.done():
                return
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(result)  # type: ignore[arg-type]

        def target() -> None:
            result: T | None = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting task
                error = exc
            finally:
                self._give_back()
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, result, error)

        try:
            threading.Thread(target=target, name="relay-blocking-send", daemon=True).start()
        except BaseException:
            self._give_back()
            raise
        return await future


class Sink:
    """One destination. ``send`` returns when the destination accepted the
    alert and raises DeliveryError otherwise; the relay runs many sends of
    one sink at once on its event loop and cancels a send at its deadline, so
    a send must never block the loop (a blocking library goes through
    ``self.blocking.run``)."""

    def __init__(self, url: SinkURL) -> None:
        self.url = url
        self.blocking = BlockingThreads(url.name)

    @property
    def name(self) -> str:
        return self.url.name

    async def send(self, alert: Alert) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    async def send_digest(self, alerts: list[Alert]) -> None:
        """Several alerts as one message; only sinks that take ``digest=`` have it."""
        raise NotImplementedError  # pragma: no cover

    async def close(self) -> None:
        """Release connections; the default has none."""
