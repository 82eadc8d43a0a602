-- What the breaker clients' in-process mirrors (orchestrator/circuit_mirror.py)
-- read and hear. A mirror lets a process admit calls through a closed circuit
-- and drop the successes that would change nothing without a round trip, so
-- it needs two facts per key: the state, and whether a closed circuit has
-- failures (its next success must then go to the database to reset them).
-- Transitions alone (channel consistency_circuit) do not carry the second,
-- so every change of either fact takes a new version and is notified on
-- channel consistency_circuit_state:
--     {"circuit_key", "state", "failing", "version"}
-- A failure that only adds to a count already above zero changes neither
-- fact: it neither takes a version nor notifies.

CREATE OR REPLACE FUNCTION consistency._circuit_state_changed()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_key     text;
    v_state   text;
    v_failing boolean;
    v_version bigint;
BEGIN
    IF TG_OP = 'DELETE' THEN
        -- No row means closed without failures: say so with a version above
        -- any the row had.
        v_key := OLD.circuit_key;
        v_state := 'closed';
        v_failing := false;
        v_version := nextval('consistency.circuit_state_version');
    ELSE
        IF TG_OP = 'UPDATE' THEN
            -- BEFORE UPDATE: the row is locked, so for one key the versions
            -- follow the order in which the changes commit.
            NEW.version := nextval('consistency.circuit_state_version');
        END IF;
        v_key := NEW.circuit_key;
        v_state := NEW.state;
        v_failing := NEW.failure_count > 0;
        v_version := NEW.version;
    END IF;
    -- A hint delivered on commit; mirrors also re-read what they hold.
    PERFORM pg_notify('consistency_circuit_state',
                      json_build_object('circuit_key', v_key, 'state', v_state,
                                        'failing', v_failing, 'version', v_version)::text);
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END
$$;

-- The state of each key as a mirror holds it; an unknown key is closed,
-- without failures, at version 0 (below any the sequence hands out).
CREATE OR REPLACE FUNCTION consistency.circuit_mirror(p_keys text[])
RETURNS TABLE (circuit_key text,
               state       text,
               failing     boolean,
               version     bigint)
LANGUAGE sql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
    SELECT k.key, coalesce(s.state, 'closed'), coalesce(s.failure_count > 0, false),
           coalesce(s.version, 0)
      FROM unnest(p_keys) AS k(key)
      LEFT JOIN consistency.circuit_breaker_states s ON s.circuit_key = k.key
     WHERE k.key IS NOT NULL
$$;
