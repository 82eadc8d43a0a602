-- Named queries of `consistency bench serve`: a dataset the size of a busy
-- year (alerts, one sink's delivery history, circuits, review items, check
-- runs) on top of the calls of orchestrator/queries/bench.sql.

-- name: bench_serve_sinks --
SELECT consistency.relay_register_sink(repeat(to_hex(n), 64), name, 'webhook+https')
  FROM (VALUES (10, 'webhook+https://hooks.example/***'), (11, 'stdout://')) AS s(n, name)

-- name: bench_serve_alerts --
-- %(alerts)s alerts on the dataset's calls, spread like the calls, of a few
-- types and severities, in one statement, with what their writer
-- (_insert_alerts) adds to each: a delivery per sink that takes it, and the
-- counter's deltas.
WITH a AS (
    INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id, description,
                                    metadata, detected_at)
    SELECT (ARRAY['appointment_unlinked', 'appointment_made_mismatch', 'session_outcome_corrected',
                  'appointment_rollback', 'circuit_opened', 'missing_direction'])[1 + g %% 6],
           (ARRAY['warning', 'warning', 'warning', 'critical', 'critical', 'info'])[1 + g %% 6],
           'call', c.id, 'bench alert ' || g, jsonb_build_object('n', g),
           c.created_at + interval '1 second'
      FROM generate_series(1, %(alerts)s) AS g
      JOIN public.calls AS c ON c.id = 1 + (g::bigint * 7919) %% %(calls)s
    RETURNING id, alert_type, severity
), d AS (
    INSERT INTO consistency.relay_deliveries (alert_id, sink_id, next_attempt_at, created_at)
    SELECT a.id, s.id, consistency.now(), consistency.now()
      FROM a
      JOIN consistency.relay_sinks AS s
        ON consistency._severity_rank(a.severity) >= consistency._severity_rank(s.min_severity)
)
INSERT INTO consistency.metric_counter_deltas (metric, label1, label2, value)
SELECT 'alerts', a.alert_type, a.severity, count(*) FROM a GROUP BY a.alert_type, a.severity

-- name: bench_serve_deliveries_done --
-- Nearly every delivery is history: delivered, a few dead; the last 500 are owed.
UPDATE consistency.relay_deliveries
   SET status = CASE WHEN id %% 1000 = 0 THEN 'dead' ELSE 'delivered' END,
       delivered_at = CASE WHEN id %% 1000 = 0 THEN NULL ELSE created_at + interval '1 second' END,
       dead_at = CASE WHEN id %% 1000 = 0 THEN created_at + interval '1 day' END,
       attempts = 1
 WHERE id <= (SELECT max(id) - 500 FROM consistency.relay_deliveries);
UPDATE consistency.relay_sinks
   SET last_success_at = (SELECT max(delivered_at) FROM consistency.relay_deliveries)

-- name: bench_serve_circuits --
INSERT INTO consistency.circuit_breaker_states (circuit_key, state, failure_count, opened_at, updated_at)
SELECT 'appointment_booking:service:' || g, CASE WHEN g %% 50 = 0 THEN 'open' ELSE 'closed' END,
       CASE WHEN g %% 50 = 0 THEN 3 ELSE 0 END,
       CASE WHEN g %% 50 = 0 THEN now() - interval '3 minutes' END, now()
  FROM generate_series(1, %(circuits)s) AS g

-- name: bench_serve_circuit_events --
INSERT INTO consistency.circuit_breaker_events (circuit_key, from_state, to_state, reason, at)
SELECT 'appointment_booking:service:' || (1 + g %% %(circuits)s),
       CASE WHEN g %% 2 = 0 THEN 'closed' ELSE 'open' END,
       CASE WHEN g %% 2 = 0 THEN 'open' ELSE 'closed' END, 'bench', now() - make_interval(mins => g)
  FROM generate_series(1, %(circuits)s * 20) AS g

-- name: bench_serve_review --
INSERT INTO consistency.manual_review_queue (call_id, reason, priority, status, created_at)
SELECT g, 'bench ' || g, 1 + g %% 5,
       CASE WHEN g %% 10 = 0 THEN 'pending' WHEN g %% 10 = 1 THEN 'in_progress' ELSE 'resolved' END,
       now() - make_interval(mins => g)
  FROM generate_series(1, %(reviews)s) AS g

-- name: bench_serve_check_runs --
-- A month of runs every five minutes, through the counting trigger.
INSERT INTO consistency.check_runs (started_at, finished_at, duration_ms, check_window, found,
                                    corrected, alerted, rules)
SELECT now() - make_interval(mins => 5 * g), now() - make_interval(mins => 5 * g),
       5 + g %% 7, interval '1 hour', 2, 1, 1,
       '{"missing_direction": {"severity": "warning", "found": 1, "corrected": 1, "alerted": 0},
         "orphaned_appointment": {"severity": "warning", "found": 1, "corrected": 0, "alerted": 1}}'
  FROM generate_series(1, %(runs)s) AS g

-- name: bench_serve_archive --
-- Alerts older than 30 days go to the archive, as retention would move them.
SELECT consistency.archive_alerts(interval '30 days', 100000000)

-- name: bench_serve_unfolded_deltas --
-- Deltas as many raising transactions would leave them when no fold ran.
INSERT INTO consistency.metric_counter_deltas (metric, label1, label2, value)
SELECT 'alerts', 'appointment_unlinked', 'warning', 1 FROM generate_series(1, %(n)s)

-- name: bench_serve_naive --
-- What a scrape would cost without the counters and the partial indexes:
-- count the outbox and its archive, and group every delivery by sink and status.
SELECT (SELECT jsonb_agg(x) FROM (
            SELECT alert_type, severity, count(*) FROM (
                SELECT alert_type, severity FROM consistency.alerts
                UNION ALL
                SELECT alert_type, severity FROM consistency.alerts_archive) AS a
             GROUP BY 1, 2) AS x),
       (SELECT jsonb_agg(r) FROM consistency.relay_status() AS r)

-- name: bench_serve_counts --
SELECT (SELECT count(*) FROM public.calls), (SELECT count(*) FROM consistency.alerts),
       (SELECT count(*) FROM consistency.alerts_archive),
       (SELECT count(*) FROM consistency.relay_deliveries),
       (SELECT count(*) FROM consistency.metric_counter_deltas)

-- name: bench_serve_raise_set --
-- What one DELETE of 100 appointments raises: 20 appointment_unlinked alerts.
SELECT cardinality(consistency._insert_alerts(
           'appointment_unlinked', 'warning', 'call',
           ARRAY(SELECT %(first)s + g FROM generate_series(1, 20) AS g),
           array_fill('lost its appointment'::text, ARRAY[20]),
           array_fill('{}'::jsonb, ARRAY[20]), false, consistency.now(), true))

-- name: bench_serve_forget_stdout_sink --
-- Only the first sink keeps a history: the second is registered later.
DELETE FROM consistency.relay_sinks WHERE name = 'stdout://'

-- name: bench_serve_vacuum --
VACUUM ANALYZE public.calls, public.appointments, consistency.alerts,
               consistency.alerts_archive, consistency.relay_deliveries,
               consistency.manual_review_queue, consistency.check_runs,
               consistency.circuit_breaker_events, consistency.circuit_breaker_states

-- name: bench_serve_without_counters --
-- The variant without what the metric counters add to writers of alerts:
-- the alert counter's delta row (that _insert_alerts writes) skipped before
-- it is written, and the index of the scrape's consistency rate.
CREATE FUNCTION consistency.bench_skip_alert_delta() RETURNS trigger
LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;
CREATE TRIGGER bench_skip_alert_delta
    BEFORE INSERT ON consistency.metric_counter_deltas
    FOR EACH ROW WHEN (NEW.metric = 'alerts') EXECUTE FUNCTION consistency.bench_skip_alert_delta();
DROP INDEX consistency.alerts_call_issue_idx

-- name: bench_serve_is_superuser --
SELECT current_setting('is_superuser') = 'on'

-- name: bench_serve_watcher --
-- A role that is not the guard's owner, as serve's login is in production (a
-- member of consistency_monitor): the session's named queries pass owner_code's
-- check. Roles are cluster-wide: bench_serve_drop_watcher removes it.
DO $$
BEGIN
    CREATE ROLE cg_bench_watcher NOLOGIN;
EXCEPTION WHEN duplicate_object THEN
    NULL;
END
$$

-- name: bench_serve_watcher_grant --
GRANT consistency_monitor TO cg_bench_watcher

-- name: bench_serve_become_watcher --
SET SESSION AUTHORIZATION cg_bench_watcher

-- name: bench_serve_drop_watcher --
DROP ROLE IF EXISTS cg_bench_watcher
