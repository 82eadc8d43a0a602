"""``webhook+http(s)://host/path``: the alert as a JSON object, its id as the
Idempotency-Key header so the receiver can drop a repeated delivery. User
info in the URL (``https://user:pass@host/...``) is sent as HTTP Basic auth."""

from __future__ import annotations

from orchestrator.alerts import Alert
from orchestrator.relay.httppost import JsonPostSink


class WebhookSink(JsonPostSink):
    prefix = "webhook+"

    def payload(self, alert: Alert) -> object:
        body = alert.as_json()
        if self.url.dashboard_url:
            body["dashboard_url"] = self.url.dashboard_url
        return body
