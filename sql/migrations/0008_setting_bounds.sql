-- Bounds for every setting, a failure count per monitor run, and the
-- guard's clock resolved once, when created.
--
-- Each setting has a minimum and a maximum, as data beside its kind, so that
-- set_setting refuses a value no part of the guard can use (an hour count
-- that overflows a timestamp, a cooldown of 1e300 seconds) and operators see
-- the range in `consistency config show`.

ALTER TABLE consistency.settings
    ADD COLUMN min_value numeric,
    ADD COLUMN max_value numeric;

UPDATE consistency.settings s
   SET min_value = b.min_value, max_value = b.max_value
  FROM (VALUES
        ('validation.max_appointment_age_seconds', 1, 86400),
        ('validation.max_retry_attempts', 1, 20),
        ('validation.base_delay_seconds', 0.001, 60),
        ('circuit_breaker.failure_threshold', 1, 1000),
        -- A microsecond is the clock's resolution: below it a cooldown is zero.
        ('circuit_breaker.cooldown_seconds', 0.000001, 86400),
        ('circuit_breaker.success_threshold', 1, 1000),
        ('circuit_breaker.timeout_seconds', 0.001, 3600),
        ('monitoring.recent_hours', 1, 8760),
        ('monitoring.report_days', 1, 366),
        ('monitoring.alert_throttle_minutes', 0, 10080),
        ('retention.alert_days', 1, 36500)) AS b(key, min_value, max_value)
 WHERE s.key = b.key;

-- A value written before the bounds existed and outside them is brought to
-- the nearest bound, with an audit row saying so.
WITH clamped AS (
    UPDATE consistency.settings s
       SET value = to_jsonb(greatest(s.min_value, least(s.max_value, (s.value)::numeric))),
           updated_at = clock_timestamp()
      FROM consistency.settings old
     WHERE old.key = s.key
       AND jsonb_typeof(s.value) = 'number'
       AND ((s.value)::numeric < s.min_value OR (s.value)::numeric > s.max_value)
    RETURNING s.key, old.value AS before, s.value AS after
)
INSERT INTO consistency.audit_log (actor, action, target_type, target_id, before, after)
SELECT 'consistency migrate', 'setting.clamp', 'setting', c.key,
       jsonb_build_object('value', c.before), jsonb_build_object('value', c.after)
  FROM clamped c;

-- A setting without bounds is a migration that forgot them.
ALTER TABLE consistency.settings
    ALTER COLUMN min_value SET NOT NULL,
    ALTER COLUMN max_value SET NOT NULL,
    ADD CONSTRAINT settings_bounds_ck CHECK (min_value <= max_value);

-- Corrections a run could not make: the run goes on, and says so here.
ALTER TABLE consistency.check_runs ADD COLUMN failed int NOT NULL DEFAULT 0;

-- consistency.now() is called by every role and on hot paths (the sync's SET
-- lists, every alert). An SQL-standard body is resolved here, once, so no
-- caller's search_path reaches it, and it is inlined where it is called:
-- 0.16 us a call, where PL/pgSQL took 0.7 us and 1.6 us with a pinned
-- search_path. Only a moved clock (tests) goes through PL/pgSQL.
CREATE FUNCTION consistency._fake_now() RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE PARALLEL SAFE
    SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- Any session can set a custom setting, and a moved clock ends up in
    -- lasting state (throttle, circuit cooldowns): only a superuser session.
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user) THEN
        RAISE EXCEPTION 'consistency.fake_now is for tests: only a superuser session may move the clock'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN current_setting('consistency.fake_now')::timestamptz;
END
$$;

CREATE OR REPLACE FUNCTION consistency.now() RETURNS timestamptz
    LANGUAGE sql VOLATILE PARALLEL SAFE
RETURN CASE WHEN coalesce(current_setting('consistency.fake_now', true), '') = ''
            THEN clock_timestamp()
            ELSE consistency._fake_now() END;

REVOKE CREATE ON SCHEMA consistency FROM PUBLIC;

-- set_setting's value check takes the bounds now (sql/functions/settings.sql).
DROP FUNCTION IF EXISTS consistency._setting_value_error(text, jsonb);
