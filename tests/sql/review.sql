-- The manual review queue: priorities, dedup, claim order, who may resolve,
-- the audit trail, and that reviewers work through functions only.
BEGIN;
SELECT plan(32);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';
INSERT INTO public.calls (id, external_call_id) VALUES (201, 'r-201'), (202, 'r-202'), (203, 'r-203');

SELECT results_eq(
    $$ SELECT r, consistency._review_priority(r)
         FROM unnest(ARRAY['appointment_validation_failed', 'appointment_rollback',
                           'calendar_booking_failed', 'circuit_open', 'customer_creation_failed',
                           'service_not_found', 'something_else']) AS r $$,
    $$ VALUES ('appointment_validation_failed', 1), ('appointment_rollback', 1),
              ('calendar_booking_failed', 2), ('circuit_open', 2), ('customer_creation_failed', 3),
              ('service_not_found', 4), ('something_else', 5) $$,
    'priority by reason as the contract maps it');

SET LOCAL consistency.fake_now = '2030-01-01 12:00:01+00';
SELECT consistency.review_enqueue(201, 'service_not_found', '{"service": 9}') AS low \gset
SET LOCAL consistency.fake_now = '2030-01-01 12:00:02+00';
SELECT consistency.review_enqueue(202, 'appointment_validation_failed') AS first_high \gset
SET LOCAL consistency.fake_now = '2030-01-01 12:00:03+00';
SELECT consistency.review_enqueue(203, 'calendar_booking_failed', '{}', 1) AS second_high \gset
SET LOCAL consistency.fake_now = '2030-01-01 12:00:04+00';
SELECT consistency.review_enqueue(201, 'other') AS lowest \gset

SELECT results_eq($$ SELECT priority, status, context FROM consistency.manual_review_queue WHERE id = $$ || :low,
                  $$ VALUES (4, 'pending', '{"service": 9}'::jsonb) $$,
                  'enqueue stores priority from the reason, pending, with its context');
SELECT is((SELECT priority FROM consistency.manual_review_queue WHERE id = :second_high), 1,
          'an explicit priority overrides the mapping');
SELECT is(consistency.review_enqueue(201, 'service_not_found', '{"other": true}'), :low::bigint,
          'a second enqueue for the same call and reason returns the open item');
SELECT is((SELECT count(*)::int FROM consistency.manual_review_queue), 4, 'and adds no row');
SELECT isnt(consistency.review_enqueue(202, 'service_not_found'), :low::bigint,
            'the same reason for another call is a new item');

SELECT throws_ok($$ SELECT consistency.review_enqueue(201, '') $$, '22023',
                 'review reason must not be empty', 'empty reason refused');
SELECT throws_ok($$ SELECT consistency.review_enqueue(NULL, 'x') $$, '22023',
                 'call_id must not be NULL', 'no call id refused');
SELECT throws_ok($$ SELECT consistency.review_enqueue(201, 'big', jsonb_build_object('blob', repeat('x', 70000))) $$,
                 '22023', 'context is too large: 70012 bytes (at most 65536)',
                 'a context beyond 64 kB is refused (it is copied into the append-only audit log)');
SELECT lives_ok($$ SELECT consistency.review_enqueue(201, 'big', jsonb_build_object('blob', repeat('x', 60000))) $$,
                'a context of 60 kB is taken');
SELECT throws_ok($$ SELECT consistency.review_enqueue(999999, 'x') $$, 'P0002',
                 'call 999999 does not exist', 'unknown call refused');
SELECT throws_ok($$ SELECT consistency.review_enqueue(201, 'x', '{}', 6) $$, '22023',
                 'priority must be between 1 and 5, got 6', 'priority out of range refused');
SELECT throws_ok($$ SELECT consistency.review_enqueue(201, 'x', '[1]') $$, '22023',
                 'context must be a JSON object, got array', 'non-object context refused');

-- claim order: priority, then age
SELECT is((consistency.review_claim('ann')).id, :first_high::bigint,
          'claim takes the highest priority, oldest first');
SELECT is((consistency.review_claim('bob')).id, :second_high::bigint,
          'then the next oldest of the same priority');
SELECT results_eq($$ SELECT status, assigned_to, assigned_at FROM consistency.manual_review_queue
                      WHERE id = $$ || :first_high,
                  $$ VALUES ('in_progress', 'ann', '2030-01-01 12:00:04+00'::timestamptz) $$,
                  'a claimed item is in_progress and assigned');
SELECT is((consistency.review_claim('ann')).id, :low::bigint, 'then priority 4');

-- resolve
SELECT throws_ok($$ SELECT consistency.review_resolve($$ || :first_high || $$, 'bob', 'resolved', 'mine now') $$,
                 '42501', NULL, 'someone else than the assignee cannot resolve');
SELECT results_eq($$ SELECT status, assigned_to, resolution_notes FROM consistency.manual_review_queue
                      WHERE id = $$ || :first_high,
                  $$ VALUES ('in_progress', 'ann', NULL::text) $$,
                  'a refused resolve leaves the item unchanged');
SELECT results_eq($$ SELECT status, resolution_notes, resolved_at
                       FROM consistency.review_resolve($$ || :first_high || $$, 'ann', 'resolved', 'rebooked') $$,
                  $$ VALUES ('resolved', 'rebooked', '2030-01-01 12:00:04+00'::timestamptz) $$,
                  'the assignee resolves it');
SELECT throws_ok($$ SELECT consistency.review_resolve($$ || :first_high || $$, 'ann', 'dismissed', 'x') $$,
                 '22023', NULL, 'a resolved item cannot be resolved again');
SELECT results_eq($$ SELECT status, assigned_to FROM consistency.review_resolve($$ || :lowest || $$, 'carl', 'dismissed', 'noise') $$,
                  $$ VALUES ('dismissed', 'carl') $$,
                  'an unassigned item can be dismissed by anyone, who becomes its assignee');
SELECT throws_ok($$ SELECT consistency.review_resolve($$ || :second_high || $$, 'bob', 'pending', 'x') $$,
                 '22023', 'status must be resolved or dismissed, got pending', 'only resolved or dismissed');
SELECT throws_ok($$ SELECT consistency.review_resolve(987654, 'bob', 'resolved', 'x') $$,
                 'P0002', 'review item 987654 does not exist', 'unknown item refused');
SELECT throws_ok($$ SELECT consistency.review_resolve($$ || :second_high || $$, '', 'resolved', 'x') $$,
                 '22023', 'reviewer must not be empty', 'empty reviewer refused');
SELECT isnt(consistency.review_enqueue(202, 'appointment_validation_failed'), :first_high::bigint,
            'once resolved, the same call and reason can be queued again');

SELECT results_eq(
    $$ SELECT actor, action, before->>'status', after->>'status' FROM consistency.audit_log
        WHERE target_type = 'review_item' AND target_id = $$ || quote_literal(:first_high) || $$ ORDER BY id $$,
    $$ VALUES ('system', 'review.enqueue', NULL, 'pending'), ('ann', 'review.claim', 'pending', 'in_progress'),
              ('ann', 'review.resolve', 'in_progress', 'resolved') $$,
    'every step of an item is in the audit log (dedup and refusals add nothing)');

-- roles
SET LOCAL ROLE consistency_reviewer;
SELECT isnt((consistency.review_claim('dora')).id, NULL, 'consistency_reviewer claims through the function');
SELECT lives_ok($$ SELECT consistency.review_enqueue(203, 'customer_creation_failed') $$,
                'consistency_reviewer enqueues through the function');
SELECT throws_ok($$ SELECT * FROM consistency.manual_review_queue $$, '42501', NULL,
                 'consistency_reviewer cannot read the queue table directly');
SELECT throws_ok($$ UPDATE consistency.manual_review_queue SET status = 'resolved' $$, '42501', NULL,
                 'consistency_reviewer cannot change the queue table directly');
RESET ROLE;
SET LOCAL ROLE consistency_app;
SELECT throws_ok($$ SELECT consistency.review_claim('app') $$, '42501', NULL,
                 'consistency_app does not claim review items');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
