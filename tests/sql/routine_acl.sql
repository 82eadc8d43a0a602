-- Who may execute which routine of the guard, in one query over every
-- function and procedure of schema consistency (a routine without an ACL has
-- the default one: EXECUTE for PUBLIC). Any routine added, or any grant
-- changed, shows up here.
BEGIN;
SELECT plan(2);

SELECT is_empty(
    $$ SELECT p.oid::regprocedure::text FROM pg_proc p
          CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
         WHERE p.pronamespace = 'consistency'::regnamespace AND x.grantee = 0 $$,
    'no routine, function or procedure, may be executed by PUBLIC');

SELECT set_eq(
    $$ SELECT p.oid::regprocedure::text, pg_get_userbyid(x.grantee)::text FROM pg_proc p
          CROSS JOIN LATERAL aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) x
         WHERE p.pronamespace = 'consistency'::regnamespace AND x.grantee <> p.proowner $$,
    $$ VALUES
    ('consistency._fake_now()', 'consistency_app'),
    ('consistency._fake_now()', 'consistency_monitor'),
    ('consistency._fake_now()', 'consistency_reviewer'),
    ('consistency._require_id(bigint,text)', 'consistency_app'),
    ('consistency._require_id(bigint,text)', 'consistency_reviewer'),
    ('consistency._require_id(bigint,text)', 'consistency_monitor'),
    ('consistency._require_text(text,text)', 'consistency_app'),
    ('consistency._require_text(text,text)', 'consistency_reviewer'),
    ('consistency._require_text(text,text)', 'consistency_monitor'),
    ('consistency.circuit_acquire(text)', 'consistency_app'),
    ('consistency.circuit_record_failure(text,text)', 'consistency_app'),
    ('consistency.circuit_record_success(text)', 'consistency_app'),
    ('consistency.circuit_status(text)', 'consistency_app'),
    ('consistency.circuit_mirror(text[])', 'consistency_app'),
    ('consistency.circuit_status(text)', 'consistency_monitor'),
    ('consistency.now()', 'consistency_app'),
    ('consistency.now()', 'consistency_reviewer'),
    ('consistency.now()', 'consistency_monitor'),
    ('consistency.daily_report(date)', 'consistency_monitor'),
    ('consistency.metrics()', 'consistency_monitor'),
    ('consistency.status(integer)', 'consistency_monitor'),
    ('consistency.relay_status()', 'consistency_monitor'),
    ('consistency.review_claim(text)', 'consistency_reviewer'),
    ('consistency.review_enqueue(bigint,text,jsonb,integer,text)', 'consistency_app'),
    ('consistency.review_enqueue(bigint,text,jsonb,integer,text)', 'consistency_reviewer'),
    ('consistency.review_list(text,integer)', 'consistency_reviewer'),
    ('consistency.review_list(text,integer)', 'consistency_monitor'),
    ('consistency.review_resolve(bigint,text,text,text)', 'consistency_reviewer'),
    ('consistency.rollback_booking(bigint,text,text)', 'consistency_app'),
    ('consistency.setting(text)', 'consistency_app'),
    ('consistency.setting(text)', 'consistency_reviewer'),
    ('consistency.setting(text)', 'consistency_monitor'),
    ('consistency.setting_int(text)', 'consistency_app'),
    ('consistency.setting_int(text)', 'consistency_reviewer'),
    ('consistency.setting_int(text)', 'consistency_monitor'),
    ('consistency.setting_numeric(text)', 'consistency_app'),
    ('consistency.setting_numeric(text)', 'consistency_reviewer'),
    ('consistency.setting_numeric(text)', 'consistency_monitor'),
    ('consistency.validate_booking(bigint,bigint,text)', 'consistency_app'),
    ('consistency.violations()', 'consistency_app'),
    ('consistency.violations()', 'consistency_monitor') $$,
    'every grant of EXECUTE to a role other than the owner is one of these');

SELECT * FROM finish();
ROLLBACK;
