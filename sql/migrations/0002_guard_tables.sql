-- The guard's own state: settings, the audit log, the alert outbox and its
-- archive, and the tables that the monitor, the review queue and the
-- circuit breaker fill.

-- The guard's clock. Defined here rather than in sql/functions because
-- column defaults below depend on it and migrations run before the
-- repeatable definitions. Tests move time with SET consistency.fake_now;
-- any session can set a custom setting, and a moved clock ends up in lasting
-- state (throttle, circuit cooldowns), so only a superuser session may use it.
CREATE FUNCTION consistency.now() RETURNS timestamptz
    LANGUAGE plpgsql VOLATILE PARALLEL SAFE
AS $$
DECLARE
    v_fake text := current_setting('consistency.fake_now', true);
BEGIN
    IF v_fake IS NULL OR v_fake = '' THEN
        RETURN clock_timestamp();
    END IF;
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = session_user) THEN
        RAISE EXCEPTION 'consistency.fake_now is for tests: only a superuser session may move the clock'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN v_fake::timestamptz;
END
$$;
COMMENT ON FUNCTION consistency.now() IS
    'clock_timestamp(), or the session setting consistency.fake_now when a superuser session sets it (tests)';

CREATE TABLE consistency.settings (
    key          text PRIMARY KEY,
    value        jsonb NOT NULL,
    description  text,
    -- How set_setting validates a new value; data, so that adding a key is
    -- one INSERT and the rules are visible to operators.
    kind         text NOT NULL CHECK (kind IN ('positive_integer', 'non_negative_integer',
                                               'positive_number')),
    env_var      text UNIQUE,
    updated_at   timestamptz
);

INSERT INTO consistency.settings (key, value, kind, env_var, description) VALUES
    ('validation.max_appointment_age_seconds', '300', 'positive_integer', 'VALIDATION_MAX_AGE',
     'An appointment older than this is too old to belong to the booking being validated'),
    ('validation.max_retry_attempts', '3', 'positive_integer', 'VALIDATION_MAX_RETRIES',
     'Attempts for a transient failure before giving up'),
    ('validation.base_delay_seconds', '1', 'positive_number', 'VALIDATION_RETRY_DELAY',
     'First retry delay; doubles on every attempt, plus 0-10 % jitter'),
    ('circuit_breaker.failure_threshold', '3', 'positive_integer', 'CIRCUIT_BREAKER_FAILURE_THRESHOLD',
     'Consecutive failures that open a circuit'),
    ('circuit_breaker.cooldown_seconds', '30', 'positive_number', 'CIRCUIT_BREAKER_COOLDOWN',
     'How long an open circuit rejects calls before letting a probe through'),
    ('circuit_breaker.success_threshold', '2', 'positive_integer', 'CIRCUIT_BREAKER_SUCCESS_THRESHOLD',
     'Probe successes that close a half-open circuit'),
    ('circuit_breaker.timeout_seconds', '10', 'positive_number', 'CIRCUIT_BREAKER_TIMEOUT',
     'Deadline of a protected call; also when an unanswered probe counts as lost'),
    ('monitoring.recent_hours', '1', 'positive_integer', 'MONITORING_RECENT_HOURS',
     'Default window of a consistency check'),
    ('monitoring.report_days', '1', 'positive_integer', 'MONITORING_REPORT_DAYS',
     'Days covered by the periodic report'),
    ('monitoring.alert_throttle_minutes', '5', 'non_negative_integer', 'MONITORING_ALERT_THROTTLE',
     'Same alert type for the same entity is not raised again within this window (0: never throttle)'),
    ('retention.alert_days', '90', 'positive_integer', 'RETENTION_ALERT_DAYS',
     'Alerts older than this are moved to alerts_archive')
ON CONFLICT (key) DO NOTHING;

-- Append-only: a trigger (installed with the functions) refuses UPDATE,
-- DELETE and TRUNCATE, and no role but the owner has any right on it.
CREATE TABLE consistency.audit_log (
    id           bigserial PRIMARY KEY,
    at           timestamptz NOT NULL DEFAULT clock_timestamp(),
    -- actor is who the caller says acted (a reviewer's name, 'consistency
    -- monitor'); session_role is the database login that really called.
    actor        text NOT NULL CHECK (actor <> ''),
    session_role text NOT NULL DEFAULT session_user,
    action       text NOT NULL CHECK (action <> ''),
    target_type  text NOT NULL,
    target_id    text,
    before       jsonb,
    after        jsonb
);
CREATE INDEX audit_log_target_idx ON consistency.audit_log (target_type, target_id, at);
CREATE INDEX audit_log_at_idx ON consistency.audit_log (at);

CREATE TABLE consistency.alerts (
    id                bigserial PRIMARY KEY,
    alert_type        text NOT NULL CHECK (alert_type <> ''),
    severity          text NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
    entity_type       text NOT NULL CHECK (entity_type IN ('call', 'appointment', 'circuit', 'system')),
    entity_id         bigint,
    description       text NOT NULL,
    metadata          jsonb NOT NULL DEFAULT '{}',
    detected_at       timestamptz NOT NULL DEFAULT consistency.now(),
    auto_corrected    boolean NOT NULL DEFAULT false,
    corrected_at      timestamptz,
    resolution_notes  text
);
CREATE INDEX alerts_type_detected_idx ON consistency.alerts (alert_type, detected_at);
CREATE INDEX alerts_severity_detected_idx ON consistency.alerts (severity, detected_at);
CREATE INDEX alerts_entity_idx ON consistency.alerts (entity_type, entity_id);
CREATE INDEX alerts_detected_idx ON consistency.alerts (detected_at);

-- The throttle's memory: one row per (type, entity) holding the last time it
-- was alerted. An upsert on this key is what makes two racing sessions
-- produce one alert at every isolation level, without scanning alerts.
CREATE TABLE consistency.alert_throttle (
    alert_type     text NOT NULL,
    entity_type    text NOT NULL,
    entity_id      bigint,
    last_alert_at  timestamptz NOT NULL,
    CONSTRAINT alert_throttle_key UNIQUE NULLS NOT DISTINCT (alert_type, entity_type, entity_id)
);

CREATE TABLE consistency.alerts_archive (
    id                bigint PRIMARY KEY,
    alert_type        text NOT NULL,
    severity          text NOT NULL,
    entity_type       text NOT NULL,
    entity_id         bigint,
    description       text NOT NULL,
    metadata          jsonb NOT NULL,
    detected_at       timestamptz NOT NULL,
    auto_corrected    boolean NOT NULL,
    corrected_at      timestamptz,
    resolution_notes  text,
    archived_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX alerts_archive_detected_idx ON consistency.alerts_archive (detected_at);

CREATE TABLE consistency.manual_review_queue (
    id                bigserial PRIMARY KEY,
    call_id           bigint NOT NULL,
    reason            text NOT NULL CHECK (reason <> ''),
    priority          int NOT NULL CHECK (priority BETWEEN 1 AND 5),
    status            text NOT NULL DEFAULT 'pending'
                      CHECK (status IN ('pending', 'in_progress', 'resolved', 'dismissed')),
    context           jsonb NOT NULL DEFAULT '{}',
    assigned_to       text,
    assigned_at       timestamptz,
    resolved_at       timestamptz,
    resolution_notes  text,
    created_at        timestamptz NOT NULL DEFAULT consistency.now()
);
CREATE INDEX manual_review_queue_status_created_idx
    ON consistency.manual_review_queue (status, created_at);
CREATE INDEX manual_review_queue_status_priority_idx
    ON consistency.manual_review_queue (status, priority, created_at);
-- One open item per call and reason: enqueue is idempotent under races.
CREATE UNIQUE INDEX manual_review_queue_open_uniq
    ON consistency.manual_review_queue (call_id, reason)
    WHERE status IN ('pending', 'in_progress');

CREATE TABLE consistency.check_runs (
    id             bigserial PRIMARY KEY,
    started_at     timestamptz NOT NULL,
    finished_at    timestamptz,
    duration_ms    numeric(12, 3),
    check_window   interval NOT NULL,
    found          int NOT NULL DEFAULT 0,
    corrected      int NOT NULL DEFAULT 0,
    alerted        int NOT NULL DEFAULT 0,
    -- per rule: {"rule": {"severity", "found", "corrected", "alerted"}}
    rules          jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX check_runs_started_idx ON consistency.check_runs (started_at);

CREATE TABLE consistency.circuit_breaker_states (
    circuit_key       text PRIMARY KEY,
    state             text NOT NULL DEFAULT 'closed'
                      CHECK (state IN ('closed', 'open', 'half_open', 'forced_open', 'disabled')),
    failure_count     int NOT NULL DEFAULT 0,
    success_count     int NOT NULL DEFAULT 0,
    probe_started_at  timestamptz,
    last_failure_at   timestamptz,
    last_error        text,
    opened_at         timestamptz,
    closed_at         timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE TABLE consistency.circuit_breaker_events (
    id           bigserial PRIMARY KEY,
    circuit_key  text NOT NULL,
    from_state   text NOT NULL,
    to_state     text NOT NULL,
    reason       text,
    actor        text,
    at           timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX circuit_breaker_events_key_at_idx ON consistency.circuit_breaker_events (circuit_key, at);
CREATE INDEX circuit_breaker_events_at_idx ON consistency.circuit_breaker_events (at);

-- Repeatable definitions (sql/functions, sql/triggers, sql/privileges.sql)
-- are re-applied by `consistency migrate` when their text changes; this is
-- where it remembers what it applied.
CREATE TABLE consistency.schema_definitions (
    path        text PRIMARY KEY,
    sha256      text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
