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

-- The flag rules look for rare states; partial indexes hold only those rows,
-- so a whole-table check reads the drift, not the table.
CREATE INDEX IF NOT EXISTS calls_missing_direction_idx
    ON public.calls (created_at)
    WHERE direction IS NULL OR direction = '';
CREATE INDEX IF NOT EXISTS calls_booking_failed_idx
    ON public.calls (created_at)
    WHERE booking_failed;
CREATE INDEX IF NOT EXISTS calls_outcome_mismatch_idx
    ON public.calls (created_at)
    WHERE session_outcome IN ('appointment_booked', 'appointment_rescheduled')
      AND NOT appointment_made
      AND appointment_link_status NOT IN ('pending_creation', 'cancelled', 'creation_failed');

-- Link rules (consistency._link_state): the active appointments of a call,
-- in call_id order. A window probes it per call; a whole-table check reads
-- it once as an index-only scan (grouped, no sort) merged with calls_pkey.
-- Its predicate columns change only when an appointment is cancelled or
-- deleted, which already writes a new index entry (status, deleted_at).
CREATE INDEX IF NOT EXISTS appointments_active_call_idx
    ON public.appointments (call_id)
    WHERE deleted_at IS NULL AND status <> 'cancelled';
