-- Named queries of the alert relay (orchestrator/relay/).

-- name: relay_register_sink --
SELECT consistency.relay_register_sink(%(fingerprint)s, %(name)s, %(scheme)s, %(min_severity)s,
                                       %(digest_seconds)s, %(backlog)s)

-- name: relay_heartbeat --
SELECT consistency.relay_heartbeat(%(sink_ids)s)

-- name: relay_now --
SELECT consistency.now()

-- name: relay_claim --
SELECT delivery_id, sink_id, attempts, alert_id, alert_type, severity, entity_type, entity_id,
       description, metadata, detected_at, auto_corrected
  FROM consistency.relay_claim(%(owner)s, %(sink_ids)s, %(limits)s, %(lease)s,
                               %(max_attempts)s, %(give_up)s, %(due_by)s)

-- name: relay_renew --
SELECT consistency.relay_renew(%(owner)s, %(ids)s, %(lease)s)

-- name: relay_release --
SELECT consistency.relay_release(%(owner)s, %(ids)s)

-- name: relay_complete --
SELECT consistency.relay_complete(%(ids)s)

-- name: relay_fail --
SELECT consistency.relay_fail(%(owner)s, %(id)s, %(error)s, %(permanent)s, %(retry_after)s,
                              %(max_attempts)s, %(base_delay)s, %(max_delay)s, %(give_up)s)

-- name: relay_listen --
LISTEN consistency_alerts

-- name: relay_probe --
SELECT 1

-- name: relay_status --
SELECT sink_id, sink, min_severity, status, deliveries, oldest_created_at, last_seen_at,
       pending, in_flight, retrying, retrying_oldest_seconds, dead, delivered_last_hour,
       last_success_at, last_error, last_error_at
  FROM consistency.relay_status()

-- name: relay_sink_unseen_for --
-- How long ago a relay last served the sink (NULL: no such sink); locks it,
-- so a heartbeat waits for the decision.
SELECT extract(epoch FROM consistency.now() - last_seen_at)::double precision
  FROM consistency.relay_sinks
 WHERE id = %(sink_id)s
   FOR UPDATE

-- name: relay_forget_sink --
SELECT consistency.relay_unregister_sink(%(sink_id)s)

-- name: relay_redrive --
SELECT consistency.relay_redrive(%(sink_id)s, %(since)s, %(alert_type)s, %(actor)s)
