-- consistency_app cannot flood the outbox: a rollback repeated for the same
-- reason adds no alert (each one is still audited), and circuit alerts are
-- throttled per key family (the key up to its last ':'), with the family's
-- count in the metadata.
BEGIN;
SELECT plan(9);

INSERT INTO public.calls (id, external_call_id, session_outcome) VALUES (801, 'flood', 'appointment_booked');

SET LOCAL ROLE consistency_app;
SELECT is((SELECT count(DISTINCT consistency.rollback_booking(801, 'calendar timeout', 'app'))::int
             FROM generate_series(1, 200)), 1,
          '200 rollbacks of one call for one reason return one alert id');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE alert_type = 'appointment_rollback'), 1,
          'and write one alert');
SELECT is((SELECT count(*)::int FROM consistency.audit_log WHERE action = 'booking.rollback'), 200,
          'each rollback is audited');
SELECT is((SELECT count(*)::int FROM consistency.audit_log
            WHERE action = 'booking.rollback' AND (after ->> 'repeat')::boolean), 199,
          'the repeats say so');
SELECT is((SELECT count(*)::int FROM consistency.manual_review_queue WHERE call_id = 801), 1,
          'one review item');
SET LOCAL ROLE consistency_app;
SELECT consistency.rollback_booking(801, 'calendar said no', 'app');
RESET ROLE;
SELECT is((SELECT count(*)::int FROM consistency.alerts WHERE alert_type = 'appointment_rollback'), 2,
          'a rollback for another reason is a new event, alerted');

-- 300 invented keys of one family, each opened (threshold 1), and one of another.
UPDATE consistency.settings SET value = '1' WHERE key = 'circuit_breaker.failure_threshold';
SET LOCAL ROLE consistency_app;
CREATE TEMP TABLE opened AS
SELECT count(consistency.circuit_record_failure('appointment_booking:service:' || g, 'down'))
  FROM generate_series(1, 300) g;
INSERT INTO opened SELECT count(consistency.circuit_record_failure('crm:lookup', 'down'));
RESET ROLE;
SELECT is((SELECT count(*)::int FROM consistency.circuit_breaker_states WHERE state = 'open'), 301,
          'every circuit opened');
SELECT results_eq(
    $$ SELECT metadata ->> 'family', entity_id FROM consistency.alerts
        WHERE alert_type = 'circuit_opened' ORDER BY id $$,
    $$ VALUES ('appointment_booking:service', hashtextextended('appointment_booking:service', 0)),
              ('crm', hashtextextended('crm', 0)) $$,
    'one circuit_opened alert per family within the throttle window');
SELECT consistency.circuit_force('appointment_booking:service:7', 'closed', 'ops', 'fixed by hand');
SELECT is((SELECT (metadata ->> 'family_not_closed')::int FROM consistency.alerts
            WHERE alert_type = 'circuit_closed'), 299,
          'a family''s alert counts its circuits that are not closed');

SELECT * FROM finish();
ROLLBACK;
