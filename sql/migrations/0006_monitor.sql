-- Consistency monitor: how long a run waited for a concurrent one, and the
-- daily reports. (The indexes its rules rely on are in sql/indexes.sql:
-- rendered with the adoption profile, and created only when the
-- application's tables have no equivalent.)

ALTER TABLE consistency.check_runs ADD COLUMN waited_ms numeric(12, 3) NOT NULL DEFAULT 0;

-- Daily reports kept by the scheduled job (pg_cron), one row per day.
CREATE TABLE consistency.daily_reports (
    day          date PRIMARY KEY,
    report       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
