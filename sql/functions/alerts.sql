-- raise_alert: the way an alert enters the outbox. _insert_alert is the
-- single writer (row + NOTIFY), for the rare caller that must not be throttled.

CREATE OR REPLACE FUNCTION consistency._insert_alert(
    p_alert_type     text,
    p_severity       text,
    p_entity_type    text,
    p_entity_id      bigint,
    p_description    text,
    p_metadata       jsonb,
    p_auto_corrected boolean,
    p_detected_at    timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id, description,
                                    metadata, detected_at, auto_corrected, corrected_at)
    VALUES (p_alert_type, p_severity, p_entity_type, p_entity_id, coalesce(p_description, ''),
            coalesce(p_metadata, '{}'), p_detected_at, coalesce(p_auto_corrected, false),
            CASE WHEN p_auto_corrected THEN p_detected_at END)
    RETURNING id INTO v_id;

    -- Delivered on commit, dropped on rollback: the relay treats it as a
    -- wake-up only and reads the outbox for the truth.
    PERFORM pg_notify('consistency_alerts',
                      json_build_object('id', v_id, 'alert_type', p_alert_type,
                                        'severity', p_severity)::text);
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION consistency.raise_alert(
    p_alert_type     text,
    p_severity       text,
    p_entity_type    text,
    p_entity_id      bigint,
    p_description    text,
    p_metadata       jsonb DEFAULT '{}',
    p_auto_corrected boolean DEFAULT false)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := consistency.now();
    v_window interval;
BEGIN
    IF coalesce(btrim(p_alert_type), '') = '' THEN
        RAISE EXCEPTION 'alert_type must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_severity IS NULL OR p_severity NOT IN ('critical', 'warning', 'info') THEN
        RAISE EXCEPTION 'severity must be critical, warning or info, got %', coalesce(p_severity, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_entity_type IS NULL OR p_entity_type NOT IN ('call', 'appointment', 'circuit', 'system') THEN
        RAISE EXCEPTION 'entity_type must be call, appointment, circuit or system, got %',
                        coalesce(p_entity_type, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    v_window := make_interval(mins => consistency.setting_int('monitoring.alert_throttle_minutes'));

    -- Throttle by upsert: the unique key makes a racing session wait for the
    -- first one's commit and then re-check the WHERE against the committed
    -- row (READ COMMITTED), or fail with a serialization error (REPEATABLE
    -- READ and above). Either way only one alert is written per window.
    INSERT INTO consistency.alert_throttle AS t (alert_type, entity_type, entity_id, last_alert_at)
    VALUES (p_alert_type, p_entity_type, p_entity_id, v_now)
    ON CONFLICT ON CONSTRAINT alert_throttle_key DO UPDATE
        SET last_alert_at = EXCLUDED.last_alert_at
        WHERE t.last_alert_at <= EXCLUDED.last_alert_at - v_window;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;

    RETURN consistency._insert_alert(p_alert_type, p_severity, p_entity_type, p_entity_id,
                                     p_description, p_metadata, p_auto_corrected, v_now);
END
$$;
