BEGIN;
SELECT plan(27);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

-- Drifted data, written the way a bulk load or a buggy writer would: with the
-- guard's triggers bypassed.
SET LOCAL session_replication_role = replica;
INSERT INTO public.calls (id, external_call_id, direction, session_outcome, external_booking_id,
                          appointment_made, appointment_link_status, active_appointment_count,
                          booking_failed, created_at) VALUES
 (1, 'ok',          'inbound', 'appointment_booked', 'ext-1', true,  'linked',           1, false, '2030-01-01 11:50+00'),
 (2, 'mismatch',    'inbound', 'appointment_booked', NULL,    false, 'unlinked',         0, false, '2030-01-01 11:50+00'),
 (3, 'pending-old', 'inbound', 'appointment_booked', NULL,    false, 'pending_creation', 0, false, '2030-01-01 11:50+00'),
 (4, 'phantom',     'inbound', 'appointment_booked', NULL,    true,  'linked',           1, false, '2030-01-01 11:50+00'),
 (5, 'unsynced',    'inbound', NULL,                 NULL,    false, 'unlinked',         0, false, '2030-01-01 11:50+00'),
 (6, 'no-dir',      NULL,      NULL,                 NULL,    false, 'unlinked',         0, false, '2030-01-01 11:50+00'),
 (7, 'failed',      'inbound', 'creation_failed',    NULL,    false, 'creation_failed',  0, true,  '2030-01-01 11:50+00'),
 (8, 'old-drift',   NULL,      'appointment_booked', NULL,    false, 'unlinked',         0, false, '2029-12-31 08:00+00'),
 (9, 'orphan-home', 'inbound', NULL,                 'ext-9', false, 'unlinked',         0, false, '2030-01-01 11:55+00'),
 (10, 'pending-new', 'inbound', 'appointment_booked', NULL,   false, 'pending_creation', 0, false, '2030-01-01 11:58+00');
INSERT INTO public.appointments (id, call_id, status, external_booking_id, source, created_at) VALUES
 (101, 1,    'scheduled', 'ext-1',  'voice_agent', '2030-01-01 11:51+00'),
 (105, 5,    'confirmed', 'ext-5',  'voice_agent', '2030-01-01 11:51+00'),
 (109, NULL, 'scheduled', 'ext-9',  'voice_agent', '2030-01-01 11:56+00'),
 (110, NULL, 'scheduled', 'ext-none', 'voice_agent', '2030-01-01 11:56+00'),
 (111, NULL, 'scheduled', 'ext-9b', 'manual',      '2030-01-01 11:56+00');
SET LOCAL session_replication_role = origin;

-- check_call: read-only, one call
SELECT is_empty($$ SELECT * FROM consistency.check_call(1) $$, 'a consistent call has no issue');
SELECT results_eq($$ SELECT issue, severity FROM consistency.check_call(2) $$,
                  $$ VALUES ('session_outcome_mismatch', 'critical') $$, 'check_call finds the outcome mismatch');
SELECT results_eq($$ SELECT issue FROM consistency.check_call(3) $$,
                  $$ VALUES ('missing_appointment') $$, 'check_call finds an overdue pending booking');
SELECT results_eq($$ SELECT issue FROM consistency.check_call(4) $$,
                  $$ VALUES ('missing_appointment') $$,
                  'a phantom booking is missing_appointment only, not also inconsistent_link_status');
SELECT results_eq($$ SELECT issue FROM consistency.check_call(5) $$,
                  $$ VALUES ('inconsistent_link_status') $$, 'check_call finds a stale link status');
SELECT results_eq($$ SELECT issue FROM consistency.check_call(6) $$,
                  $$ VALUES ('missing_direction') $$, 'check_call finds a missing direction');
SELECT results_eq($$ SELECT issue, severity FROM consistency.check_call(7) $$,
                  $$ VALUES ('recent_failure', 'info') $$, 'check_call reports a booking failure');
SELECT is_empty($$ SELECT * FROM consistency.check_call(10) $$,
                'a pending booking younger than max age is not an issue yet');
SELECT throws_ok($$ SELECT * FROM consistency.check_call(999) $$, 'P0002', 'call 999 does not exist',
                 'check_call refuses an unknown call');
SELECT is_empty($$ SELECT i.issue, i.severity
                     FROM public.calls c
                    CROSS JOIN LATERAL consistency.check_call(c.id) i
                     LEFT JOIN consistency._check_rules() r ON r.rule = i.issue
                    WHERE r.severity IS DISTINCT FROM i.severity $$,
                'check_call rates every issue as the rule registry does');
SELECT is((SELECT count(*)::int FROM consistency.alerts), 0, 'check_call wrote nothing');

-- run_check over the default window (1 hour): call 8 is outside it
SELECT results_eq(
    $$ SELECT rule, severity, found, corrected, alerted FROM consistency.run_check() $$,
    $$ VALUES ('session_outcome_mismatch', 'critical', 1, 0, 1),
              ('missing_appointment',      'critical', 2, 2, 2),
              ('inconsistent_link_status', 'warning',  1, 1, 1),
              ('missing_direction',        'warning',  1, 1, 0),
              ('orphaned_appointment',     'warning',  2, 1, 1),
              ('recent_failure',           'info',     3, 0, 0) $$,
    'one run finds every rule, corrects what is safe and alerts the rest');
SELECT is_empty($$ SELECT a.alert_type, a.severity
                     FROM consistency.alerts a
                     JOIN consistency._check_rules() r ON r.rule = a.alert_type
                    WHERE a.severity <> r.severity $$,
                'a rule''s alerts carry its severity');

SELECT results_eq(
    $$ SELECT appointment_link_status, appointment_made, session_outcome, booking_failed,
              requires_manual_processing FROM public.calls WHERE id IN (3, 4) ORDER BY id $$,
    $$ VALUES ('creation_failed', false, 'creation_failed', true, true),
              ('creation_failed', false, 'creation_failed', true, true) $$,
    'missing appointments were rolled back');
SELECT is((SELECT count(*)::int FROM consistency.manual_review_queue WHERE call_id IN (3, 4)), 2,
          'each rolled-back call has a review item');
SELECT results_eq(
    $$ SELECT appointment_link_status, appointment_made, active_appointment_count
         FROM public.calls WHERE id = 5 $$,
    $$ VALUES ('linked', true, 1) $$, 'a stale link status was recomputed');
SELECT is((SELECT direction FROM public.calls WHERE id = 6), 'inbound', 'missing direction set to inbound');
SELECT is((SELECT call_id FROM public.appointments WHERE id = 109), 9::bigint,
          'the orphan was re-attached to the call with its booking id');
SELECT is((SELECT appointment_link_status FROM public.calls WHERE id = 9), 'linked',
          'and that call is now linked');
SELECT is((SELECT call_id FROM public.appointments WHERE id = 111), NULL::bigint,
          'a manual appointment without call is not the monitor''s business');
SELECT is((SELECT direction FROM public.calls WHERE id = 8), NULL, 'a call outside the window is untouched');
SELECT results_eq(
    $$ SELECT alert_type, entity_type, entity_id FROM consistency.alerts
        WHERE alert_type IN ('session_outcome_mismatch', 'orphaned_appointment', 'inconsistent_link_status')
        ORDER BY alert_type $$,
    $$ VALUES ('inconsistent_link_status', 'call', 5::bigint),
              ('orphaned_appointment', 'appointment', 110::bigint),
              ('session_outcome_mismatch', 'call', 2::bigint) $$,
    'alert rows are written for what was found');
SELECT is((SELECT count(*)::int FROM consistency.check_runs), 1, 'the run is recorded');
SELECT is((SELECT rules -> 'missing_appointment' ->> 'corrected' FROM consistency.check_runs), '2',
          'with per-rule counts');

-- idempotence: nothing more to correct, the remaining alert is throttled
SELECT results_eq(
    $$ SELECT rule, found, corrected, alerted FROM consistency.run_check() $$,
    $$ VALUES ('session_outcome_mismatch', 1, 0, 0), ('missing_appointment', 0, 0, 0),
              ('inconsistent_link_status', 0, 0, 0), ('missing_direction', 0, 0, 0),
              ('orphaned_appointment', 1, 0, 0), ('recent_failure', 3, 0, 0) $$,
    'a second run corrects nothing more and its alerts are throttled');

-- a wider window reaches the old call. Fixing its direction is a write, so
-- the call-side rules run on it: G4 makes the booked call without appointment
-- pending_creation, which is overdue, so it is rolled back in the same run.
SELECT results_eq(
    $$ SELECT rule, found FROM consistency.run_check('2 days') WHERE rule IN
         ('session_outcome_mismatch', 'missing_appointment', 'missing_direction') $$,
    $$ VALUES ('session_outcome_mismatch', 1), ('missing_appointment', 1), ('missing_direction', 1) $$,
    'only the window counts: a 2-day window finds the old drift');
SELECT is((SELECT appointment_link_status FROM public.calls WHERE id = 8), 'creation_failed',
          'the old phantom booking was rolled back');

SELECT * FROM finish();
ROLLBACK;
