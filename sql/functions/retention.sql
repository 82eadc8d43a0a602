-- Retention: alerts older than retention.alert_days move to alerts_archive.
-- One call of archive_alerts moves at most one batch, so each batch is its own
-- short transaction when the caller commits in between (the CLI does; so does
-- the procedure archive_alerts_all, which pg_cron can CALL).

-- An age beyond the longest retention (retention.alert_days at most 36500)
-- is refused rather than left to overflow the timestamp arithmetic.
CREATE OR REPLACE FUNCTION consistency._retention_cutoff(p_older_than interval)
RETURNS timestamptz
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_older_than IS NOT NULL AND p_older_than < interval '0' THEN
        RAISE EXCEPTION 'older_than must not be negative, got %', p_older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_older_than IS NOT NULL AND p_older_than > interval '36500 days' THEN
        RAISE EXCEPTION 'older_than must be at most 36500 days, got %', p_older_than
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN consistency.now()
           - coalesce(p_older_than,
                      make_interval(days => consistency.setting_int('retention.alert_days')));
END
$$;

-- An alert may leave the outbox once no relay sink still owes a delivery of
-- it (_alert_has_pending_delivery; alerts without delivery rows, e.g. when
-- no sink was ever configured, may always go). Archiving deletes its
-- delivered/failed delivery rows.
CREATE OR REPLACE FUNCTION consistency.count_archivable_alerts(p_older_than interval DEFAULT NULL)
RETURNS bigint
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT count(*) FROM consistency.alerts a
     WHERE a.detected_at < consistency._retention_cutoff(p_older_than)
       AND NOT consistency._alert_has_pending_delivery(a.id)
$$;

CREATE OR REPLACE FUNCTION consistency.archive_alerts(
    p_older_than interval DEFAULT NULL,
    p_batch      int DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_cutoff timestamptz;
    v_moved  bigint;
    v_ids    bigint[];
BEGIN
    IF p_batch IS NULL OR p_batch < 1 THEN
        RAISE EXCEPTION 'batch must be a positive number, got %', coalesce(p_batch::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    v_cutoff := consistency._retention_cutoff(p_older_than);

    -- SKIP LOCKED: a batch never waits for, nor blocks, a session that is
    -- touching the same alerts; those are simply taken by a later run.
    SELECT array_agg(b.id) INTO v_ids
      FROM (SELECT a.id
              FROM consistency.alerts a
             WHERE a.detected_at < v_cutoff
               AND NOT consistency._alert_has_pending_delivery(a.id)
             ORDER BY a.detected_at, a.id
             LIMIT p_batch
               FOR UPDATE SKIP LOCKED) AS b;

    -- Checked again now that the batch is locked, by a statement with a new
    -- snapshot: a re-drive (relay_redrive locks the alert first, so it
    -- cannot start any more) that committed after the first snapshot but
    -- before the lock made a delivery of the alert pending again, and the
    -- cascade would delete it with the alert. The check needs READ
    -- COMMITTED, as every caller of this function (the CLI, the procedure
    -- below, pg_cron) runs it.
    WITH moved AS (
        DELETE FROM consistency.alerts a
         WHERE a.id = ANY (v_ids)
           AND NOT consistency._alert_has_pending_delivery(a.id)
        RETURNING a.*
    )
    INSERT INTO consistency.alerts_archive (id, alert_type, severity, entity_type, entity_id,
                                            description, metadata, detected_at, auto_corrected,
                                            corrected_at, resolution_notes, archived_at)
    SELECT id, alert_type, severity, entity_type, entity_id, description, metadata, detected_at,
           auto_corrected, corrected_at, resolution_notes, clock_timestamp()
      FROM moved;
    GET DIAGNOSTICS v_moved = ROW_COUNT;

    -- Throttle memory older than the throttle window has no effect any more.
    DELETE FROM consistency.alert_throttle
     WHERE last_alert_at < consistency.now()
                           - consistency._throttle_window()
                           - interval '1 day';
    RETURN v_moved;
END
$$;

-- For schedulers that run SQL (pg_cron): every batch committed on its own.
-- The one routine of the guard without a pinned search_path: a procedure
-- with a SET clause may not COMMIT. So nothing in it resolves by name but
-- schema-qualified: the function it calls, and the operator.
CREATE OR REPLACE PROCEDURE consistency.archive_alerts_all(
    p_older_than interval DEFAULT NULL,
    p_batch      int DEFAULT 10000)
LANGUAGE plpgsql
AS $$
DECLARE
    v_moved bigint;
BEGIN
    LOOP
        v_moved := consistency.archive_alerts(p_older_than, p_batch);
        COMMIT;
        EXIT WHEN v_moved OPERATOR(pg_catalog.<) p_batch;
    END LOOP;
END
$$;
