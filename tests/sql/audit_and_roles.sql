BEGIN;
SELECT plan(17);

SELECT lives_ok($$ SELECT consistency._audit('tester', 'test.action', 'test', '1', NULL, '{"a": 1}') $$,
                '_audit() appends a row');
SELECT is((SELECT session_role FROM consistency.audit_log ORDER BY id DESC LIMIT 1), session_user::text,
          'the audit row records the database login besides the claimed actor');
SELECT throws_ok($$ UPDATE consistency.audit_log SET actor = 'mallory' $$, '42501', NULL,
                 'UPDATE of the audit log is refused, even for the owner');
SELECT throws_ok($$ DELETE FROM consistency.audit_log $$, '42501', NULL,
                 'DELETE of the audit log is refused, even for the owner');
SELECT throws_ok($$ TRUNCATE consistency.audit_log $$, '42501', NULL,
                 'TRUNCATE of the audit log is refused');

SELECT has_role('consistency_app');
SELECT has_role('consistency_reviewer');
SELECT has_role('consistency_monitor');

SET LOCAL ROLE consistency_reviewer;
SELECT throws_ok($$ UPDATE consistency.audit_log SET actor = 'mallory' $$, '42501', NULL,
                 'consistency_reviewer cannot UPDATE the audit log');
SELECT throws_ok($$ DELETE FROM consistency.audit_log $$, '42501', NULL,
                 'consistency_reviewer cannot DELETE from the audit log');
SELECT throws_ok($$ UPDATE consistency.alerts SET severity = 'info' $$, '42501', NULL,
                 'consistency_reviewer cannot change alerts');
RESET ROLE;

SET LOCAL ROLE consistency_app;
SELECT lives_ok($$ INSERT INTO public.calls (external_call_id) VALUES ('role-test') $$,
                'consistency_app writes calls');
SELECT throws_ok($$ INSERT INTO consistency.alerts (alert_type, severity, entity_type, description)
                    VALUES ('x', 'info', 'system', 'd') $$, '42501', NULL,
                 'consistency_app cannot write alerts directly');
SELECT throws_ok($$ SELECT consistency.set_setting('monitoring.recent_hours', '2', 'app') $$, '42501',
                 NULL, 'consistency_app cannot change settings');
RESET ROLE;

SET LOCAL ROLE consistency_monitor;
SELECT lives_ok($$ SELECT count(*) FROM consistency.alerts $$, 'consistency_monitor reads alerts');
SELECT throws_ok($$ DELETE FROM consistency.alerts $$, '42501', NULL,
                 'consistency_monitor cannot delete alerts');
SELECT throws_ok($$ INSERT INTO public.calls (external_call_id) VALUES ('nope') $$, '42501', NULL,
                 'consistency_monitor cannot write calls');
RESET ROLE;

SELECT * FROM finish();
ROLLBACK;
