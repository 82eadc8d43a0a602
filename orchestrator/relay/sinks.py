"""From sink URLs (command line, sinks file, CONSISTENCY_SINKS) to Sinks."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.errors import GuardError
from orchestrator.relay.alertmanager import AlertmanagerSink
from orchestrator.relay.apprise_sink import AppriseSink
from orchestrator.relay.base import Sink, SinkURL
from orchestrator.relay.slack import SlackSink
from orchestrator.relay.smtp import EmailSink
from orchestrator.relay.stdout import StdoutSink
from orchestrator.relay.webhook import WebhookSink

ENV_VAR = "CONSISTENCY_SINKS"


def parse_sink(raw: str) -> Sink:
    """A Sink for ``raw``, or GuardError whose message holds no secret."""
    url = SinkURL.parse(raw)
    scheme = url.scheme
    if url.digest_seconds is not None and scheme not in ("smtp", "smtps"):
        raise GuardError(f"invalid sink URL {url.name}: digest= is for smtp:// and smtps:// only")
    if scheme in ("webhook+http", "webhook+https"):
        return WebhookSink(url)
    if scheme == "slack+https":
        return SlackSink(url)
    if scheme in ("slack+http", "slack"):
        raise GuardError(f"invalid sink URL {url.name}: Slack webhooks are slack+https://...")
    if scheme in ("alertmanager+http", "alertmanager+https"):
        return AlertmanagerSink(url)
    if scheme in ("smtp", "smtps"):
        return EmailSink(url)
    if scheme == "stdout":
        return StdoutSink(url)
    if scheme in ("http", "https", "webhook"):
        raise GuardError(f"invalid sink URL {url.name}: say which kind, e.g. "
                         f"webhook+{scheme if scheme != 'webhook' else 'https'}://...")
    return AppriseSink(url)


def parse_sinks(urls: Iterable[str]) -> list[Sink]:
    sinks: list[Sink] = []
    seen: set[str] = set()
    for raw in urls:
        sink = parse_sink(raw)
        if sink.url.fingerprint in seen:
            raise GuardError(f"sink {sink.name} given twice")
        seen.add(sink.url.fingerprint)
        sinks.append(sink)
    if not sinks:
        raise GuardError(f"no sink: pass --sink URL (repeatable), --sinks-file FILE or set "
                         f"{ENV_VAR}")
    return sinks


def read_sinks_file(path: str) -> list[str]:
    """One URL per line; blank lines and ``#`` comments are skipped. The file
    holds secrets, so one that group or others may read (or write) is
    refused, as ssh does with a private key."""
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise GuardError(f"sinks file {path} is not a regular file")
        if st.st_mode & 0o077:
            raise GuardError(f"sinks file {path} is open to group or others "
                             f"(mode {stat.S_IMODE(st.st_mode):04o}): chmod 600 {path}")
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise GuardError(f"cannot read sinks file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise GuardError(f"sinks file {path} is not UTF-8 text") from None
    return [line.strip() for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class SinkSources:
    urls: list[str]
    # One line each: a secret typed on the command line is visible in `ps`.
    warnings: list[str] = field(default_factory=list)


def collect_sink_urls(cli_urls: Iterable[str], sinks_file: str | None,
                      env: Mapping[str, str] | None = None) -> SinkSources:
    """--sink URLs and the sinks file together; CONSISTENCY_SINKS
    (space-separated) when neither is given."""
    env = os.environ if env is None else env
    cli = list(cli_urls)
    urls = cli + (read_sinks_file(sinks_file) if sinks_file else [])
    if not cli and not sinks_file:
        urls = env.get(ENV_VAR, "").split()
    warnings = []
    for raw in cli:
        try:
            kinds = SinkURL.parse(raw).cli_secrets
        except GuardError:
            continue  # parse_sinks reports it
        if kinds:
            warnings.append(
                f"warning: --sink {SinkURL.parse(raw).name} carries {' and '.join(kinds)} on the "
                f"command line, where every local user sees it (ps); pass it in {ENV_VAR} or "
                "--sinks-file instead")
    return SinkSources(urls, warnings)
