-- Alert relay: sinks, delivery rows and their lifecycle
--   pending -> in_flight (claimed under a lease, renewed while the send runs)
--     in_flight -> delivered
--               -> pending (transient failure: capped exponential backoff)
--               -> dead    (permanent refusal, give-up age or attempt limit reached)
--   dead -> pending (relay_redrive, audited)
-- An in_flight row whose lease has run out is due again, so a crashed relay's
-- claims come back. Delivery is at-least-once per (alert, sink). The pending
-- rows of a new alert are written by the alert's writer, _insert_alerts
-- (alerts.sql), in the alert's transaction, so the outbox and the delivery
-- state never disagree.

CREATE OR REPLACE FUNCTION consistency._severity_rank(p_severity text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 WHEN 'info' THEN 1 END;

-- When a new delivery is first due. On a digest sink, non-critical rows
-- become due together at the end of their window (date_bin), so one claim
-- picks up the whole digest; critical alerts never wait.
CREATE OR REPLACE FUNCTION consistency._relay_first_due(p_digest_seconds integer,
                                                        p_severity text,
                                                        p_now timestamptz)
RETURNS timestamptz
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE WHEN p_digest_seconds IS NOT NULL AND p_severity <> 'critical'
            THEN date_bin(make_interval(secs => p_digest_seconds), p_now,
                          timestamptz '2000-01-01 00:00:00+00')
                 + make_interval(secs => p_digest_seconds)
            ELSE p_now END;

-- Registers (or refreshes) a sink and returns its id. A new sink receives the
-- alerts raised from now on, plus those detected within p_backlog when given:
-- replaying the whole outbox into a fresh Slack channel would bury the one
-- alert that matters. Re-registering the same URL (same fingerprint) keeps
-- its id and its deliveries, and never replays a backlog again.
CREATE OR REPLACE FUNCTION consistency.relay_register_sink(
    p_fingerprint    text,
    p_name           text,
    p_scheme         text,
    p_min_severity   text DEFAULT 'info',
    p_digest_seconds integer DEFAULT NULL,
    p_backlog        interval DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now      timestamptz := consistency.now();
    v_id       bigint;
    v_inserted boolean;
BEGIN
    IF p_fingerprint IS NULL OR p_fingerprint !~ '^[0-9a-f]{64}$' THEN
        RAISE EXCEPTION 'sink fingerprint must be 64 lowercase hex digits'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_min_severity IS NULL OR consistency._severity_rank(p_min_severity) IS NULL THEN
        RAISE EXCEPTION 'min_severity must be critical, warning or info, got %',
                        coalesce(p_min_severity, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_digest_seconds IS NOT NULL AND p_digest_seconds <= 0 THEN
        RAISE EXCEPTION 'digest must be a positive number of seconds, got %', p_digest_seconds
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_backlog IS NOT NULL AND p_backlog < interval '0' THEN
        RAISE EXCEPTION 'backlog must not be negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- xmax = 0 only on a row this statement inserted: of two relays
    -- registering the same new sink at once, exactly one hands it the backlog.
    INSERT INTO consistency.relay_sinks AS s (fingerprint, name, scheme, min_severity,
                                              digest_seconds, created_at, last_seen_at)
    VALUES (p_fingerprint, p_name, p_scheme, p_min_severity, p_digest_seconds, v_now, v_now)
    ON CONFLICT (fingerprint) DO UPDATE
        SET name = EXCLUDED.name, scheme = EXCLUDED.scheme,
            min_severity = EXCLUDED.min_severity, digest_seconds = EXCLUDED.digest_seconds,
            last_seen_at = EXCLUDED.last_seen_at
    RETURNING s.id, (s.xmax = 0) INTO v_id, v_inserted;

    IF v_inserted AND p_backlog IS NOT NULL THEN
        INSERT INTO consistency.relay_deliveries (alert_id, sink_id, next_attempt_at, created_at)
        SELECT a.id, v_id, consistency._relay_first_due(p_digest_seconds, a.severity, v_now), v_now
          FROM consistency.alerts AS a
         WHERE a.detected_at >= v_now - p_backlog
           AND consistency._severity_rank(a.severity) >= consistency._severity_rank(p_min_severity)
        ON CONFLICT ON CONSTRAINT relay_deliveries_alert_sink_key DO NOTHING;
    END IF;
    RETURN v_id;
END
$$;

-- Every relay serving a sink refreshes last_seen_at: `relay sinks` shows a
-- sink nobody serves any more.
CREATE OR REPLACE FUNCTION consistency.relay_heartbeat(p_sink_ids bigint[])
RETURNS integer
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH seen AS (
        UPDATE consistency.relay_sinks SET last_seen_at = consistency.now()
         WHERE id = ANY (p_sink_ids)
        RETURNING 1
    )
    SELECT count(*)::integer FROM seen
$$;

-- Forgets a sink that is no longer configured, with its delivery rows:
-- otherwise its pending rows would hold back archive_alerts forever.
CREATE OR REPLACE FUNCTION consistency.relay_unregister_sink(p_sink_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- The sink's deliveries first (in id order), then the sink: a relay's
    -- writes take a delivery, then its sink (relay_complete, relay_fail).
    -- Deleting the sink first, its deliveries following by the foreign key's
    -- cascade, takes the two the other way round and deadlocks with a relay
    -- completing a send of this sink.
    PERFORM FROM consistency.relay_deliveries d WHERE d.sink_id = p_sink_id ORDER BY d.id FOR UPDATE;
    DELETE FROM consistency.relay_deliveries WHERE sink_id = p_sink_id;
    DELETE FROM consistency.relay_sinks WHERE id = p_sink_id;
    RETURN FOUND;
END
$$;

-- Ends a delivery dead and tells the other sinks. The notice is about the
-- sink (entity 'system', id = sink id), so raise_alert's throttle sends one
-- per sink and window however many deliveries an outage kills; each dead row
-- stays visible in relay_status until it is re-driven.
CREATE OR REPLACE FUNCTION consistency._relay_bury(p_row consistency.relay_deliveries,
                                                   p_error text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz := consistency.now();
    v_alert consistency.alerts;
    v_sink  consistency.relay_sinks;
    v_dead  bigint;
BEGIN
    UPDATE consistency.relay_deliveries
       SET status = 'dead', dead_at = v_now, last_error = p_error, next_attempt_at = v_now,
           lease_owner = NULL, lease_expires_at = NULL
     WHERE id = p_row.id;
    UPDATE consistency.relay_sinks SET last_error = p_error, last_error_at = v_now
     WHERE id = p_row.sink_id
    RETURNING * INTO v_sink;
    SELECT * INTO v_alert FROM consistency.alerts WHERE id = p_row.alert_id;
    -- A failure to report a failure is not reported again: that way lies
    -- an endless chain of alerts about alerts.
    IF v_alert.alert_type IS DISTINCT FROM 'relay_delivery_failed' THEN
        SELECT count(*) INTO v_dead FROM consistency.relay_deliveries
         WHERE sink_id = p_row.sink_id AND status = 'dead';
        -- The row is dead whether or not the notice can be raised (a setting
        -- written around set_setting, say): an error here would otherwise
        -- undo the burial and stop the relay recording it, again and again.
        BEGIN
            PERFORM consistency.raise_alert(
                'relay_delivery_failed',
                CASE WHEN v_alert.severity = 'critical' THEN 'critical' ELSE 'warning' END,
                'system', p_row.sink_id,
                format('alert %s (%s) could not be delivered to %s after %s attempt(s): %s; '
                       '%s dead deliveries on this sink (consistency relay status, relay redrive)',
                       p_row.alert_id, v_alert.alert_type, v_sink.name, p_row.attempts, p_error,
                       v_dead),
                jsonb_build_object('alert_id', p_row.alert_id, 'sink_id', p_row.sink_id,
                                   'delivery_id', p_row.id, 'sink', v_sink.name, 'status', 'dead',
                                   'attempts', p_row.attempts, 'error', p_error,
                                   'dead_deliveries', v_dead));
        EXCEPTION WHEN OTHERS THEN
            RAISE WARNING 'delivery % is dead, but relay_delivery_failed could not be raised: %',
                          p_row.id, SQLERRM;
        END;
    END IF;
END
$$;

-- Claims due deliveries for p_owner: at most p_limits[i] of sink p_sink_ids[i],
-- so a relay fills each sink's own window and a hanging sink's backlog never
-- crowds out a healthy one. SKIP LOCKED lets several relays claim side by
-- side; the lease (renewed by relay_renew while the send runs, not the row
-- lock, which ends with this statement) keeps a claimed row away from them.
-- The attempt is counted here, so a relay that dies after sending still uses
-- one up, and limits are checked here, so a row never exceeds them: a due
-- row at p_max_attempts, or whose lease ran out (its relay died or hung
-- mid-send) past its give-up age, is buried instead of sent again.
-- p_due_by (for `relay --once`) leaves out what became due after a pass began.
CREATE OR REPLACE FUNCTION consistency.relay_claim(
    p_owner        text,
    p_sink_ids     bigint[],
    p_limits       integer[],
    p_lease        interval DEFAULT '30 seconds',
    p_max_attempts integer DEFAULT NULL,
    p_give_up      interval DEFAULT '24 hours',
    p_due_by       timestamptz DEFAULT NULL)
RETURNS TABLE (delivery_id bigint, sink_id bigint, attempts integer, alert_id bigint,
               alert_type text, severity text, entity_type text, entity_id bigint,
               description text, metadata jsonb, detected_at timestamptz,
               auto_corrected boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := consistency.now();
    v_due_by timestamptz := least(coalesce(p_due_by, v_now), v_now);
    v_ids    bigint[];
    v_row    consistency.relay_deliveries;
BEGIN
    PERFORM consistency._require_text(p_owner, 'lease owner');
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_give_up IS NULL OR p_give_up <= interval '0' THEN
        RAISE EXCEPTION 'give-up age must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_max_attempts IS NOT NULL AND p_max_attempts < 1 THEN
        RAISE EXCEPTION 'max attempts must be at least 1, got %', p_max_attempts
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF cardinality(p_sink_ids) IS DISTINCT FROM cardinality(p_limits) THEN
        RAISE EXCEPTION 'one limit per sink is needed' USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT array_agg(due.id) INTO v_ids
      FROM unnest(p_sink_ids, p_limits) AS l(sink_id, n)
     CROSS JOIN LATERAL (
            SELECT d.id
              FROM consistency.relay_deliveries AS d
             WHERE d.sink_id = l.sink_id
               AND d.status IN ('pending', 'in_flight')
               AND d.next_attempt_at <= v_due_by
             ORDER BY d.next_attempt_at, d.id
             LIMIT greatest(l.n, 0)
               FOR UPDATE SKIP LOCKED) AS due;
    IF v_ids IS NULL THEN
        RETURN;
    END IF;

    FOR v_row IN
        SELECT d.* FROM consistency.relay_deliveries AS d
         WHERE d.id = ANY (v_ids)
           AND ((p_max_attempts IS NOT NULL AND d.attempts >= p_max_attempts)
                OR (d.status = 'in_flight'
                    AND v_now >= coalesce(d.redriven_at, d.created_at) + p_give_up))
    LOOP
        PERFORM consistency._relay_bury(v_row,
            CASE WHEN v_row.status = 'in_flight'
                 THEN format('no outcome of attempt %s: the relay sending it stopped or lost '
                             'the database before recording one', v_row.attempts)
                 ELSE format('attempt limit %s reached; last error: %s', p_max_attempts,
                             coalesce(v_row.last_error, 'none')) END);
        v_ids := array_remove(v_ids, v_row.id);
    END LOOP;

    RETURN QUERY
    WITH claimed AS (
        UPDATE consistency.relay_deliveries AS d
           SET status = 'in_flight', lease_owner = p_owner,
               lease_expires_at = v_now + p_lease, next_attempt_at = v_now + p_lease,
               attempts = d.attempts + 1
         WHERE d.id = ANY (v_ids)
        RETURNING d.id, d.sink_id, d.attempts, d.alert_id
    )
    SELECT c.id, c.sink_id, c.attempts, a.id, a.alert_type, a.severity, a.entity_type,
           a.entity_id, a.description, a.metadata, a.detected_at, a.auto_corrected
      FROM claimed AS c
      JOIN consistency.alerts AS a ON a.id = c.alert_id
     ORDER BY a.id, c.sink_id;
END
$$;

-- Extends the lease of rows p_owner still holds while their sends run (or
-- wait for a free slot of their sink). Returns how many it still holds.
CREATE OR REPLACE FUNCTION consistency.relay_renew(p_owner text, p_delivery_ids bigint[],
                                                   p_lease interval)
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_until timestamptz := consistency.now() + p_lease;
    v_count integer;
BEGIN
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE consistency.relay_deliveries
       SET lease_expires_at = v_until, next_attempt_at = v_until
     WHERE id = ANY (p_delivery_ids) AND status = 'in_flight' AND lease_owner = p_owner;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Hands back claimed rows whose send never started (a stopping relay): due
-- at once for anyone, and the attempt the claim counted is taken back.
CREATE OR REPLACE FUNCTION consistency.relay_release(p_owner text, p_delivery_ids bigint[])
RETURNS integer
LANGUAGE sql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH released AS (
        UPDATE consistency.relay_deliveries
           SET status = 'pending', attempts = greatest(attempts - 1, 0), lease_owner = NULL,
               lease_expires_at = NULL, next_attempt_at = consistency.now()
         WHERE id = ANY (p_delivery_ids) AND status = 'in_flight' AND lease_owner = p_owner
        RETURNING 1
    )
    SELECT count(*)::integer FROM released
$$;

-- Marks deliveries as sent. A relay whose lease ran out may still report a
-- send it made: the message went out, so it counts, whoever holds the lease
-- and even if the row was buried meanwhile.
CREATE OR REPLACE FUNCTION consistency.relay_complete(p_delivery_ids bigint[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now   timestamptz := consistency.now();
    v_count integer;
BEGIN
    WITH done AS (
        UPDATE consistency.relay_deliveries
           SET status = 'delivered', delivered_at = v_now, last_error = NULL, dead_at = NULL,
               lease_owner = NULL, lease_expires_at = NULL
         WHERE id = ANY (p_delivery_ids)
           AND status <> 'delivered'
        RETURNING sink_id
    ), seen AS (
        -- At most one write a second per sink: relays completing side by
        -- side would otherwise queue on the sink's row.
        UPDATE consistency.relay_sinks AS s
           SET last_success_at = v_now
         WHERE s.id IN (SELECT sink_id FROM done)
           AND (s.last_success_at IS NULL OR s.last_success_at <= v_now - interval '1 second')
    )
    SELECT count(*) INTO v_count FROM done;
    RETURN v_count;
END
$$;

-- Records a failed send and returns the row's new status. Transient failures
-- are retried after base * 2^(attempts-1) seconds, capped at
-- p_max_delay_seconds, plus 0-10 % jitter so relays that failed together do
-- not retry together, or after the server's Retry-After when that is later;
-- never later than the give-up age (from created_at, or the last re-drive),
-- so the last attempt falls on it. A failure at or past the give-up age, at
-- p_max_attempts, or a permanent one ends the row dead (_relay_bury). Only
-- the lease owner may fail a row: a relay whose lease ran out must not undo
-- the work of the relay that took it over.
CREATE OR REPLACE FUNCTION consistency.relay_fail(
    p_owner               text,
    p_delivery_id         bigint,
    p_error               text,
    p_permanent           boolean DEFAULT false,
    p_retry_after_seconds double precision DEFAULT NULL,
    p_max_attempts        integer DEFAULT NULL,
    p_base_delay_seconds  double precision DEFAULT 1,
    p_max_delay_seconds   double precision DEFAULT 300,
    p_give_up             interval DEFAULT '24 hours')
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now     timestamptz := consistency.now();
    v_row     consistency.relay_deliveries;
    v_give_up timestamptz;
    v_delay   double precision;
    v_error   text := left(coalesce(nullif(btrim(p_error), ''), 'unknown error'), 2000);
BEGIN
    SELECT * INTO v_row FROM consistency.relay_deliveries WHERE id = p_delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_row.status <> 'in_flight' OR v_row.lease_owner IS DISTINCT FROM p_owner THEN
        RETURN v_row.status;
    END IF;
    v_give_up := coalesce(v_row.redriven_at, v_row.created_at)
                 + coalesce(p_give_up, interval '24 hours');

    IF coalesce(p_permanent, false) THEN
        PERFORM consistency._relay_bury(v_row, 'refused: ' || v_error);
        RETURN 'dead';
    ELSIF v_row.attempts >= coalesce(p_max_attempts, 2147483647) THEN
        PERFORM consistency._relay_bury(v_row, format('attempt limit %s reached: %s',
                                                      p_max_attempts, v_error));
        RETURN 'dead';
    ELSIF v_now >= v_give_up THEN
        PERFORM consistency._relay_bury(v_row, format('given up after %s: %s',
                                                      coalesce(p_give_up, interval '24 hours'),
                                                      v_error));
        RETURN 'dead';
    END IF;

    v_delay := least(coalesce(p_max_delay_seconds, 300),
                     coalesce(p_base_delay_seconds, 1)
                     * power(2, least(greatest(v_row.attempts - 1, 0), 60)))
               * (1 + random() * 0.1);
    v_delay := greatest(v_delay, coalesce(p_retry_after_seconds, 0));
    -- Whatever a server's Retry-After said (1e300, Infinity, NaN: greatest()
    -- ranks NaN above every number, least() below), the wait ends at the
    -- give-up age, before make_interval() could overflow.
    v_delay := least(v_delay, extract(epoch FROM v_give_up - v_now)::double precision);
    UPDATE consistency.relay_deliveries
       SET status = 'pending', last_error = v_error, lease_owner = NULL, lease_expires_at = NULL,
           next_attempt_at = least(v_now + make_interval(secs => v_delay), v_give_up)
     WHERE id = p_delivery_id;
    UPDATE consistency.relay_sinks SET last_error = v_error, last_error_at = v_now
     WHERE id = v_row.sink_id;
    RETURN 'pending';
END
$$;

-- Puts dead deliveries back to pending (attempts from 0, give-up age from
-- now), optionally only those of one sink, dead within p_since, or of one
-- alert type. Audited whether or not anything matched: it is an operator's act.
-- A dead delivery no longer holds its alert back from archive_alerts, which
-- deletes the alert with its deliveries: so the alerts are locked first (FOR
-- KEY SHARE, the lock that keeps a row from being deleted). An archive batch
-- skips a locked alert (SKIP LOCKED), and re-checks the ones it locked with a
-- fresh snapshot; one that holds an alert already makes this wait, and then
-- its deliveries are gone and not counted. Only deliveries of locked alerts
-- are re-driven.
CREATE OR REPLACE FUNCTION consistency.relay_redrive(
    p_sink_id    bigint DEFAULT NULL,
    p_since      interval DEFAULT NULL,
    p_alert_type text DEFAULT NULL,
    p_actor      text DEFAULT 'system')
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := consistency.now();
    v_count  integer;
    v_ids    bigint[];
    v_alerts bigint[];
BEGIN
    PERFORM consistency._require_text(p_actor, 'actor');
    IF p_sink_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM consistency.relay_sinks WHERE id = p_sink_id) THEN
        RAISE EXCEPTION 'no relay sink with id %', p_sink_id
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_since IS NOT NULL AND p_since <= interval '0' THEN
        RAISE EXCEPTION 'since must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT array_agg(locked.id) INTO v_alerts
      FROM (SELECT a.id
              FROM consistency.alerts AS a
             WHERE a.id IN (SELECT d.alert_id
                              FROM consistency.relay_deliveries AS d
                             WHERE d.status = 'dead'
                               AND (p_sink_id IS NULL OR d.sink_id = p_sink_id)
                               AND (p_since IS NULL OR d.dead_at >= v_now - p_since))
               AND (p_alert_type IS NULL OR a.alert_type = p_alert_type)
             ORDER BY a.id
               FOR KEY SHARE OF a) AS locked;
    WITH moved AS (
        UPDATE consistency.relay_deliveries AS d
           SET status = 'pending', attempts = 0, next_attempt_at = v_now, redriven_at = v_now,
               dead_at = NULL
         WHERE d.status = 'dead'
           AND d.alert_id = ANY (v_alerts)
           AND (p_sink_id IS NULL OR d.sink_id = p_sink_id)
           AND (p_since IS NULL OR d.dead_at >= v_now - p_since)
        RETURNING d.id
    )
    SELECT count(*), array_agg(id ORDER BY id) INTO v_count, v_ids FROM moved;
    PERFORM consistency._audit(
        p_actor, 'relay_redrive', 'relay_sink', coalesce(p_sink_id::text, 'all'),
        jsonb_build_object('status', 'dead', 'sink_id', p_sink_id, 'since', p_since::text,
                           'alert_type', p_alert_type),
        jsonb_build_object('status', 'pending', 'deliveries', v_count,
                           'delivery_ids', to_jsonb(v_ids[1:1000])));
    RETURN v_count;
END
$$;

-- What a person (`relay status`, `relay sinks`) and the metrics exporter ask
-- first, from one function. One row per sink and delivery status (a sink
-- without deliveries has one row, status NULL); the per-sink columns after
-- last_seen_at repeat on every row of the sink. Per sink, pending (not tried
-- yet), in_flight, retrying (failed, waiting for the next attempt) and dead
-- are disjoint; retrying_oldest_seconds is the age of the oldest retrying
-- delivery, from its creation or last re-drive.
CREATE OR REPLACE FUNCTION consistency.relay_status()
RETURNS TABLE (sink_id bigint, sink text, min_severity text, status text, deliveries bigint,
               oldest_created_at timestamptz, last_seen_at timestamptz,
               pending bigint, in_flight bigint, retrying bigint,
               retrying_oldest_seconds double precision, dead bigint,
               delivered_last_hour bigint, last_success_at timestamptz, last_error text,
               last_error_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    WITH by_status AS (
        SELECT d.sink_id, d.status, count(*) AS n, min(d.created_at) AS oldest,
               count(*) FILTER (WHERE d.status = 'pending' AND d.attempts > 0) AS retrying,
               min(coalesce(d.redriven_at, d.created_at))
                   FILTER (WHERE d.status = 'pending' AND d.attempts > 0) AS retrying_since
          FROM consistency.relay_deliveries AS d
         WHERE d.status <> 'delivered'
         GROUP BY d.sink_id, d.status
        UNION ALL
        SELECT d.sink_id, 'delivered', count(*), min(d.created_at), 0, NULL
          FROM consistency.relay_deliveries AS d
         WHERE d.status = 'delivered'
         GROUP BY d.sink_id
    ), per_sink AS (
        SELECT b.sink_id,
               sum(b.n - b.retrying) FILTER (WHERE b.status = 'pending') AS pending,
               sum(b.n) FILTER (WHERE b.status = 'in_flight') AS in_flight,
               sum(b.retrying) AS retrying,
               min(b.retrying_since) AS retrying_since,
               sum(b.n) FILTER (WHERE b.status = 'dead') AS dead
          FROM by_status AS b
         GROUP BY b.sink_id
    ), recent AS (
        SELECT d.sink_id, count(*) AS n
          FROM consistency.relay_deliveries AS d
         WHERE d.status = 'delivered' AND d.delivered_at > consistency.now() - interval '1 hour'
         GROUP BY d.sink_id
    )
    SELECT s.id, s.name, s.min_severity, b.status, coalesce(b.n, 0), b.oldest, s.last_seen_at,
           coalesce(p.pending, 0)::bigint, coalesce(p.in_flight, 0)::bigint,
           coalesce(p.retrying, 0)::bigint,
           extract(epoch FROM consistency.now() - p.retrying_since)::double precision,
           coalesce(p.dead, 0)::bigint, coalesce(r.n, 0), s.last_success_at, s.last_error,
           s.last_error_at
      FROM consistency.relay_sinks AS s
      LEFT JOIN by_status AS b ON b.sink_id = s.id
      LEFT JOIN per_sink AS p ON p.sink_id = s.id
      LEFT JOIN recent AS r ON r.sink_id = s.id
     ORDER BY s.id, b.status
$$;

-- For retention (archive_alerts): an alert still waiting for a delivery must
-- stay in the outbox. Delivered and dead rows do not hold it back.
CREATE OR REPLACE FUNCTION consistency._alert_has_pending_delivery(p_alert_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
RETURN EXISTS (SELECT 1
                 FROM consistency.relay_deliveries AS d
                WHERE d.alert_id = p_alert_id
                  AND d.status IN ('pending', 'in_flight'));
