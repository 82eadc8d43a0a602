-- The appointment counter: guarded against direct writes, reported by
-- violations() when it drifts anyway, repaired by resync_calls().
BEGIN;
SELECT plan(14);

INSERT INTO calls (id, external_call_id) SELECT g, 'call-' || g FROM generate_series(1, 10) g;
INSERT INTO appointments (call_id, external_booking_id) SELECT g, 'b-' || g FROM generate_series(1, 5) g;

SELECT throws_ok($$ UPDATE calls SET active_appointment_count = 3 WHERE id = 1 $$, '42501',
                 'calls.active_appointment_count is maintained by consistency-guard',
                 'a direct write of the counter is refused');
SELECT throws_ok($$ INSERT INTO calls (external_call_id, active_appointment_count) VALUES ('x', 1) $$, '42501',
                 'calls.active_appointment_count is maintained by consistency-guard',
                 'inserting a call with a counter is refused');
SELECT lives_ok($$ UPDATE calls SET active_appointment_count = active_appointment_count WHERE id = 1 $$,
                'writing the same value is harmless');
SET LOCAL ROLE consistency_app;
SELECT throws_ok($$ UPDATE calls SET active_appointment_count = 0 $$, '42501', NULL::text,
                 'also for the application role');
SELECT throws_ok($$ SELECT consistency.resync_calls() $$, '42501', NULL::text,
                 'the application role cannot call resync_calls');
RESET ROLE;

SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'no violations to start with');

-- Drift behind the guard's back: triggers bypassed.
SET LOCAL session_replication_role = replica;
DELETE FROM appointments WHERE call_id = 1;
INSERT INTO appointments (call_id, external_booking_id) VALUES (6, 'b-6');
UPDATE calls SET appointment_made = true WHERE id = 7;
UPDATE calls SET active_appointment_count = 2 WHERE id = 2;
SET LOCAL session_replication_role = origin;

SELECT bag_eq($$ SELECT call_id, rule, expected, actual FROM consistency.violations() $$,
              $$ VALUES (1::bigint, 'G1_link', 'not linked', 'linked'),
                        (1::bigint, 'active_appointment_count', '0', '1'),
                        (2::bigint, 'active_appointment_count', '1', '2'),
                        (6::bigint, 'G1_link', 'linked', 'unlinked'),
                        (6::bigint, 'active_appointment_count', '1', '0'),
                        (7::bigint, 'G2_flag', 'false', 'true') $$,
              'violations() lists every broken call with rule, expected and actual');

SELECT is(consistency.resync_calls(ARRAY[1, 6]::bigint[]), 2, 'resync of two calls changes two');
SELECT results_eq($$ SELECT id, appointment_link_status, appointment_made, active_appointment_count
                       FROM calls WHERE id IN (1, 6) ORDER BY id $$,
                  $$ VALUES (1::bigint, 'cancelled', false, 0), (6::bigint, 'linked', true, 1) $$,
                  'resynced calls follow their appointments');
SELECT is((SELECT count(DISTINCT call_id)::int FROM consistency.violations()), 2,
          'calls outside the list are left alone');
SELECT is(consistency.resync_calls(), 2, 'resync of all calls fixes the rest');
SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'no violations after the resync');
SELECT is(consistency.resync_calls(), 0, 'a second resync changes nothing');

TRUNCATE appointments;
SELECT results_eq($$ SELECT count(*)::int FROM calls WHERE active_appointment_count > 0 OR appointment_made $$,
                  $$ VALUES (0) $$, 'TRUNCATE of appointments resets every call');

SELECT * FROM finish();
ROLLBACK;
