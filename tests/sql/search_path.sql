-- No function of the guard resolves a name through its caller's search_path:
-- each one pins search_path, or has an SQL-standard body (resolved when
-- migrate created it). The attack it stops: a role that may create in public
-- plants functions shadowing builtins (public.cardinality(text[]) beats
-- pg_catalog.cardinality(anyarray) even with pg_catalog searched first), and
-- whoever calls the guard -- a DBA from the CLI -- runs them.
BEGIN;
SELECT plan(3);

SELECT is_empty(
    $$ SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'consistency'::regnamespace
          AND p.prosqlbody IS NULL
          AND NOT coalesce('search_path=pg_catalog, pg_temp' = ANY (p.proconfig), false)
          -- a procedure with a SET clause may not COMMIT: qualified throughout instead
          AND p.oid <> 'consistency.archive_alerts_all(interval, integer)'::regprocedure $$,
    'every routine pins search_path or has an SQL-standard body');

-- Counted outside any transaction (a sequence), so a call that caught the
-- planted function's error still shows.
CREATE SEQUENCE pg_temp.hijacks;
CREATE TABLE pg_temp.outcome (call text, error text);
DO $plant$
DECLARE
    v_sig text;
BEGIN
    FOREACH v_sig IN ARRAY ARRAY[
        'cardinality(text[]) RETURNS int', 'cardinality(bigint[]) RETURNS int',
        'btrim(text) RETURNS text', 'length(text) RETURNS int', 'strpos(text, text) RETURNS int',
        'left(text, integer) RETURNS text', 'octet_length(text) RETURNS int',
        'clock_timestamp() RETURNS timestamptz', 'current_setting(text, boolean) RETURNS text',
        'pg_notify(text, text) RETURNS void', 'hashtextextended(text, bigint) RETURNS bigint',
        'jsonb_typeof(jsonb) RETURNS text', 'round(numeric, integer) RETURNS numeric',
        'isfinite(timestamptz) RETURNS boolean', 'pg_advisory_xact_lock(bigint) RETURNS void',
        'make_interval(years integer, months integer, weeks integer, days integer, hours integer, '
            'mins integer, secs double precision) RETURNS interval',
        'jsonb_array_length(jsonb) RETURNS integer', 'pg_current_xact_id() RETURNS xid8']
    LOOP
        EXECUTE format($f$CREATE FUNCTION public.%s LANGUAGE plpgsql AS $b$
            BEGIN
                PERFORM pg_catalog.nextval('pg_temp.hijacks');
                RAISE EXCEPTION 'hijacked: %s';
            END $b$$f$, v_sig, split_part(v_sig, '(', 1));
    END LOOP;
END
$plant$;

INSERT INTO public.calls (id, external_call_id, session_outcome, created_at)
VALUES (501, 'sp-1', 'information_only', now() - interval '1 hour'),
       (502, 'sp-2', 'appointment_booked', now() - interval '30 min');
INSERT INTO public.appointments (id, call_id, external_booking_id, source) VALUES (601, 501, 'b-1', 'voice_agent');

-- The calls an operator or an application makes, with public searched first.
SET LOCAL search_path = public, pg_catalog;
DO $calls$
DECLARE
    v_call text;
BEGIN
    FOREACH v_call IN ARRAY ARRAY[
        'SELECT consistency.now()',
        'SELECT consistency.setting_int(''monitoring.recent_hours'')',
        'SELECT * FROM consistency.validate_booking(501)',
        'SELECT * FROM consistency.validate_booking(501, 601, ''other'')',
        'SELECT consistency.rollback_booking(501, ''sp test'')',
        'SELECT consistency.raise_alert(''sp'', ''info'', ''system'', 1, ''x'')',
        'SELECT consistency.set_setting(''monitoring.report_days'', ''2'', ''sp'')',
        'SELECT * FROM consistency.run_check()',
        'SELECT * FROM consistency.check_call(502)',
        'SELECT * FROM consistency.violations()',
        'SELECT consistency.review_enqueue(502, ''sp'', ''{"a": 1}'')',
        'SELECT * FROM consistency.review_claim(''sp'')',
        'SELECT * FROM consistency.review_list()',
        'SELECT consistency.circuit_acquire(''sp:1'')',
        'SELECT consistency.circuit_record_failure(''sp:1'', ''x'')',
        'SELECT * FROM consistency.circuit_status()',
        'SELECT consistency.circuit_force(''sp:2'', ''forced_open'', ''sp'', ''test'')',
        'SELECT consistency.daily_report(current_date)',
        'SELECT consistency.archive_alerts(''1 day'', 10)',
        'SELECT consistency.resync_calls(ARRAY[501, 502]::bigint[])',
        'UPDATE public.appointments SET status = ''cancelled'' WHERE id = 601',
        'UPDATE public.calls SET session_outcome = ''information_only'', direction = NULL WHERE id = 502']
    LOOP
        BEGIN
            EXECUTE v_call;
        EXCEPTION WHEN OTHERS THEN
            INSERT INTO pg_temp.outcome VALUES (v_call, SQLERRM);
        END;
    END LOOP;
END
$calls$;
SET LOCAL search_path = public, testing;

SELECT is_empty($$ SELECT call || ': ' || error FROM pg_temp.outcome $$,
                'every call of the API works with public searched first');
SELECT ok(NOT (SELECT is_called FROM pg_temp.hijacks),
          'and none of them ran a function planted in public');

SELECT * FROM finish();
ROLLBACK;
