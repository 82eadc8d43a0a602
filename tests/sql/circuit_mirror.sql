-- What the breaker clients' mirrors read: consistency.circuit_mirror and the
-- version kept by sql/triggers/circuit_mirror.sql. The notifications need a
-- commit: tests/py/test_circuit_mirror.py.
BEGIN;
SELECT plan(11);

SET LOCAL consistency.fake_now = '2030-01-01 12:00:00+00';

SELECT results_eq($$ SELECT circuit_key, state, failing, version
                      FROM consistency.circuit_mirror(ARRAY['svc:m', NULL]) $$,
                  $$ VALUES ('svc:m', 'closed', false, 0::bigint) $$,
                  'an unknown key reads as closed, without failures, at version 0; NULL keys are skipped');

SELECT consistency.circuit_record_failure('svc:m', 'boom');
CREATE TEMP TABLE seen AS SELECT 1 AS step, version FROM consistency.circuit_mirror(ARRAY['svc:m']);
SELECT results_eq($$ SELECT state, failing, version > 0 FROM consistency.circuit_mirror(ARRAY['svc:m']) $$,
                  $$ VALUES ('closed', true, true) $$,
                  'the first failure: closed, failing, a version from the sequence');

SELECT consistency.circuit_record_failure('svc:m', 'boom');
SELECT is((SELECT version FROM consistency.circuit_mirror(ARRAY['svc:m'])),
          (SELECT version FROM seen WHERE step = 1),
          'a second failure changes nothing a mirror acts on: same version');

UPDATE consistency.circuit_breaker_states SET last_error = 'edited', updated_at = now()
 WHERE circuit_key = 'svc:m';
SELECT is((SELECT version FROM consistency.circuit_mirror(ARRAY['svc:m'])),
          (SELECT version FROM seen WHERE step = 1),
          'other columns changing keep the version');

SELECT consistency.circuit_record_failure('svc:m', 'boom');
INSERT INTO seen SELECT 2, version FROM consistency.circuit_mirror(ARRAY['svc:m']);
SELECT ok((SELECT version FROM seen WHERE step = 2) > (SELECT version FROM seen WHERE step = 1),
          'opening takes a newer version');
SELECT is((SELECT state FROM consistency.circuit_mirror(ARRAY['svc:m'])), 'open', 'and reads open');

SELECT consistency.circuit_force('svc:m', 'closed', 'ops', 'reset');
INSERT INTO seen SELECT 3, version FROM consistency.circuit_mirror(ARRAY['svc:m']);
SELECT results_eq($$ SELECT state, failing FROM consistency.circuit_mirror(ARRAY['svc:m']) $$,
                  $$ VALUES ('closed', false) $$, 'forced closed: closed, no failures');
SELECT ok((SELECT version FROM seen WHERE step = 3) > (SELECT version FROM seen WHERE step = 2),
          'and a newer version');

SELECT consistency.circuit_record_failure('svc:m', 'boom');
SELECT consistency.circuit_record_success('svc:m');
SELECT ok((SELECT version FROM consistency.circuit_mirror(ARRAY['svc:m']))
              > (SELECT version FROM seen WHERE step = 3)
          AND NOT (SELECT failing FROM consistency.circuit_mirror(ARRAY['svc:m'])),
          'a success that resets the failures takes a newer version');

SET LOCAL ROLE consistency_app;
SELECT lives_ok($$ SELECT * FROM consistency.circuit_mirror(ARRAY['svc:m']) $$,
                'the application reads what its mirror needs');
RESET ROLE;
SET LOCAL ROLE consistency_monitor;
SELECT throws_ok($$ SELECT * FROM consistency.circuit_mirror(ARRAY['svc:m']) $$, '42501', NULL,
                 'the monitor has no use for it');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
