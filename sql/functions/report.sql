-- daily_report: one jsonb document per day, read by `consistency report`,
-- the dashboard and pg_cron. Reads only; alerts that retention already moved
-- to alerts_archive still count, so an old day reports the same figures.
-- A day is the session's day (its TimeZone); a `timestamp without time zone`
-- column holds times of the profile's zone, compared as the instants they are.

CREATE OR REPLACE FUNCTION consistency.daily_report(p_day date DEFAULT current_date)
RETURNS jsonb
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_from        timestamptz := p_day::timestamptz;
    v_to          timestamptz := (p_day + 1)::timestamptz;
    v_calls       bigint;
    v_appts       bigint;
    v_bad_calls   bigint;
    v_alerts      jsonb;
    v_backlog     jsonb;
    v_circuit     bigint;
BEGIN
    IF p_day IS NULL THEN
        RAISE EXCEPTION 'day must not be NULL' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT count(*) INTO v_calls
      FROM public.calls
     WHERE created_at >= {{ calls.created_at.convert('v_from') }} AND created_at < {{ calls.created_at.convert('v_to') }};
    SELECT count(*) INTO v_appts
      FROM public.appointments
     WHERE created_at >= {{ appointments.created_at.convert('v_from') }}
       AND created_at < {{ appointments.created_at.convert('v_to') }};

    -- A call of the day is inconsistent if it ever got a critical or warning
    -- alert, whenever that alert was raised.
    SELECT count(DISTINCT c.id) INTO v_bad_calls
      FROM public.calls c
     WHERE c.created_at >= {{ calls.created_at.convert('v_from') }} AND c.created_at < {{ calls.created_at.convert('v_to') }}
       AND (EXISTS (SELECT 1 FROM consistency.alerts a
                     WHERE a.entity_type = 'call' AND a.entity_id = c.id
                       AND a.severity IN ('critical', 'warning'))
            OR EXISTS (SELECT 1 FROM consistency.alerts_archive a
                        WHERE a.entity_type = 'call' AND a.entity_id = c.id
                          AND a.severity IN ('critical', 'warning')));

    WITH day_alerts AS (
        SELECT alert_type, severity, auto_corrected
          FROM consistency.alerts WHERE detected_at >= v_from AND detected_at < v_to
        UNION ALL
        SELECT alert_type, severity, auto_corrected
          FROM consistency.alerts_archive WHERE detected_at >= v_from AND detected_at < v_to
    ), by_type AS (
        SELECT alert_type, count(*) AS n FROM day_alerts GROUP BY alert_type
    )
    SELECT jsonb_build_object(
               'total', (SELECT count(*) FROM day_alerts),
               'by_type', coalesce((SELECT jsonb_object_agg(alert_type, n) FROM by_type), '{}'),
               'by_severity', jsonb_build_object(
                   'critical', (SELECT count(*) FROM day_alerts WHERE severity = 'critical'),
                   'warning',  (SELECT count(*) FROM day_alerts WHERE severity = 'warning'),
                   'info',     (SELECT count(*) FROM day_alerts WHERE severity = 'info')),
               'auto_corrected', (SELECT count(*) FROM day_alerts WHERE auto_corrected),
               'manual', (SELECT count(*) FROM day_alerts WHERE NOT auto_corrected),
               'validation_failures',
                   (SELECT count(*) FROM day_alerts WHERE alert_type = 'appointment_rollback'),
               'top_issues', coalesce((
                   SELECT jsonb_agg(jsonb_build_object('alert_type', alert_type, 'count', n)
                                    ORDER BY n DESC, alert_type)
                     FROM (SELECT alert_type, n FROM by_type
                            ORDER BY n DESC, alert_type LIMIT 5) top), '[]'))
      INTO v_alerts;

    SELECT count(*) INTO v_circuit
      FROM consistency.circuit_breaker_events
     WHERE to_state = 'open' AND at >= v_from AND at < v_to;

    SELECT jsonb_build_object(
               'pending', count(*) FILTER (WHERE status = 'pending'),
               'in_progress', count(*) FILTER (WHERE status = 'in_progress'),
               'oldest_pending_age_seconds',
                   round(extract(epoch FROM consistency.now()
                                 - min(created_at) FILTER (WHERE status = 'pending')))::bigint)
      INTO v_backlog
      FROM consistency.manual_review_queue
     WHERE status IN ('pending', 'in_progress');

    RETURN jsonb_build_object(
        'period', jsonb_build_object('day', p_day, 'from', v_from, 'to', v_to),
        'totals', jsonb_build_object('calls', v_calls, 'appointments', v_appts,
                                     'alerts', v_alerts -> 'total'),
        'consistency_rate_pct',
            CASE WHEN v_calls = 0 THEN 100.0
                 ELSE round(100.0 * (v_calls - v_bad_calls) / v_calls, 2) END,
        'inconsistent_calls', v_bad_calls,
        'alerts_by_type', v_alerts -> 'by_type',
        'alerts_by_severity', v_alerts -> 'by_severity',
        'auto_corrected', v_alerts -> 'auto_corrected',
        'manual', v_alerts -> 'manual',
        'circuit_opens', v_circuit,
        'validation_failures', v_alerts -> 'validation_failures',
        'review_backlog', v_backlog,
        'top_issues', v_alerts -> 'top_issues');
END
$$;

CREATE OR REPLACE FUNCTION consistency.store_daily_report(p_day date DEFAULT current_date - 1)
RETURNS jsonb
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    INSERT INTO consistency.daily_reports (day, report)
    VALUES (p_day, consistency.daily_report(p_day))
    ON CONFLICT (day) DO UPDATE SET report = EXCLUDED.report, created_at = clock_timestamp()
    RETURNING report
$$;
