"""Any other scheme goes to Apprise (optional extra ``apprise``), which knows
some hundred notification services."""

from __future__ import annotations

from typing import Any

from orchestrator.alerts import Alert
from orchestrator.errors import GuardError
from orchestrator.relay.base import Sink, SinkURL, TransientError


def _apprise() -> Any:
    try:
        import apprise  # type: ignore[import-not-found]
    except ImportError:
        return None
    return apprise


class AppriseSink(Sink):
    def __init__(self, url: SinkURL) -> None:
        super().__init__(url)
        module = _apprise()
        if module is None:
            raise GuardError(
                f"unknown sink scheme {url.scheme!r}: use webhook+http(s), slack+https, smtp, "
                "smtps, alertmanager+http(s) or stdout, or install the apprise extra "
                "(pip install 'consistency-guard[apprise]') for other services")
        self.apprise = module.Apprise()
        target = url.parts._replace(scheme=url.scheme).geturl()
        if not self.apprise.add(target):
            raise GuardError(f"invalid sink URL {url.name}: Apprise does not understand it")

    async def send(self, alert: Alert) -> None:
        title = f"[{alert.severity.upper()}] {alert.alert_type} on {alert.entity}"
        body = f"{alert.description}\n\nalert #{alert.id}"
        # Apprise blocks; its own timeouts are per request, so the relay's
        # deadline gives up on the thread rather than waiting for it.
        if not await self.blocking.run(lambda: self.apprise.notify(body=body, title=title)):
            raise TransientError("Apprise could not notify the service")
