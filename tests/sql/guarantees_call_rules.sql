-- Call-side rules G2 (flag), G4 (booking in flight), G5 (outcome), G6
-- (direction), G7 (customer): single-row, multi-row and many single-row
-- statements in one transaction.
BEGIN;
SELECT plan(38);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

INSERT INTO calls (id, external_call_id, direction)
SELECT g, 'call-' || g, 'outbound' FROM generate_series(1, 60) g;
-- calls 41..60 have an active appointment
INSERT INTO appointments (call_id, external_booking_id)
SELECT g, 'b-' || g FROM generate_series(41, 60) g;
UPDATE calls SET session_outcome = 'appointment_booked' WHERE id > 40;
DELETE FROM consistency.alerts;
DELETE FROM consistency.alert_throttle;

CREATE TEMP VIEW alerts_of AS SELECT alert_type, entity_id FROM consistency.alerts;

-- G2 ----------------------------------------------------------------------------
UPDATE calls SET appointment_made = true WHERE id = 1;
SELECT results_eq($$ SELECT appointment_made, appointment_link_status FROM calls WHERE id = 1 $$,
                  $$ VALUES (false, 'unlinked') $$,
                  'G2 single-row: appointment_made=true without an appointment is corrected');
SELECT results_eq($$ SELECT a.severity, a.auto_corrected, (a.metadata->>'written_appointment_made')::boolean
                       FROM consistency.alerts a WHERE alert_type = 'appointment_made_mismatch' AND entity_id = 1 $$,
                  $$ VALUES ('warning', true, true) $$,
                  'G2 single-row: one appointment_made_mismatch warning');

UPDATE calls SET appointment_made = false, appointment_link_status = 'linked' WHERE id IN (2, 3, 41, 42);
SELECT results_eq($$ SELECT id, appointment_made, appointment_link_status FROM calls WHERE id IN (2, 3, 41, 42) ORDER BY id $$,
                  $$ VALUES (2::bigint, false, 'unlinked'), (3::bigint, false, 'unlinked'),
                            (41::bigint, true, 'linked'), (42::bigint, true, 'linked') $$,
                  'G2 multi-row: each row corrected to what its appointments say');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE alert_type = 'appointment_made_mismatch'
             AND entity_id IN (2, 3, 41, 42)), 4, 'G2 multi-row: one alert per call');

DO $$
BEGIN
    FOR i IN 1..5 LOOP
        UPDATE calls SET appointment_made = true WHERE id = 3 + i;
        UPDATE calls SET appointment_made = false WHERE id = 42 + i;
    END LOOP;
END $$;
SELECT is((SELECT count(*)::int FROM calls WHERE id BETWEEN 4 AND 8 AND NOT appointment_made)
        + (SELECT count(*)::int FROM calls WHERE id BETWEEN 43 AND 47 AND appointment_made), 10,
          'G2 many single-row updates: all ten corrected');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE alert_type = 'appointment_made_mismatch'
             AND (entity_id BETWEEN 4 AND 8 OR entity_id BETWEEN 43 AND 47)), 10,
          'G2 many single-row updates: ten alerts');

INSERT INTO calls (id, external_call_id, appointment_made) VALUES (100, 'ins-made', true);
SELECT results_eq($$ SELECT appointment_made, appointment_link_status FROM calls WHERE id = 100 $$,
                  $$ VALUES (false, 'unlinked') $$, 'G2 on insert: appointment_made=true corrected');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE entity_id = 100), 1, 'G2 on insert: alerted');

-- rollback_booking's write: allowed without an active appointment, G1 wins with one
UPDATE calls SET appointment_made = false, appointment_link_status = 'creation_failed',
                 session_outcome = 'creation_failed', booking_failed = true,
                 requires_manual_processing = true
 WHERE id IN (9, 48);
SELECT results_eq($$ SELECT id, appointment_made, appointment_link_status, session_outcome,
                            booking_failed, requires_manual_processing
                       FROM calls WHERE id IN (9, 48) ORDER BY id $$,
                  $$ VALUES (9::bigint, false, 'creation_failed', 'creation_failed', true, true),
                            (48::bigint, true, 'linked', 'appointment_booked', true, true) $$,
                  'a rollback write stands without an appointment; with one, G1/G5 win, the flags stay');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE entity_id = 9), 0,
          'a consistent rollback write raises nothing');

-- G4 ----------------------------------------------------------------------------
INSERT INTO calls (id, external_call_id, session_outcome) VALUES (101, 'g4-1', 'appointment_booked');
SELECT is((SELECT appointment_link_status FROM calls WHERE id = 101), 'pending_creation',
          'G4 single-row insert: booked without appointment is pending_creation');
INSERT INTO calls (id, external_call_id, session_outcome, appointment_made)
VALUES (102, 'g4-2', 'appointment_booked', true), (103, 'g4-3', 'appointment_booked', false),
       (104, 'g4-4', 'information_only', false);
SELECT results_eq($$ SELECT id, appointment_link_status, appointment_made FROM calls WHERE id BETWEEN 102 AND 104 ORDER BY id $$,
                  $$ VALUES (102::bigint, 'pending_creation', false), (103::bigint, 'pending_creation', false),
                            (104::bigint, 'unlinked', false) $$,
                  'G4 multi-row insert: only the booked calls are pending');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE entity_id BETWEEN 101 AND 104), 0,
          'G4: a booking in flight is not an inconsistency (no alert, even with appointment_made=true)');

UPDATE calls SET session_outcome = 'appointment_booked' WHERE id IN (10, 11);
SELECT results_eq($$ SELECT appointment_link_status FROM calls WHERE id IN (10, 11) $$,
                  $$ VALUES ('pending_creation'), ('pending_creation') $$,
                  'G4 multi-row update: pending_creation');
DO $$
BEGIN
    FOR i IN 12..16 LOOP
        UPDATE calls SET session_outcome = 'appointment_booked' WHERE id = i;
    END LOOP;
END $$;
SELECT is((SELECT count(*)::int FROM calls WHERE id BETWEEN 12 AND 16 AND appointment_link_status = 'pending_creation'), 5,
          'G4 many single-row updates: all pending');

UPDATE calls SET appointment_link_status = 'cancelled' WHERE id = 17;
UPDATE calls SET session_outcome = 'appointment_booked' WHERE id IN (9, 17);
SELECT results_eq($$ SELECT id, appointment_link_status FROM calls WHERE id IN (9, 17) ORDER BY id $$,
                  $$ VALUES (9::bigint, 'creation_failed'), (17::bigint, 'cancelled') $$,
                  'G4 leaves cancelled and creation_failed calls alone');

INSERT INTO appointments (call_id, external_booking_id) VALUES (101, 'b-101');
SELECT results_eq($$ SELECT appointment_link_status, appointment_made, appointment_linked_at FROM calls WHERE id = 101 $$,
                  $$ VALUES ('linked', true, '2030-01-01 12:00:00+00'::timestamptz) $$,
                  'G4 -> G1: the appointment arrives and the pending call is linked');

-- G5 ----------------------------------------------------------------------------
UPDATE calls SET session_outcome = 'information_only' WHERE id = 49;
SELECT is((SELECT session_outcome FROM calls WHERE id = 49), 'appointment_booked',
          'G5 single-row: a non-booking outcome on a call with an appointment is corrected');
SELECT results_eq($$ SELECT severity, metadata->>'written' FROM consistency.alerts
                      WHERE alert_type = 'session_outcome_corrected' AND entity_id = 49 $$,
                  $$ VALUES ('warning', 'information_only') $$, 'G5 single-row: one warning');

UPDATE calls SET session_outcome = 'callback_requested' WHERE id IN (50, 51, 52, 20);
SELECT results_eq($$ SELECT id, session_outcome FROM calls WHERE id IN (20, 50, 51, 52) ORDER BY id $$,
                  $$ VALUES (20::bigint, 'callback_requested'), (50::bigint, 'appointment_booked'),
                            (51::bigint, 'appointment_booked'), (52::bigint, 'appointment_booked') $$,
                  'G5 multi-row: only calls with an active appointment are corrected');
UPDATE calls SET session_outcome = 'appointment_rescheduled' WHERE id = 53;
UPDATE calls SET session_outcome = NULL WHERE id = 54;
SELECT results_eq($$ SELECT id, session_outcome FROM calls WHERE id IN (53, 54) ORDER BY id $$,
                  $$ VALUES (53::bigint, 'appointment_rescheduled'), (54::bigint, NULL) $$,
                  'G5 keeps appointment_rescheduled and NULL');

DO $$
BEGIN
    FOR i IN 55..58 LOOP
        UPDATE calls SET session_outcome = 'spam' WHERE id = i;
    END LOOP;
END $$;
SELECT is((SELECT count(*)::int FROM calls WHERE id BETWEEN 55 AND 58 AND session_outcome = 'appointment_booked'), 4,
          'G5 many single-row updates: all corrected');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE alert_type = 'session_outcome_corrected'), 9,
          'G5: one alert per corrected call (48, 49-52, 55-58), none for the others');

INSERT INTO calls (id, external_call_id, session_outcome) VALUES (110, 'g5-info', 'information_only');
INSERT INTO appointments (call_id, external_booking_id) VALUES (110, 'b-110a'), (110, 'b-110b');
SELECT results_eq($$ SELECT session_outcome, appointment_link_status FROM calls WHERE id = 110 $$,
                  $$ VALUES ('appointment_booked', 'linked') $$,
                  'G5 via an appointment insert: outcome corrected by the sync');
SELECT is((SELECT count(*)::int FROM alerts_of WHERE entity_id = 110), 1,
          'G5 via a two-row appointment insert: one alert, no other');

-- G6 ----------------------------------------------------------------------------
INSERT INTO calls (id, external_call_id, direction) VALUES (120, 'g6-a', NULL);
SELECT is((SELECT direction FROM calls WHERE id = 120), 'inbound', 'G6 single-row insert: NULL -> inbound');
INSERT INTO calls (id, external_call_id, direction) VALUES (121, 'g6-b', ''), (122, 'g6-c', 'outbound');
SELECT results_eq($$ SELECT direction FROM calls WHERE id IN (121, 122) ORDER BY id $$,
                  $$ VALUES ('inbound'), ('outbound') $$, 'G6 multi-row insert: '''' -> inbound, outbound kept');
UPDATE calls SET direction = NULL WHERE id IN (21, 22, 23);
SELECT is((SELECT count(*)::int FROM calls WHERE id IN (21, 22, 23) AND direction = 'inbound'), 3,
          'G6 multi-row update to NULL: inbound');
DO $$
BEGIN
    FOR i IN 24..27 LOOP
        UPDATE calls SET direction = '' WHERE id = i;
    END LOOP;
END $$;
SELECT is((SELECT count(*)::int FROM calls WHERE id BETWEEN 24 AND 27 AND direction = 'inbound'), 4,
          'G6 many single-row updates to '''': inbound');

-- G7 ----------------------------------------------------------------------------
UPDATE calls SET customer_id = 500 WHERE id = 28;
SELECT results_eq($$ SELECT customer_link_status, customer_linked_at, customer_link_method FROM calls WHERE id = 28 $$,
                  $$ VALUES ('linked', '2030-01-01 12:00:00+00'::timestamptz, 'phone_match') $$,
                  'G7 single-row: setting customer_id links at consistency.now(), method phone_match');
UPDATE calls SET customer_id = NULL WHERE id = 28;
SELECT results_eq($$ SELECT customer_link_status, customer_linked_at, customer_link_method FROM calls WHERE id = 28 $$,
                  $$ VALUES ('unlinked', NULL::timestamptz, NULL) $$, 'G7 single-row: clearing it unlinks');

UPDATE calls SET customer_id = id + 1000, customer_link_method = CASE WHEN id = 29 THEN 'manual' END
 WHERE id IN (29, 30);
SELECT results_eq($$ SELECT id, customer_link_status, customer_link_method FROM calls WHERE id IN (29, 30) ORDER BY id $$,
                  $$ VALUES (29::bigint, 'linked', 'manual'), (30::bigint, 'linked', 'phone_match') $$,
                  'G7 multi-row: linked, a method that was written is kept');
INSERT INTO calls (id, external_call_id, customer_id) VALUES (130, 'g7-a', 7), (131, 'g7-b', NULL);
SELECT results_eq($$ SELECT id, customer_link_status FROM calls WHERE id IN (130, 131) ORDER BY id $$,
                  $$ VALUES (130::bigint, 'linked'), (131::bigint, 'unlinked') $$, 'G7 on insert');

SET LOCAL consistency.fake_now = '2030-01-02 08:00:00+00';
DO $$
BEGIN
    FOR i IN 31..34 LOOP
        UPDATE calls SET customer_id = 42 WHERE id = i;
    END LOOP;
    UPDATE calls SET customer_id = 43 WHERE id = 31;
END $$;
SELECT results_eq($$ SELECT count(*)::int, min(customer_linked_at) FROM calls
                      WHERE id BETWEEN 31 AND 34 AND customer_link_status = 'linked' $$,
                  $$ VALUES (4, '2030-01-02 08:00:00+00'::timestamptz) $$,
                  'G7 many single-row updates: all linked at now');
UPDATE calls SET customer_link_status = 'failed' WHERE id = 35;
SELECT is((SELECT customer_link_status FROM calls WHERE id = 35), 'failed',
          'G7 allows failed without a customer');

-- unrelated writes do not enter the rules (no alert, nothing changed)
UPDATE calls SET status = 'completed', updated_at = now();
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE detected_at = '2030-01-02 08:00:00+00'), 0,
          'updating unrelated columns of every call raises nothing');

-- the same paths as the application role
SET LOCAL ROLE consistency_app;
INSERT INTO calls (id, external_call_id, session_outcome) VALUES (900, 'as-app', 'spam');
INSERT INTO appointments (call_id, external_booking_id)
SELECT id, 'as-app-b' FROM calls WHERE external_call_id = 'as-app';
UPDATE calls SET appointment_made = false WHERE external_call_id = 'as-app';
RESET ROLE;
SELECT results_eq($$ SELECT c.session_outcome, c.appointment_made, count(a.id)::int
                       FROM calls c JOIN consistency.alerts a ON a.entity_id = c.id
                      WHERE c.external_call_id = 'as-app' GROUP BY 1, 2 $$,
                  $$ VALUES ('appointment_booked', true, 2) $$,
                  'as consistency_app: G5 through the sync and G2 corrected, two alerts');

SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'violations() is empty at the end');

SELECT * FROM finish();
ROLLBACK;
