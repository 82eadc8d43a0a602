-- G1 (a call is linked exactly when it has an active appointment) and G3
-- (losing the last one), for single-row, multi-row and many single-row
-- statements in one transaction.
BEGIN;
SELECT plan(37);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

INSERT INTO calls (id, external_call_id, session_outcome)
SELECT g, 'call-' || g, 'appointment_booked' FROM generate_series(1, 40) g;

CREATE TEMP VIEW link AS
SELECT id, appointment_link_status AS status, appointment_made AS made,
       active_appointment_count AS n
  FROM calls;
CREATE TEMP VIEW unlinked_alerts AS
SELECT entity_id AS call_id, (metadata->>'appointment_id')::bigint AS appointment_id
  FROM consistency.alerts WHERE alert_type = 'appointment_unlinked';

-- insert ---------------------------------------------------------------------
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (101, 1, 'b1');
SELECT results_eq($$ SELECT l.status, l.made, l.n, c.appointment_linked_at
                       FROM link l JOIN calls c USING (id) WHERE id = 1 $$,
                  $$ VALUES ('linked', true, 1, '2030-01-01 12:00:00+00'::timestamptz) $$,
                  'single-row insert links the call; linked_at is consistency.now()');

INSERT INTO appointments (id, call_id, external_booking_id)
VALUES (201, 2, 'b2a'), (202, 2, 'b2b'), (301, 3, 'b3'), (901, NULL, 'orphan');
SELECT results_eq($$ SELECT id, status, made, n FROM link WHERE id IN (2, 3) ORDER BY id $$,
                  $$ VALUES (2::bigint, 'linked', true, 2), (3::bigint, 'linked', true, 1) $$,
                  'multi-row insert links every call, counting its appointments');

DO $$
BEGIN
    FOR i IN 1..30 LOOP
        INSERT INTO appointments (call_id, external_booking_id) VALUES (4 + i % 5, 'loop-' || i);
    END LOOP;
END $$;
SELECT results_eq($$ SELECT count(*)::int, min(n), max(n) FROM link
                      WHERE id BETWEEN 4 AND 8 AND status = 'linked' AND made $$,
                  $$ VALUES (5, 6, 6) $$,
                  'thirty single-row inserts in one transaction: five calls linked, six each');

INSERT INTO appointments (call_id, external_booking_id, status) VALUES (9, 'b9', 'cancelled');
INSERT INTO appointments (call_id, external_booking_id, deleted_at) VALUES (9, 'b9d', now());
SELECT results_eq($$ SELECT status, made, n FROM link WHERE id = 9 $$,
                  $$ VALUES ('pending_creation', false, 0) $$,
                  'inserting a cancelled or soft-deleted appointment does not link');

-- hard delete ----------------------------------------------------------------
DELETE FROM appointments WHERE id = 201;
SELECT results_eq($$ SELECT status, made, n FROM link WHERE id = 2 $$,
                  $$ VALUES ('linked', true, 1) $$, 'deleting one of two keeps the call linked');
SELECT is((SELECT count(*)::int FROM unlinked_alerts WHERE call_id = 2), 0,
          'no alert while another active appointment remains');

DELETE FROM appointments WHERE id = 101;
SELECT results_eq($$ SELECT status, made, n FROM link WHERE id = 1 $$,
                  $$ VALUES ('cancelled', false, 0) $$,
                  'single-row delete of the last appointment: cancelled');
SELECT results_eq($$ SELECT alert_type, severity, entity_type, (metadata->>'appointment_id')::bigint
                       FROM consistency.alerts WHERE entity_id = 1 $$,
                  $$ VALUES ('appointment_unlinked', 'warning', 'call', 101::bigint) $$,
                  'one appointment_unlinked alert (warning, call) carrying the appointment id');

-- all six appointments of calls 4 and 5 in one statement
CREATE TEMP TABLE last_of_4 AS SELECT max(id) AS id FROM appointments WHERE call_id = 4;
DELETE FROM appointments WHERE call_id IN (4, 5);
SELECT results_eq($$ SELECT id, status, made, n FROM link WHERE id IN (4, 5) ORDER BY id $$,
                  $$ VALUES (4::bigint, 'cancelled', false, 0), (5::bigint, 'cancelled', false, 0) $$,
                  'multi-row delete: both calls cancelled');
SELECT results_eq($$ SELECT call_id, count(*)::int FROM unlinked_alerts WHERE call_id IN (4, 5)
                      GROUP BY call_id ORDER BY call_id $$,
                  $$ VALUES (4::bigint, 1), (5::bigint, 1) $$,
                  'multi-row delete: exactly one alert per call');
SELECT results_eq($$ SELECT (metadata->>'appointment_id')::bigint, (metadata->>'appointments_removed')::int
                       FROM consistency.alerts WHERE alert_type = 'appointment_unlinked' AND entity_id = 4 $$,
                  $$ SELECT id, 6 FROM last_of_4 $$,
                  'the alert names the highest appointment that left and how many left');

DO $$
DECLARE
    v_id bigint;
BEGIN
    FOR v_id IN SELECT id FROM appointments WHERE call_id IN (6, 7) ORDER BY id LOOP
        DELETE FROM appointments WHERE id = v_id;
    END LOOP;
END $$;
SELECT results_eq($$ SELECT id, status, n FROM link WHERE id IN (6, 7) ORDER BY id $$,
                  $$ VALUES (6::bigint, 'cancelled', 0), (7::bigint, 'cancelled', 0) $$,
                  'many single-row deletes: cancelled after the last one');
SELECT results_eq($$ SELECT call_id, count(*)::int FROM unlinked_alerts WHERE call_id IN (6, 7)
                      GROUP BY call_id ORDER BY call_id $$,
                  $$ VALUES (6::bigint, 1), (7::bigint, 1) $$,
                  'many single-row deletes: one alert per call, for the last one only');

-- soft delete, cancel, un-cancel --------------------------------------------
INSERT INTO appointments (id, call_id, external_booking_id)
VALUES (1001, 10, 'b10a'), (1002, 10, 'b10b'), (1101, 11, 'b11'), (1201, 12, 'b12'), (1301, 13, 'b13');

UPDATE appointments SET deleted_at = now() WHERE id = 1001;
SELECT results_eq($$ SELECT status, n FROM link WHERE id = 10 $$, $$ VALUES ('linked', 1) $$,
                  'soft-deleting one of two keeps the call linked');
UPDATE appointments SET deleted_at = now() WHERE id = 1002;
SELECT results_eq($$ SELECT status, made, n FROM link WHERE id = 10 $$,
                  $$ VALUES ('cancelled', false, 0) $$, 'soft-deleting the last one cancels');
SELECT results_eq($$ SELECT appointment_id FROM unlinked_alerts WHERE call_id = 10 $$,
                  $$ VALUES (1002::bigint) $$, 'the alert names the soft-deleted appointment');

UPDATE appointments SET status = 'cancelled' WHERE id = 1101;
SELECT results_eq($$ SELECT status, made, n FROM link WHERE id = 11 $$,
                  $$ VALUES ('cancelled', false, 0) $$, 'cancelling the last appointment cancels');

SET LOCAL consistency.fake_now = '2030-01-01 13:00:00+00';
UPDATE appointments SET status = 'confirmed' WHERE id = 1101;
SELECT results_eq($$ SELECT l.status, l.made, l.n, c.appointment_linked_at
                       FROM link l JOIN calls c USING (id) WHERE id = 11 $$,
                  $$ VALUES ('linked', true, 1, '2030-01-01 13:00:00+00'::timestamptz) $$,
                  'un-cancelling links again, linked_at is the new time');
UPDATE appointments SET deleted_at = NULL WHERE id = 1001;
SELECT results_eq($$ SELECT status, n FROM link WHERE id = 10 $$, $$ VALUES ('linked', 1) $$,
                  'undoing a soft delete links again');

UPDATE appointments SET status = 'completed' WHERE id = 1001;
SELECT results_eq($$ SELECT status, n FROM link WHERE id = 10 $$, $$ VALUES ('linked', 1) $$,
                  'a status change between active states changes nothing');

-- multi-row: cancel two calls' appointments and un-cancel another in one statement
UPDATE appointments SET status = 'cancelled' WHERE id = 1301;
UPDATE appointments
   SET status = CASE WHEN id = 1301 THEN 'scheduled' ELSE 'cancelled' END
 WHERE id IN (1201, 1301, 1101);
SELECT results_eq($$ SELECT id, status, n FROM link WHERE id IN (11, 12, 13) ORDER BY id $$,
                  $$ VALUES (11::bigint, 'cancelled', 0), (12::bigint, 'cancelled', 0),
                            (13::bigint, 'linked', 1) $$,
                  'multi-row update: cancel and un-cancel in one statement');

-- many single-row updates: cancel and un-cancel the same appointment 10 times
DO $$
BEGIN
    FOR i IN 1..10 LOOP
        UPDATE appointments SET status = 'cancelled' WHERE id = 1301;
        UPDATE appointments SET status = 'scheduled' WHERE id = 1301;
    END LOOP;
END $$;
SELECT results_eq($$ SELECT status, made, n FROM link WHERE id = 13 $$,
                  $$ VALUES ('linked', true, 1) $$, 'twenty single-row updates end linked');

-- an UPDATE of unrelated columns does not write calls at all
CREATE TEMP TABLE before_ctid AS SELECT id, ctid::text AS old_ctid FROM calls;
UPDATE appointments SET starts_at = now(), updated_at = now();
SELECT is((SELECT count(*)::int FROM calls c JOIN before_ctid b USING (id) WHERE c.ctid::text <> b.old_ctid), 0,
          'updating unrelated appointment columns leaves every call row untouched');

-- move ------------------------------------------------------------------------
INSERT INTO appointments (id, call_id, external_booking_id) VALUES (1401, 14, 'b14');
UPDATE appointments SET call_id = 15 WHERE id = 1401;
SELECT results_eq($$ SELECT id, status, made, n FROM link WHERE id IN (14, 15) ORDER BY id $$,
                  $$ VALUES (14::bigint, 'cancelled', false, 0), (15::bigint, 'linked', true, 1) $$,
                  'moving the only appointment: old call cancelled, new call linked');
SELECT results_eq($$ SELECT appointment_id FROM unlinked_alerts WHERE call_id = 14 $$,
                  $$ VALUES (1401::bigint) $$, 'the old call''s alert names the moved appointment');

INSERT INTO appointments (id, call_id, external_booking_id) VALUES (1601, 16, 'b16a'), (1602, 16, 'b16b'), (1701, 17, 'b17');
UPDATE appointments SET call_id = CASE call_id WHEN 16 THEN 17 ELSE 16 END WHERE id IN (1601, 1701);
SELECT results_eq($$ SELECT id, status, n FROM link WHERE id IN (16, 17) ORDER BY id $$,
                  $$ VALUES (16::bigint, 'linked', 2), (17::bigint, 'linked', 1) $$,
                  'multi-row swap between two calls keeps both linked with the right counts');

UPDATE appointments SET call_id = 18 WHERE call_id IN (16, 17);
SELECT results_eq($$ SELECT id, status, n FROM link WHERE id IN (16, 17, 18) ORDER BY id $$,
                  $$ VALUES (16::bigint, 'cancelled', 0), (17::bigint, 'cancelled', 0),
                            (18::bigint, 'linked', 3) $$,
                  'multi-row move of three appointments from two calls to a third');

DO $$
BEGIN
    FOR i IN 1..10 LOOP
        UPDATE appointments SET call_id = 19 WHERE id = 1601;
        UPDATE appointments SET call_id = 20 WHERE id = 1601;
    END LOOP;
END $$;
SELECT results_eq($$ SELECT id, status, n FROM link WHERE id IN (18, 19, 20) ORDER BY id $$,
                  $$ VALUES (18::bigint, 'linked', 2), (19::bigint, 'cancelled', 0),
                            (20::bigint, 'linked', 1) $$,
                  'many single-row moves in one transaction');
SELECT is((SELECT count(*)::int FROM unlinked_alerts WHERE call_id = 19), 1,
          'one alert for call 19 however often it lost the appointment (throttled)');

UPDATE appointments SET call_id = NULL WHERE id = 1701;
SELECT results_eq($$ SELECT status, n FROM link WHERE id = 18 $$, $$ VALUES ('linked', 1) $$,
                  'detaching an appointment (call_id NULL) decrements the call');
UPDATE appointments SET call_id = 21 WHERE id = 901;
SELECT results_eq($$ SELECT status, n FROM link WHERE id = 21 $$, $$ VALUES ('linked', 1) $$,
                  'attaching an orphaned appointment links the call');

-- delete a call ----------------------------------------------------------------
DELETE FROM calls WHERE id = 18;
SELECT results_eq($$ SELECT count(*)::int, count(call_id)::int FROM appointments WHERE id IN (1301, 1602) OR external_booking_id = 'b17' $$,
                  $$ SELECT 3, 1 $$,
                  'deleting a call keeps its appointments, call_id set null');
SELECT is((SELECT call_id FROM appointments WHERE id = 1602), NULL::bigint,
          'the deleted call''s appointment is detached');

-- G1 over the whole data set ---------------------------------------------------
SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'violations() is empty after all of it');
SELECT is((SELECT count(*)::int FROM calls c
            WHERE (c.appointment_link_status = 'linked') <> EXISTS (
                  SELECT 1 FROM appointments a WHERE a.call_id = c.id
                     AND a.deleted_at IS NULL AND a.status <> 'cancelled')), 0,
          'G1 checked independently of violations()');

-- as the application role
SET LOCAL ROLE consistency_app;
INSERT INTO appointments (call_id, external_booking_id) VALUES (22, 'as-app');
UPDATE appointments SET status = 'cancelled' WHERE external_booking_id = 'as-app';
RESET ROLE;
SELECT results_eq($$ SELECT status, n FROM link WHERE id = 22 $$, $$ VALUES ('cancelled', 0) $$,
                  'the triggers work for consistency_app');
SELECT is((SELECT count(*)::int FROM unlinked_alerts WHERE call_id = 22), 1,
          'and raise their alerts as that role');

SELECT * FROM finish();
ROLLBACK;
