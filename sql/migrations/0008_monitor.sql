-- Consistency monitor: how long a run waited for a concurrent one, and the
-- indexes its rules rely on.

ALTER TABLE consistency.check_runs ADD COLUMN waited_ms numeric(12, 3) NOT NULL DEFAULT 0;

-- Orphan rule: appointments without a call are rare; index only those.
CREATE INDEX IF NOT EXISTS appointments_orphan_idx
    ON public.appointments (created_at)
    WHERE call_id IS NULL AND deleted_at IS NULL;

-- Daily reports kept by the scheduled job (pg_cron), one row per day.
CREATE TABLE consistency.daily_reports (
    day          date PRIMARY KEY,
    report       jsonb NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
