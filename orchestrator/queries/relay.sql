-- Named queries of the alert relay (orchestrator/relay/loop.py).

-- name: relay_register_sink --
SELECT consistency.relay_register_sink(%(fingerprint)s, %(name)s, %(scheme)s, %(min_severity)s,
                                       %(digest_seconds)s)

-- name: relay_claim --
SELECT delivery_id, sink_id, attempts, alert_id, alert_type, severity, entity_type, entity_id,
       description, metadata, detected_at, auto_corrected
  FROM consistency.relay_claim(%(owner)s, %(sink_ids)s, %(limit)s,
                               make_interval(secs => %(lease_seconds)s))

-- name: relay_complete --
SELECT consistency.relay_complete(%(ids)s)

-- name: relay_fail --
SELECT consistency.relay_fail(%(owner)s, %(id)s, %(error)s, %(permanent)s, %(retry_after)s,
                              %(max_attempts)s, %(base_delay)s, %(max_delay)s)

-- name: relay_pending_count --
SELECT count(*)
  FROM consistency.relay_deliveries
 WHERE sink_id = ANY (%(sink_ids)s)
   AND status IN ('pending', 'in_flight')

-- name: relay_listen --
LISTEN consistency_alerts

-- name: relay_probe --
SELECT 1

-- name: relay_bench_raise_many --
-- Distinct entity ids: the throttle would otherwise keep all but one.
SELECT count(consistency.raise_alert('bench_relay', 'critical', 'system', %(first)s + g,
                                     'relay benchmark'))
  FROM generate_series(0, %(n)s - 1) AS g

-- name: relay_bench_raise_one --
SELECT consistency.raise_alert('bench_relay', 'critical', 'system', %(entity)s, 'relay benchmark')

-- name: relay_bench_listeners --
SELECT count(*)
  FROM pg_stat_activity
 WHERE datname = current_database()
   AND application_name = 'consistency-relay'

-- name: relay_sinks_status --
SELECT sink_id, sink, min_severity, status, deliveries, oldest_created_at, last_seen_at
  FROM consistency.relay_status()

-- name: relay_forget_sink --
SELECT consistency.relay_unregister_sink(%(sink_id)s)
