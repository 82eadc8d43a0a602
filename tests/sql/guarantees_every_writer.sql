-- The guarantees hold for every writer and every way of writing: rules at
-- every trigger depth, pending bookings that stop being bookings, a counter
-- guard no session setting opens, alerts only for rows really written, and
-- writers that are not consistency_app.
BEGIN;
SELECT plan(30);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';
INSERT INTO calls (id, external_call_id, direction) SELECT g, 'call-' || g, 'outbound' FROM generate_series(1, 20) g;
INSERT INTO appointments (call_id, external_booking_id) VALUES (11, 'b-11');
DELETE FROM consistency.alerts;
DELETE FROM consistency.alert_throttle;

-- G1/G2 at trigger depth 1: an application trigger writes the link flags ----------
CREATE TABLE public.app_events (call_id bigint);
CREATE FUNCTION public.app_events_mark_booked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.calls SET appointment_made = true, appointment_link_status = 'linked'
     WHERE id = NEW.call_id;
    UPDATE public.calls SET appointment_made = false WHERE id = NEW.call_id + 10;
    RETURN NULL;
END $$;
CREATE TRIGGER app_events_mark_booked AFTER INSERT ON public.app_events
    FOR EACH ROW EXECUTE FUNCTION public.app_events_mark_booked();
INSERT INTO public.app_events VALUES (1);
SELECT results_eq($$ SELECT id, appointment_made, appointment_link_status FROM calls WHERE id IN (1, 11) ORDER BY id $$,
                  $$ VALUES (1::bigint, false, 'unlinked'), (11::bigint, true, 'linked') $$,
                  'flags written from an application trigger are corrected (G1/G2 at depth 1)');
SELECT is((SELECT count(*)::int FROM consistency.alerts
            WHERE alert_type = 'appointment_made_mismatch' AND entity_id IN (1, 11)), 2,
          'and alerted');
SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'no violation left by the nested writes');

-- G4: a booking corrected to a non-booking outcome is no longer in flight --------
UPDATE calls SET session_outcome = 'appointment_booked' WHERE id IN (2, 3, 4, 5);
UPDATE calls SET session_outcome = 'information_only' WHERE id = 2;
UPDATE calls SET session_outcome = NULL WHERE id = 3;
UPDATE calls SET session_outcome = 'appointment_rescheduled' WHERE id = 4;
SELECT results_eq($$ SELECT id, appointment_link_status FROM calls WHERE id BETWEEN 2 AND 5 ORDER BY id $$,
                  $$ VALUES (2::bigint, 'unlinked'), (3::bigint, 'unlinked'),
                            (4::bigint, 'pending_creation'), (5::bigint, 'pending_creation') $$,
                  'pending_creation goes back to unlinked when the outcome stops being a booking');
UPDATE calls SET appointment_link_status = 'pending_creation' WHERE id = 6;
INSERT INTO calls (id, external_call_id, appointment_link_status, session_outcome)
VALUES (30, 'pending-info', 'pending_creation', 'information_only');
SELECT results_eq($$ SELECT id, appointment_link_status FROM calls WHERE id IN (6, 30) ORDER BY id $$,
                  $$ VALUES (6::bigint, 'unlinked'), (30::bigint, 'unlinked') $$,
                  'pending_creation without a booking outcome is not written either (update, insert)');
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE entity_id IN (2, 3, 4, 5, 6, 30)), 0,
          'ending a flight raises nothing');
INSERT INTO appointments (call_id, external_booking_id) VALUES (5, 'b-5');
DELETE FROM appointments WHERE external_booking_id = 'b-5';
UPDATE calls SET session_outcome = 'information_only' WHERE id = 5;
SELECT is((SELECT appointment_link_status FROM calls WHERE id = 5), 'cancelled',
          'a cancelled booking stays cancelled when its outcome changes');

-- The counter guard cannot be switched off by a session setting ------------------
SET LOCAL consistency.resyncing = 'on';
SELECT throws_ok($$ UPDATE calls SET active_appointment_count = 5 WHERE id = 12 $$, '42501',
                 'calls.active_appointment_count is maintained by consistency-guard',
                 'a custom setting anyone can set does not open the counter guard');
RESET consistency.resyncing;
SET LOCAL ROLE consistency_app;
SET LOCAL consistency.resyncing = 'on';
SELECT throws_ok($$ UPDATE calls SET active_appointment_count = 5 WHERE id = 12 $$, '42501',
                 'permission denied for table calls',
                 'nor for consistency_app, which may not write the column at all');
SELECT throws_ok($$ INSERT INTO consistency._resync_txn VALUES (pg_current_xact_id()) $$, '42501', NULL::text,
                 'the application cannot open the guard the way resync_calls does');
RESET consistency.resyncing;
RESET ROLE;
CREATE FUNCTION public.app_events_set_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.calls SET active_appointment_count = 5, appointment_made = false WHERE id = NEW.call_id;
    RETURN NULL;
END $$;
CREATE TRIGGER app_events_set_count AFTER INSERT ON public.app_events
    FOR EACH ROW WHEN (NEW.call_id = 12) EXECUTE FUNCTION public.app_events_set_count();
SELECT throws_ok($$ INSERT INTO public.app_events VALUES (12) $$, '42501',
                 'calls.active_appointment_count is maintained by consistency-guard',
                 'a counter write from an application trigger that breaks G1/G2 is refused too');
SELECT is(consistency.resync_calls(ARRAY[11, 12]::bigint[]), 0, 'resync_calls still writes (nothing to fix)');
SET LOCAL session_replication_role = replica;
UPDATE calls SET active_appointment_count = 4 WHERE id = 13;
SET LOCAL session_replication_role = origin;
SELECT is(consistency.resync_calls(ARRAY[13]::bigint[]), 1, 'resync_calls repairs a drifted counter');
SELECT is((SELECT count(*)::int FROM consistency._resync_txn), 0, 'and leaves no switch behind');

-- Any writer gets the guarantees, not only consistency_app ---------------------
-- An application's existing role: DML on its tables, nothing in schema consistency.
CREATE ROLE cg_legacy_writer;
GRANT SELECT, INSERT, UPDATE, DELETE ON calls, appointments TO cg_legacy_writer;
GRANT USAGE ON SEQUENCE calls_id_seq, appointments_id_seq TO cg_legacy_writer;
SET LOCAL ROLE cg_legacy_writer;
SELECT lives_ok($$ INSERT INTO appointments (call_id, external_booking_id) VALUES (14, 'legacy-1') $$,
                'a role without rights in schema consistency inserts an appointment');
SELECT lives_ok($$ DELETE FROM appointments WHERE external_booking_id = 'legacy-1' $$,
                'and deletes it');
SELECT lives_ok($$ UPDATE calls SET appointment_made = true WHERE id = 15 $$, 'and writes a wrong flag');
SELECT throws_ok($$ UPDATE calls SET active_appointment_count = 2 WHERE id = 16 $$, '42501',
                 'calls.active_appointment_count is maintained by consistency-guard',
                 'its counter write is refused by the guard itself');
RESET ROLE;
SELECT results_eq($$ SELECT id, appointment_link_status, appointment_made FROM calls WHERE id IN (14, 15) ORDER BY id $$,
                  $$ VALUES (14::bigint, 'cancelled', false), (15::bigint, 'unlinked', false) $$,
                  'G1/G3 and G2 hold for that role');
SELECT bag_eq($$ SELECT entity_id, alert_type FROM consistency.alerts WHERE entity_id IN (14, 15) $$,
              $$ VALUES (14::bigint, 'appointment_unlinked'), (15::bigint, 'appointment_made_mismatch') $$,
              'and its writes raise the alerts');

-- The application cannot forge alerts or fill the throttle.
SET LOCAL ROLE consistency_app;
SELECT throws_ok($$ SELECT consistency.raise_alert('appointment_unlinked', 'warning', 'call', 17, 'forged') $$,
                 '42501', NULL::text, 'consistency_app cannot call raise_alert');
SELECT throws_ok($$ SELECT consistency._insert_alerts('appointment_unlinked', 'warning', 'call',
                        ARRAY[17::bigint], ARRAY['forged'], ARRAY['{}'::jsonb], false, now()) $$,
                 '42501', NULL::text, 'nor the guard''s internal alert helper');
RESET ROLE;

-- Alerts only for rows really written ----------------------------------------
DELETE FROM consistency.alerts;
DELETE FROM consistency.alert_throttle;
INSERT INTO calls (id, external_call_id, appointment_made) VALUES (40, 'call-7', true), (41, 'fresh-1', true)
    ON CONFLICT (external_call_id) DO NOTHING;
SELECT results_eq($$ SELECT a.entity_id, c.external_call_id FROM consistency.alerts a
                       LEFT JOIN calls c ON c.id = a.entity_id
                      WHERE a.alert_type = 'appointment_made_mismatch' $$,
                  $$ SELECT id, external_call_id FROM calls WHERE external_call_id = 'fresh-1' $$,
                  'ON CONFLICT DO NOTHING: an alert for the inserted row only, none for the dropped one');
SELECT is((SELECT count(*)::int FROM consistency._call_alerts_pending), 0,
          'the dropped row''s pending alert is discarded at the end of the statement');
INSERT INTO calls (id, external_call_id, appointment_made) VALUES (42, 'call-8', true)
    ON CONFLICT (external_call_id) DO UPDATE SET appointment_made = true;
SELECT results_eq($$ SELECT a.entity_id FROM consistency.alerts a
                      WHERE a.alert_type = 'appointment_made_mismatch' AND a.entity_id <> (
                            SELECT id FROM calls WHERE external_call_id = 'fresh-1') $$,
                  $$ VALUES (8::bigint) $$,
                  'ON CONFLICT DO UPDATE: one alert, for the existing call the UPDATE corrected');
SELECT results_eq($$ SELECT appointment_made FROM calls WHERE external_call_id IN ('call-7', 'call-8', 'fresh-1') $$,
                  $$ VALUES (false), (false), (false) $$, 'every written row corrected');

-- The session flag that wakes the alert trigger can be cleared by any
-- writer, even in the INSERT's own RETURNING list, after the BEFORE trigger
-- set it: the alert is raised all the same, and nothing is left pending.
DELETE FROM consistency.alerts;
DELETE FROM consistency.alert_throttle;
SET LOCAL ROLE consistency_app;
SELECT lives_ok($$ INSERT INTO calls (id, external_call_id, appointment_made, appointment_link_status)
                  VALUES (43, 'quiet-1', true, 'linked')
                  RETURNING set_config('consistency.call_alerts_pending', '', true) $$,
                'a writer clears the flag in its INSERT''s RETURNING list');
RESET ROLE;
SELECT results_eq($$ SELECT entity_id, alert_type FROM consistency.alerts $$,
                  $$ VALUES (43::bigint, 'appointment_made_mismatch') $$,
                  'clearing the flag in RETURNING does not suppress the insert''s alert');
SELECT is((SELECT count(*)::int FROM consistency._call_alerts_pending), 0,
          'and leaves no pending alert behind');

SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'violations() is empty at the end');

SELECT * FROM finish();
ROLLBACK;
