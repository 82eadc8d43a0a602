"""``alertmanager+http(s)://host:port[/prefix]``: Prometheus Alertmanager API
v2. The alert id is a label, so a repeated delivery is the same Alertmanager
alert (deduplicated there) and two alerts never merge into one."""

from __future__ import annotations

from orchestrator.relay.base import Alert, Sink, SinkURL
from orchestrator.relay.httppost import JsonPoster


class AlertmanagerSink(Sink):
    def __init__(self, url: SinkURL) -> None:
        super().__init__(url)
        url.require_host()
        path = url.parts.path.rstrip("/") + "/api/v2/alerts"
        target = url.parts._replace(scheme=url.scheme.removeprefix("alertmanager+"),
                                    path=path).geturl()
        self.poster = JsonPoster(target)

    def payload(self, alert: Alert) -> list[dict[str, object]]:
        item: dict[str, object] = {
            "labels": {"alertname": alert.alert_type, "severity": alert.severity,
                       "entity": alert.entity, "entity_type": alert.entity_type,
                       "alert_id": alert.idempotency_key, "source": "consistency-guard"},
            "annotations": {"summary": f"{alert.alert_type} on {alert.entity}",
                            "description": alert.description},
            "startsAt": alert.detected_at.isoformat(),
        }
        if self.url.dashboard_url:
            item["generatorURL"] = self.url.dashboard_url
        return [item]

    async def send(self, alert: Alert) -> None:
        await self.poster.post(self.payload(alert), {"Idempotency-Key": alert.idempotency_key})

    async def close(self) -> None:
        await self.poster.close()
