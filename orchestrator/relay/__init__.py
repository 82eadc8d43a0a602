"""Alert relay: durable, at-least-once delivery of consistency.alerts to
webhooks, Slack, email, Alertmanager and stdout (state in relay_deliveries)."""

from orchestrator.alerts import Alert
from orchestrator.relay.base import (
           DeliveryError,
           PermanentError,
           Sink,
           SinkURL,
           TransientError,
)
from orchestrator.relay.loop import Relay, RelayOptions, RelayStats
from orchestrator.relay.sinks import collect_sink_urls, parse_sink, parse_sinks

__all__ = ["Alert", "DeliveryError", "PermanentError", "Relay", "RelayOptions", "RelayStats",
           "Sink", "SinkURL", "TransientError", "collect_sink_urls", "parse_sink", "parse_sinks"]
