-- Alert relay: sinks, delivery rows and their lifecycle
--   pending -> in_flight (claimed under a lease) -> delivered
--                                                 -> pending (transient failure, retry later)
--                                                 -> failed  (permanent failure, one try)
--                                                 -> dead    (transient failures, attempts used up)
-- An in_flight row whose lease has run out is due again, so a crashed relay's
-- claims come back. Delivery is at-least-once per (alert, sink).

CREATE OR REPLACE FUNCTION consistency._severity_rank(p_severity text)
RETURNS integer
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_severity WHEN 'critical' THEN 3 WHEN 'warning' THEN 2 WHEN 'info' THEN 1 END;

-- Trigger function (statement level, transition table): every new alert gets
-- a delivery row for every registered sink that takes its severity, in the
-- transaction that inserts the alert, so the outbox and the delivery state
-- can never disagree. A relay_delivery_failed alert skips the sink it is
-- about: that sink just failed, and telling it so would go nowhere. On a
-- digest sink, non-critical rows become due together at the end of their
-- window (date_bin), so one claim picks up the whole digest.
CREATE OR REPLACE FUNCTION consistency._relay_enqueue()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    INSERT INTO consistency.relay_deliveries (alert_id, sink_id, next_attempt_at, created_at)
    SELECT a.id, s.id,
           CASE WHEN s.digest_seconds IS NOT NULL AND a.severity <> 'critical'
                THEN date_bin(make_interval(secs => s.digest_seconds), consistency.now(),
                              timestamptz '2000-01-01 00:00:00+00')
                     + make_interval(secs => s.digest_seconds)
                ELSE consistency.now() END,
           consistency.now()
      FROM new_alerts AS a
      JOIN consistency.relay_sinks AS s
        ON consistency._severity_rank(a.severity) >= consistency._severity_rank(s.min_severity)
     WHERE NOT (a.alert_type = 'relay_delivery_failed'
                AND a.metadata ->> 'sink_id' = s.id::text)
    ON CONFLICT ON CONSTRAINT relay_deliveries_alert_sink_key DO NOTHING;
    RETURN NULL;
END
$$;

-- Registers (or refreshes) a sink and returns its id. Only alerts raised from
-- now on are delivered to a new sink: replaying the whole outbox into a fresh
-- Slack channel would bury the one alert that matters. Re-registering the same
-- URL (same fingerprint) keeps its id and its pending deliveries.
CREATE OR REPLACE FUNCTION consistency.relay_register_sink(
    p_fingerprint  text,
    p_name         text,
    p_scheme       text,
    p_min_severity text DEFAULT 'info',
    p_digest_seconds integer DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
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
    INSERT INTO consistency.relay_sinks AS s (fingerprint, name, scheme, min_severity,
                                              digest_seconds, created_at, last_seen_at)
    VALUES (p_fingerprint, p_name, p_scheme, p_min_severity, p_digest_seconds,
            consistency.now(), consistency.now())
    ON CONFLICT (fingerprint) DO UPDATE
        SET name = EXCLUDED.name, scheme = EXCLUDED.scheme,
            min_severity = EXCLUDED.min_severity, digest_seconds = EXCLUDED.digest_seconds,
            last_seen_at = EXCLUDED.last_seen_at
    RETURNING s.id INTO v_id;
    RETURN v_id;
END
$$;

-- Forgets a sink that is no longer configured, with its delivery rows:
-- otherwise its pending rows would hold back archive_alerts forever.
CREATE OR REPLACE FUNCTION consistency.relay_unregister_sink(p_sink_id bigint)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    DELETE FROM consistency.relay_sinks WHERE id = p_sink_id;
    RETURN FOUND;
END
$$;

-- Claims up to p_limit due deliveries of the given sinks for p_owner. SKIP
-- LOCKED lets several relays claim side by side without waiting on each
-- other; the lease (not the row lock, which ends with this statement's
-- transaction) is what keeps a claimed row away from them afterwards. The
-- attempt is counted at claim time: a relay that dies after sending must
-- still use up an attempt.
CREATE OR REPLACE FUNCTION consistency.relay_claim(
    p_owner    text,
    p_sink_ids bigint[],
    p_limit    integer DEFAULT 100,
    p_lease    interval DEFAULT '30 seconds')
RETURNS TABLE (delivery_id bigint, sink_id bigint, attempts integer, alert_id bigint,
               alert_type text, severity text, entity_type text, entity_id bigint,
               description text, metadata jsonb, detected_at timestamptz,
               auto_corrected boolean)
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now timestamptz := consistency.now();
BEGIN
    PERFORM consistency._require_text(p_owner, 'lease owner');
    IF p_lease IS NULL OR p_lease <= interval '0' THEN
        RAISE EXCEPTION 'lease must be positive' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RETURN QUERY
    WITH due AS (
        SELECT d.id
          FROM consistency.relay_deliveries AS d
         WHERE d.sink_id = ANY (p_sink_ids)
           AND d.status IN ('pending', 'in_flight')
           AND d.next_attempt_at <= v_now
         ORDER BY d.next_attempt_at, d.id
         LIMIT greatest(p_limit, 0)
           FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE consistency.relay_deliveries AS d
           SET status = 'in_flight', lease_owner = p_owner,
               lease_expires_at = v_now + p_lease, next_attempt_at = v_now + p_lease,
               attempts = d.attempts + 1
          FROM due
         WHERE d.id = due.id
        RETURNING d.id, d.sink_id, d.attempts, d.alert_id
    )
    SELECT c.id, c.sink_id, c.attempts, a.id, a.alert_type, a.severity, a.entity_type,
           a.entity_id, a.description, a.metadata, a.detected_at, a.auto_corrected
      FROM claimed AS c
      JOIN consistency.alerts AS a ON a.id = c.alert_id
     ORDER BY a.id, c.sink_id;
END
$$;

-- Marks deliveries as sent. A relay whose lease ran out may still report a
-- send it made: the message went out, so it counts, whoever holds the lease.
CREATE OR REPLACE FUNCTION consistency.relay_complete(p_delivery_ids bigint[])
RETURNS integer
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count integer;
BEGIN
    UPDATE consistency.relay_deliveries
       SET status = 'delivered', delivered_at = consistency.now(), last_error = NULL,
           lease_owner = NULL, lease_expires_at = NULL
     WHERE id = ANY (p_delivery_ids)
       AND status <> 'delivered';
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;

-- Records a failed send and returns the row's new status. Transient
-- failures are retried after base * 2^(attempts-1) seconds (capped, plus
-- 0-10 % jitter so relays that failed together do not retry together), or
-- after the server's Retry-After when that is later. Permanent failures stop
-- at once (failed); transient ones stop after p_max_attempts (dead). Both end
-- states raise relay_delivery_failed, delivered to every other sink. Only the
-- lease owner may fail a row: a relay whose lease ran out must not undo the
-- work of the relay that took it over.
CREATE OR REPLACE FUNCTION consistency.relay_fail(
    p_owner               text,
    p_delivery_id         bigint,
    p_error               text,
    p_permanent           boolean DEFAULT false,
    p_retry_after_seconds double precision DEFAULT NULL,
    p_max_attempts        integer DEFAULT 5,
    p_base_delay_seconds  double precision DEFAULT 1,
    p_max_delay_seconds   double precision DEFAULT 300)
RETURNS text
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now    timestamptz := consistency.now();
    v_row    consistency.relay_deliveries;
    v_alert  consistency.alerts;
    v_sink   consistency.relay_sinks;
    v_status text;
    v_delay  double precision;
    v_error  text := left(coalesce(nullif(btrim(p_error), ''), 'unknown error'), 2000);
BEGIN
    SELECT * INTO v_row FROM consistency.relay_deliveries WHERE id = p_delivery_id FOR UPDATE;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    IF v_row.status <> 'in_flight' OR v_row.lease_owner IS DISTINCT FROM p_owner THEN
        RETURN v_row.status;
    END IF;

    IF coalesce(p_permanent, false) THEN
        v_status := 'failed';
    ELSIF v_row.attempts >= greatest(coalesce(p_max_attempts, 5), 1) THEN
        v_status := 'dead';
    ELSE
        v_status := 'pending';
        v_delay := least(coalesce(p_max_delay_seconds, 300),
                         coalesce(p_base_delay_seconds, 1) * power(2, greatest(v_row.attempts - 1, 0)))
                   * (1 + random() * 0.1);
        v_delay := greatest(v_delay, coalesce(p_retry_after_seconds, 0));
    END IF;

    UPDATE consistency.relay_deliveries
       SET status = v_status, last_error = v_error, lease_owner = NULL, lease_expires_at = NULL,
           next_attempt_at = CASE WHEN v_status = 'pending'
                                  THEN v_now + make_interval(secs => v_delay)
                                  ELSE v_now END
     WHERE id = p_delivery_id;

    IF v_status IN ('failed', 'dead') THEN
        SELECT * INTO v_alert FROM consistency.alerts WHERE id = v_row.alert_id;
        SELECT * INTO v_sink FROM consistency.relay_sinks WHERE id = v_row.sink_id;
        -- A failure to report a failure is not reported again: that way lies
        -- an endless chain of alerts about alerts.
        IF v_alert.alert_type IS DISTINCT FROM 'relay_delivery_failed' THEN
            PERFORM consistency.raise_alert(
                'relay_delivery_failed',
                CASE WHEN v_alert.severity = 'critical' THEN 'critical' ELSE 'warning' END,
                'system', p_delivery_id,
                format('alert %s (%s) could not be delivered to %s: %s after %s attempt(s): %s',
                       v_row.alert_id, v_alert.alert_type, v_sink.name, v_status,
                       v_row.attempts, v_error),
                jsonb_build_object('alert_id', v_row.alert_id, 'sink_id', v_row.sink_id,
                                   'sink', v_sink.name, 'status', v_status,
                                   'attempts', v_row.attempts, 'error', v_error));
        END IF;
    END IF;
    RETURN v_status;
END
$$;

-- Per sink and status: what a person (or the metrics exporter) asks first.
CREATE OR REPLACE FUNCTION consistency.relay_status()
RETURNS TABLE (sink_id bigint, sink text, min_severity text, status text, deliveries bigint,
               oldest_created_at timestamptz, last_seen_at timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.id, s.name, s.min_severity, d.status, count(d.id), min(d.created_at), s.last_seen_at
      FROM consistency.relay_sinks AS s
      LEFT JOIN consistency.relay_deliveries AS d ON d.sink_id = s.id
     GROUP BY s.id, s.name, s.min_severity, d.status, s.last_seen_at
     ORDER BY s.id, d.status
$$;

-- For retention (archive_alerts): an alert still waiting for a delivery must
-- stay in the outbox. Delivered, failed and dead rows do not hold it back.
CREATE OR REPLACE FUNCTION consistency._alert_has_pending_delivery(p_alert_id bigint)
RETURNS boolean
LANGUAGE sql STABLE
RETURN EXISTS (SELECT 1
                 FROM consistency.relay_deliveries AS d
                WHERE d.alert_id = p_alert_id
                  AND d.status IN ('pending', 'in_flight'));

-- "Has a relay sink ever been configured?" (archive_alerts archives any old
-- alert when none has).
CREATE OR REPLACE FUNCTION consistency._relay_sinks_configured()
RETURNS boolean
LANGUAGE sql STABLE
RETURN EXISTS (SELECT 1 FROM consistency.relay_sinks);
