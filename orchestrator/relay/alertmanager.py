"""``alertmanager+http(s)://host:port[/prefix]``: Prometheus Alertmanager API
v2. The alert id is a label, so a repeated delivery is the same Alertmanager
alert (deduplicated there) and two alerts never merge into one."""

from __future__ import annotations

from orchestrator.alerts import Alert
from orchestrator.relay.base import SinkURL
from orchestrator.relay.httppost import JsonPostSink


class AlertmanagerSink(JsonPostSink):
    prefix = "alertmanager+"

    def target(self, url: SinkURL) -> str:
        return url.parts._replace(scheme=url.scheme.removeprefix(self.prefix),
                                  path=url.parts.path.rstrip("/") + "/api/v2/alerts").geturl()

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
