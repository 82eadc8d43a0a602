"""``slack+https://hooks.slack.com/services/...``: a Slack incoming webhook,
one Block Kit message per alert. Slack has no idempotency header; the alert
id is in the message so a person can tell a repeat from a new alert.

Whatever an alert says reaches Slack as text, never as markup: a description
may quote a circuit key the application chose or what a failing sink
answered, and ``<!channel>``, ``<@U123>`` or ``<https://evil|the dashboard>``
there must not ping a channel or disguise a link. Slack's mrkdwn is escaped
as Slack documents (``&``, ``<``, ``>``); the header is plain_text."""

from __future__ import annotations

import re

from orchestrator.alerts import Alert
from orchestrator.relay.webhook import WebhookSink

# What is left of an entity cut at the limit: "&", "&am", "&lt"...
_PARTIAL_ENTITY = re.compile(r"&[a-z]*$")
_ICON = {"critical": ":red_circle:", "warning": ":large_orange_circle:",
         "info": ":information_source:"}


def escape(text: str, limit: int | None = None) -> str:
    """Text for a mrkdwn field: Slack's three control characters as entities,
    at most ``limit`` characters of the result (never half an entity)."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    if limit is not None and len(escaped) > limit:
        escaped = _PARTIAL_ENTITY.sub("", escaped[:limit])
    return escaped


class SlackSink(WebhookSink):
    prefix = "slack+"

    def payload(self, alert: Alert) -> object:
        title = f"{alert.severity.upper()}: {alert.alert_type} on {alert.entity}"
        description = escape(alert.description or "(no description)", 2900)
        blocks: list[dict[str, object]] = [
            {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
            {"type": "section", "fields": [
                {"type": "mrkdwn", "text": f"*Severity*\n{_ICON.get(alert.severity, '')} "
                                           f"{escape(alert.severity)}"},
                {"type": "mrkdwn", "text": f"*Type*\n`{escape(alert.alert_type)}`"},
                {"type": "mrkdwn", "text": f"*Entity*\n{escape(alert.entity)}"},
                {"type": "mrkdwn", "text": f"*Detected*\n{alert.detected_at.isoformat()}"},
            ]},
            {"type": "section", "text": {"type": "mrkdwn", "text": description}},
        ]
        context = [{"type": "mrkdwn", "text": f"alert #{alert.id} · consistency-guard"}]
        if self.url.dashboard_url:
            context.append({"type": "mrkdwn", "text": f"<{self.url.dashboard_url}|Open dashboard>"})
        blocks.append({"type": "context", "elements": context})
        return {"text": f"{escape(title)} (alert #{alert.id})", "blocks": blocks}
