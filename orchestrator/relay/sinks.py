"""From a sink URL to a Sink."""

from __future__ import annotations

from collections.abc import Iterable

from orchestrator.errors import GuardError
from orchestrator.relay.alertmanager import AlertmanagerSink
from orchestrator.relay.apprise_sink import AppriseSink
from orchestrator.relay.base import Sink, SinkURL
from orchestrator.relay.slack import SlackSink
from orchestrator.relay.smtp import EmailSink
from orchestrator.relay.stdout import StdoutSink
from orchestrator.relay.webhook import WebhookSink


def parse_sink(raw: str, timeout: float = 10.0) -> Sink:
    """A Sink for ``raw``, or GuardError whose message holds no secret."""
    url = SinkURL.parse(raw)
    scheme = url.scheme
    if url.digest_seconds is not None and scheme not in ("smtp", "smtps"):
        raise GuardError(f"invalid sink URL {url.name}: digest= is for smtp:// and smtps:// only")
    if scheme in ("webhook+http", "webhook+https"):
        return WebhookSink(url, timeout)
    if scheme == "slack+https":
        return SlackSink(url, timeout)
    if scheme in ("slack+http", "slack"):
        raise GuardError(f"invalid sink URL {url.name}: Slack webhooks are slack+https://...")
    if scheme in ("alertmanager+http", "alertmanager+https"):
        return AlertmanagerSink(url, timeout)
    if scheme in ("smtp", "smtps"):
        return EmailSink(url, timeout)
    if scheme == "stdout":
        return StdoutSink(url)
    if scheme in ("http", "https", "webhook"):
        raise GuardError(f"invalid sink URL {url.name}: say which kind, e.g. "
                         f"webhook+{scheme if scheme != 'webhook' else 'https'}://...")
    return AppriseSink(url)


def parse_sinks(urls: Iterable[str], timeout: float = 10.0) -> list[Sink]:
    sinks: list[Sink] = []
    seen: set[str] = set()
    for raw in urls:
        sink = parse_sink(raw, timeout)
        if sink.url.fingerprint in seen:
            raise GuardError(f"sink {sink.name} given twice")
        seen.add(sink.url.fingerprint)
        sinks.append(sink)
    if not sinks:
        raise GuardError("no sink: pass --sink URL (repeatable) or set CONSISTENCY_SINKS")
    return sinks
