-- Named queries of `consistency bench check` (orchestrator/bench/check.py).

-- name: bench_check_drift --
-- ~1 %% drift written behind the triggers' back, spread over the whole table
-- (so the last hour gets its share): flags that contradict the appointments,
-- missing directions, a booked outcome with nothing made, orphans.
SET LOCAL session_replication_role = replica;
UPDATE public.calls SET appointment_made = false
 WHERE id %% 400 = 1 AND appointment_link_status = 'linked';
UPDATE public.calls SET direction = NULL WHERE id %% 400 = 2;
UPDATE public.calls SET appointment_made = false, appointment_link_status = 'unlinked',
                        session_outcome = 'appointment_booked'
 WHERE id %% 400 = 3 AND appointment_link_status = 'unlinked';
UPDATE public.appointments SET call_id = NULL WHERE id %% 400 = 4;
SET LOCAL session_replication_role = origin

-- name: bench_check_run --
SELECT sum(found), sum(corrected) FROM consistency.run_check(%(window)s::interval)

-- name: bench_check_steps --
-- Per-rule timings of the run just made (same transaction, before rollback).
SELECT rules FROM consistency.check_runs ORDER BY id DESC LIMIT 1

-- name: bench_check_plan_settings --
-- run_check's SET clauses, for bench_check_plan (in a transaction).
SET LOCAL enable_hashjoin = off;
SET LOCAL jit = off

-- name: bench_check_plan --
-- The plan run_check gets for the link rules over a window (the probe path:
-- the window an index condition, one probe of appointments per call) or the
-- whole table (the bulk path: a merge of calls_pkey with the grouped
-- index-only scan of appointments_active_call_idx).
EXPLAIN (COSTS OFF)
SELECT * FROM consistency._rule_link(%(since)s::timestamptz, %(now)s::timestamptz, %(bulk)s)

-- name: bench_check_bulk_fix --
-- A bulk fix made behind the triggers' back (session_replication_role =
-- replica, as a data repair or a restore would): 1 linked call in 40 left
-- saying it has no appointment. The whole-table check resyncs and alerts
-- each of them, which locks every one of those calls.
SET LOCAL session_replication_role = replica;
UPDATE public.calls SET appointment_made = false, appointment_link_status = 'unlinked'
 WHERE id %% 40 = 7 AND appointment_link_status = 'linked';
SET LOCAL session_replication_role = origin

-- name: bench_check_writer_insert --
-- The application's everyday write: a new appointment for a call.
INSERT INTO public.appointments (call_id, company_id, service_id, starts_at, ends_at, status,
                                 external_booking_id, source)
VALUES (%(call)s, 1, 1, now() + interval '1 day', now() + interval '1 day 30 minutes',
        'scheduled', %(tag)s, 'voice_agent')

-- name: bench_check_run_one_transaction --
SELECT count(*) FROM consistency.run_check(%(window)s::interval)
