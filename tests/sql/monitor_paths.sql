BEGIN;
SELECT plan(9);

-- The link rules have two access paths (probe per call for small windows,
-- one grouped pass over appointments for large ones): both must give the
-- same verdict on every kind of drift, and run_check must take the bulk path
-- for a large window and still find and correct exactly the same.
SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

SET LOCAL session_replication_role = replica;
INSERT INTO public.calls (id, external_call_id, direction, session_outcome, appointment_made,
                          appointment_link_status, active_appointment_count, created_at) VALUES
 (1,  'linked-ok',      'inbound', 'appointment_booked', true,  'linked',           1, '2030-01-01 11:00+00'),
 (2,  'unlinked-ok',    'inbound', NULL,                 false, 'unlinked',         0, '2030-01-01 11:00+00'),
 (3,  'phantom',        'inbound', 'appointment_booked', true,  'linked',           1, '2030-01-01 11:00+00'),
 (4,  'made-only',      'inbound', 'appointment_booked', true,  'unlinked',         0, '2030-01-01 11:00+00'),
 (5,  'pending-old',    'inbound', 'appointment_booked', false, 'pending_creation', 0, '2030-01-01 11:00+00'),
 (6,  'pending-new',    'inbound', 'appointment_booked', false, 'pending_creation', 0, '2030-01-01 11:59+00'),
 (7,  'not-linked',     'inbound', 'appointment_booked', false, 'unlinked',         0, '2030-01-01 11:00+00'),
 (8,  'count-high',     'inbound', 'appointment_booked', true,  'linked',           2, '2030-01-01 11:00+00'),
 (9,  'count-ghost',    'inbound', NULL,                 false, 'unlinked',         1, '2030-01-01 11:00+00'),
 (10, 'linked-unmade',  'inbound', 'appointment_booked', false, 'linked',           1, '2030-01-01 11:00+00'),
 (11, 'one-of-three',   'inbound', 'appointment_booked', true,  'linked',           1, '2030-01-01 11:00+00'),
 (12, 'old-phantom',    'inbound', 'appointment_booked', true,  'linked',           1, '2029-12-01 11:00+00');
INSERT INTO public.appointments (id, call_id, status, deleted_at, external_booking_id, source) VALUES
 (101, 1,  'scheduled', NULL, 'p-101', 'voice_agent'),
 (107, 7,  'scheduled', NULL, 'p-107', 'voice_agent'),
 (108, 8,  'scheduled', NULL, 'p-108', 'voice_agent'),
 (110, 10, 'confirmed', NULL, 'p-110', 'voice_agent'),
 (111, 11, 'scheduled', NULL, 'p-111', 'voice_agent'),
 (112, 11, 'cancelled', NULL, 'p-112', 'voice_agent'),
 (113, 11, 'scheduled', '2030-01-01 10:00+00', 'p-113', 'voice_agent'),
 (114, 3,  'cancelled', NULL, 'p-114', 'voice_agent');
SET LOCAL session_replication_role = origin;

SELECT results_eq(
    $$ SELECT call_id, rule FROM consistency._rule_link('2030-01-01 00:00+00', '2030-01-01 12:00+00', false)
        ORDER BY call_id $$,
    $$ VALUES (3::bigint, 'missing_appointment'), (4, 'missing_appointment'), (5, 'missing_appointment'),
              (7, 'inconsistent_link_status'), (8, 'inconsistent_link_status'),
              (9, 'inconsistent_link_status'), (10, 'inconsistent_link_status') $$,
    'probe path: every kind of link drift, each call judged by one rule, the window respected');
SELECT results_eq(
    $$ SELECT call_id, rule, detail FROM consistency._rule_link('2030-01-01 00:00+00', '2030-01-01 12:00+00', true)
        ORDER BY call_id $$,
    $$ SELECT call_id, rule, detail FROM consistency._rule_link('2030-01-01 00:00+00', '2030-01-01 12:00+00', false)
        ORDER BY call_id $$,
    'bulk path: the same calls, rules and details as the probe path');
SELECT results_eq(
    $$ SELECT call_id, rule FROM consistency._rule_link('-infinity', '2030-01-01 12:00+00', true)
        ORDER BY call_id $$,
    $$ SELECT call_id, rule FROM consistency._rule_link('-infinity', '2030-01-01 12:00+00', false)
        ORDER BY call_id $$,
    'both paths agree over the whole table');
SELECT ok(EXISTS (SELECT 1 FROM consistency._rule_link('-infinity', '2030-01-01 12:00+00', true)
                   WHERE call_id = 12),
          'and the whole table includes the old call');
SELECT results_eq(
    $$ SELECT issue FROM consistency.check_call(8) $$,
    $$ VALUES ('inconsistent_link_status') $$,
    'check_call sees a counter that disagrees with the appointments');

-- Enough calls in the window (>= 1000, and >= a fifth of the table) for the
-- bulk path; the 1000 fillers are consistent.
SET LOCAL session_replication_role = replica;
INSERT INTO public.calls (id, external_call_id, direction, created_at)
SELECT 1000 + g, 'filler-' || g, 'inbound', '2030-01-01 11:30+00' FROM generate_series(1, 1000) g;
SET LOCAL session_replication_role = origin;

SELECT results_eq(
    $$ SELECT rule, found, corrected FROM consistency.run_check('1 day')
        WHERE rule IN ('missing_appointment', 'inconsistent_link_status') $$,
    $$ VALUES ('missing_appointment', 3, 3), ('inconsistent_link_status', 4, 4) $$,
    'run_check over a large window finds and corrects the same calls');
SELECT is((SELECT rules -> 'inconsistent_link_status' ->> 'path' FROM consistency.check_runs
            ORDER BY id DESC LIMIT 1), 'bulk', 'through the bulk path');
SELECT is_empty(
    $$ SELECT * FROM consistency.violations() WHERE call_id <> 12 $$,
    'afterwards no call in the window breaks G1, G2 or its counter');
SELECT results_eq(
    $$ SELECT rule, found FROM consistency.run_check('1 hour')
        WHERE rule IN ('missing_appointment', 'inconsistent_link_status') $$,
    $$ VALUES ('missing_appointment', 0), ('inconsistent_link_status', 0) $$,
    'and a small window (probe path) finds nothing left');

SELECT * FROM finish();
ROLLBACK;
