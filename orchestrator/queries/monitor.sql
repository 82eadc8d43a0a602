-- Named queries of the consistency monitor, report and retention.

-- name: run_check --
SELECT rule, severity, found, corrected, alerted
  FROM consistency.run_check(%(window)s::interval)

-- name: check_findings --
-- What each rule finds at the start of the run (takes the run's lock).
SELECT rule, entity_type, entity_id
  FROM consistency.check_findings(%(window)s::interval)

-- name: last_check_run --
SELECT id, started_at, duration_ms, waited_ms, rules
  FROM consistency.check_runs
 ORDER BY id DESC
 LIMIT 1

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
