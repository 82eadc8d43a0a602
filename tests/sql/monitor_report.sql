BEGIN;
SELECT plan(10);

SET LOCAL consistency.fake_now = '2030-03-01 12:00:00+00';
SET LOCAL timezone = 'UTC';

SELECT is((consistency.daily_report('2030-03-01') ->> 'consistency_rate_pct')::numeric, 100.0,
          'no calls: rate is 100.0');

INSERT INTO public.calls (external_call_id, direction, created_at)
SELECT 'r-' || g, 'inbound', '2030-03-01 08:00+00'::timestamptz + make_interval(mins => g)
  FROM generate_series(1, 100) g;
-- 5 distinct calls with critical/warning alerts (one of them twice), plus an
-- info alert that does not count against the rate
SELECT consistency.raise_alert('session_outcome_mismatch', 'critical', 'call', id, 'x')
  FROM public.calls WHERE external_call_id IN ('r-1', 'r-2', 'r-3');
SELECT consistency.raise_alert('inconsistent_link_status', 'warning', 'call', id, 'x', '{}', true)
  FROM public.calls WHERE external_call_id IN ('r-3', 'r-4', 'r-5');
SELECT consistency.raise_alert('recent_failure', 'info', 'call', id, 'x')
  FROM public.calls WHERE external_call_id = 'r-6';
INSERT INTO consistency.circuit_breaker_events (circuit_key, from_state, to_state, at)
VALUES ('appointment_booking', 'closed', 'open', '2030-03-01 09:00+00');

SELECT is((consistency.daily_report('2030-03-01') ->> 'consistency_rate_pct')::numeric, 95.00,
          '100 calls, 5 with alerts: 95.0');
SELECT is(consistency.daily_report('2030-03-01') -> 'totals',
          '{"calls": 100, "appointments": 0, "alerts": 7}'::jsonb, 'totals');
SELECT is(consistency.daily_report('2030-03-01') -> 'alerts_by_severity',
          '{"critical": 3, "warning": 3, "info": 1}'::jsonb, 'alerts by severity');
SELECT is(consistency.daily_report('2030-03-01') -> 'alerts_by_type',
          '{"session_outcome_mismatch": 3, "inconsistent_link_status": 3, "recent_failure": 1}'::jsonb,
          'alerts by type');
SELECT is((consistency.daily_report('2030-03-01') ->> 'auto_corrected')::int, 3, 'auto-corrected count');
SELECT is((consistency.daily_report('2030-03-01') ->> 'circuit_opens')::int, 1, 'circuit opens');
SELECT is(jsonb_array_length(consistency.daily_report('2030-03-01') -> 'top_issues'), 3,
          'top issues lists each type once');

-- archived alerts still count for their day
SET LOCAL consistency.fake_now = '2030-03-01 12:01:00+00';
SELECT is(consistency.archive_alerts('0 seconds', 100), 7::bigint, 'archived every alert');
SELECT is((consistency.daily_report('2030-03-01') ->> 'consistency_rate_pct')::numeric, 95.00,
          'archived alerts still count for their day');
SELECT * FROM finish();
ROLLBACK;
