"""POSTing JSON with aiohttp: one session (kept-alive connections) per sink,
and JsonPostSink, the base of every sink that POSTs an alert as JSON.

The relay puts a hard deadline around every send (connect + whole response)
and cancels it there; aiohttp aborts the connection on cancellation, so a
server that drips its answer one byte at a time cannot hold a send past it.
Credentials in the URL's user info go out as HTTP Basic auth."""

from __future__ import annotations

import base64
import email.utils
import json
import math
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import aiohttp

from orchestrator.alerts import Alert
from orchestrator.relay.base import PermanentError, Sink, SinkURL, TransientError

USER_AGENT = "consistency-guard-relay/1"


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After is either seconds or an HTTP date. A value that is no
    finite number of seconds (``inf``, ``nan``) is no instruction: None.
    A huge one is kept; the relay waits no longer than the give-up age."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


class JsonPoster:
    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.headers = {"User-Agent": USER_AGENT}
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self.headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
            host = parts.hostname or ""
            if ":" in host:
                host = f"[{host}]"
            parts = parts._replace(netloc=host + (f":{parts.port}" if parts.port else ""))
        self.url = parts.geturl()
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        # Created on first use: a session belongs to the running event loop.
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                headers=self.headers,
                # The relay's deadline bounds every send; no second clock here.
                timeout=aiohttp.ClientTimeout(total=None),
                connector=aiohttp.TCPConnector(limit=0))
        return self._session

    async def post(self, payload: Any, headers: dict[str, str] | None = None) -> int:
        """POST ``payload`` as JSON; returns the status of a 2xx answer and
        raises TransientError / PermanentError otherwise."""
        body = json.dumps(payload, default=str).encode()
        all_headers = {"Content-Type": "application/json", **(headers or {})}
        for reused in (True, False):
            try:
                async with self._client().post(self.url, data=body, headers=all_headers,
                                               allow_redirects=False) as resp:
                    data = await resp.read()
                    return check_status(resp.status, resp.headers.get("Retry-After"), data)
            except aiohttp.ServerDisconnectedError as exc:
                if reused:
                    # The server closed an idle kept-alive connection: try a
                    # fresh one (a duplicate carries the same idempotency key).
                    continue
                raise TransientError(f"connection error: {describe(exc)}") from None
            except aiohttp.ClientConnectorError as exc:
                raise TransientError(f"connection error: {describe(exc)}") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise TransientError(f"connection error: {describe(exc)}") from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__


def check_status(status: int, retry_after: str | None, body: bytes) -> int:
    if 200 <= status < 300:
        return status
    text = body[:300].decode("utf-8", "replace").strip()
    message = f"HTTP {status}" + (f": {text}" if text else "")
    if status in (408, 425, 429) or status >= 500:
        raise TransientError(message, retry_after=retry_after_seconds(retry_after))
    raise PermanentError(message)


class JsonPostSink(Sink):
    """POSTs ``payload(alert)`` as JSON to ``target(url)``, with the alert id
    as the Idempotency-Key header, so a receiver can drop a repeated delivery."""

    # The scheme's prefix before http(s), e.g. "webhook+".
    prefix = ""

    def __init__(self, url: SinkURL) -> None:
        super().__init__(url)
        url.require_host()
        self.poster = JsonPoster(self.target(url))

    def target(self, url: SinkURL) -> str:
        """The http(s) URL to POST to."""
        return url.parts._replace(scheme=url.scheme.removeprefix(self.prefix)).geturl()

    def payload(self, alert: Alert) -> object:  # pragma: no cover - interface
        raise NotImplementedError

    async def send(self, alert: Alert) -> None:
        await self.poster.post(self.payload(alert), {"Idempotency-Key": alert.idempotency_key})

    async def close(self) -> None:
        await self.poster.close()
