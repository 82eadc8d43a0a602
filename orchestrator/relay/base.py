"""What every sink shares: the alert it sends, how a send fails, and the sink
URL (parsed once, with its secrets known so they can be kept out of logs,
errors and the database)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any
from urllib.parse import SplitResult, parse_qsl, unquote, urlencode, urlsplit

from orchestrator.errors import GuardError

SEVERITIES = ("info", "warning", "critical")
# Query parameters the relay consumes itself; they are not part of the
# destination and do not change a sink's identity.
RELAY_OPTIONS = ("min_severity", "dashboard_url", "digest")
# Slow on purpose: the fingerprint is stored, and a URL may hold a short password.
_FINGERPRINT_SALT = b"consistency-guard relay sink v1"
_FINGERPRINT_ROUNDS = 100_000


@dataclass(frozen=True)
class Alert:
    id: int
    alert_type: str
    severity: str
    entity_type: str
    entity_id: int | None
    description: str
    metadata: dict[str, Any]
    detected_at: datetime
    auto_corrected: bool = False

    @property
    def idempotency_key(self) -> str:
        return str(self.id)

    @property
    def entity(self) -> str:
        return f"{self.entity_type}/{self.entity_id}" if self.entity_id is not None \
            else self.entity_type

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "alert_type": self.alert_type, "severity": self.severity,
                "entity_type": self.entity_type, "entity_id": self.entity_id,
                "description": self.description, "metadata": self.metadata,
                "detected_at": self.detected_at.isoformat(),
                "auto_corrected": self.auto_corrected}


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
        secrets = {raw, parts.netloc}
        if parts.password:
            secrets |= {parts.password, unquote(parts.password)}
        if parts.username:
            secrets |= {parts.username, unquote(parts.username)}
        if len(parts.path) > 1:
            secrets.add(parts.path)
        if parts.query:
            secrets.add(parts.query)
            secrets |= {v for _, v in rest if len(v) >= 6}
        return cls(raw=raw, scheme=scheme, parts=parts._replace(query=urlencode(rest)),
                   query=rest, min_severity=severity, dashboard_url=opts.get("dashboard_url"),
                   digest_seconds=digest,
                   secrets=tuple(sorted((s for s in secrets if s), key=len, reverse=True)))

    @property
    def host(self) -> str:
        return self.parts.hostname or ""

    @property
    def port(self) -> int | None:
        return self.parts.port

    @property
    def name(self) -> str:
        """The URL as it may be shown and stored: scheme, host and port only.
        Schemes handed to Apprise often carry the secret in the host part
        (``pover://user@token``, ``ntfy://topic``): nothing of theirs is shown."""
        if self.scheme not in OWN_SCHEMES:
            return f"{self.scheme}://***"
        where = self.host + (f":{self.port}" if self.port else "")
        hidden = "/***" if len(self.parts.path) > 1 or self.parts.query else ""
        return f"{self.scheme}://{where}{hidden}"

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


class Sink:
    """One destination. ``send`` returns when the destination accepted the
    alert and raises DeliveryError otherwise; it may be called from several
    threads at once."""

    def __init__(self, url: SinkURL) -> None:
        self.url = url

    @property
    def name(self) -> str:
        return self.url.name

    def send(self, alert: Alert) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def send_digest(self, alerts: list[Alert]) -> None:
        """Several alerts as one message; only sinks that take ``digest=`` have it."""
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        """Release connections; the default has none."""
