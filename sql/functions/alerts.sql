-- Two ways in. raise_alert is the API: one alert, its arguments checked,
-- throttled. _insert_alerts is the single writer of alert rows (throttle,
-- rows, counts, deliveries, NOTIFY), for one entity or a set: raise_alert
-- calls it, and so do the guard's own writers whose arguments are valid by
-- construction, with a set or past the throttle (the sync triggers' G3
-- alerts, the monitor's inconsistent_link_status, rollback_booking's
-- repeated rollback).

-- Writes one alert per entity of the arrays (entity_id, description and
-- metadata side by side; an entity listed twice gets the first entry), in
-- entity order, and returns the new ids in that order. When p_throttle, only
-- entities not alerted within monitoring.alert_throttle_minutes (see
-- raise_alert), recorded in the throttle first; the window is read only
-- where a key was alerted before. What every written alert owes, in the same
-- transaction, is written here too, as plain statements:
--   - its count: one delta row per call (metric_counters, metrics.sql), so
--     the counter counts every alert this writes and never goes back;
--   - its deliveries: one pending row per registered sink that takes its
--     severity (relay.sql), so a relay started later, or a NOTIFY nobody
--     heard, loses nothing;
--   - its NOTIFY (a wake-up, delivered on commit, dropped on rollback: the
--     relay reads the outbox for the truth).
-- Nothing else writes alert rows; an INSERT into alerts by hand (only the
-- owner may) is neither counted nor relayed.
--
-- One entity (raise_alert, a single-row G3, a call rule) takes plain
-- statements; a set takes one statement with the same steps as CTEs. The
-- plain form costs ~20 us less per alert (measured: ~55 vs ~75 us for one
-- alert): the CTE's de-duplication, sorts, two data-modifying nodes and
-- semi-join run for one row too. An array, not a set, is returned, and the
-- window is read only on a conflict: ~20 us of a G3 alert raised by a sync
-- trigger.
--
-- Generic plans always: the plan cache would keep a custom plan, built at
-- every call, wherever one looks cheaper than the generic plan (the
-- delivery INSERT, whose custom plan folds the relay_delivery_failed test
-- away: one alert with two sinks cost ~255 us instead of ~170 us), and in
-- the first five calls of every session. The GUC costs ~1 us a call.
CREATE OR REPLACE FUNCTION consistency._insert_alerts(
    p_alert_type     text,
    p_severity       text,
    p_entity_type    text,
    p_entity_ids     bigint[],
    p_descriptions   text[],
    p_metadata       jsonb[],
    p_auto_corrected boolean,
    p_detected_at    timestamptz,
    p_throttle       boolean DEFAULT false)
RETURNS bigint[]
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_ids      bigint[];
    v_metadata jsonb;
    v_delta    bigint;
    v_now      timestamptz;
    v_tail     text;
BEGIN
    IF cardinality(p_entity_ids) = 1 THEN
        IF p_throttle THEN
            -- See raise_alert for why an upsert throttles races too.
            INSERT INTO consistency.alert_throttle AS t (alert_type, entity_type, entity_id,
                                                         last_alert_at)
            VALUES (p_alert_type, p_entity_type, p_entity_ids[1], p_detected_at)
            ON CONFLICT ON CONSTRAINT alert_throttle_key DO UPDATE
                SET last_alert_at = EXCLUDED.last_alert_at
                WHERE t.last_alert_at <= EXCLUDED.last_alert_at - consistency._throttle_window();
            IF NOT FOUND THEN
                RETURN '{}';
            END IF;
        END IF;
        v_metadata := coalesce(p_metadata[1], '{}');
        INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id, description,
                                        metadata, detected_at, auto_corrected, corrected_at)
        VALUES (p_alert_type, p_severity, p_entity_type, p_entity_ids[1],
                coalesce(p_descriptions[1], ''), v_metadata, p_detected_at,
                coalesce(p_auto_corrected, false), CASE WHEN p_auto_corrected THEN p_detected_at END)
        RETURNING ARRAY[id] INTO v_ids;
    ELSE
        WITH e AS (
            SELECT DISTINCT ON (x.entity_id) x.entity_id, x.description, x.metadata
              FROM unnest(p_entity_ids, p_descriptions, p_metadata)
                   WITH ORDINALITY AS x(entity_id, description, metadata, ord)
             ORDER BY x.entity_id, x.ord
        ), t AS (
            -- The throttle of raise_alert for the whole set. Keys are taken in
            -- entity order, so two sessions alerting overlapping sets wait for
            -- each other instead of deadlocking (an upsert may not touch a key
            -- twice, hence one entry per entity above). The entities that pass
            -- are those it returns: inserted, or updated because the window passed.
            INSERT INTO consistency.alert_throttle AS t (alert_type, entity_type, entity_id,
                                                         last_alert_at)
            SELECT p_alert_type, p_entity_type, e.entity_id, p_detected_at
              FROM e
             WHERE p_throttle
             ORDER BY e.entity_id
            ON CONFLICT ON CONSTRAINT alert_throttle_key DO UPDATE
                SET last_alert_at = EXCLUDED.last_alert_at
                WHERE t.last_alert_at <= EXCLUDED.last_alert_at - consistency._throttle_window()
            RETURNING t.entity_id
        ), ins AS (
            INSERT INTO consistency.alerts (alert_type, severity, entity_type, entity_id,
                                            description, metadata, detected_at, auto_corrected,
                                            corrected_at)
            SELECT p_alert_type, p_severity, p_entity_type, e.entity_id, coalesce(e.description, ''),
                   coalesce(e.metadata, '{}'), p_detected_at, coalesce(p_auto_corrected, false),
                   CASE WHEN p_auto_corrected THEN p_detected_at END
              FROM e
             WHERE NOT p_throttle
                -- Uncorrelated, so hashed: a correlated EXISTS scanned the whole
                -- set for each entity (100 alerts: ~7 us an alert).
                OR e.entity_id IN (SELECT t.entity_id FROM t)
                -- NULL is an entity too (the throttle key is NULLS NOT DISTINCT).
                OR (e.entity_id IS NULL AND EXISTS (SELECT FROM t WHERE t.entity_id IS NULL))
             ORDER BY e.entity_id
            RETURNING id
        )
        SELECT array_agg(ins.id ORDER BY ins.id) INTO v_ids FROM ins;
        IF v_ids IS NULL THEN
            RETURN '{}';
        END IF;
    END IF;

    -- One delta row per call, and a fold when its id is a multiple of 128,
    -- as for every counter (metrics.sql).
    INSERT INTO consistency.metric_counter_deltas (metric, label1, label2, value)
    VALUES ('alerts', p_alert_type, p_severity, cardinality(v_ids))
    RETURNING id INTO v_delta;
    IF v_delta % 128 = 0 THEN
        PERFORM consistency._fold_metric_counters();
    END IF;

    -- No sink yet (a fresh install, a deployment without a relay): nothing
    -- is owed, for ~3 us instead of the ~15 us of an INSERT that finds no
    -- row to write. A relay_delivery_failed alert skips the sink it is
    -- about: that sink just failed, and telling it so would go nowhere. The
    -- alerts are new, so no (alert, sink) pair can exist yet.
    IF EXISTS (SELECT FROM consistency.relay_sinks) THEN
        v_now := consistency.now();
        INSERT INTO consistency.relay_deliveries (alert_id, sink_id, next_attempt_at, created_at)
        SELECT a.id, s.id, consistency._relay_first_due(s.digest_seconds, p_severity, v_now), v_now
          FROM unnest(v_ids) AS a(id)
          JOIN consistency.relay_sinks AS s
            ON consistency._severity_rank(p_severity) >= consistency._severity_rank(s.min_severity)
         WHERE p_alert_type <> 'relay_delivery_failed'
               -- A set's metadata is read back from its rows; one that names
               -- no sink (raised by hand) goes to every sink.
               OR (coalesce(v_metadata, (SELECT x.metadata FROM consistency.alerts AS x
                                          WHERE x.id = a.id)) ->> 'sink_id')
                  IS DISTINCT FROM s.id::text;
    END IF;

    -- The payload is json_build_object('id', .., 'alert_type', ..,
    -- 'severity', ..)::text, byte for byte; all but the id is the same for
    -- every alert of the call.
    v_tail := ', "alert_type" : ' || pg_catalog.to_json(p_alert_type)::text
              || ', "severity" : ' || pg_catalog.to_json(p_severity)::text || '}';
    PERFORM pg_catalog.pg_notify('consistency_alerts', '{"id" : ' || a.id || v_tail)
       FROM unnest(v_ids) AS a(id);
    RETURN v_ids;
END
$$;

-- How long the same (alert_type, entity) stays quiet after an alert.
-- (SQL-standard body: resolved when created, inlined where it is called.)
CREATE OR REPLACE FUNCTION consistency._throttle_window()
RETURNS interval
LANGUAGE sql STABLE
RETURN make_interval(mins => consistency.setting_int('monitoring.alert_throttle_minutes'));

-- The argument checks of raise_alert.
CREATE OR REPLACE FUNCTION consistency._check_alert(
    p_alert_type  text,
    p_severity    text,
    p_entity_type text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
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
BEGIN
    PERFORM consistency._check_alert(p_alert_type, p_severity, p_entity_type);
    -- Throttle by upsert (in _insert_alerts): the unique key makes a racing
    -- session wait for the first one's commit and then re-check the WHERE
    -- against the committed row (READ COMMITTED), or fail with a
    -- serialization error (REPEATABLE READ and above). Either way only one
    -- alert is written per window.
    RETURN (consistency._insert_alerts(p_alert_type, p_severity, p_entity_type, ARRAY[p_entity_id],
                                       ARRAY[p_description], ARRAY[p_metadata], p_auto_corrected,
                                       consistency.now(), true))[1];
END
$$;
