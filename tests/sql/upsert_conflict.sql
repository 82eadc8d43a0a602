-- INSERT ... ON CONFLICT DO UPDATE hands the proposed row to the UPDATE as
-- EXCLUDED, after the BEFORE INSERT rules ran on it. Rules that corrected it
-- as a new call without appointments would carry that correction onto the
-- existing, linked call (and alert about a value the application never
-- wrote): a row whose call already exists keeps its link fields for the
-- UPDATE's triggers to judge, and is checked again if it is inserted after all.
BEGIN;
SELECT plan(7);

INSERT INTO public.calls (id, external_call_id, session_outcome) VALUES (801, 'up-1', 'appointment_booked');
INSERT INTO public.appointments (call_id, external_booking_id) VALUES (801, 'up-b1');

INSERT INTO public.calls (external_call_id, appointment_made, appointment_link_status)
VALUES ('up-1', true, 'linked')
ON CONFLICT (external_call_id) DO UPDATE
   SET appointment_made = EXCLUDED.appointment_made,
       appointment_link_status = EXCLUDED.appointment_link_status;
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE alert_type = 'appointment_made_mismatch'), 0,
          'an upsert writing true on a linked call raises no appointment_made_mismatch');
SELECT results_eq($$ SELECT appointment_made, appointment_link_status FROM public.calls WHERE id = 801 $$,
                  $$ VALUES (true, 'linked'::text) $$, 'and the call stays linked');

INSERT INTO public.calls (id, external_call_id, session_outcome) VALUES (803, 'up-3', 'appointment_booked');
INSERT INTO public.appointments (call_id, external_booking_id) VALUES (803, 'up-b3');
INSERT INTO public.calls (external_call_id, session_outcome) VALUES ('up-3', 'appointment_booked')
ON CONFLICT (external_call_id) DO UPDATE SET appointment_link_status = EXCLUDED.appointment_link_status;
SELECT is((SELECT metadata ->> 'written_link_status' FROM consistency.alerts
            WHERE alert_type = 'appointment_made_mismatch' AND entity_id = 803), 'unlinked',
          'EXCLUDED carries what the application wrote (its default), not a booking in flight');

INSERT INTO public.calls (external_call_id, appointment_made) VALUES ('up-1', false)
ON CONFLICT (external_call_id) DO UPDATE SET appointment_made = EXCLUDED.appointment_made;
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE alert_type = 'appointment_made_mismatch'
            AND entity_id = 801), 1,
          'writing false on the linked call is a contradiction, corrected and alerted');

-- The existing row goes away between the rules and the insert (here: an
-- application trigger of its own, after the guard's): the row is inserted as
-- written, and the statement's end applies the rules to it.
CREATE FUNCTION pg_temp.vanish() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM public.calls WHERE external_call_id = NEW.external_call_id;
    RETURN NEW;
END $$;
CREATE TRIGGER calls_zz_vanish BEFORE INSERT ON public.calls
    FOR EACH ROW EXECUTE FUNCTION pg_temp.vanish();
INSERT INTO public.calls (id, external_call_id, appointment_made, appointment_link_status)
VALUES (802, 'up-1', true, 'linked');
DROP TRIGGER calls_zz_vanish ON public.calls;
SELECT results_eq($$ SELECT appointment_made, appointment_link_status FROM public.calls WHERE id = 802 $$,
                  $$ VALUES (false, 'unlinked'::text) $$,
                  'a row inserted after all is corrected at the end of its statement');
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE alert_type = 'appointment_made_mismatch'
            AND entity_id = 802), 1, 'and its claim is alerted');
SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'G1 and G2 hold throughout');

SELECT * FROM finish();
ROLLBACK;
