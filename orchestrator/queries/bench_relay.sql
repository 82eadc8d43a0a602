-- Named queries of `consistency bench relay` (orchestrator/bench/relay.py).

-- name: bench_relay_raise_many --
-- Distinct entity ids: the throttle would otherwise keep all but one.
SELECT count(consistency.raise_alert('bench_relay', 'critical', 'system', %(first)s + g,
                                     'relay benchmark'))
  FROM generate_series(0, %(n)s - 1) AS g

-- name: bench_relay_raise_one --
SELECT consistency.raise_alert('bench_relay', 'critical', 'system', %(entity)s, 'relay benchmark')

-- name: bench_relay_listeners --
SELECT count(*)
  FROM pg_stat_activity
 WHERE datname = current_database()
   AND application_name = 'consistency-relay'

-- name: bench_relay_last_alert_id --
SELECT last_value FROM consistency.alerts_id_seq
