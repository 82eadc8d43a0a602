-- No row stops the monitor: it acts on every row that exists (a negative id
-- from any writer included), a correction that fails for one row is recorded
-- for that row (check_runs, an alert) while the run goes on, and a rule that
-- cannot run at all is recorded and skipped.
BEGIN;
SELECT plan(13);

SET LOCAL ROLE consistency_app;
INSERT INTO public.calls (id, external_call_id, session_outcome, created_at)
VALUES (-5, 'neg-id', 'appointment_booked', now() - interval '30 min'),
       (-6, 'refuses', 'appointment_booked', now() - interval '30 min'),
       (-7, 'no-direction', NULL, now() - interval '10 min');
RESET ROLE;
-- The application's own rule, which the rollback of call -6 breaks.
ALTER TABLE public.calls ADD CONSTRAINT app_keeps_refuses_booked
    CHECK (external_call_id <> 'refuses' OR session_outcome <> 'creation_failed');
SET LOCAL session_replication_role = replica;  -- drift, past the guard's triggers
UPDATE public.calls SET direction = NULL WHERE id = -7;
SET LOCAL session_replication_role = origin;

SELECT results_eq(
    $$ SELECT rule, found, corrected FROM consistency.run_check()
        WHERE rule IN ('missing_appointment', 'missing_direction') $$,
    $$ VALUES ('missing_appointment', 2, 1), ('missing_direction', 1, 1) $$,
    'the run goes on past a failing correction: the other call is rolled back, the direction fixed');
SELECT results_eq(
    $$ SELECT appointment_link_status, booking_failed FROM public.calls WHERE id = -5 $$,
    $$ VALUES ('creation_failed', true) $$, 'the call with a negative id is rolled back');
SELECT results_eq(
    $$ SELECT appointment_link_status, booking_failed FROM public.calls WHERE id = -6 $$,
    $$ VALUES ('pending_creation', false) $$, 'the call whose rollback failed is left as it was');
SELECT results_eq(
    $$ SELECT failed, rules -> 'missing_appointment' -> 'failed',
              rules -> 'missing_appointment' -> 'errors' -> 0 ->> 'entity_id',
              rules -> 'missing_appointment' -> 'errors' -> 0 ->> 'sqlstate'
         FROM consistency.check_runs ORDER BY id DESC LIMIT 1 $$,
    $$ VALUES (1, '1'::jsonb, '-6', '23514') $$,
    'check_runs records the failure: the call and the error');
SELECT results_eq(
    $$ SELECT severity, entity_type, entity_id, metadata ->> 'rule' FROM consistency.alerts
        WHERE alert_type = 'check_correction_failed' $$,
    $$ VALUES ('critical', 'call', -6::bigint, 'missing_appointment') $$,
    'and raises an alert about it, with the rule''s severity');
SELECT ok((SELECT description FROM consistency.alerts WHERE alert_type = 'check_correction_failed')
          LIKE '%app_keeps_refuses_booked%', 'the alert says what refused the correction');
SELECT is((SELECT count(*)::int FROM consistency.manual_review_queue WHERE call_id = -6), 0,
          'nothing of the failed rollback is left (its subtransaction was rolled back)');

-- The next run finds the same call again and records it again (the alert is
-- throttled), and still completes.
SELECT results_eq(
    $$ SELECT found, corrected FROM consistency.run_check() WHERE rule = 'missing_appointment' $$,
    $$ VALUES (1, 0) $$, 'the next run still completes');

-- A row no arithmetic can age (created_at 'infinity', written by any
-- writer) is judged like the others.
SET LOCAL session_replication_role = replica;
INSERT INTO public.calls (id, external_call_id, appointment_made, appointment_link_status,
                          active_appointment_count, created_at)
VALUES (-9, 'forever', true, 'linked', 1, 'infinity');
SET LOCAL session_replication_role = origin;
SELECT results_eq(
    $$ SELECT found, corrected FROM consistency.run_check() WHERE rule = 'missing_appointment' $$,
    $$ VALUES (2, 1) $$, 'a call created at infinity is found and rolled back (and -6 still fails)');

-- A rule whose detection fails (a setting forced to a value it cannot read)
-- is recorded and skipped; the other rules run.
UPDATE consistency.settings SET value = '"abc"' WHERE key = 'validation.max_appointment_age_seconds';
INSERT INTO public.calls (id, external_call_id, created_at) VALUES (-8, 'no-direction-2', now());
SET LOCAL session_replication_role = replica;
UPDATE public.calls SET direction = NULL WHERE id = -8;
SET LOCAL session_replication_role = origin;
SELECT results_eq(
    $$ SELECT rule, found, corrected FROM consistency.run_check()
        WHERE rule IN ('missing_appointment', 'missing_direction') $$,
    $$ VALUES ('missing_appointment', 0, 0), ('missing_direction', 1, 1) $$,
    'a failing rule is skipped, the others run');
SELECT results_eq(
    $$ SELECT failed, rules -> 'missing_appointment' -> 'errors' -> 0 ->> 'entity_type'
         FROM consistency.check_runs ORDER BY id DESC LIMIT 1 $$,
    $$ VALUES (1, 'call') $$, 'the failed detection is in check_runs');
SELECT results_eq(
    $$ SELECT severity, entity_type, metadata ->> 'rule' FROM consistency.alerts
        WHERE alert_type = 'check_rule_failed' $$,
    $$ VALUES ('critical', 'system', 'link') $$, 'and alerted');
SELECT is((SELECT direction FROM public.calls WHERE id = -8), 'inbound',
          'the rules after the failed one still corrected');

SELECT * FROM finish();
ROLLBACK;
