-- Least privilege, re-applied after every change of migrations or
-- definitions so that new tables and functions are covered too.
--   consistency_app       writes calls/appointments, uses the breaker
--   consistency_reviewer  works the review queue through functions only
--   consistency_monitor   reads state for metrics and dashboards
-- No role but the owner can change alerts or the audit log.

REVOKE ALL ON SCHEMA consistency FROM PUBLIC;
GRANT USAGE ON SCHEMA consistency TO consistency_app, consistency_reviewer, consistency_monitor;

REVOKE ALL ON ALL TABLES IN SCHEMA consistency
    FROM PUBLIC, consistency_app, consistency_reviewer, consistency_monitor;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA consistency
    FROM PUBLIC, consistency_app, consistency_reviewer, consistency_monitor;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA consistency
    FROM PUBLIC, consistency_app, consistency_reviewer, consistency_monitor;

-- Read helpers every role may call (settings are not secret).
GRANT SELECT ON consistency.settings TO consistency_app, consistency_reviewer, consistency_monitor;
GRANT EXECUTE ON FUNCTION
    consistency.now(),
    consistency.setting(text),
    consistency.setting_int(text),
    consistency.setting_numeric(text),
    consistency._require_text(text, text),
    consistency._require_id(bigint, text)
    TO consistency_app, consistency_reviewer, consistency_monitor;

-- The application: its own tables. The guard's trigger functions run as the
-- owner (SECURITY DEFINER), so writers need no right in schema consistency
-- and no role but the owner raises alerts directly.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.calls, public.appointments TO consistency_app;
DO $grants$
DECLARE
    v_seq text;
BEGIN
    -- Sequence names of an existing application may differ from ours.
    FOR v_seq IN
        SELECT pg_get_serial_sequence(t, 'id')
          FROM unnest(ARRAY['public.calls', 'public.appointments']) AS t
    LOOP
        IF v_seq IS NOT NULL THEN
            EXECUTE format('GRANT USAGE, SELECT ON SEQUENCE %s TO consistency_app', v_seq);
        END IF;
    END LOOP;
END
$grants$;

-- The monitor reads, never writes.
GRANT SELECT ON public.calls, public.appointments TO consistency_monitor;
GRANT SELECT ON
    consistency.alerts,
    consistency.alerts_archive,
    consistency.check_runs,
    consistency.circuit_breaker_states,
    consistency.circuit_breaker_events,
    consistency.manual_review_queue
    TO consistency_monitor;

-- validation and review
-- The application validates its bookings, rolls back the ones that failed and
-- may queue items for people; reviewers work the queue through the functions
-- only (no right on manual_review_queue or audit_log). The helpers they call
-- internally run as the owner (SECURITY DEFINER) and need no grant.
GRANT EXECUTE ON FUNCTION
    consistency.validate_booking(bigint, bigint, text),
    consistency.rollback_booking(bigint, text, text),
    consistency.review_enqueue(bigint, text, jsonb, int, text)
    TO consistency_app;
GRANT EXECUTE ON FUNCTION
    consistency.review_enqueue(bigint, text, jsonb, int, text),
    consistency.review_claim(text),
    consistency.review_resolve(bigint, text, text, text),
    consistency.review_list(text, int)
    TO consistency_reviewer;
GRANT EXECUTE ON FUNCTION consistency.review_list(text, int) TO consistency_monitor;
-- circuit
-- The application uses the breaker through its functions only; operators
-- (the owner) force states. The monitor reads state through circuit_status
-- as well as the tables granted above.
GRANT EXECUTE ON FUNCTION
    consistency.circuit_acquire(text),
    consistency.circuit_record_success(text),
    consistency.circuit_record_failure(text, text),
    consistency.circuit_status(text)
    TO consistency_app;
GRANT EXECUTE ON FUNCTION consistency.circuit_status(text) TO consistency_monitor;
-- What the breaker's in-process mirror reads (sql/functions/circuit_mirror.sql).
GRANT EXECUTE ON FUNCTION consistency.circuit_mirror(text[]) TO consistency_app;
-- (the booking helper's review_enqueue is granted to consistency_app above)
-- relay
-- Delivery state holds no secrets (sinks are stored by fingerprint and a
-- redacted name): the monitor may read it. The relay runs as the owner.
GRANT SELECT ON consistency.relay_sinks, consistency.relay_deliveries TO consistency_monitor;
GRANT EXECUTE ON FUNCTION consistency.relay_status() TO consistency_monitor;
-- guarantees
-- Trigger functions run as the owner (SECURITY DEFINER: PostgreSQL checks no
-- EXECUTE right when a trigger fires), whatever role writes; violations() is
-- read-only and runs with the caller's rights. resync_calls() writes the
-- guarded counter: owner only (the monitor's SECURITY DEFINER check
-- functions call it).
GRANT EXECUTE ON FUNCTION consistency.violations() TO consistency_app, consistency_monitor;
-- metrics
-- serve reads everything through these two functions (SECURITY DEFINER,
-- read-only); the counter tables stay owner-only.
GRANT EXECUTE ON FUNCTION consistency.metrics(), consistency.status(integer)
    TO consistency_monitor;
