-- Least privilege, re-applied after every change of migrations or
-- definitions so that new tables and functions are covered too.
--   consistency_app       writes calls/appointments, uses the breaker
--   consistency_reviewer  works the review queue through functions only
--   consistency_monitor   reads state for metrics and dashboards
-- No role but the owner can change alerts or the audit log.

-- Nobody but the owner creates objects in the guard's schema: an object
-- another role put there could stand in for one the guard's functions call.
REVOKE ALL ON SCHEMA consistency FROM PUBLIC;
DO $schema$
DECLARE
    v_grantee text;
BEGIN
    FOR v_grantee IN
        SELECT pg_catalog.quote_ident(r.rolname)
          FROM pg_catalog.pg_namespace n
         CROSS JOIN LATERAL pg_catalog.aclexplode(n.nspacl) x
          JOIN pg_catalog.pg_roles r ON r.oid = x.grantee
         WHERE n.nspname = 'consistency' AND x.privilege_type = 'CREATE'
           AND x.grantee <> n.nspowner
    LOOP
        EXECUTE format('REVOKE CREATE ON SCHEMA consistency FROM %s', v_grantee);
    END LOOP;
END
$schema$;
GRANT USAGE ON SCHEMA consistency TO consistency_app, consistency_reviewer, consistency_monitor;

REVOKE ALL ON ALL TABLES IN SCHEMA consistency
    FROM PUBLIC, consistency_app, consistency_reviewer, consistency_monitor;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA consistency
    FROM PUBLIC, consistency_app, consistency_reviewer, consistency_monitor;
-- ROUTINES: functions and procedures (ALL FUNCTIONS skips procedures).
REVOKE ALL ON ALL ROUTINES IN SCHEMA consistency
    FROM PUBLIC, consistency_app, consistency_reviewer, consistency_monitor;
REVOKE ALL ON PROCEDURE consistency.archive_alerts_all(interval, int) FROM PUBLIC;

-- Read helpers every role may call (settings are not secret).
GRANT SELECT ON consistency.settings TO consistency_app, consistency_reviewer, consistency_monitor;
GRANT EXECUTE ON FUNCTION
    consistency.now(),
    consistency._fake_now(),  -- inlined into now(): its callers need it too
    consistency.setting(text),
    consistency.setting_int(text),
    consistency.setting_numeric(text),
    consistency._require_text(text, text),
    consistency._require_id(bigint, text)
    TO consistency_app, consistency_reviewer, consistency_monitor;

-- The application: its own tables. The guard's trigger functions run as the
-- owner (SECURITY DEFINER), so writers need no right in schema consistency
-- and no role but the owner raises alerts directly.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.appointments TO consistency_app;
GRANT SELECT, INSERT, DELETE ON public.calls TO consistency_app;

-- calls.active_appointment_count (and active_appointment_refs, its part for
-- the application's own link columns) is written by the guard (as the owner)
-- alone. A role with UPDATE on calls could otherwise write it from a
-- trigger of its own, at a depth where the counter guard lets consistent-
-- looking rows through. So UPDATE on calls is granted column by column,
-- every column but the counter, to consistency_app and to every other role
-- that holds UPDATE on the table: a column added later needs this file
-- again (`consistency migrate` sees the change and re-applies it).
DO $counter$
DECLARE
    v_columns text;
    v_grantee text;
BEGIN
    SELECT string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_columns
      FROM pg_catalog.pg_attribute a
     WHERE a.attrelid = 'public.calls'::pg_catalog.regclass AND a.attnum > 0
       AND NOT a.attisdropped
       AND a.attname NOT IN ('active_appointment_count', 'active_appointment_refs');
    FOR v_grantee IN
        SELECT 'consistency_app'
        UNION
        SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(x.grantee)) END
          FROM pg_catalog.pg_class c
         CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) x
         WHERE c.oid = 'public.calls'::pg_catalog.regclass AND x.privilege_type = 'UPDATE'
           AND x.grantee <> c.relowner
        UNION
        SELECT CASE WHEN x.grantee = 0 THEN 'PUBLIC'
                    ELSE pg_catalog.quote_ident(pg_catalog.pg_get_userbyid(x.grantee)) END
          FROM pg_catalog.pg_attribute a
         CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x
          JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
         WHERE a.attrelid = 'public.calls'::pg_catalog.regclass
           AND a.attname IN ('active_appointment_count', 'active_appointment_refs')
           AND x.privilege_type = 'UPDATE'
           AND x.grantee <> c.relowner
    LOOP
        -- Revoking the table's UPDATE revokes every column's too.
        EXECUTE format('REVOKE UPDATE ON public.calls FROM %s', v_grantee);
        EXECUTE format('GRANT UPDATE (%s) ON public.calls TO %s', v_columns, v_grantee);
    END LOOP;
END
$counter$;
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
-- report and check
-- The daily report only reads (SECURITY DEFINER, STABLE): whoever watches may
-- run `consistency report`. run_check corrects what it finds and
-- check_findings takes its lock: both stay the owner's (`consistency check`).
GRANT EXECUTE ON FUNCTION consistency.daily_report(date) TO consistency_monitor;
