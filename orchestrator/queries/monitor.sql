-- Named queries of the consistency monitor, report and retention.

-- name: run_check --
SELECT rule, severity, found, corrected, alerted
  FROM consistency.run_check(%(window)s::interval)

-- name: check_begin --
-- A batched run: its bounds, once its session-level lock is taken (as text:
-- a whole table's lower bound may be -infinity, which Python cannot hold).
SELECT check_window, since::text, now::text, started_at, waited_ms
  FROM consistency._check_begin(%(window)s::interval)

-- name: check_steps --
SELECT step FROM unnest(consistency._check_steps()) AS step

-- name: check_detect --
SELECT rule, ids, targets, part
  FROM consistency._check_detect(%(step)s, %(since)s::timestamptz, %(now)s::timestamptz)

-- name: check_correct --
SELECT consistency._check_correct(%(rule)s, %(ids)s::bigint[], %(targets)s::bigint[])

-- name: check_record --
SELECT consistency._check_record(%(window)s, %(started)s, %(waited)s, %(parts)s::jsonb)

-- name: check_result --
SELECT rule, severity, found, corrected, alerted FROM consistency._check_result(%(run_id)s)

-- name: check_end --
SELECT consistency._check_end()

-- name: check_findings --
-- What each rule finds at the start of the run (takes the run's lock).
SELECT rule, entity_type, entity_id
  FROM consistency.check_findings(%(window)s::interval)

-- name: last_check_run --
SELECT id, started_at, duration_ms, waited_ms, rules
  FROM consistency.check_runs
 ORDER BY id DESC
 LIMIT 1

-- name: check_run --
SELECT id, started_at, duration_ms, waited_ms, rules
  FROM consistency.check_runs
 WHERE id = %(run_id)s

-- name: daily_report --
SELECT consistency.daily_report(%(day)s::date)

-- name: archive_alerts --
SELECT consistency.archive_alerts(%(older_than)s::interval, %(batch)s)

-- name: archivable_alerts --
SELECT consistency.count_archivable_alerts(%(older_than)s::interval)

-- name: pg_cron_available --
SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_cron')

-- name: cron_schedule --
SELECT cron.schedule(%(name)s, %(schedule)s, %(command)s)
