-- validate_booking: the five-step cascade and its reason codes;
-- rollback_booking: the six call fields, alert, review item and audit row,
-- G1 wins, atomicity, bad input.
BEGIN;
SELECT plan(45);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

-- Fixtures are written with the guard's triggers bypassed so that
-- deliberately inconsistent calls stay inconsistent.
SET LOCAL session_replication_role = replica;
INSERT INTO public.calls (id, external_call_id, session_outcome, appointment_made,
                          appointment_link_status) VALUES
    (101, 'v-101', 'appointment_booked', true, 'linked'),
    (102, 'v-102', 'appointment_booked', false, 'pending_creation'),
    (103, 'v-103', 'appointment_rescheduled', true, 'linked'),
    (104, 'v-104', 'information_only', false, 'unlinked'),
    (105, 'v-105', 'appointment_booked', false, 'cancelled'),
    (106, 'v-106', 'information_only', true, 'linked');
INSERT INTO public.appointments (id, call_id, status, external_booking_id, created_at, deleted_at) VALUES
    (1001, 101, 'scheduled', 'ext-a', '2030-01-01 11:58:00+00', NULL),
    (1002, 101, 'confirmed', 'ext-b', '2030-01-01 11:59:00+00', NULL),
    (1003, 101, 'cancelled', 'ext-c', '2030-01-01 11:59:30+00', NULL),
    (1004, 101, 'scheduled', 'ext-d', '2030-01-01 11:59:40+00', '2030-01-01 11:59:50+00'),
    (1005, 103, 'scheduled', 'ext-e', '2030-01-01 11:50:00+00', NULL),
    (1006, 104, 'scheduled', 'ext-f', '2030-01-01 11:59:00+00', NULL),
    (1007, 105, 'cancelled', 'ext-g', '2030-01-01 11:59:00+00', NULL),
    (1008, 106, 'scheduled', 'ext-h', '2030-01-01 11:59:00+00', NULL);
SET LOCAL session_replication_role = origin;

CREATE TEMP TABLE call_101_before AS SELECT * FROM public.calls WHERE id = 101;

-- 1. existence
SELECT results_eq($$ SELECT ok, reason, details->>'appointment_id' FROM consistency.validate_booking(101) $$,
                  $$ VALUES (true, NULL::text, '1002') $$,
                  'no id given: the newest active appointment is validated (cancelled and deleted newer ones are skipped)');
SELECT results_eq($$ SELECT ok, details->>'appointment_id' FROM consistency.validate_booking(101, 1001) $$,
                  $$ VALUES (true, '1001') $$, 'an explicit appointment id is validated as given');
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(101, 1003) $$,
                  $$ VALUES (false, 'appointment_not_found',
                             '{"call_id": 101, "appointment_id": 1003, "state": "cancelled"}'::jsonb) $$,
                  'a cancelled appointment counts as missing');
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(101, 1004) $$,
                  $$ VALUES (false, 'appointment_not_found',
                             '{"call_id": 101, "appointment_id": 1004, "state": "deleted"}'::jsonb) $$,
                  'a soft-deleted appointment counts as missing');
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(101, 999999) $$,
                  $$ VALUES (false, 'appointment_not_found',
                             '{"call_id": 101, "appointment_id": 999999, "state": "missing"}'::jsonb) $$,
                  'an unknown appointment id is appointment_not_found');
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(102) $$,
                  $$ VALUES (false, 'appointment_not_linked', '{"call_id": 102}'::jsonb) $$,
                  'a call without appointments is appointment_not_linked');
SELECT results_eq($$ SELECT ok, reason FROM consistency.validate_booking(105) $$,
                  $$ VALUES (false, 'appointment_not_linked') $$,
                  'a call whose only appointment is cancelled is appointment_not_linked');

-- 2. link
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(102, 1001) $$,
                  $$ VALUES (false, 'appointment_wrong_call',
                             '{"call_id": 102, "appointment_id": 1001, "appointment_call_id": 101,
                               "expected_call_id": 102}'::jsonb) $$,
                  'an appointment of another call is appointment_wrong_call with both call ids');
SELECT results_eq($$ SELECT reason FROM consistency.validate_booking(102, 1001, 'not-ext-a') $$,
                  $$ VALUES ('appointment_wrong_call') $$,
                  'first failure wins: link is checked before the external id');

-- 3. external id
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(101, 1002, 'ext-x') $$,
                  $$ VALUES (false, 'external_booking_id_mismatch',
                             '{"call_id": 101, "appointment_id": 1002, "expected_id": "ext-x",
                               "actual_id": "ext-b"}'::jsonb) $$,
                  'a different external booking id is external_booking_id_mismatch (expected and actual)');
SELECT results_eq($$ SELECT ok FROM consistency.validate_booking(101, NULL, 'ext-b') $$,
                  $$ VALUES (true) $$, 'a matching external booking id passes');
SELECT results_eq($$ SELECT reason FROM consistency.validate_booking(101, NULL, 'ext-a') $$,
                  $$ VALUES ('external_booking_id_mismatch') $$,
                  'the external id is compared with the newest active appointment when no id is given');

-- 4. recency
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(103) $$,
                  $$ VALUES (false, 'appointment_too_old',
                             '{"call_id": 103, "appointment_id": 1005, "age_seconds": 600.000,
                               "max_age_seconds": 300,
                               "created_at": "2030-01-01T11:50:00+00:00"}'::jsonb) $$,
                  'an appointment older than the max age is appointment_too_old with age and max');
SET LOCAL consistency.fake_now = '2030-01-01 11:55:00+00';
SELECT results_eq($$ SELECT ok, (details->>'age_seconds')::numeric FROM consistency.validate_booking(103) $$,
                  $$ VALUES (true, 300.000) $$,
                  'recency uses consistency.now(): five minutes earlier the same appointment is exactly at the limit and passes');
SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';
UPDATE consistency.settings SET value = '60' WHERE key = 'validation.max_appointment_age_seconds';
SELECT results_eq($$ SELECT reason, details->'age_seconds', details->'max_age_seconds'
                      FROM consistency.validate_booking(101, 1001) $$,
                  $$ VALUES ('appointment_too_old', '120.000'::jsonb, '60'::jsonb) $$,
                  'the max age comes from validation.max_appointment_age_seconds');
UPDATE consistency.settings SET value = '300' WHERE key = 'validation.max_appointment_age_seconds';

-- 5. call flags
SELECT results_eq($$ SELECT ok, reason, details FROM consistency.validate_booking(104) $$,
                  $$ VALUES (false, 'call_flags_inconsistent',
                             '{"call_id": 104, "appointment_id": 1006,
                               "issues": ["appointment_made_false", "session_outcome_not_booking",
                                          "link_status_not_linked"],
                               "appointment_made": false, "session_outcome": "information_only",
                               "appointment_link_status": "unlinked"}'::jsonb) $$,
                  'every wrong call flag is listed in details.issues');
SELECT results_eq($$ SELECT reason, details->'issues' FROM consistency.validate_booking(106) $$,
                  $$ VALUES ('call_flags_inconsistent', '["session_outcome_not_booking"]'::jsonb) $$,
                  'only the wrong flag is listed');
SELECT results_eq($$ SELECT ok FROM consistency.validate_booking(103, 1005) $$,
                  $$ VALUES (false) $$, 'sanity: 103 is too old at 12:00');
SELECT results_eq($$ SELECT c.* FROM public.calls c WHERE c.id = 101 $$,
                  $$ SELECT * FROM call_101_before $$,
                  'validation writes nothing: the call row is unchanged');
SELECT is((SELECT count(*)::int FROM consistency.alerts) + (SELECT count(*)::int FROM consistency.audit_log)
          + (SELECT count(*)::int FROM consistency.manual_review_queue), 0,
          'validation writes no alert, audit row or review item');

SET LOCAL session_replication_role = replica;
INSERT INTO public.calls (id, external_call_id, appointment_made, appointment_link_status,
                          active_appointment_count, session_outcome)
VALUES (190, 'forever', true, 'linked', 1, 'appointment_booked');
INSERT INTO public.appointments (id, call_id, external_booking_id, created_at)
VALUES (1190, 190, 'b-forever', '-infinity');
SET LOCAL session_replication_role = origin;
SELECT results_eq($$ SELECT ok, reason, details -> 'age_seconds' FROM consistency.validate_booking(190) $$,
                  $$ VALUES (false, 'appointment_too_old', 'null'::jsonb) $$,
                  'an appointment created at -infinity has no age: too old, not an error');

-- bad input
SELECT throws_ok($$ SELECT * FROM consistency.validate_booking(NULL) $$, '22023',
                 'call_id must not be NULL', 'no call id refused');
SELECT throws_ok($$ SELECT * FROM consistency.validate_booking(-3) $$, 'P0002',
                 'call -3 does not exist', 'a negative call id is an id like any other: unknown');
SELECT results_eq($$ SELECT ok, reason FROM consistency.validate_booking(101, -1) $$,
                  $$ VALUES (false, 'appointment_not_found') $$,
                  'a negative appointment id is looked up like any other');
SELECT throws_ok($$ SELECT * FROM consistency.validate_booking(101, NULL, ' ') $$, '22023', NULL,
                 'an empty external booking id is refused rather than silently skipped');
SELECT throws_ok($$ SELECT * FROM consistency.validate_booking(424242) $$, 'P0002',
                 'call 424242 does not exist', 'unknown call refused');

-- rollback_booking: no active appointment
SELECT isnt(consistency.rollback_booking(102, 'calendar timeout'), NULL, 'rollback returns the alert id');
SELECT results_eq($$ SELECT appointment_made, appointment_link_status, session_outcome, booking_failed,
                            booking_failure_reason, requires_manual_processing
                       FROM public.calls WHERE id = 102 $$,
                  $$ VALUES (false, 'creation_failed', 'creation_failed', true, 'calendar timeout', true) $$,
                  'rollback sets the six call fields');
SELECT results_eq($$ SELECT alert_type, severity, entity_type, entity_id, metadata->>'reason'
                       FROM consistency.alerts $$,
                  $$ VALUES ('appointment_rollback', 'critical', 'call', 102::bigint, 'calendar timeout') $$,
                  'one critical appointment_rollback alert for the call');
SELECT results_eq($$ SELECT call_id, reason, priority, status, (context->>'alert_id')::bigint
                       FROM consistency.manual_review_queue $$,
                  $$ SELECT 102::bigint, 'appointment_rollback', 1, 'pending', id FROM consistency.alerts $$,
                  'a pending review item of priority 1 that points at the alert');
SELECT results_eq($$ SELECT actor, target_type, target_id, before->>'session_outcome',
                            after->>'session_outcome', (after->>'alert_id')::bigint
                       FROM consistency.audit_log WHERE action = 'booking.rollback' $$,
                  $$ SELECT 'system', 'call', '102', 'appointment_booked', 'creation_failed', id
                       FROM consistency.alerts $$,
                  'an audit row with before and after');

SELECT isnt(consistency.rollback_booking(102, 'second try failed too', 'worker-2'), NULL,
            'a second rollback within the throttle window still returns an alert id');
SELECT results_eq($$ SELECT count(*)::int, count(*) FILTER (WHERE metadata ? 'throttle_bypassed')::int
                       FROM consistency.alerts WHERE entity_id = 102 $$,
                  $$ VALUES (2, 1) $$,
                  'a rollback alert is never throttled away (marked throttle_bypassed)');
SELECT is((SELECT count(*)::int FROM consistency.manual_review_queue WHERE call_id = 102), 1,
          'the open review item is reused, not duplicated');

-- G1 wins
SELECT isnt(consistency.rollback_booking(101, 'late failure report', 'worker-7'), NULL,
            'rollback of a call that still has an active appointment');
SELECT results_eq($$ SELECT appointment_made, appointment_link_status, session_outcome, booking_failed,
                            booking_failure_reason, requires_manual_processing
                       FROM public.calls WHERE id = 101 $$,
                  $$ VALUES (true, 'linked', 'appointment_booked', true, 'late failure report', true) $$,
                  'G1 wins: link fields and outcome untouched, failure fields set');
SELECT results_eq($$ SELECT a.severity, (a.metadata->>'link_kept')::boolean, q.priority, l.actor
                       FROM consistency.alerts a
                       JOIN consistency.manual_review_queue q ON q.call_id = a.entity_id
                       JOIN consistency.audit_log l ON l.target_id = '101' AND l.action = 'booking.rollback'
                      WHERE a.entity_id = 101 $$,
                  $$ VALUES ('critical', true, 1, 'worker-7') $$,
                  'G1 wins: alert, review item and audit row are still written');

-- bad input: nothing written
CREATE TEMP TABLE counts_before AS
    SELECT (SELECT count(*) FROM consistency.alerts) AS alerts,
           (SELECT count(*) FROM consistency.manual_review_queue) AS items,
           (SELECT count(*) FROM consistency.audit_log) AS audit;
SELECT throws_ok($$ SELECT consistency.rollback_booking(424242, 'x') $$, 'P0002',
                 'call 424242 does not exist', 'rollback of an unknown call refused');
SELECT throws_ok($$ SELECT consistency.rollback_booking(NULL, 'x') $$, '22023',
                 'call_id must not be NULL', 'rollback without a call id refused');
SELECT throws_ok($$ SELECT consistency.rollback_booking(104, '  ') $$, '22023',
                 'rollback reason must not be empty', 'rollback with an empty reason refused');
SELECT throws_ok($$ SELECT consistency.rollback_booking(104, NULL) $$, '22023',
                 'rollback reason must not be empty', 'rollback without reason refused');
SELECT throws_ok($$ SELECT consistency.rollback_booking(104, 'x', '') $$, '22023',
                 'actor must not be empty', 'rollback with an empty actor refused');

-- a failure in the last step undoes the earlier ones
CREATE FUNCTION pg_temp.fail_review_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'injected failure'; END $$;
CREATE TRIGGER inject_failure BEFORE INSERT ON consistency.manual_review_queue
    FOR EACH ROW EXECUTE FUNCTION pg_temp.fail_review_insert();
SELECT throws_ok($$ SELECT consistency.rollback_booking(104, 'x') $$, 'P0001', 'injected failure',
                 'a failing review insert fails the rollback');
DROP TRIGGER inject_failure ON consistency.manual_review_queue;
SELECT results_eq($$ SELECT appointment_made, appointment_link_status, booking_failed FROM public.calls
                      WHERE id = 104 $$,
                  $$ VALUES (false, 'unlinked', false) $$,
                  'refused and failed rollbacks leave the call as it was');
SELECT results_eq($$ SELECT (SELECT count(*) FROM consistency.alerts),
                            (SELECT count(*) FROM consistency.manual_review_queue),
                            (SELECT count(*) FROM consistency.audit_log) $$,
                  $$ SELECT alerts, items, audit FROM counts_before $$,
                  'refused and failed rollbacks leave no alert, review item or audit row');

SELECT * FROM finish();
ROLLBACK;
