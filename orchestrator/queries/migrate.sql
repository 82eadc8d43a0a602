-- Named queries of migrate (orchestrator/migrate.py): what is installed and
-- who owns it, the bookkeeping of definitions, the DDL it runs itself.

-- name: migrate_lock --
-- Session-level, so it spans yoyo's bookkeeping transactions too; a second
-- `consistency migrate` waits here, then finds nothing left to do.
SELECT pg_advisory_lock(hashtextextended('consistency_guard.migrate', 0))

-- name: install_facts --
-- Read-only facts migrate decides on before it writes anything: who runs it,
-- who owns the application's tables and the guard's schema, whether the
-- guard is installed, which of its roles are missing and who may create them.
SELECT current_user::text,
       (SELECT pg_catalog.pg_get_userbyid(c.relowner)::text FROM pg_catalog.pg_class c
         WHERE c.oid = pg_catalog.to_regclass('public.calls')),
       (SELECT pg_catalog.pg_get_userbyid(c.relowner)::text FROM pg_catalog.pg_class c
         WHERE c.oid = pg_catalog.to_regclass('public.appointments')),
       (SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text FROM pg_catalog.pg_namespace n
         WHERE n.nspname = 'consistency'),
       pg_catalog.to_regclass('consistency._yoyo_migration') IS NOT NULL,
       ARRAY(SELECT r FROM pg_catalog.unnest(%(roles)s::text[]) AS r
              WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_roles x WHERE x.rolname = r)),
       (SELECT x.rolsuper OR x.rolcreaterole FROM pg_catalog.pg_roles x
         WHERE x.rolname = current_user)

-- name: role_facts --
-- May the session SET ROLE to this role, and may that role create roles?
SELECT pg_catalog.pg_has_role(current_user, x.oid, 'MEMBER'), x.rolsuper OR x.rolcreaterole
  FROM pg_catalog.pg_roles x
 WHERE x.rolname = %(role)s

-- name: schema_objects --
-- Every object in schema consistency that a role other than its owner owns,
-- or, before the guard is installed (%(installed)s false), every object at
-- all: from each catalog that places objects in a schema. (A table's row and
-- array types go with the table.)
SELECT o.kind || ' consistency.' || o.name || ' (owner '
       || coalesce(pg_catalog.pg_get_userbyid(o.owner)::text, '?') || ')'
  FROM pg_catalog.pg_namespace n
 CROSS JOIN LATERAL (
        SELECT 'relation', pg_catalog.quote_ident(c.relname), c.relowner FROM pg_catalog.pg_class c
         WHERE c.relnamespace = n.oid
        UNION ALL
        SELECT 'routine', pg_catalog.quote_ident(p.proname) || '('
                          || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')', p.proowner
          FROM pg_catalog.pg_proc p
         WHERE p.pronamespace = n.oid
        UNION ALL
        SELECT 'type', pg_catalog.quote_ident(t.typname), t.typowner FROM pg_catalog.pg_type t
         WHERE t.typnamespace = n.oid AND t.typrelid = 0
           AND NOT EXISTS (SELECT FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)
        UNION ALL
        SELECT 'operator', o.oprname::text, o.oprowner FROM pg_catalog.pg_operator o
         WHERE o.oprnamespace = n.oid
        UNION ALL
        SELECT 'operator class', c.opcname::text, c.opcowner FROM pg_catalog.pg_opclass c
         WHERE c.opcnamespace = n.oid
        UNION ALL
        SELECT 'operator family', f.opfname::text, f.opfowner FROM pg_catalog.pg_opfamily f
         WHERE f.opfnamespace = n.oid
        UNION ALL
        SELECT 'collation', c.collname::text, c.collowner FROM pg_catalog.pg_collation c
         WHERE c.collnamespace = n.oid
        UNION ALL
        SELECT 'conversion', c.conname::text, c.conowner FROM pg_catalog.pg_conversion c
         WHERE c.connamespace = n.oid
        UNION ALL
        SELECT 'text search configuration', c.cfgname::text, c.cfgowner
          FROM pg_catalog.pg_ts_config c WHERE c.cfgnamespace = n.oid
        UNION ALL
        SELECT 'text search dictionary', d.dictname::text, d.dictowner
          FROM pg_catalog.pg_ts_dict d WHERE d.dictnamespace = n.oid
        UNION ALL
        SELECT 'text search parser', p.prsname::text, NULL::oid
          FROM pg_catalog.pg_ts_parser p WHERE p.prsnamespace = n.oid
        UNION ALL
        SELECT 'text search template', t.tmplname::text, NULL::oid
          FROM pg_catalog.pg_ts_template t WHERE t.tmplnamespace = n.oid
        UNION ALL
        SELECT 'statistics object', s.stxname::text, s.stxowner
          FROM pg_catalog.pg_statistic_ext s WHERE s.stxnamespace = n.oid
        UNION ALL
        SELECT 'extension', e.extname::text, e.extowner FROM pg_catalog.pg_extension e
         WHERE e.extnamespace = n.oid) AS o(kind, name, owner)
 WHERE n.nspname = 'consistency'
   AND (NOT %(installed)s OR o.owner IS DISTINCT FROM n.nspowner)
 ORDER BY 1
 LIMIT 5

-- name: create_schema --
-- As the session's role, owned by the guard's owner (who may lack CREATE on
-- the database); nobody else may create objects in it.
CREATE SCHEMA consistency AUTHORIZATION {owner};
REVOKE ALL ON SCHEMA consistency FROM PUBLIC

-- name: create_role --
CREATE ROLE {role} NOLOGIN

-- name: set_local_role --
SET LOCAL ROLE {role}

-- name: applied_migrations --
SELECT migration_hash, migration_id
  FROM consistency._yoyo_migration
 ORDER BY applied_at_utc

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

-- name: definitions_fingerprint --
-- What the repeatable definitions leave in the catalog: every function of
-- schema consistency (body, settings, rights) and every trigger calling one.
-- A fingerprint that differs from the one recorded after the last apply
-- means somebody changed, dropped or disabled one by hand.
-- The rights on calls are part of it: privileges.sql leaves the counter
-- column writable by its owner alone and grants UPDATE column by column, so
-- a new grant or a column added since needs privileges.sql again.
SELECT md5(coalesce(string_agg(d, E'\n' ORDER BY d), ''))
  FROM (SELECT pg_get_functiondef(p.oid) || coalesce(p.proacl::text, '') AS d
          FROM pg_proc p
         WHERE p.pronamespace = 'consistency'::regnamespace AND p.prokind IN ('f', 'p')
        UNION ALL
        SELECT pg_get_triggerdef(t.oid) || t.tgenabled::text
          FROM pg_trigger t
          JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND p.pronamespace = 'consistency'::regnamespace
        UNION ALL
        SELECT 'calls ' || coalesce(c.relacl::text, '') FROM pg_class c
         WHERE c.oid = to_regclass('public.calls')
        UNION ALL
        SELECT 'calls.' || a.attname || ' ' || coalesce(a.attacl::text, '')
          FROM pg_attribute a
         WHERE a.attrelid = to_regclass('public.calls') AND a.attnum > 0
           AND NOT a.attisdropped) s

-- name: migrations_table_exists --
-- Whether migrate ever ran here (also the CLI's test that the guard is installed).
SELECT pg_catalog.to_regclass('consistency._yoyo_migration') IS NOT NULL

-- name: guard_role_uses --
-- Per guard role: the other databases where it holds something, and the
-- roles that are members of it (both cluster-wide facts: migrate and
-- uninstall print them).
SELECT r.rolname::text,
       coalesce((SELECT pg_catalog.array_agg(DISTINCT db.datname::text ORDER BY db.datname::text)
                   FROM pg_catalog.pg_shdepend s
                   JOIN pg_catalog.pg_database db ON db.oid = s.dbid
                  WHERE s.refclassid = 'pg_catalog.pg_authid'::pg_catalog.regclass
                    AND s.refobjid = r.oid AND db.datname <> current_database()), '{}'),
       coalesce((SELECT pg_catalog.array_agg(m.rolname::text ORDER BY m.rolname::text)
                   FROM pg_catalog.pg_auth_members am
                   JOIN pg_catalog.pg_roles m ON m.oid = am.member
                  WHERE am.roleid = r.oid), '{}')
  FROM pg_catalog.pg_roles r
 WHERE r.rolname = ANY (%(roles)s)
 ORDER BY 1
