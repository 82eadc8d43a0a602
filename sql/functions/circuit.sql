-- Circuit breaker: one row per key in consistency.circuit_breaker_states,
-- shared by every worker.
--
-- Hot path: circuit_acquire on a closed (or unknown, or disabled) key is one
-- primary-key read under the statement's snapshot. It takes no row lock and
-- writes nothing, so it never assigns a transaction id, never flushes WAL and
-- never queues behind another session. A `SELECT ... FOR UPDATE` per call
-- would cost a WAL flush each and serialise every worker on one row.
--
-- Transitions are conditional UPDATEs whose WHERE restates the state the
-- caller read (state = 'open' AND opened_at <= cooldown, ...). Under READ
-- COMMITTED a racing UPDATE waits for the winner's commit and then re-checks
-- its WHERE against the committed row, finds it no longer matches and
-- updates nothing: exactly one session makes each transition. The loser
-- re-reads and decides again. (Under REPEATABLE READ the loser gets a
-- serialization failure instead; callers use autocommit.)
--
-- Time comes from consistency.now() so tests move it with
-- SET consistency.fake_now. Alerts carry entity_type 'circuit' and, since
-- alerts.entity_id is a bigint and keys are text, entity_id =
-- hashtextextended(family, 0) (stable across releases: hash partitioning
-- depends on it), where the family is the key up to its last ':'
-- (_circuit_family). The throttle of raise_alert is per entity, so circuit
-- alerts are throttled per family: a caller inventing keys cannot flood the
-- outbox. The key, the family and how many of its circuits are not closed
-- are in the alert's metadata.

-- What a circuit key may be: not empty, at most 500 characters, which keep
-- a key (up to 2000 bytes) below the btree tuple limit of the primary key
-- and the NOTIFY payload below 8000 bytes. A SQL-standard body, which the
-- planner inlines: the breaker's hot paths test it for the cost of the
-- expression itself (a PL/pgSQL call would add ~4 us to each acquire).
CREATE OR REPLACE FUNCTION consistency._circuit_key_valid(p_key text)
RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN p_key IS NOT NULL AND btrim(p_key) <> '' AND length(p_key) <= 500;

-- Refuses a key that is not _circuit_key_valid, saying why.
CREATE OR REPLACE FUNCTION consistency._circuit_check_key(p_key text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF consistency._circuit_key_valid(p_key) THEN
        RETURN;
    END IF;
    IF coalesce(btrim(p_key), '') = '' THEN
        RAISE EXCEPTION 'circuit key must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    RAISE EXCEPTION 'circuit key is too long: % characters (at most 500)', length(p_key)
        USING ERRCODE = 'invalid_parameter_value';
END
$$;

CREATE OR REPLACE FUNCTION consistency._circuit_seconds(p_key text)
RETURNS interval
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN make_interval(secs => consistency.setting_numeric(p_key)::double precision);
END
$$;

-- 'appointment_booking:service:17' -> 'appointment_booking:service'; a key
-- without ':' is its own family. Alerts are throttled per family and metric
-- labels are families, so at most 100 characters of it.
CREATE OR REPLACE FUNCTION consistency._circuit_family(p_key text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN left(CASE WHEN strpos(p_key, ':') = 0 THEN p_key
                 ELSE regexp_replace(p_key, ':[^:]*$', '') END, 100);

-- Every transition: one event row, one NOTIFY (delivered on commit, a hint;
-- the event row is the truth), and an alert for the transitions people act on.
CREATE OR REPLACE FUNCTION consistency._circuit_transition(
    p_key        text,
    p_from       text,
    p_to         text,
    p_reason     text,
    p_actor      text DEFAULT NULL,
    p_metadata   jsonb DEFAULT '{}')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_now      timestamptz := consistency.now();
    v_id       bigint;
    v_metadata jsonb;
    v_family   text := consistency._circuit_family(p_key);
BEGIN
    INSERT INTO consistency.circuit_breaker_events (circuit_key, from_state, to_state, reason, actor, at)
    VALUES (p_key, p_from, p_to, p_reason, p_actor, v_now)
    RETURNING id INTO v_id;

    PERFORM pg_notify('consistency_circuit',
                      json_build_object('id', v_id, 'circuit_key', p_key, 'from_state', p_from,
                                        'to_state', p_to, 'actor', p_actor)::text);

    v_metadata := coalesce(p_metadata, '{}')
                  || jsonb_build_object('circuit_key', p_key, 'from_state', p_from,
                                        'to_state', p_to, 'event_id', v_id, 'family', v_family,
                                        'family_not_closed',
                                        (SELECT count(*) FROM consistency.circuit_breaker_states s
                                          WHERE starts_with(s.circuit_key, v_family)
                                            AND consistency._circuit_family(s.circuit_key) = v_family
                                            AND s.state IN ('open', 'half_open', 'forced_open')))
                  || CASE WHEN p_actor IS NULL THEN '{}'::jsonb
                          ELSE jsonb_build_object('actor', p_actor) END;
    IF p_to IN ('open', 'forced_open') THEN
        PERFORM consistency.raise_alert('circuit_opened', 'critical', 'circuit',
                                        hashtextextended(v_family, 0),
                                        format('circuit %s opened: %s', p_key, p_reason), v_metadata);
    ELSIF p_to = 'closed' THEN
        PERFORM consistency.raise_alert('circuit_closed', 'info', 'circuit',
                                        hashtextextended(v_family, 0),
                                        format('circuit %s closed: %s', p_key, p_reason), v_metadata);
    ELSIF p_to = 'disabled' THEN
        -- Not in the contract's list, but a breaker switched off leaves the
        -- calendar unprotected: somebody should know.
        PERFORM consistency.raise_alert('circuit_disabled', 'warning', 'circuit',
                                        hashtextextended(v_family, 0),
                                        format('circuit %s disabled: %s', p_key, p_reason), v_metadata);
    END IF;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION consistency.circuit_acquire(p_key text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state   text;
    v_opened  timestamptz;
    v_probe   timestamptz;
    v_now     timestamptz;
BEGIN
    IF NOT consistency._circuit_key_valid(p_key) THEN
        PERFORM consistency._circuit_check_key(p_key);
    END IF;

    FOR v_attempt IN 1..3 LOOP
        -- The closed path: a snapshot read, no FOR UPDATE, no write.
        SELECT s.state, s.opened_at, s.probe_started_at
          INTO v_state, v_opened, v_probe
          FROM consistency.circuit_breaker_states s
         WHERE s.circuit_key = p_key;
        IF NOT FOUND OR v_state IN ('closed', 'disabled') THEN
            RETURN true;
        ELSIF v_state = 'forced_open' THEN
            RETURN false;
        END IF;

        v_now := consistency.now();
        IF v_state = 'open' THEN
            IF v_opened > v_now - consistency._circuit_seconds('circuit_breaker.cooldown_seconds') THEN
                RETURN false;
            END IF;
            UPDATE consistency.circuit_breaker_states s
               SET state = 'half_open', probe_started_at = v_now, success_count = 0, updated_at = v_now
             WHERE s.circuit_key = p_key
               AND s.state = 'open'
               AND s.opened_at <= v_now - consistency._circuit_seconds('circuit_breaker.cooldown_seconds');
            IF FOUND THEN
                PERFORM consistency._circuit_transition(p_key, 'open', 'half_open',
                                                        'cooldown elapsed: this call is the probe');
                RETURN true;
            END IF;
        ELSE  -- half_open
            IF v_probe > v_now - consistency._circuit_seconds('circuit_breaker.timeout_seconds') THEN
                RETURN false;  -- a probe is in flight
            END IF;
            -- No probe in flight, or the last one never reported within
            -- timeout_seconds (lost): this caller becomes the probe.
            UPDATE consistency.circuit_breaker_states s
               SET probe_started_at = v_now, updated_at = v_now
             WHERE s.circuit_key = p_key
               AND s.state = 'half_open'
               AND (s.probe_started_at IS NULL
                    OR s.probe_started_at <= v_now
                       - consistency._circuit_seconds('circuit_breaker.timeout_seconds'));
            IF FOUND THEN
                RETURN true;
            END IF;
        END IF;
        -- Another session changed the row between our read and our UPDATE:
        -- read again and decide on what it committed.
    END LOOP;
    -- The row kept changing under us (an operator and the workers racing):
    -- refusing this one call is the safe answer.
    RETURN false;
END
$$;

CREATE OR REPLACE FUNCTION consistency.circuit_record_success(p_key text)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state     text;
    v_failures  int;
    v_new_state text;
    v_now       timestamptz;
    v_threshold int;
BEGIN
    IF NOT consistency._circuit_key_valid(p_key) THEN
        PERFORM consistency._circuit_check_key(p_key);
    END IF;

    FOR v_attempt IN 1..5 LOOP
        SELECT s.state, s.failure_count INTO v_state, v_failures
          FROM consistency.circuit_breaker_states s
         WHERE s.circuit_key = p_key;
        -- Closed with nothing to reset is the common case: no write.
        -- Successes while open, forced_open or disabled change nothing
        -- (a call admitted before the circuit opened may finish late).
        IF NOT FOUND OR v_state IN ('open', 'forced_open', 'disabled')
           OR (v_state = 'closed' AND v_failures = 0) THEN
            RETURN;
        END IF;

        v_now := consistency.now();
        IF v_state = 'closed' THEN
            UPDATE consistency.circuit_breaker_states s
               SET failure_count = 0, updated_at = v_now
             WHERE s.circuit_key = p_key AND s.state = 'closed' AND s.failure_count > 0;
            IF FOUND THEN
                RETURN;
            END IF;
        ELSE  -- half_open
            v_threshold := consistency.setting_int('circuit_breaker.success_threshold');
            UPDATE consistency.circuit_breaker_states s
               SET state = CASE WHEN s.success_count + 1 >= v_threshold THEN 'closed' ELSE 'half_open' END,
                   success_count = CASE WHEN s.success_count + 1 >= v_threshold THEN 0
                                        ELSE s.success_count + 1 END,
                   failure_count = CASE WHEN s.success_count + 1 >= v_threshold THEN 0
                                        ELSE s.failure_count END,
                   closed_at = CASE WHEN s.success_count + 1 >= v_threshold THEN v_now
                                    ELSE s.closed_at END,
                   -- The probe reported: the next acquire may send the next one.
                   probe_started_at = NULL,
                   updated_at = v_now
             WHERE s.circuit_key = p_key AND s.state = 'half_open'
            RETURNING s.state INTO v_new_state;
            IF FOUND THEN
                IF v_new_state = 'closed' THEN
                    PERFORM consistency._circuit_transition(
                        p_key, 'half_open', 'closed',
                        format('%s probe successes', v_threshold),
                        NULL, jsonb_build_object('success_threshold', v_threshold));
                END IF;
                RETURN;
            END IF;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'circuit % kept changing under concurrent updates; retry', p_key
        USING ERRCODE = 'serialization_failure';
END
$$;

CREATE OR REPLACE FUNCTION consistency.circuit_record_failure(p_key text, p_error text DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_state     text;
    v_new_state text;
    v_count     int;
    v_now       timestamptz := consistency.now();
    v_threshold int;
    -- The error is the caller's text: kept bounded, never interpreted.
    v_error     text := left(p_error, 2000);
BEGIN
    IF NOT consistency._circuit_key_valid(p_key) THEN
        PERFORM consistency._circuit_check_key(p_key);
    END IF;
    v_threshold := consistency.setting_int('circuit_breaker.failure_threshold');

    FOR v_attempt IN 1..5 LOOP
        SELECT s.state INTO v_state
          FROM consistency.circuit_breaker_states s
         WHERE s.circuit_key = p_key;

        IF NOT FOUND THEN
            INSERT INTO consistency.circuit_breaker_states AS s
                   (circuit_key, state, failure_count, last_failure_at, last_error, opened_at, updated_at)
            VALUES (p_key, CASE WHEN v_threshold <= 1 THEN 'open' ELSE 'closed' END, 1, v_now, v_error,
                    CASE WHEN v_threshold <= 1 THEN v_now END, v_now)
            ON CONFLICT (circuit_key) DO NOTHING
            RETURNING s.state, s.failure_count INTO v_new_state, v_count;
            -- Not found: a concurrent first failure inserted the row; go round.
        ELSIF v_state = 'closed' THEN
            UPDATE consistency.circuit_breaker_states s
               SET failure_count = s.failure_count + 1,
                   state = CASE WHEN s.failure_count + 1 >= v_threshold THEN 'open' ELSE 'closed' END,
                   opened_at = CASE WHEN s.failure_count + 1 >= v_threshold THEN v_now
                                    ELSE s.opened_at END,
                   last_failure_at = v_now, last_error = v_error, updated_at = v_now
             WHERE s.circuit_key = p_key AND s.state = 'closed'
            RETURNING s.state, s.failure_count INTO v_new_state, v_count;
        ELSIF v_state = 'half_open' THEN
            UPDATE consistency.circuit_breaker_states s
               SET state = 'open', opened_at = v_now, probe_started_at = NULL, success_count = 0,
                   failure_count = s.failure_count + 1,
                   last_failure_at = v_now, last_error = v_error, updated_at = v_now
             WHERE s.circuit_key = p_key AND s.state = 'half_open'
            RETURNING s.state, s.failure_count INTO v_new_state, v_count;
            IF FOUND THEN
                PERFORM consistency._circuit_transition(
                    p_key, 'half_open', 'open', 'probe failed',
                    NULL, jsonb_build_object('failure_count', v_count, 'last_error', v_error));
                RETURN;
            END IF;
        ELSE
            -- open, forced_open, disabled: failure_count keeps its value until
            -- the circuit closes; only the last error is remembered.
            UPDATE consistency.circuit_breaker_states s
               SET last_failure_at = v_now, last_error = v_error, updated_at = v_now
             WHERE s.circuit_key = p_key AND s.state = v_state;
            IF FOUND THEN
                RETURN;
            END IF;
            CONTINUE;
        END IF;

        IF v_new_state IS NOT NULL THEN
            IF v_new_state = 'open' THEN
                PERFORM consistency._circuit_transition(
                    p_key, 'closed', 'open',
                    format('%s consecutive failures (threshold %s)', v_count, v_threshold),
                    NULL, jsonb_build_object('failure_count', v_count, 'last_error', v_error,
                                             'failure_threshold', v_threshold));
            END IF;
            RETURN;
        END IF;
    END LOOP;
    RAISE EXCEPTION 'circuit % kept changing under concurrent updates; retry', p_key
        USING ERRCODE = 'serialization_failure';
END
$$;

CREATE OR REPLACE FUNCTION consistency.circuit_status(p_key text DEFAULT NULL)
RETURNS TABLE (circuit_key     text,
               state           text,
               failure_count   int,
               success_count   int,
               last_failure_at timestamptz,
               opened_at       timestamptz,
               closed_at       timestamptz)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT s.circuit_key, s.state, s.failure_count, s.success_count, s.last_failure_at,
           s.opened_at, s.closed_at
      FROM consistency.circuit_breaker_states s
     WHERE p_key IS NULL OR s.circuit_key = p_key
    UNION ALL
    -- An unknown key is a closed circuit that has not failed yet.
    SELECT p_key, 'closed', 0, 0, NULL, NULL, NULL
     WHERE p_key IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM consistency.circuit_breaker_states s
                        WHERE s.circuit_key = p_key)
    ORDER BY 1
$$;

CREATE OR REPLACE FUNCTION consistency.circuit_force(
    p_key    text,
    p_state  text,
    p_actor  text,
    p_reason text)
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_old consistency.circuit_breaker_states%ROWTYPE;
    v_new consistency.circuit_breaker_states%ROWTYPE;
    v_now timestamptz := consistency.now();
BEGIN
    PERFORM consistency._circuit_check_key(p_key);
    IF p_state IS NULL OR p_state NOT IN ('forced_open', 'disabled', 'closed') THEN
        RAISE EXCEPTION 'state must be forced_open, disabled or closed, got %', coalesce(p_state, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM consistency._require_text(p_actor, 'actor');
    PERFORM consistency._require_text(p_reason, 'reason');

    -- Lock the row (creating it first if the key is unknown) so the change
    -- and its audit describe the same before-state.
    SELECT * INTO v_old FROM consistency.circuit_breaker_states s
     WHERE s.circuit_key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        IF p_state = 'closed' THEN
            RETURN false;  -- unknown is closed already
        END IF;
        INSERT INTO consistency.circuit_breaker_states (circuit_key, updated_at)
        VALUES (p_key, v_now)
        ON CONFLICT (circuit_key) DO NOTHING;
        SELECT * INTO v_old FROM consistency.circuit_breaker_states s
         WHERE s.circuit_key = p_key FOR UPDATE;
    END IF;
    IF v_old.state = p_state THEN
        RETURN false;
    END IF;

    UPDATE consistency.circuit_breaker_states s
       SET state = p_state,
           probe_started_at = NULL,
           success_count = 0,
           failure_count = CASE WHEN p_state = 'closed' THEN 0 ELSE s.failure_count END,
           opened_at = CASE WHEN p_state = 'forced_open' THEN v_now ELSE s.opened_at END,
           closed_at = CASE WHEN p_state = 'closed' THEN v_now ELSE s.closed_at END,
           updated_at = v_now
     WHERE s.circuit_key = p_key
    RETURNING s.* INTO v_new;

    PERFORM consistency._circuit_transition(p_key, v_old.state, p_state, p_reason, p_actor,
                                            jsonb_build_object('forced', true));
    PERFORM consistency._audit(
        p_actor, 'circuit.force', 'circuit', p_key,
        jsonb_build_object('state', v_old.state, 'failure_count', v_old.failure_count,
                           'success_count', v_old.success_count),
        jsonb_build_object('state', v_new.state, 'failure_count', v_new.failure_count,
                           'success_count', v_new.success_count, 'reason', p_reason));
    RETURN true;
END
$$;
