-- check_findings: each entity that a rule of run_check finds in a window
-- right now, by the rules' own definitions (the _rule_* functions of
-- monitor.sql); run_check records counts only. Writes nothing: the window's
-- counterpart of check_call.
--
-- `consistency check` calls it in the run's own transaction just before
-- run_check, so it names what that run starts from. It takes run_check's
-- lock first (the same key; run_check then holds it already), so no other
-- run corrects anything in between. Rules that run_check evaluates after
-- some of its corrections (the link rules after orphans are re-attached and
-- directions fixed, session_outcome_mismatch after every correction) may
-- find a little less than is named here.
CREATE OR REPLACE FUNCTION consistency.check_findings(p_window interval DEFAULT NULL)
RETURNS TABLE (rule text, entity_type text, entity_id bigint)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_window interval := coalesce(p_window,
                 make_interval(hours => consistency.setting_int('monitoring.recent_hours')));
    v_now    timestamptz := consistency.now();
    v_since  timestamptz;
    v_bulk   boolean;
BEGIN
    -- Bounds of the window are run_check's to enforce, in the same
    -- transaction right after; a window of nothing finds nothing here.
    PERFORM pg_advisory_xact_lock(consistency._check_lock_key());
    v_since := v_now - v_window;
    -- The bulk path where the window is the whole table; the probe path
    -- (right for small windows, correct for any) elsewhere.
    v_bulk := v_since <= (SELECT min(c.created_at) FROM public.calls c);
    RETURN QUERY
    SELECT f.rule, f.entity_type, f.entity_id
      FROM (SELECT 'missing_direction' AS rule, 'call' AS entity_type, d.call_id AS entity_id
              FROM consistency._rule_missing_direction(v_since, v_now) d
            UNION ALL
            SELECT 'orphaned_appointment', 'appointment', o.appointment_id
              FROM consistency._rule_orphaned_appointment(v_since) o
            UNION ALL
            SELECT l.rule, 'call', l.call_id
              FROM consistency._rule_link(v_since, v_now, coalesce(v_bulk, false)) l
            UNION ALL
            SELECT 'session_outcome_mismatch', 'call', s.call_id
              FROM consistency._rule_session_outcome_mismatch(v_since, v_now) s
            UNION ALL
            SELECT 'recent_failure', 'call', r.call_id
              FROM consistency._rule_recent_failure(v_since, v_now) r) f
     ORDER BY f.rule, f.entity_id;
END
$$;
