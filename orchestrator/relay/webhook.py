"""``webhook+http(s)://host/path``: the alert as a JSON object, its id as the
Idempotency-Key header so the receiver can drop a repeated delivery. User
info in the URL (``https://user:pass@host/...``) is sent as HTTP Basic auth."""

from __future__ import annotations

from orchestrator.relay.base import Alert, Sink, SinkURL
from orchestrator.relay.httppost import JsonPoster


class WebhookSink(Sink):
    prefix = "webhook+"

    def __init__(self, url: SinkURL) -> None:
        super().__init__(url)
        url.require_host()
        target = url.parts._replace(scheme=url.scheme.removeprefix(self.prefix)).geturl()
        self.poster = JsonPoster(target)

    def payload(self, alert: Alert) -> object:
        body = alert.as_json()
        if self.url.dashboard_url:
            body["dashboard_url"] = self.url.dashboard_url
        return body

    async def send(self, alert: Alert) -> None:
        await self.poster.post(self.payload(alert), {"Idempotency-Key": alert.idempotency_key})

    async def close(self) -> None:
        await self.poster.close()
