-- Settings: typed, validated, audited. Reads are cheap (primary-key lookup,
-- STABLE) because triggers and the monitor call them on hot paths.

CREATE OR REPLACE FUNCTION consistency.setting(p_key text)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_value jsonb;
BEGIN
    SELECT s.value INTO v_value FROM consistency.settings s WHERE s.key = p_key;
    IF NOT FOUND THEN
        -- A typo in a key must be loud: silently falling back to a default
        -- would hide a misconfiguration until the day it matters.
        RAISE EXCEPTION 'unknown setting "%"', p_key
            USING ERRCODE = 'undefined_object',
                  HINT = 'consistency config show lists the known keys';
    END IF;
    RETURN v_value;
END
$$;

-- SQL-standard bodies: parsed once, when migrate creates them, so no
-- caller's search_path can change what they call; still inlined into the
-- caller's expression. (A SET clause would stop the inlining.)
CREATE OR REPLACE FUNCTION consistency.setting_int(p_key text)
RETURNS integer
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (consistency.setting(p_key))::integer;

CREATE OR REPLACE FUNCTION consistency.setting_numeric(p_key text)
RETURNS numeric
LANGUAGE sql STABLE PARALLEL SAFE
RETURN (consistency.setting(p_key))::numeric;

-- The moved clock of tests (migration 0008): consistency.now() (a
-- SQL-standard body, inlined into its callers) calls it only when
-- consistency.fake_now is set, which the owner of a database may do for every
-- session. SECURITY DEFINER, so that a session that is not the guard's owner
-- may call now() at all (orchestrator/owner_code.py); session_user, which it
-- checks, is still the caller's.
ALTER FUNCTION consistency._fake_now() SECURITY DEFINER;

-- What set_setting accepts for a setting: a number of its kind within its
-- bounds. Returns NULL when the value is acceptable, else the reason, which
-- quotes the value shortened (1e300 would otherwise print 301 digits).
CREATE OR REPLACE FUNCTION consistency._setting_value_error(
    p_kind text, p_value jsonb, p_min numeric, p_max numeric)
RETURNS text
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_num  numeric;
    v_shown text;
BEGIN
    IF p_value IS NULL OR jsonb_typeof(p_value) <> 'number' THEN
        v_shown := coalesce(p_value::text, 'NULL');
        RETURN format('must be a number, got %s',
                      CASE WHEN length(v_shown) > 40 THEN left(v_shown, 40) || '...' ELSE v_shown END);
    END IF;
    v_num := p_value::numeric;
    v_shown := CASE WHEN abs(v_num) >= 1e15 THEN btrim(to_char(v_num, '9.99EEEE')) ELSE v_num::text END;
    IF p_kind IN ('positive_integer', 'non_negative_integer') AND v_num <> trunc(v_num) THEN
        RETURN format('must be an integer, got %s', v_shown);
    ELSIF p_kind = 'non_negative_integer' AND v_num < 0 THEN
        RETURN format('must not be negative, got %s', v_shown);
    ELSIF p_kind IN ('positive_integer', 'positive_number') AND v_num <= 0 THEN
        RETURN format('must be greater than 0, got %s', v_shown);
    ELSIF p_kind NOT IN ('positive_integer', 'non_negative_integer', 'positive_number') THEN
        RETURN format('has an unknown kind %s', p_kind);
    ELSIF v_num < p_min THEN
        RETURN format('must be at least %s, got %s', p_min, v_shown);
    ELSIF v_num > p_max THEN
        RETURN format('must be at most %s, got %s', p_max, v_shown);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION consistency.set_setting(p_key text, p_value jsonb, p_actor text DEFAULT 'system')
RETURNS boolean
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_row   consistency.settings%ROWTYPE;
    v_error text;
BEGIN
    PERFORM consistency._require_text(p_actor, 'actor');

    SELECT * INTO v_row FROM consistency.settings WHERE key = p_key FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'unknown setting "%"', p_key
            USING ERRCODE = 'undefined_object',
                  HINT = 'consistency config show lists the known keys';
    END IF;

    v_error := consistency._setting_value_error(v_row.kind, p_value, v_row.min_value,
                                                v_row.max_value);
    IF v_error IS NOT NULL THEN
        RAISE EXCEPTION 'invalid value for %: %', p_key, v_error
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    -- Re-applying the same value (config sync on every deploy) is not a
    -- change: no write, no audit noise.
    IF v_row.value = p_value THEN
        RETURN false;
    END IF;

    UPDATE consistency.settings
       SET value = p_value, updated_at = clock_timestamp()
     WHERE key = p_key;

    PERFORM consistency._audit(p_actor, 'setting.set', 'setting', p_key,
                               jsonb_build_object('value', v_row.value),
                               jsonb_build_object('value', p_value));
    RETURN true;
END
$$;
