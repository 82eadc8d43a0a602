-- Metrics and status for `consistency serve`: the Prometheus scrape
-- (metrics()), the dashboard and /api/status (status()), and the counters
-- behind them (metric_counters, migration 0010).
--
-- Both readers only read: no write, no lock stronger than ACCESS SHARE, no
-- transaction id, so they run inside a read-only transaction and on a hot
-- standby, as consistency_monitor.

-- Counting ------------------------------------------------------------------

-- Folds the visible deltas into metric_counters. One folder at a time (a
-- transaction-level try-lock: the others skip, nobody waits), and only at
-- READ COMMITTED, where each statement sees what the previous folder
-- committed; at REPEATABLE READ a fold could meet a concurrent folder's
-- deletes and fail the application's transaction with a serialization error.
-- Deltas of transactions still in flight are invisible and stay for later.
CREATE OR REPLACE FUNCTION consistency._fold_metric_counters()
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF current_setting('transaction_isolation') <> 'read committed'
       OR NOT pg_try_advisory_xact_lock(hashtext('consistency.metric_counters')) THEN
        RETURN;
    END IF;
    WITH gone AS (
        DELETE FROM consistency.metric_counter_deltas
        RETURNING metric, label1, label2, value
    )
    INSERT INTO consistency.metric_counters AS c (metric, label1, label2, value)
    SELECT metric, label1, label2, sum(value)
      FROM gone
     GROUP BY metric, label1, label2
     -- Keys in one order, in case a folder ever runs without the try-lock.
     ORDER BY metric, label1, label2
    ON CONFLICT (metric, label1, label2) DO UPDATE SET value = c.value + EXCLUDED.value;
END
$$;

-- Statement triggers (sql/triggers/metric_counters.sql): one delta row per
-- label set of the statement, in one INSERT, and a fold when a delta id is a
-- multiple of 128, so the delta table stays small without a fold (and its
-- locks) in every counting transaction. Alerts are counted the same way by
-- their one writer, _insert_alerts (alerts.sql), with no trigger.
CREATE OR REPLACE FUNCTION consistency._count_check_runs()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fold boolean;
BEGIN
    WITH ins AS (
        INSERT INTO consistency.metric_counter_deltas (metric, label1, label2, value)
        SELECT 'corrections', r.key, '', sum((r.value ->> 'corrected')::bigint)
          FROM new_runs AS c, jsonb_each(c.rules) AS r
         GROUP BY r.key
        HAVING sum((r.value ->> 'corrected')::bigint) <> 0
        UNION ALL
        SELECT 'check_runs', '', '', count(*) FROM new_runs HAVING count(*) > 0
        RETURNING id
    )
    SELECT bool_or(ins.id % 128 = 0) INTO v_fold FROM ins;
    IF v_fold THEN
        PERFORM consistency._fold_metric_counters();
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION consistency._count_circuit_transitions()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_fold boolean;
BEGIN
    WITH ins AS (
        INSERT INTO consistency.metric_counter_deltas (metric, label1, label2, value)
        SELECT 'circuit_transitions', e.circuit_key, e.to_state, count(*)
          FROM new_events AS e
         GROUP BY e.circuit_key, e.to_state
        RETURNING id
    )
    SELECT bool_or(ins.id % 128 = 0) INTO v_fold FROM ins;
    IF v_fold THEN
        PERFORM consistency._fold_metric_counters();
    END IF;
    RETURN NULL;
END
$$;

-- Counter values: folded rows plus the deltas not folded yet.
CREATE OR REPLACE FUNCTION consistency._metric_counter_values(p_metric text)
RETURNS TABLE (label1 text, label2 text, value bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT u.label1, u.label2, sum(u.value)::bigint
      FROM (SELECT c.label1, c.label2, c.value
              FROM consistency.metric_counters AS c WHERE c.metric = p_metric
            UNION ALL
            SELECT d.label1, d.label2, d.value
              FROM consistency.metric_counter_deltas AS d WHERE d.metric = p_metric) AS u
     GROUP BY u.label1, u.label2;
END;

-- Labels --------------------------------------------------------------------

-- Circuit keys are data that any application writes
-- ('appointment_booking:service:42'), so they never become labels as they
-- are: a label is the key's family (_circuit_family in circuit.sql, the
-- one the alert throttle uses), and at most _circuit_label_cap() families
-- (in name order) keep their own label; the rest share 'other'.
CREATE OR REPLACE FUNCTION consistency._circuit_label_cap()
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN 20;

-- Order of the dashboard's circuit list: what refuses calls first.
CREATE OR REPLACE FUNCTION consistency._circuit_state_rank(p_state text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_state WHEN 'open' THEN 1 WHEN 'forced_open' THEN 2 WHEN 'half_open' THEN 3
                    WHEN 'disabled' THEN 4 ELSE 5 END;

-- Every circuit key known (a state row or a counted transition) and its
-- label, as one jsonb object (key -> label) that a scrape computes once.
CREATE OR REPLACE FUNCTION consistency._circuit_labels()
RETURNS jsonb
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH keys AS (
        SELECT k.circuit_key, consistency._circuit_family(k.circuit_key) AS family
          FROM (SELECT s.circuit_key FROM consistency.circuit_breaker_states AS s
                UNION
                SELECT v.label1 FROM consistency._metric_counter_values('circuit_transitions') AS v
               ) AS k
    ), kept AS (
        SELECT DISTINCT k.family FROM keys AS k ORDER BY k.family
         LIMIT consistency._circuit_label_cap()
    )
    SELECT coalesce(jsonb_object_agg(k.circuit_key, coalesce(kept.family, 'other')), '{}')
      FROM keys AS k
      LEFT JOIN kept ON kept.family = k.family;
END;

-- Windows -------------------------------------------------------------------

-- Calls created since p_since: how many, how many tried to book, how many
-- bookings failed, how many are inconsistent (a critical or warning alert on
-- the call, as daily_report counts them). An alert about a call is raised
-- after the call was created, so the alerts of the window's calls are among
-- the alerts detected since p_since: one range of each index and a hash
-- join, instead of a probe of the alerts per call (17k probes for a day of
-- a million calls a month cost more than the whole scrape may).
CREATE OR REPLACE FUNCTION consistency._call_window(p_since timestamptz)
RETURNS TABLE (calls bigint, booking_attempts bigint, booking_failures bigint,
               inconsistent_calls bigint, validation_failures bigint)
LANGUAGE sql STABLE
BEGIN ATOMIC
    WITH flagged AS (
        SELECT DISTINCT a.entity_id
          FROM consistency.alerts AS a
         WHERE a.severity IN ('critical', 'warning') AND a.detected_at >= p_since
           AND a.entity_type = 'call'
    )
    SELECT count(*),
           count(*) FILTER (WHERE c.booking_failed OR c.session_outcome IN
                            ({{ outcome.booking }}, {{ outcome.creation_failed }})),
           count(*) FILTER (WHERE c.booking_failed),
           count(f.entity_id),
           (SELECT count(*) FROM consistency.alerts AS a
             WHERE a.alert_type = 'appointment_rollback' AND a.detected_at >= p_since)
      FROM public.calls AS c
      LEFT JOIN flagged AS f ON f.entity_id = c.id
     WHERE c.created_at >= {{ calls.created_at.convert('p_since') }};
END;

-- Relay per sink: open work, dead letters, the oldest delivery still owed and
-- the last success. Pending and in-flight rows come from the relay's due
-- index, dead ones from its partial index (migration 0009), the last success
-- from the sink's row: a scrape never reads the delivery history.
CREATE OR REPLACE FUNCTION consistency._relay_gauges(p_now timestamptz)
RETURNS TABLE (sink_id bigint, sink text, pending bigint, retrying bigint, in_flight bigint,
               dead bigint, oldest_pending_seconds double precision,
               last_success_at timestamptz)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT s.id, s.name, o.pending, o.retrying, o.in_flight,
           (SELECT count(*) FROM consistency.relay_deliveries AS d
             WHERE d.sink_id = s.id AND d.status = 'dead'),
           coalesce(extract(epoch FROM p_now - o.oldest)::double precision, 0),
           s.last_success_at
      FROM consistency.relay_sinks AS s
     CROSS JOIN LATERAL (
           SELECT count(*) FILTER (WHERE d.status = 'pending' AND d.attempts = 0) AS pending,
                  count(*) FILTER (WHERE d.status = 'pending' AND d.attempts > 0) AS retrying,
                  count(*) FILTER (WHERE d.status = 'in_flight') AS in_flight,
                  min(d.created_at) AS oldest
             FROM consistency.relay_deliveries AS d
            WHERE d.sink_id = s.id AND d.status IN ('pending', 'in_flight')) AS o;
END;

-- The scrape ----------------------------------------------------------------

-- Everything one Prometheus scrape exports, as one document (one query).
-- jit = off: the estimates of these small reads over large tables cross the
-- JIT thresholds, and compiling costs ten times what the reads do.
CREATE OR REPLACE FUNCTION consistency.metrics()
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
DECLARE
    v_now     timestamptz := consistency.now();
    v_day     record;
    v_windows jsonb;
    v_last    consistency.check_runs;
    v_labels  jsonb := consistency._circuit_labels();
BEGIN
    SELECT * INTO v_day FROM consistency._call_window(v_now - interval '24 hours');
    SELECT jsonb_agg(jsonb_build_object('window', w.name) || to_jsonb(cw) ORDER BY w.span)
      INTO v_windows
      FROM (VALUES ('5m', interval '5 minutes'), ('10m', interval '10 minutes')) AS w(name, span)
     CROSS JOIN LATERAL consistency._call_window(v_now - w.span) AS cw;
    SELECT * INTO v_last FROM consistency.check_runs ORDER BY started_at DESC, id DESC LIMIT 1;

    RETURN jsonb_build_object(
        'now', extract(epoch FROM v_now),
        'standby', pg_is_in_recovery(),
        'alerts_total', coalesce((
            SELECT jsonb_agg(jsonb_build_object('type', v.label1, 'severity', v.label2,
                                                'value', v.value) ORDER BY v.label1, v.label2)
              FROM consistency._metric_counter_values('alerts') AS v), '[]'),
        -- Every rule of the last run, with 0 until it corrects something: a
        -- series that exists from the start makes rate() see the first one.
        'corrections_total', coalesce((
            SELECT jsonb_agg(jsonb_build_object('rule', r.rule, 'value', coalesce(v.value, 0))
                             ORDER BY r.rule)
              FROM (SELECT c.label1 AS rule
                      FROM consistency._metric_counter_values('corrections') AS c
                    UNION
                    SELECT jsonb_object_keys(v_last.rules)) AS r
              LEFT JOIN consistency._metric_counter_values('corrections') AS v
                ON v.label1 = r.rule), '[]'),
        'check_runs_total', coalesce((
            SELECT sum(v.value) FROM consistency._metric_counter_values('check_runs') AS v), 0),
        'circuit_transitions_total', coalesce((
            SELECT jsonb_agg(jsonb_build_object('key', t.label, 'to', t.to_state, 'value', t.n)
                             ORDER BY t.label, t.to_state)
              FROM (SELECT v_labels ->> v.label1 AS label, v.label2 AS to_state,
                           sum(v.value) AS n
                      FROM consistency._metric_counter_values('circuit_transitions') AS v
                     GROUP BY 1, 2) AS t), '[]'),
        'circuits', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'key', f.label, 'states', f.states,
                       'open_seconds', f.open_seconds) ORDER BY f.label)
              FROM (SELECT v_labels ->> s.circuit_key AS label,
                           jsonb_build_object(
                               'closed', count(*) FILTER (WHERE s.state = 'closed'),
                               'open', count(*) FILTER (WHERE s.state = 'open'),
                               'half_open', count(*) FILTER (WHERE s.state = 'half_open'),
                               'forced_open', count(*) FILTER (WHERE s.state = 'forced_open'),
                               'disabled', count(*) FILTER (WHERE s.state = 'disabled')) AS states,
                           coalesce(max(extract(epoch FROM v_now - s.opened_at))
                                    FILTER (WHERE s.state IN ('open', 'half_open', 'forced_open')),
                                    0) AS open_seconds
                      FROM consistency.circuit_breaker_states AS s
                     GROUP BY 1) AS f), '[]'),
        'review', (
            SELECT jsonb_build_object(
                       'pending', count(*) FILTER (WHERE q.status = 'pending'),
                       'in_progress', count(*) FILTER (WHERE q.status = 'in_progress'),
                       'oldest_pending_seconds',
                       coalesce(extract(epoch FROM v_now - min(q.created_at)
                                                   FILTER (WHERE q.status = 'pending')), 0))
              FROM consistency.manual_review_queue AS q
             WHERE q.status IN ('pending', 'in_progress')),
        'day', jsonb_build_object(
            'calls', v_day.calls, 'inconsistent_calls', v_day.inconsistent_calls,
            'consistency_ratio', CASE WHEN v_day.calls = 0 THEN 1.0
                                      ELSE (v_day.calls - v_day.inconsistent_calls)::numeric
                                           / v_day.calls END),
        'windows', v_windows,
        'last_check', CASE WHEN v_last.id IS NULL THEN NULL ELSE jsonb_build_object(
            'id', v_last.id,
            'started_at', extract(epoch FROM v_last.started_at),
            'finished_at', extract(epoch FROM coalesce(v_last.finished_at, v_last.started_at)),
            'duration_seconds', coalesce(v_last.duration_ms, 0) / 1000.0,
            'found', v_last.found, 'corrected', v_last.corrected, 'alerted', v_last.alerted,
            'rules', (SELECT jsonb_object_agg(r.key, jsonb_build_object(
                                 'severity', r.value -> 'severity', 'found', r.value -> 'found',
                                 'corrected', r.value -> 'corrected',
                                 'alerted', r.value -> 'alerted'))
                        FROM jsonb_each(v_last.rules) AS r)) END,
        'relay', coalesce((
            SELECT jsonb_agg(jsonb_build_object(
                       'sink', g.sink, 'pending', g.pending, 'retrying', g.retrying,
                       'in_flight', g.in_flight, 'dead', g.dead,
                       'oldest_pending_seconds', g.oldest_pending_seconds,
                       'last_success_at', extract(epoch FROM g.last_success_at))
                   ORDER BY g.sink_id)
              FROM consistency._relay_gauges(v_now) AS g), '[]'));
END
$$;

-- The dashboard and /api/status ----------------------------------------------

-- metrics() plus what a person looks at: alerts by type and severity over
-- 1 h and the last p_hours, hourly series (alerts by severity, consistency
-- rate), recent check runs and the circuits themselves (raw keys, at most
-- 100, the ones not closed first, with the time of their last transition).
CREATE OR REPLACE FUNCTION consistency.status(p_hours integer DEFAULT 24)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET jit = off
AS $$
DECLARE
    v_now   timestamptz := consistency.now();
    v_hour  timestamptz;
    v_since timestamptz;
BEGIN
    IF p_hours IS NULL OR p_hours < 1 OR p_hours > 24 * 31 THEN
        RAISE EXCEPTION 'hours must be between 1 and 744, got %', coalesce(p_hours::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_hour := date_trunc('hour', v_now);
    v_since := v_hour - make_interval(hours => p_hours - 1);

    RETURN consistency.metrics() || jsonb_build_object(
        'hours', p_hours,
        'alerts_by_type', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'type', t.alert_type, 'severity', t.severity,
                       'last_hour', t.last_hour, 'period', t.period)
                       ORDER BY t.period DESC, t.alert_type, t.severity), '[]')
              FROM (SELECT a.alert_type, a.severity,
                           count(*) FILTER (WHERE a.detected_at >= v_now - interval '1 hour')
                               AS last_hour,
                           count(*) AS period
                      FROM consistency.alerts AS a
                     WHERE a.detected_at >= v_now - make_interval(hours => p_hours)
                     GROUP BY a.alert_type, a.severity) AS t),
        'series', (
            SELECT jsonb_agg(jsonb_build_object(
                       'hour', extract(epoch FROM h.hour),
                       'critical', coalesce(a.critical, 0), 'warning', coalesce(a.warning, 0),
                       'info', coalesce(a.info, 0),
                       'calls', coalesce(c.calls, 0), 'inconsistent', coalesce(c.bad, 0))
                   ORDER BY h.hour)
              FROM generate_series(v_since, v_hour, interval '1 hour') AS h(hour)
              LEFT JOIN (
                  SELECT date_trunc('hour', x.detected_at) AS hour,
                         count(*) FILTER (WHERE x.severity = 'critical') AS critical,
                         count(*) FILTER (WHERE x.severity = 'warning') AS warning,
                         count(*) FILTER (WHERE x.severity = 'info') AS info
                    FROM consistency.alerts AS x
                   WHERE x.detected_at >= v_since
                   GROUP BY 1) AS a ON a.hour = h.hour
              LEFT JOIN (
                  -- As in _call_window: the alerts of these calls came after them.
                  SELECT date_trunc('hour', {{ calls.created_at.convert('k.created_at') }}) AS hour,
                         count(*) AS calls,
                         count(f.entity_id) AS bad
                    FROM public.calls AS k
                    LEFT JOIN (SELECT DISTINCT y.entity_id
                                 FROM consistency.alerts AS y
                                WHERE y.severity IN ('critical', 'warning')
                                  AND y.detected_at >= v_since
                                  AND y.entity_type = 'call') AS f ON f.entity_id = k.id
                   WHERE k.created_at >= {{ calls.created_at.convert('v_since') }}
                   GROUP BY 1) AS c ON c.hour = h.hour),
        'check_runs', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', r.id, 'started_at', extract(epoch FROM r.started_at),
                       'duration_ms', r.duration_ms, 'found', r.found,
                       'corrected', r.corrected, 'alerted', r.alerted) ORDER BY r.started_at), '[]')
              FROM (SELECT * FROM consistency.check_runs
                     ORDER BY started_at DESC, id DESC LIMIT 50) AS r),
        'circuit_list', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'key', s.circuit_key, 'state', s.state,
                       'failure_count', s.failure_count,
                       'opened_at', extract(epoch FROM s.opened_at),
                       'since', extract(epoch FROM s.since),
                       'seconds_in_state', extract(epoch FROM v_now - s.since))
                       ORDER BY consistency._circuit_state_rank(s.state), s.since DESC,
                                s.circuit_key), '[]')
              FROM (SELECT st.*, coalesce(
                               (SELECT max(e.at) FROM consistency.circuit_breaker_events AS e
                                 WHERE e.circuit_key = st.circuit_key),
                               st.updated_at) AS since
                      FROM consistency.circuit_breaker_states AS st
                     ORDER BY consistency._circuit_state_rank(st.state), st.updated_at DESC
                     LIMIT 100) AS s),
        'circuits_total', (SELECT count(*) FROM consistency.circuit_breaker_states));
END
$$;
