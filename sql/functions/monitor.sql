-- The consistency monitor. Detection rules are STABLE SQL functions so that
-- run_check (every call of a window) and check_call (one call) share one
-- definition of each rule. "Active" appointment: deleted_at IS NULL AND
-- status <> 'cancelled'. Truth is always the appointments table, never the
-- guard's own counter: the monitor exists for the writes that bypassed it.

-- Rules take "now" as a parameter: consistency.now() is volatile, and a
-- volatile call would keep the planner from inlining the rule into its
-- caller, where the window or the call id become index conditions.

-- The two link rules (missing_appointment, inconsistent_link_status) compare
-- each call with the true number of its active appointments. They share one
-- pass and one verdict, so that a call is judged by exactly one of them.
--
-- Two access paths to the same (call, true count) rows; the caller picks one
-- by the size of the window, because no single plan is good for both:
--   probe: for each call of the window, count its active appointments
--          (appointments_active_call_idx); cost grows with the window.
--   bulk:  count every active appointment once, grouped by call, from an
--          index-only scan of appointments_active_call_idx (already in
--          call_id order), and join it to the calls of the window; cost grows
--          with the tables, with no per-call probe. Used for large windows.
-- Only one branch runs: the other is cut by its one-time filter on p_bulk.
CREATE OR REPLACE FUNCTION consistency._link_state(p_since timestamptz, p_bulk boolean)
RETURNS TABLE (call_id bigint, created_at timestamptz, appointment_made boolean,
               appointment_link_status text, active_appointment_count integer,
               active_appointments integer)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, c.created_at, c.appointment_made, c.appointment_link_status,
           c.active_appointment_count, t.n
      FROM public.calls c
     CROSS JOIN LATERAL (SELECT count(*)::integer AS n FROM public.appointments a
                          WHERE a.call_id = c.id AND a.deleted_at IS NULL
                            AND a.status <> 'cancelled') t
     WHERE NOT p_bulk
       AND c.created_at >= p_since
    UNION ALL
    SELECT c.id, c.created_at, c.appointment_made, c.appointment_link_status,
           c.active_appointment_count, coalesce(t.n, 0)
      FROM public.calls c
      LEFT JOIN (SELECT a.call_id, count(*)::integer AS n
                   FROM public.appointments a
                  WHERE a.call_id IS NOT NULL AND a.deleted_at IS NULL
                    AND a.status <> 'cancelled'
                  GROUP BY a.call_id) t ON t.call_id = c.id
     WHERE p_bulk
       AND c.created_at >= p_since
$$;

-- The verdict, defined once for run_check and check_call:
--   missing_appointment: a booking that never produced an appointment. Either
--     still pending after max age, or flagged made while nothing active exists.
--   inconsistent_link_status: otherwise, link fields (or the guard's counter)
--     disagree with the appointments. Calls of missing_appointment are that
--     rule's alone (the contract), which a CASE says by construction.
-- The max-age cut-off is a scalar subquery: computed once per statement, not
-- once per call (setting_int is STABLE, so a plain call is evaluated per row).
CREATE OR REPLACE FUNCTION consistency._rule_link(
    p_since timestamptz, p_now timestamptz, p_bulk boolean)
RETURNS TABLE (call_id bigint, rule text, detail jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT v.call_id, v.rule,
           CASE v.rule
               WHEN 'missing_appointment' THEN
                   jsonb_build_object('appointment_link_status', v.appointment_link_status,
                                      'appointment_made', v.appointment_made,
                                      'age_seconds',
                                      round(extract(epoch FROM p_now - v.created_at)),
                                      'max_age_seconds',
                                      (SELECT consistency.setting_int(
                                                  'validation.max_appointment_age_seconds')))
               ELSE
                   jsonb_build_object('appointment_link_status', v.appointment_link_status,
                                      'appointment_made', v.appointment_made,
                                      'active_appointment_count', v.active_appointment_count,
                                      'active_appointments', v.active_appointments)
           END
      FROM (SELECT s.*,
                   CASE
                       WHEN s.active_appointments = 0
                            AND (s.appointment_made
                                 OR (s.appointment_link_status = 'pending_creation'
                                     AND s.created_at < (SELECT p_now - make_interval(
                                             secs => consistency.setting_int(
                                                 'validation.max_appointment_age_seconds')))))
                       THEN 'missing_appointment'
                       WHEN (s.active_appointments > 0) <> (s.appointment_link_status = 'linked')
                            OR s.appointment_made <> (s.appointment_link_status = 'linked')
                            OR s.active_appointment_count <> s.active_appointments
                       THEN 'inconsistent_link_status'
                   END AS rule
              FROM consistency._link_state(p_since, p_bulk) s) v
     WHERE v.rule IS NOT NULL
$$;

-- session_outcome_mismatch: the agent said "booked" but nothing was made,
-- and the call is not in a state that explains it.
CREATE OR REPLACE FUNCTION consistency._rule_session_outcome_mismatch(
    p_since timestamptz, p_now timestamptz)
RETURNS TABLE (call_id bigint, detail jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, jsonb_build_object('session_outcome', c.session_outcome,
                                    'appointment_link_status', c.appointment_link_status)
      FROM public.calls c
     WHERE c.created_at >= p_since
       AND c.session_outcome IN ('appointment_booked', 'appointment_rescheduled')
       AND NOT c.appointment_made
       AND c.appointment_link_status NOT IN ('pending_creation', 'cancelled', 'creation_failed')
$$;

CREATE OR REPLACE FUNCTION consistency._rule_missing_direction(
    p_since timestamptz, p_now timestamptz)
RETURNS TABLE (call_id bigint, detail jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, jsonb_build_object('direction', c.direction)
      FROM public.calls c
     WHERE c.created_at >= p_since
       AND (c.direction IS NULL OR c.direction = '')
$$;

CREATE OR REPLACE FUNCTION consistency._rule_recent_failure(
    p_since timestamptz, p_now timestamptz)
RETURNS TABLE (call_id bigint, detail jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT c.id, jsonb_build_object('booking_failure_reason', c.booking_failure_reason)
      FROM public.calls c
     WHERE c.created_at >= p_since
       AND c.booking_failed
$$;

-- orphaned_appointment: a voice-agent appointment that lost its call, with
-- the call it can be re-attached to (the one call with the same
-- external_booking_id), if exactly one exists.
CREATE OR REPLACE FUNCTION consistency._rule_orphaned_appointment(p_since timestamptz)
RETURNS TABLE (appointment_id bigint, match_call_id bigint, detail jsonb)
LANGUAGE sql STABLE
AS $$
    SELECT a.id,
           CASE WHEN m.n = 1 THEN m.call_id END,
           jsonb_build_object('external_booking_id', a.external_booking_id,
                              'matching_calls', coalesce(m.n, 0))
      FROM public.appointments a
      LEFT JOIN LATERAL (SELECT count(*) AS n, min(c.id) AS call_id
                           FROM public.calls c
                          WHERE c.external_booking_id = a.external_booking_id) m ON true
     WHERE a.call_id IS NULL
       AND a.source = 'voice_agent'
       AND a.deleted_at IS NULL
       AND a.created_at >= p_since
$$;

-- Milliseconds since p_from (wall clock), for the per-rule timings of a run.
CREATE OR REPLACE FUNCTION consistency._ms_since(p_from timestamptz)
RETURNS numeric
LANGUAGE sql VOLATILE
AS $$ SELECT round(extract(epoch FROM clock_timestamp() - p_from)::numeric * 1000, 3) $$;

CREATE OR REPLACE FUNCTION consistency.run_check(p_window interval DEFAULT NULL)
RETURNS TABLE (rule text, severity text, found int, corrected int, alerted int)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- The bulk path's plan is a merge of two ordered scans (calls_pkey, and the
-- grouped index-only scan of appointments_active_call_idx): no memory, no
-- spill. A hash join of the same inputs measured 1.5-3x slower at 1M calls
-- (the grouped appointments spill at the default work_mem, and probing a
-- 600k-entry table misses the cache anyway). JIT compiled for ~0.3 s per run
-- to save nothing on plans that are all index scans or one merge.
SET enable_hashjoin = off
SET jit = off
AS $$
DECLARE
    v_started   timestamptz := clock_timestamp();
    v_window    interval := coalesce(p_window,
                    make_interval(hours => consistency.setting_int('monitoring.recent_hours')));
    v_now       timestamptz := consistency.now();
    v_since     timestamptz;
    v_waited    numeric;
    v_ids       bigint[];
    v_missing   bigint[];
    v_bulk_from bigint;
    v_bulk      boolean;
    v_step      timestamptz;
    v_detect_ms numeric;
    v_found     int;
    v_corrected int;
    v_alerted   int;
    v_rules     jsonb := '{}';
BEGIN
    IF v_window <= interval '0' THEN
        RAISE EXCEPTION 'window must be positive, got %', v_window
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_since := v_now - v_window;

    -- One run at a time: a second run waits here, then starts from the first
    -- one's committed corrections, so nothing is corrected or alerted twice.
    PERFORM pg_advisory_xact_lock(hashtextextended('consistency.run_check', 0));
    v_waited := round(extract(epoch FROM clock_timestamp() - v_started)::numeric * 1000, 3);
    IF v_waited > 100 THEN
        RAISE NOTICE 'waited % ms for a concurrent consistency check', v_waited;
    END IF;

    -- Each rule's entry records its wall time ("ms"); the two link rules share
    -- one detection pass, recorded in both as "detect_ms" with its "path".
    -- missing_direction: fixed in place.
    v_step := clock_timestamp();
    WITH fixed AS (
        UPDATE public.calls c SET direction = 'inbound'
          FROM consistency._rule_missing_direction(v_since, v_now) r
         WHERE c.id = r.call_id
        RETURNING c.id)
    SELECT count(*) INTO v_found FROM fixed;
    v_rules := v_rules || jsonb_build_object('missing_direction', jsonb_build_object(
        'severity', 'warning', 'found', v_found, 'corrected', v_found, 'alerted', 0,
        'ms', consistency._ms_since(v_step)));

    -- orphaned_appointment: re-attach to the one matching call (the link
    -- triggers then update that call); alert about the rest.
    v_step := clock_timestamp();
    WITH orphans AS MATERIALIZED (
        SELECT * FROM consistency._rule_orphaned_appointment(v_since)
    ), linked AS (
        UPDATE public.appointments a SET call_id = o.match_call_id
          FROM orphans o
         WHERE a.id = o.appointment_id AND o.match_call_id IS NOT NULL
        RETURNING a.id
    ), alerted AS (
        SELECT consistency.raise_alert('orphaned_appointment', 'warning', 'appointment',
                   o.appointment_id, 'voice-agent appointment has no call and no unique match',
                   o.detail) AS alert_id
          FROM orphans o WHERE o.match_call_id IS NULL
    )
    SELECT (SELECT count(*) FROM orphans), (SELECT count(*) FROM linked),
           (SELECT count(alert_id) FROM alerted)
      INTO v_found, v_corrected, v_alerted;
    v_rules := v_rules || jsonb_build_object('orphaned_appointment', jsonb_build_object(
        'severity', 'warning', 'found', v_found, 'corrected', v_corrected, 'alerted', v_alerted,
        'ms', consistency._ms_since(v_step)));

    -- Both link rules in one pass, after the orphans were re-attached. The
    -- bulk path once the window holds a fifth of the calls (counted up to
    -- that, from calls_created_at_idx; a window reaching the oldest call is
    -- the whole table and needs no count): beyond it, probing each call
    -- costs more than counting every appointment once (see _link_state).
    v_step := clock_timestamp();
    IF v_since <= (SELECT min(c.created_at) FROM public.calls c) THEN
        v_bulk := true;
    ELSE
        v_bulk_from := greatest(1000, (SELECT c.reltuples::bigint / 5 FROM pg_catalog.pg_class c
                                        WHERE c.oid = 'public.calls'::pg_catalog.regclass));
        SELECT count(*) >= v_bulk_from INTO v_bulk
          FROM (SELECT 1 FROM public.calls c WHERE c.created_at >= v_since LIMIT v_bulk_from) w;
    END IF;
    -- EXECUTE: planned for this window and path on every run. A cached
    -- generic plan (PL/pgSQL switches to one after five runs when it looks
    -- no dearer) would be costed for an unknown window, and could trade the
    -- created_at index condition of the probe path for a scan of all calls.
    EXECUTE $q$
        SELECT array_agg(r.call_id ORDER BY r.call_id)
                   FILTER (WHERE r.rule = 'missing_appointment'),
               array_agg(r.call_id ORDER BY r.call_id)
                   FILTER (WHERE r.rule = 'inconsistent_link_status')
          FROM consistency._rule_link($1, $2, $3) r
    $q$ INTO v_missing, v_ids USING v_since, v_now, v_bulk;
    v_detect_ms := consistency._ms_since(v_step);

    -- missing_appointment: the rollback path (creation_failed, critical
    -- alert, review item, audit), one call at a time inside one statement.
    -- A phantom booking usually comes with a drifted counter (the write that
    -- made it bypassed the triggers); the call-side rules trust the counter,
    -- so repair it first or the rollback would be "corrected" back to linked.
    v_step := clock_timestamp();
    IF v_missing IS NOT NULL THEN
        PERFORM consistency.resync_calls(v_missing);
        -- resync_calls locked these calls (waiting for any writer of their
        -- appointments) and recounted with a snapshot taken after the locks:
        -- an appointment committed since detection now shows, and that call
        -- is no phantom booking. Only calls still without one are rolled back.
        SELECT array_agg(c.id ORDER BY c.id) INTO v_missing
          FROM public.calls c
         WHERE c.id = ANY (v_missing) AND c.active_appointment_count = 0;
    END IF;
    SELECT count(*), count(alert_id) INTO v_found, v_alerted
      FROM (SELECT consistency.rollback_booking(id,
                       'consistency check: booking without an active appointment',
                       'consistency monitor') AS alert_id
              FROM unnest(v_missing) AS id) rb;
    v_rules := v_rules || jsonb_build_object('missing_appointment', jsonb_build_object(
        'severity', 'critical', 'found', v_found, 'corrected', v_found, 'alerted', v_alerted,
        'ms', consistency._ms_since(v_step), 'detect_ms', v_detect_ms,
        'path', CASE WHEN v_bulk THEN 'bulk' ELSE 'probe' END));

    -- inconsistent_link_status: recompute from the appointments, then alert.
    v_step := clock_timestamp();
    v_found := coalesce(cardinality(v_ids), 0);
    v_corrected := 0;
    IF v_found > 0 THEN
        -- resync_calls counts the calls it rewrote: each found call must be.
        v_corrected := consistency.resync_calls(v_ids);
    END IF;
    SELECT count(alert_id) INTO v_alerted
      FROM (SELECT consistency.raise_alert('inconsistent_link_status', 'warning', 'call', id,
                       'appointment link status disagreed with the appointments; recomputed',
                       '{}', true) AS alert_id
              FROM unnest(v_ids) AS id) al;
    v_rules := v_rules || jsonb_build_object('inconsistent_link_status', jsonb_build_object(
        'severity', 'warning', 'found', v_found, 'corrected', v_corrected, 'alerted', v_alerted,
        'ms', consistency._ms_since(v_step), 'detect_ms', v_detect_ms,
        'path', CASE WHEN v_bulk THEN 'bulk' ELSE 'probe' END));

    -- session_outcome_mismatch: needs a person; evaluated after the
    -- corrections above so it reports what really remains.
    v_step := clock_timestamp();
    SELECT count(*), count(alert_id) INTO v_found, v_alerted
      FROM (SELECT consistency.raise_alert('session_outcome_mismatch', 'critical', 'call', r.call_id,
                       'call reported as booked but no appointment was made', r.detail) AS alert_id
              FROM consistency._rule_session_outcome_mismatch(v_since, v_now) r) al;
    v_rules := v_rules || jsonb_build_object('session_outcome_mismatch', jsonb_build_object(
        'severity', 'critical', 'found', v_found, 'corrected', 0, 'alerted', v_alerted,
        'ms', consistency._ms_since(v_step)));

    v_step := clock_timestamp();
    SELECT count(*) INTO v_found FROM consistency._rule_recent_failure(v_since, v_now);
    v_rules := v_rules || jsonb_build_object('recent_failure', jsonb_build_object(
        'severity', 'info', 'found', v_found, 'corrected', 0, 'alerted', 0,
        'ms', consistency._ms_since(v_step)));

    INSERT INTO consistency.check_runs (started_at, finished_at, duration_ms, waited_ms,
                                        check_window, found, corrected, alerted, rules)
    SELECT v_started, clock_timestamp(),
           round(extract(epoch FROM clock_timestamp() - v_started)::numeric * 1000, 3), v_waited,
           v_window,
           sum((value ->> 'found')::int), sum((value ->> 'corrected')::int),
           sum((value ->> 'alerted')::int), v_rules
      FROM jsonb_each(v_rules);

    RETURN QUERY
    SELECT r.rule, v_rules -> r.rule ->> 'severity', (v_rules -> r.rule ->> 'found')::int,
           (v_rules -> r.rule ->> 'corrected')::int, (v_rules -> r.rule ->> 'alerted')::int
      FROM unnest(ARRAY['session_outcome_mismatch', 'missing_appointment',
                        'inconsistent_link_status', 'missing_direction',
                        'orphaned_appointment', 'recent_failure'])
           WITH ORDINALITY AS r(rule, ord)
     ORDER BY r.ord;
END
$$;

CREATE OR REPLACE FUNCTION consistency.check_call(p_call_id bigint)
RETURNS TABLE (issue text, severity text, detail jsonb)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := consistency.now();
BEGIN
    IF p_call_id IS NULL OR NOT EXISTS (SELECT 1 FROM public.calls WHERE id = p_call_id) THEN
        RAISE EXCEPTION 'call % does not exist', coalesce(p_call_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN QUERY
    SELECT 'session_outcome_mismatch', 'critical', r.detail
      FROM consistency._rule_session_outcome_mismatch('-infinity', v_now) r
     WHERE r.call_id = p_call_id
    UNION ALL
    SELECT r.rule, CASE r.rule WHEN 'missing_appointment' THEN 'critical' ELSE 'warning' END,
           r.detail
      FROM consistency._rule_link('-infinity', v_now, false) r
     WHERE r.call_id = p_call_id
    UNION ALL
    SELECT 'missing_direction', 'warning', r.detail
      FROM consistency._rule_missing_direction('-infinity', v_now) r
     WHERE r.call_id = p_call_id
    UNION ALL
    SELECT 'recent_failure', 'info', r.detail
      FROM consistency._rule_recent_failure('-infinity', v_now) r
     WHERE r.call_id = p_call_id;
END
$$;
