-- Adoption: the profile an install was made with, and the counter of the
-- application's own call -> appointment links.

-- The adoption profile in force (orchestrator/profile.py): one row, written
-- by `consistency migrate --profile FILE`, read by every later migrate (the
-- guard's SQL is rendered from it) and shown by `migrate status`. No row:
-- the guard's own vocabulary.
CREATE TABLE consistency.adoption_profile (
    singleton   boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    name        text NOT NULL,
    profile     jsonb NOT NULL,
    source      text NOT NULL,
    source_file text,
    applied_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
REVOKE ALL ON consistency.adoption_profile FROM PUBLIC;

-- Active appointments a call points at through its own link columns (the
-- profile's calls.appointment_links, e.g. calls.appointment_id); always 0
-- without them. G1: a call is linked when active_appointment_count +
-- active_appointment_refs > 0. Kept by the guard's triggers, like the count.
ALTER TABLE public.calls
    ADD COLUMN IF NOT EXISTS active_appointment_refs integer NOT NULL DEFAULT 0;

COMMENT ON COLUMN public.calls.active_appointment_refs IS
    'Link columns of this call (adoption profile: calls.appointment_links) naming an active '
    'appointment, kept by the guard''s triggers; direct writes are refused.';
