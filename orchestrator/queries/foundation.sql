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


-- name: definitions_fingerprint --
-- What the repeatable definitions leave in the catalog: every function of
-- schema consistency (body, settings, rights) and every trigger calling one.
-- A fingerprint that differs from the one recorded after the last apply
-- means somebody changed, dropped or disabled one by hand.
SELECT md5(coalesce(string_agg(d, E'\n' ORDER BY d), ''))
  FROM (SELECT pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '') AS d
          FROM pg_proc p
         WHERE p.pronamespace = 'consistency'::regnamespace AND p.prokind IN ('f', 'p')
        UNION ALL
        SELECT pg_get_triggerdef(t.oid) || t.tgenabled::text
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND p.pronamespace = 'consistency'::regnamespace) s
