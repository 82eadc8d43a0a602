"""``slack+https://hooks.slack.com/services/...``: a Slack incoming webhook,
one Block Kit message per alert. Slack has no idempotency header; the alert
id is in the message so a person can tell a repeat from a new alert."""

from __future__ import annotations

from orchestrator.alerts import Alert
from orchestrator.relay.webhook import WebhookSink

_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
         "info": ":information_source:"}


class SlackSink(WebhookSink):
    prefix = "slack+"

    def payload(self, alert: Alert) -> object:
        title = f"{alert.severity.upper()}: {alert.alert_type} on {alert.entity}"
        blocks: list[dict[str, object]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{_ICON.get(alert.severity, '')} "
                                           f"{alert.severity}"},
                {"type": "mrkdwn", "text": f"*Type*\n`{alert.alert_type}`"},
                {"type": "mrkdwn", "text": f"*Entity*\n{alert.entity}"},
                {"type": "mrkdwn", "text": f"*Detected*\n{alert.detected_at.isoformat()}"},
            ]},
            {"type": "section",
             "text": {"type": "mrkdwn", "text": (alert.description or "(no description)")[:2900]}},
        ]
        context = [{"type": "mrkdwn", "text": f"alert #{alert.id} · consistency-guard"}]
        if self.url.dashboard_url:
            context.append({"type": "mrkdwn", "text": f"<{self.url.dashboard_url}|Open dashboard>"})
        blocks.append({"type": "context", "elements": context})
        return {"text": f"{title} (alert #{alert.id})", "blocks": blocks}
