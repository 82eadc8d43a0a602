-- Named queries of the alert outbox (orchestrator/alerts.py, `consistency alerts`).

-- name: alerts_list --
-- Newest first; the (severity, detected_at) index serves the window.
SELECT id, alert_type, severity, entity_type, entity_id, description, metadata, detected_at,
       auto_corrected
  FROM consistency.alerts
 WHERE detected_at >= consistency.now() - %(since)s::interval
   AND severity = ANY (%(severities)s::text[])
   AND (%(alert_type)s::text IS NULL OR alert_type = %(alert_type)s::text)
 ORDER BY detected_at DESC, id DESC
 LIMIT %(limit)s
