-- The counter calls.active_appointment_count is the guard's alone: no role
-- but the owner may UPDATE the column. The attack it stops: a role with DML
-- on calls writes the counter from a trigger of its own (a pg_temp function
-- on a temporary table), at trigger depth 1, where the counter guard only
-- checks that the row's flags agree with the counter.
BEGIN;
SELECT plan(9);

INSERT INTO public.calls (id, external_call_id) VALUES (701, 'forge-1');
INSERT INTO public.appointments (call_id, external_booking_id) VALUES (701, 'forge-b1');

SELECT ok(NOT has_column_privilege('consistency_app', 'public.calls', 'active_appointment_count', 'UPDATE'),
          'consistency_app may not update the counter column');
SELECT ok(has_column_privilege('consistency_app', 'public.calls', 'session_outcome', 'UPDATE')
          AND has_column_privilege('consistency_app', 'public.calls', 'appointment_made', 'UPDATE'),
          'it may update every other column');
SELECT is_empty(
    $$ SELECT r.rolname FROM pg_roles r
        WHERE NOT r.rolsuper AND r.rolname NOT LIKE 'pg\_%'  -- pg_write_all_data: the DBA's to grant
          AND NOT pg_has_role(r.oid, (SELECT relowner FROM pg_class WHERE oid = 'public.calls'::regclass),
                              'MEMBER')
          AND has_column_privilege(r.oid, 'public.calls', 'active_appointment_count', 'UPDATE') $$,
    'no role but the owner (and superusers) may');

SET LOCAL ROLE consistency_app;
CREATE TEMP TABLE forge (call_id bigint);
CREATE FUNCTION pg_temp.forge_counter() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.calls SET active_appointment_count = 5 WHERE id = NEW.call_id;
    RETURN NULL;
END $$;
CREATE TRIGGER forge AFTER INSERT ON pg_temp.forge FOR EACH ROW EXECUTE FUNCTION pg_temp.forge_counter();
SELECT throws_ok($$ INSERT INTO pg_temp.forge VALUES (701) $$, '42501', 'permission denied for table calls',
                 'consistency_app cannot forge the counter from a trigger of its own');
RESET ROLE;
SELECT is((SELECT active_appointment_count FROM public.calls WHERE id = 701), 1,
          'the counter is still the true count');

-- A role granted UPDATE on the whole table after the install holds the
-- counter column too (migrate grants UPDATE column by column, the next
-- migrate would again): its trigger writes the counter with flags that agree
-- with it, at depth 1 where the sync's consistent rows pass unchecked. The
-- guard refuses it because the role is not the owner.
INSERT INTO public.calls (id, external_call_id) VALUES (702, 'forge-2');
GRANT UPDATE ON public.calls TO consistency_app;
SET LOCAL ROLE consistency_app;
CREATE TEMP TABLE forge_linked (call_id bigint);
CREATE FUNCTION pg_temp.forge_linked() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE public.calls
       SET active_appointment_count = 1, appointment_made = true, appointment_link_status = 'linked'
     WHERE id = NEW.call_id;
    RETURN NULL;
END $$;
CREATE TRIGGER forge_linked AFTER INSERT ON pg_temp.forge_linked
    FOR EACH ROW EXECUTE FUNCTION pg_temp.forge_linked();
SELECT throws_ok($$ INSERT INTO pg_temp.forge_linked VALUES (702) $$, '42501',
                 'calls.active_appointment_count is maintained by consistency-guard',
                 'a role with UPDATE on the whole table cannot forge a linked call from a trigger of its own');
SELECT lives_ok($$ INSERT INTO public.appointments (call_id, external_booking_id) VALUES (702, 'forge-b2') $$,
                'its appointment writes still move the counter (the sync runs as the owner)');
RESET ROLE;
SELECT is((SELECT (active_appointment_count, appointment_made, appointment_link_status)::text
             FROM public.calls WHERE id = 702), '(1,t,linked)',
          'the call is linked by its real appointment');
SELECT is_empty($$ SELECT * FROM consistency.violations() $$, 'G1 holds for every call');

SELECT * FROM finish();
ROLLBACK;
