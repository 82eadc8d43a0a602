-- Named queries of the foundation (migrate, config). Loaded by orchestrator.db.queries().

-- name: migrate_lock --
-- Session-level, so it spans yoyo's bookkeeping transactions too; a second
-- `consistency migrate` waits here, then finds nothing left to do.
SELECT pg_advisory_lock(hashtextextended('consistency_guard.migrate', 0))

-- name: create_schema --
CREATE SCHEMA IF NOT EXISTS consistency

-- name: stored_definitions --
SELECT path, sha256
  FROM consistency.schema_definitions

-- name: definitions_table_exists --
SELECT to_regclass('consistency.schema_definitions') IS NOT NULL

-- name: record_definition --
INSERT INTO consistency.schema_definitions (path, sha256, applied_at)
VALUES (%(path)s, %(sha256)s, clock_timestamp())
ON CONFLICT (path) DO UPDATE SET sha256 = EXCLUDED.sha256, applied_at = EXCLUDED.applied_at

-- name: forget_definitions --
DELETE FROM consistency.schema_definitions
 WHERE NOT (path = ANY (%(paths)s))

-- name: settings_list --
SELECT key, value, kind, env_var, description, updated_at
  FROM consistency.settings
 ORDER BY key

-- name: set_setting --
SELECT consistency.set_setting(%(key)s, %(value)s::jsonb, %(actor)s)

