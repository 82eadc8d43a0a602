-- The consistency monitor. Detection rules are STABLE SQL functions so that
-- run_check (every call of a window) and check_call (one call) share one
-- definition of each rule. "Active" appointment: the template helper
-- active() (orchestrator/render.py), rendered into every query that counts
-- them, as into the partial index they use. Truth is always the appointments
-- table, never the guard's own counter: the monitor exists for the writes
-- that bypassed it.
--
-- The rules have SQL-standard bodies (BEGIN ATOMIC): parsed when migrate
-- creates them, so no caller's search_path changes what they call, and still
-- inlined into their caller (a SET search_path clause would prevent that).
-- Like a view, such a body depends on the columns it reads: PostgreSQL
-- refuses to drop one of them or change its type while the guard is there.

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
BEGIN ATOMIC
    SELECT c.id, {{ calls.created_at.convert('c.created_at') }}, c.appointment_made, c.appointment_link_status,
           c.active_appointment_count{{ refs('c') }}, t.n{{ with_links(' + ' + link_count()) }}
      FROM public.calls c
     CROSS JOIN LATERAL (SELECT count(*)::integer AS n FROM public.appointments a
                          WHERE a.call_id = c.id AND {{ active('a') }}) t{{ link_joins('c') }}
     WHERE NOT p_bulk
       AND {{ calls.created_at.since('c.created_at', 'p_since') }}
    UNION ALL
    SELECT c.id, {{ calls.created_at.convert('c.created_at') }}, c.appointment_made, c.appointment_link_status,
           c.active_appointment_count{{ refs('c') }}, coalesce(t.n, 0){{ with_links(' + ' + link_count()) }}
      FROM public.calls c
      LEFT JOIN (SELECT a.call_id, count(*)::integer AS n
                   FROM public.appointments a
                  WHERE a.call_id IS NOT NULL AND {{ active('a') }}
                  GROUP BY a.call_id) t ON t.call_id = c.id{{ link_joins('c') }}
     WHERE p_bulk
       AND {{ calls.created_at.since('c.created_at', 'p_since') }};
END;

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
BEGIN ATOMIC
    SELECT v.call_id, v.rule,
           CASE v.rule
               WHEN 'missing_appointment' THEN
                   jsonb_build_object('appointment_link_status', v.appointment_link_status,
                                      'appointment_made', v.appointment_made,
                                      'age_seconds',
                                      CASE WHEN isfinite(v.created_at)
                                           THEN round(extract(epoch FROM p_now - v.created_at))
                                      END,
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
                                 OR (s.appointment_link_status = {{ link.pending_creation }}
                                     AND s.created_at < (SELECT p_now - make_interval(
                                             secs => consistency.setting_int(
                                                 'validation.max_appointment_age_seconds')))))
                       THEN 'missing_appointment'
                       WHEN (s.active_appointments > 0) <> (s.appointment_link_status = {{ link.linked }})
                            OR s.appointment_made <> (s.appointment_link_status = {{ link.linked }})
                            OR s.active_appointment_count <> s.active_appointments
                       THEN 'inconsistent_link_status'
                   END AS rule
              FROM consistency._link_state(p_since, p_bulk) s) v
     WHERE v.rule IS NOT NULL;
END;

-- session_outcome_mismatch: the agent said "booked" but nothing was made,
-- and the call is not in a state that explains it.
CREATE OR REPLACE FUNCTION consistency._rule_session_outcome_mismatch(
    p_since timestamptz, p_now timestamptz)
RETURNS TABLE (call_id bigint, detail jsonb)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT c.id, jsonb_build_object('session_outcome', c.session_outcome,
                                    'appointment_link_status', c.appointment_link_status)
      FROM public.calls c
     WHERE {{ calls.created_at.since('c.created_at', 'p_since') }}
       AND c.session_outcome IN ({{ outcome.booking }})
       AND NOT c.appointment_made
       AND c.appointment_link_status NOT IN ({{ link.pending_creation }}, {{ link.cancelled }}, {{ link.creation_failed }});
END;

CREATE OR REPLACE FUNCTION consistency._rule_missing_direction(
    p_since timestamptz, p_now timestamptz)
RETURNS TABLE (call_id bigint, detail jsonb)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT c.id, jsonb_build_object('direction', c.direction)
      FROM public.calls c
     WHERE {{ calls.created_at.since('c.created_at', 'p_since') }}
       AND (c.direction IS NULL OR c.direction = '');
END;

CREATE OR REPLACE FUNCTION consistency._rule_recent_failure(
    p_since timestamptz, p_now timestamptz)
RETURNS TABLE (call_id bigint, detail jsonb)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT c.id, jsonb_build_object('booking_failure_reason', c.booking_failure_reason)
      FROM public.calls c
     WHERE {{ calls.created_at.since('c.created_at', 'p_since') }}
       AND c.booking_failed;
END;

-- orphaned_appointment: a voice-agent appointment that lost its call, with
-- the call it can be re-attached to (the one call with the same
-- external_booking_id), if exactly one exists. Without a foreign key on
-- appointments.call_id, a call_id naming no call is lost too; an appointment
-- a call points at through one of its own link columns is not.
CREATE OR REPLACE FUNCTION consistency._rule_orphaned_appointment(p_since timestamptz)
RETURNS TABLE (appointment_id bigint, match_call_id bigint, detail jsonb)
LANGUAGE sql STABLE
BEGIN ATOMIC
    SELECT a.id,
           CASE WHEN m.n = 1 THEN m.call_id END,
           jsonb_build_object('external_booking_id', a.{{ appointments.booking_id }},
                              'matching_calls', coalesce(m.n, 0)
{% if not appointments.call_id_fk %}
                              , 'call_id', a.call_id
{% endif %}
                              )
      FROM public.appointments a
      LEFT JOIN LATERAL (SELECT count(*) AS n, min(c.id) AS call_id
                           FROM public.calls c
                          WHERE c.{{ calls.booking_id }} = a.{{ appointments.booking_id }}) m ON true
{% if appointments.call_id_fk %}
     WHERE a.call_id IS NULL
{% else %}
     WHERE (a.call_id IS NULL
            OR NOT EXISTS (SELECT 1 FROM public.calls c WHERE c.id = a.call_id))
{% endif %}
{% for column in calls.links %}
       AND NOT EXISTS (SELECT 1 FROM public.calls c WHERE c.{{ column }} = a.id)
{% endfor %}
       AND a.source {{ appointments.voice_agent }}
       AND a.deleted_at IS NULL
       AND {{ appointments.created_at.since('a.created_at', 'p_since') }};
END;

-- Milliseconds since p_from (wall clock), for the per-rule timings of a run.
CREATE OR REPLACE FUNCTION consistency._ms_since(p_from timestamptz)
RETURNS numeric
LANGUAGE sql VOLATILE
RETURN round(extract(epoch FROM clock_timestamp() - p_from)::numeric * 1000, 3);

-- A correction run_check could not make, recorded where a person looks: an
-- alert (the rule's severity) and an entry of the run's errors.
CREATE OR REPLACE FUNCTION consistency._check_failure(
    p_rule text, p_severity text, p_entity_type text, p_entity_id bigint,
    p_sqlstate text, p_message text)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    -- An application's trigger may raise anything: kept bounded.
    v_message text := left(p_message, 500);
BEGIN
    IF p_entity_id IS NULL THEN
        -- The rule itself failed (its detection): one alert per rule and window.
        PERFORM consistency.raise_alert(
            'check_rule_failed', 'critical', 'system', hashtextextended(p_rule, 0),
            format('consistency check rule %s failed: %s', p_rule, v_message),
            jsonb_build_object('rule', p_rule, 'sqlstate', p_sqlstate, 'error', v_message));
    ELSE
        PERFORM consistency.raise_alert(
            'check_correction_failed', p_severity, p_entity_type, p_entity_id,
            format('consistency check could not correct %s %s (%s): %s',
                   p_entity_type, p_entity_id, p_rule, v_message),
            jsonb_build_object('rule', p_rule, 'sqlstate', p_sqlstate, 'error', v_message));
    END IF;
    RETURN jsonb_build_object('entity_type', p_entity_type, 'entity_id', p_entity_id,
                              'sqlstate', p_sqlstate, 'error', v_message);
END
$$;

-- One correction of run_check over a set of entities: p_sql (one statement
-- yielding one number, what it corrected; the entities' ids as $1, p_args
-- beside them as $2) for all of them at once, in a subtransaction. Only when
-- that fails (a constraint or trigger of the application refusing one row,
-- say) is each entity tried again on its own, each in its own
-- subtransaction, and each failure recorded (_check_failure): one row the
-- correction cannot handle costs only itself, and the run goes on. The
-- common case pays one subtransaction per correction, not one per row.
CREATE OR REPLACE FUNCTION consistency._check_step(
    p_rule text, p_severity text, p_entity_type text, p_sql text,
    p_ids bigint[], p_args bigint[] DEFAULT NULL,
    OUT done bigint, OUT failed_ids bigint[], OUT errors jsonb)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_n bigint;
BEGIN
    done := 0;
    failed_ids := '{}';
    errors := '[]';
    IF coalesce(cardinality(p_ids), 0) = 0 THEN
        RETURN;
    END IF;
    BEGIN
        EXECUTE p_sql INTO done USING p_ids, p_args;
        done := coalesce(done, 0);
        RETURN;
    EXCEPTION WHEN OTHERS THEN
        done := 0;  -- rolled back: one entity at a time below
    END;
    FOR i IN 1 .. cardinality(p_ids) LOOP
        BEGIN
            EXECUTE p_sql INTO v_n USING ARRAY[p_ids[i]], p_args[i:i];
            done := done + coalesce(v_n, 0);
        EXCEPTION WHEN OTHERS THEN
            failed_ids := failed_ids || p_ids[i];
            errors := errors || consistency._check_failure(p_rule, p_severity, p_entity_type,
                                                           p_ids[i], SQLSTATE, SQLERRM);
        END;
    END LOOP;
END
$$;

-- missing_appointment's correction for a set of calls. A phantom booking
-- usually comes with a drifted counter (the write that made it bypassed the
-- triggers); the call-side rules trust the counter, so it is repaired first,
-- or the rollback would be "corrected" back to linked. resync_calls locks
-- these calls (waiting for any writer of their appointments) and recounts
-- with a snapshot taken after the locks: an appointment committed since
-- detection now shows, and that call is no phantom booking. Only calls still
-- without one are rolled back. Returns how many were.
CREATE OR REPLACE FUNCTION consistency._rollback_missing(p_call_ids bigint[])
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rolled_back bigint;
BEGIN
    PERFORM consistency.resync_calls(p_call_ids);
    SELECT count(consistency.rollback_booking(
               c.id, 'consistency check: booking without an active appointment',
               'consistency monitor'))
      INTO v_rolled_back
      FROM (SELECT c.id FROM public.calls c
             WHERE c.id = ANY (p_call_ids) AND c.active_appointment_count{{ refs('c') }} = 0
             ORDER BY c.id) c;
    RETURN v_rolled_back;
END
$$;

-- A run, in steps that both drivers share: run_check (one transaction) and
-- the batched run of `consistency check` (orchestrator/monitor.py: each
-- detection, and each bounded slice of a correction, committed on its own,
-- so that no row the monitor corrects stays locked for longer than a slice;
-- one run at a time through a session-level lock on the same key).
--
--   _check_window   the run's bounds
--   _check_detect   one detection step: the entities of its rule(s), and
--                   what the detection itself did (alerts of rules that only
--                   alert) as a "part" of the run's record
--   _check_correct  one rule's correction of some of those entities, as a part
--   _check_record   the check_runs row, from every part of the run
--
-- The steps the batched run calls from its session are SECURITY DEFINER, as
-- run_check is: a DBA's session runs them with the owner's rights, never its
-- own (orchestrator/owner_code.py), and only the owner may execute them.
--
-- Detection steps in run order: directions are fixed and orphans re-attached
-- before the link rules look at the calls; session_outcome_mismatch runs
-- after every correction, so it reports what really remains.
CREATE OR REPLACE FUNCTION consistency._check_steps()
RETURNS text[]
LANGUAGE sql IMMUTABLE
RETURN ARRAY['missing_direction', 'orphaned_appointment', 'link', 'session_outcome_mismatch',
             'recent_failure'];

-- The rules: each one's severity (of its alerts, of its failures, of its
-- rows in run_check and check_call) and its place in those results (the
-- contract's order; detection runs by step, above).
CREATE OR REPLACE FUNCTION consistency._check_rules()
RETURNS TABLE (rule text, severity text, place int)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT r.rule, r.severity, r.place
      FROM (VALUES ('session_outcome_mismatch', 'critical', 1),
                   ('missing_appointment', 'critical', 2),
                   ('inconsistent_link_status', 'warning', 3),
                   ('missing_direction', 'warning', 4),
                   ('orphaned_appointment', 'warning', 5),
                   ('recent_failure', 'info', 6)) AS r(rule, severity, place);
END;

-- A rule's severity. Called with a constant, it is folded into a constant
-- when the calling statement is planned.
CREATE OR REPLACE FUNCTION consistency._check_severity(p_rule text)
RETURNS text
LANGUAGE sql IMMUTABLE
RETURN (SELECT r.severity FROM consistency._check_rules() r WHERE r.rule = p_rule);

-- The key of "one run at a time" (run_check's transaction lock, the batched
-- run's session lock, check_findings).
CREATE OR REPLACE FUNCTION consistency._check_lock_key()
RETURNS bigint
LANGUAGE sql IMMUTABLE
RETURN hashtextextended('consistency.run_check', 0);

CREATE OR REPLACE FUNCTION consistency._check_window(
    p_window interval, OUT check_window interval, OUT since timestamptz, OUT now timestamptz)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    check_window := coalesce(p_window,
                             make_interval(hours => consistency.setting_int('monitoring.recent_hours')));
    IF check_window <= interval '0' OR check_window > interval '36500 days' THEN
        RAISE EXCEPTION 'window must be positive and at most 36500 days, got %', check_window
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    now := consistency.now();
    since := now - check_window;
{% if calls.created_at.nullable %}
    -- A window that reaches the oldest call is the whole table, and takes
    -- the calls without a created_at too: the rules read a bound of
    -- -infinity as "every row".
    IF {{ calls.created_at.convert('since') }}
       <= coalesce((SELECT min(c.created_at) FROM public.calls c), 'infinity') THEN
        since := '-infinity';
    END IF;
{% endif %}
END
$$;

-- One detection step (see _check_steps): per rule it covers, the entities a
-- correction will take (ids, and for orphans the call each goes to) and the
-- detection's part of the record (found, alerts it raised, its wall time).
-- No row may stop the run: a detection that fails is recorded (alert
-- check_rule_failed) and finds nothing.
CREATE OR REPLACE FUNCTION consistency._check_detect(p_step text, p_since timestamptz,
                                                     p_now timestamptz)
RETURNS TABLE (rule text, ids bigint[], targets bigint[], part jsonb)
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
    v_ids       bigint[];
    v_targets   bigint[];
    v_missing   bigint[];
    v_found     int := 0;
    v_alerted   int := 0;
    v_errors    jsonb := '[]';
    v_bulk_from bigint;
    v_bulk      boolean;
    v_ms        numeric;
BEGIN
    CASE p_step
    WHEN 'missing_direction' THEN
        BEGIN
            SELECT array_agg(r.call_id ORDER BY r.call_id) INTO v_ids
              FROM consistency._rule_missing_direction(p_since, p_now) r;
        EXCEPTION WHEN OTHERS THEN
            v_ids := NULL;
            v_errors := jsonb_build_array(consistency._check_failure(
                p_step, consistency._check_severity(p_step), 'call', NULL, SQLSTATE, SQLERRM));
        END;
        RETURN QUERY SELECT p_step, v_ids, NULL::bigint[], jsonb_build_object(
            'rule', p_step, 'found', coalesce(cardinality(v_ids), 0), 'errors', v_errors,
            'ms', consistency._ms_since(v_started));

    WHEN 'orphaned_appointment' THEN
        -- Re-attached to the one matching call (the link triggers then update
        -- that call); the others are alerted here.
        BEGIN
            SELECT count(*), array_agg(o.appointment_id ORDER BY o.appointment_id)
                                 FILTER (WHERE o.match_call_id IS NOT NULL),
                   array_agg(o.match_call_id ORDER BY o.appointment_id)
                       FILTER (WHERE o.match_call_id IS NOT NULL),
                   count(consistency.raise_alert('orphaned_appointment', consistency._check_severity('orphaned_appointment'),
                                                 'appointment',
                             o.appointment_id, 'voice-agent appointment has no call and no unique match',
                             o.detail)) FILTER (WHERE o.match_call_id IS NULL)
              INTO v_found, v_ids, v_targets, v_alerted
              FROM consistency._rule_orphaned_appointment(p_since) o;
        EXCEPTION WHEN OTHERS THEN
            v_ids := NULL;
            v_targets := NULL;
            v_found := 0;
            v_alerted := 0;
            v_errors := jsonb_build_array(consistency._check_failure(
                p_step, consistency._check_severity(p_step), 'appointment', NULL, SQLSTATE,
                SQLERRM));
        END;
        RETURN QUERY SELECT p_step, v_ids, v_targets, jsonb_build_object(
            'rule', p_step, 'found', v_found, 'alerted', v_alerted, 'errors', v_errors,
            'ms', consistency._ms_since(v_started));

    WHEN 'link' THEN
        -- Both link rules in one pass. The bulk path once the window holds a
        -- fifth of the calls (counted up to that, from calls_created_at_idx; a
        -- window reaching the oldest call is the whole table and needs no
        -- count): beyond it, probing each call costs more than counting every
        -- appointment once (see _link_state).
        BEGIN
            IF {{ calls.created_at.convert('p_since') }} <= (SELECT min(c.created_at) FROM public.calls c)
{% if calls.created_at.nullable %}
               OR p_since = '-infinity'
{% endif %}
            THEN
                v_bulk := true;
            ELSE
                v_bulk_from := greatest(1000, (SELECT c.reltuples::bigint / 5 FROM pg_catalog.pg_class c
                                                WHERE c.oid = 'public.calls'::pg_catalog.regclass));
                SELECT count(*) >= v_bulk_from INTO v_bulk
                  FROM (SELECT 1 FROM public.calls c WHERE {{ calls.created_at.since('c.created_at', 'p_since') }} LIMIT v_bulk_from) w;
            END IF;
            -- EXECUTE: planned for this window and path on every run. A cached
            -- generic plan (PL/pgSQL switches to one after five runs when it
            -- looks no dearer) would be costed for an unknown window, and could
            -- trade the created_at index condition of the probe path for a
            -- scan of all calls.
            EXECUTE $q$
                SELECT array_agg(r.call_id ORDER BY r.call_id)
                           FILTER (WHERE r.rule = 'missing_appointment'),
                       array_agg(r.call_id ORDER BY r.call_id)
                           FILTER (WHERE r.rule = 'inconsistent_link_status')
                  FROM consistency._rule_link($1, $2, $3) r
            $q$ INTO v_missing, v_ids USING p_since, p_now, v_bulk;
        EXCEPTION WHEN OTHERS THEN
            v_missing := NULL;
            v_ids := NULL;
            v_errors := jsonb_build_array(consistency._check_failure(
                'link', consistency._check_severity('missing_appointment'), 'call', NULL, SQLSTATE, SQLERRM));
        END;
        v_ms := consistency._ms_since(v_started);
        -- A failure of the shared pass is recorded once, with missing_appointment.
        -- Its found is what its correction confirms (see _check_record).
        RETURN QUERY
        SELECT 'missing_appointment', v_missing, NULL::bigint[], jsonb_build_object(
                   'rule', 'missing_appointment', 'errors', v_errors, 'detect_ms', v_ms,
                   'path', CASE WHEN v_bulk THEN 'bulk' ELSE 'probe' END)
        UNION ALL
        SELECT 'inconsistent_link_status', v_ids, NULL::bigint[], jsonb_build_object(
                   'rule', 'inconsistent_link_status', 'found', coalesce(cardinality(v_ids), 0),
                   'detect_ms', v_ms, 'path', CASE WHEN v_bulk THEN 'bulk' ELSE 'probe' END);

    WHEN 'session_outcome_mismatch' THEN
        -- Needs a person: alerted, nothing corrected.
        BEGIN
            SELECT count(*), count(alert_id) INTO v_found, v_alerted
              FROM (SELECT consistency.raise_alert('session_outcome_mismatch', consistency._check_severity('session_outcome_mismatch'),
                                                   'call',
                               r.call_id, 'call reported as booked but no appointment was made',
                               r.detail) AS alert_id
                      FROM consistency._rule_session_outcome_mismatch(p_since, p_now) r) al;
        EXCEPTION WHEN OTHERS THEN
            v_found := 0;
            v_alerted := 0;
            v_errors := jsonb_build_array(consistency._check_failure(
                p_step, consistency._check_severity(p_step), 'call', NULL, SQLSTATE, SQLERRM));
        END;
        RETURN QUERY SELECT p_step, NULL::bigint[], NULL::bigint[], jsonb_build_object(
            'rule', p_step, 'found', v_found, 'alerted', v_alerted, 'errors', v_errors,
            'ms', consistency._ms_since(v_started));

    WHEN 'recent_failure' THEN
        BEGIN
            SELECT count(*) INTO v_found FROM consistency._rule_recent_failure(p_since, p_now);
        EXCEPTION WHEN OTHERS THEN
            v_found := 0;
            v_errors := jsonb_build_array(consistency._check_failure(
                p_step, consistency._check_severity(p_step), 'call', NULL, SQLSTATE, SQLERRM));
        END;
        RETURN QUERY SELECT p_step, NULL::bigint[], NULL::bigint[], jsonb_build_object(
            'rule', p_step, 'found', v_found, 'errors', v_errors,
            'ms', consistency._ms_since(v_started));
    ELSE
        RAISE EXCEPTION 'unknown check step %', p_step USING ERRCODE = 'invalid_parameter_value';
    END CASE;
END
$$;

-- One rule's correction of these entities (all a detection found, or a
-- slice of them), through _check_step: set-based in a subtransaction, row by
-- row only when the set fails. Returns its part of the record.
CREATE OR REPLACE FUNCTION consistency._check_correct(p_rule text, p_ids bigint[],
                                                      p_targets bigint[] DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET enable_hashjoin = off
SET jit = off
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_act     record;
    v_ids     bigint[];
    v_alerted int := 0;
BEGIN
    CASE p_rule
    WHEN 'missing_direction' THEN
        v_act := consistency._check_step(p_rule, consistency._check_severity(p_rule), 'call', $q$
            WITH fixed AS (
                UPDATE public.calls c SET direction = {{ direction.inbound }}
                 WHERE c.id = ANY ($1) AND (c.direction IS NULL OR c.direction = '')
                RETURNING 1)
            SELECT count(*) FROM fixed $q$, p_ids);
    WHEN 'orphaned_appointment' THEN
        v_act := consistency._check_step(p_rule, consistency._check_severity(p_rule), 'appointment', $q$
            WITH linked AS (
                UPDATE public.appointments a SET call_id = m.call_id
                  FROM unnest($1, $2) AS m(id, call_id)
{% if appointments.call_id_fk %}
                 WHERE a.id = m.id AND a.call_id IS NULL
{% else %}
                 WHERE a.id = m.id
                   AND (a.call_id IS NULL
                        OR NOT EXISTS (SELECT 1 FROM public.calls c WHERE c.id = a.call_id))
{% endif %}
                RETURNING 1)
            SELECT count(*) FROM linked $q$, p_ids, p_targets);
    WHEN 'missing_appointment' THEN
        -- The rollback path (creation_failed, critical alert, review item,
        -- audit); see _rollback_missing.
        v_act := consistency._check_step(p_rule, consistency._check_severity(p_rule), 'call', $q$
            SELECT consistency._rollback_missing($1) $q$, p_ids);
        v_alerted := v_act.done;
    WHEN 'inconsistent_link_status' THEN
        -- Recomputed from the appointments, then alerted as one set: each
        -- call that was recomputed (one that could not be is alerted as a
        -- failed correction instead).
        v_act := consistency._check_step(p_rule, consistency._check_severity(p_rule), 'call', $q$
            SELECT consistency.resync_calls($1) $q$, p_ids);
        v_ids := ARRAY(SELECT id FROM unnest(p_ids) AS id WHERE id <> ALL (v_act.failed_ids));
        BEGIN
            v_alerted := cardinality(consistency._insert_alerts(
                'inconsistent_link_status', consistency._check_severity('inconsistent_link_status'), 'call', v_ids,
                array_fill('appointment link status disagreed with the appointments; recomputed'::text,
                           ARRAY[cardinality(v_ids)]),
                array_fill('{}'::jsonb, ARRAY[cardinality(v_ids)]), true, consistency.now(), true));
        EXCEPTION WHEN OTHERS THEN
            v_act.errors := v_act.errors || consistency._check_failure(
                p_rule, consistency._check_severity(p_rule), 'call', NULL, SQLSTATE, SQLERRM);
        END;
    ELSE
        RAISE EXCEPTION 'no correction for rule %', p_rule USING ERRCODE = 'invalid_parameter_value';
    END CASE;
    RETURN jsonb_build_object('rule', p_rule, 'corrected', v_act.done,
                              'failed', coalesce(cardinality(v_act.failed_ids), 0),
                              'alerted', v_alerted, 'errors', v_act.errors,
                              'ms', consistency._ms_since(v_started));
END
$$;

-- The check_runs row of a run, from the parts its steps returned: per rule
-- found, corrected, alerted and wall time ("ms"; the link rules' one shared
-- detection as "detect_ms", with its "path") summed over the parts; failed,
-- the number of errors recorded (a correction that failed for an entity, a
-- detection that failed), and the first ten of them. missing_appointment
-- found what its correction confirmed (rolled back, or failed to be): a call
-- that got its appointment since detection is no finding. Returns the id.
CREATE OR REPLACE FUNCTION consistency._check_record(p_window interval, p_started timestamptz,
                                                     p_waited numeric, p_parts jsonb)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_rules jsonb;
    v_id    bigint;
BEGIN
    WITH p AS (
        SELECT x.value AS part, x.value ->> 'rule' AS rule, x.ordinality AS n
          FROM jsonb_array_elements(p_parts) WITH ORDINALITY AS x
    ), sums AS (
        SELECT p.rule,
               coalesce(sum((p.part ->> 'found')::int), 0)::int AS found,
               coalesce(sum((p.part ->> 'corrected')::int), 0)::int AS corrected,
               coalesce(sum((p.part ->> 'alerted')::int), 0)::int AS alerted,
               coalesce(sum((p.part ->> 'failed')::int), 0)::int AS failed_entities,
               coalesce(sum((p.part ->> 'ms')::numeric), 0) AS ms,
               max((p.part ->> 'detect_ms')::numeric) AS detect_ms,
               max(p.part ->> 'path') AS path
          FROM p
         GROUP BY p.rule
    ), errs AS (
        SELECT e.rule, count(*)::int AS failed,
               jsonb_agg(e.error ORDER BY e.rn) FILTER (WHERE e.rn <= 10) AS errors
          FROM (SELECT p.rule, x.value AS error,
                       row_number() OVER (PARTITION BY p.rule ORDER BY p.n, x.ordinality) AS rn
                  FROM p
                 CROSS JOIN LATERAL jsonb_array_elements(coalesce(p.part -> 'errors', '[]'))
                            WITH ORDINALITY AS x) e
         GROUP BY e.rule
    )
    SELECT jsonb_object_agg(s.rule,
               jsonb_build_object(
                   'severity', consistency._check_severity(s.rule),
                   'found', CASE s.rule WHEN 'missing_appointment'
                                 THEN s.corrected + s.failed_entities ELSE s.found END,
                   'corrected', s.corrected, 'alerted', s.alerted,
                   'failed', coalesce(e.failed, 0), 'errors', coalesce(e.errors, '[]'),
                   'ms', round(s.ms, 3))
               || CASE WHEN s.path IS NULL THEN '{}'
                       ELSE jsonb_build_object('detect_ms', s.detect_ms, 'path', s.path) END)
      INTO v_rules
      FROM sums s
      LEFT JOIN errs e USING (rule);

    INSERT INTO consistency.check_runs (started_at, finished_at, duration_ms, waited_ms,
                                        check_window, found, corrected, alerted, failed, rules)
    SELECT p_started, clock_timestamp(),
           round(extract(epoch FROM clock_timestamp() - p_started)::numeric * 1000, 3), p_waited,
           p_window,
           coalesce(sum((value ->> 'found')::int), 0), coalesce(sum((value ->> 'corrected')::int), 0),
           coalesce(sum((value ->> 'alerted')::int), 0), coalesce(sum((value ->> 'failed')::int), 0),
           coalesce(v_rules, '{}')
      FROM jsonb_each(coalesce(v_rules, '{}'))
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- The result rows of a recorded run, in the contract's rule order.
CREATE OR REPLACE FUNCTION consistency._check_result(p_run_id bigint)
RETURNS TABLE (rule text, severity text, found int, corrected int, alerted int)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
BEGIN ATOMIC
    SELECT r.rule, c.rules -> r.rule ->> 'severity', (c.rules -> r.rule ->> 'found')::int,
           (c.rules -> r.rule ->> 'corrected')::int, (c.rules -> r.rule ->> 'alerted')::int
      FROM consistency.check_runs c
     CROSS JOIN consistency._check_rules() r
     WHERE c.id = p_run_id
     ORDER BY r.place;
END;

-- The whole run in one transaction (the contract's API; what pg_cron calls).
-- Every correction's row locks are held until the caller commits: for a
-- window with many corrections, `consistency check` runs the same steps in
-- bounded, committed slices instead.
CREATE OR REPLACE FUNCTION consistency.run_check(p_window interval DEFAULT NULL)
RETURNS TABLE (rule text, severity text, found int, corrected int, alerted int)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_started timestamptz := clock_timestamp();
    v_bounds  record;
    v_waited  numeric;
    v_step    text;
    v_found   record;
    v_parts   jsonb := '[]';
    v_run     bigint;
BEGIN
    v_bounds := consistency._check_window(p_window);
    -- One run at a time: a second run waits here, then starts from the first
    -- one's committed corrections, so nothing is corrected or alerted twice.
    PERFORM pg_advisory_xact_lock(consistency._check_lock_key());
    v_waited := consistency._ms_since(v_started);
    IF v_waited > 100 THEN
        RAISE NOTICE 'waited % ms for a concurrent consistency check', v_waited;
    END IF;

    FOREACH v_step IN ARRAY consistency._check_steps() LOOP
        FOR v_found IN
            SELECT * FROM consistency._check_detect(v_step, v_bounds.since, v_bounds.now)
        LOOP
            v_parts := v_parts || v_found.part;
            IF v_found.ids IS NOT NULL THEN
                v_parts := v_parts || consistency._check_correct(v_found.rule, v_found.ids,
                                                                 v_found.targets);
            END IF;
        END LOOP;
    END LOOP;

    v_run := consistency._check_record(v_bounds.check_window, v_started, v_waited, v_parts);
    RETURN QUERY SELECT r.* FROM consistency._check_result(v_run) AS r;
END
$$;

-- The batched run's begin and end (orchestrator/monitor.py). Begin takes the
-- run's lock at session level, so that it outlives the slices' commits
-- (a lost connection releases it), and returns the run's bounds.
CREATE OR REPLACE FUNCTION consistency._check_begin(p_window interval,
    OUT check_window interval, OUT since timestamptz, OUT now timestamptz,
    OUT started_at timestamptz, OUT waited_ms numeric)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    started_at := clock_timestamp();
    -- The window is checked before the lock: a session lock outlives the
    -- error of the transaction that took it.
    PERFORM consistency._check_window(p_window);
    PERFORM pg_advisory_lock(consistency._check_lock_key());
    waited_ms := consistency._ms_since(started_at);
    IF waited_ms > 100 THEN
        RAISE NOTICE 'waited % ms for a concurrent consistency check', waited_ms;
    END IF;
    SELECT w.check_window, w.since, w.now INTO check_window, since, now
      FROM consistency._check_window(p_window) AS w;
END
$$;

CREATE OR REPLACE FUNCTION consistency._check_end()
RETURNS boolean
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
RETURN pg_advisory_unlock(consistency._check_lock_key());

CREATE OR REPLACE FUNCTION consistency.check_call(p_call_id bigint)
RETURNS TABLE (issue text, severity text, detail jsonb)
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := consistency.now();
BEGIN
    PERFORM consistency._require_call(p_call_id);
    RETURN QUERY
    SELECT 'session_outcome_mismatch', consistency._check_severity('session_outcome_mismatch'), r.detail
      FROM consistency._rule_session_outcome_mismatch('-infinity', v_now) r
     WHERE r.call_id = p_call_id
    UNION ALL
    SELECT r.rule, consistency._check_severity(r.rule), r.detail
      FROM consistency._rule_link('-infinity', v_now, false) r
     WHERE r.call_id = p_call_id
    UNION ALL
    SELECT 'missing_direction', consistency._check_severity('missing_direction'), r.detail
      FROM consistency._rule_missing_direction('-infinity', v_now) r
     WHERE r.call_id = p_call_id
    UNION ALL
    SELECT 'recent_failure', consistency._check_severity('recent_failure'), r.detail
      FROM consistency._rule_recent_failure('-infinity', v_now) r
     WHERE r.call_id = p_call_id;
END
$$;
