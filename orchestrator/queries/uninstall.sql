-- Named queries of `consistency uninstall` (orchestrator/uninstall.py).

-- name: uninstall_facts --
-- Whether the guard is here, who owns it, and whether this session may
-- drop it: the owner's privileges (by membership) or a superuser's.
SELECT n.oid IS NOT NULL AS installed,
       pg_catalog.pg_get_userbyid(n.nspowner) AS owner,
       current_user AS session_role,
       n.oid IS NOT NULL
           AND ((SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = current_user)
                OR pg_catalog.pg_has_role(current_user, n.nspowner, 'USAGE')) AS may_drop
  FROM (SELECT 1) AS one
  LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = 'consistency'

-- name: uninstall_triggers --
-- The guard's triggers on tables outside its schema: those whose function
-- is one of its own.
SELECT n.nspname::text, c.relname::text, t.tgname::text
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
 WHERE NOT t.tgisinternal
   AND p.pronamespace = 'consistency'::pg_catalog.regnamespace
   AND c.relnamespace <> 'consistency'::pg_catalog.regnamespace
 ORDER BY 1, 2, 3

-- name: uninstall_columns --
-- The columns to drop, in table and column order: the guard's bookkeeping
-- counters of calls, and every column migrate added to a table the
-- application already had (consistency.installed_objects).
SELECT c.relname::text, a.attname::text
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
 WHERE c.relnamespace = 'public'::pg_catalog.regnamespace
   AND c.relname IN ('calls', 'appointments')
   AND a.attnum > 0 AND NOT a.attisdropped
   AND ((c.relname = 'calls' AND a.attname = ANY (%(columns)s))
        OR EXISTS (SELECT FROM consistency.installed_objects o
                    WHERE o.kind = 'column' AND o.table_name = c.relname
                      AND o.name = a.attname))
 ORDER BY c.relname, a.attnum

-- name: uninstall_indexes --
-- The indexes to drop: every index migrate created on a table the
-- application already had; on a table migrate created, only the monitor's
-- (the others may serve the application by now). Only indexes of calls and
-- appointments, of the table the record names: the records are the owner's
-- to write, the drop may be a superuser's.
SELECT i.relname::text
  FROM consistency.installed_objects o
  JOIN pg_catalog.pg_class i
    ON i.relname = o.name AND i.relkind = 'i'
   AND i.relnamespace = 'public'::pg_catalog.regnamespace
  JOIN pg_catalog.pg_index x ON x.indexrelid = i.oid
  JOIN pg_catalog.pg_class t ON t.oid = x.indrelid
 WHERE o.kind = 'index'
   AND t.relnamespace = 'public'::pg_catalog.regnamespace
   AND t.relname IN ('calls', 'appointments') AND t.relname = o.table_name
   AND (i.relname = ANY (%(indexes)s)
        OR NOT EXISTS (SELECT FROM consistency.installed_objects t
                        WHERE t.kind = 'table' AND t.table_name = o.table_name))
 ORDER BY 1

-- name: uninstall_grants --
-- Rights the guard's roles hold on objects outside its schema (tables,
-- sequences; table-wide or on columns): what privileges.sql granted them.
SELECT n.nspname::text, c.relname::text,
       CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind,
       r.rolname::text AS role_name
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_catalog.pg_roles r ON r.rolname = ANY (%(roles)s)
 WHERE c.relnamespace NOT IN ('consistency'::pg_catalog.regnamespace,
                              'pg_catalog'::pg_catalog.regnamespace,
                              'information_schema'::pg_catalog.regnamespace)
   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
   AND (EXISTS (SELECT FROM pg_catalog.aclexplode(c.relacl) x WHERE x.grantee = r.oid)
        OR EXISTS (SELECT FROM pg_catalog.pg_attribute a
                    CROSS JOIN LATERAL pg_catalog.aclexplode(a.attacl) x
                    WHERE a.attrelid = c.oid AND x.grantee = r.oid))
 ORDER BY 1, 2, 4

-- name: uninstall_dependents --
-- Objects outside schema consistency that need an object in it (a view on
-- consistency.alerts, a function whose body calls consistency.now(), a
-- column default): dropping the schema would take them along, so uninstall
-- refuses and names them. Runs after the guard's own triggers are dropped.
-- An object's schema is its own, or its table's (a rule, a default, a
-- trigger, a policy); an object of any other kind counts as outside.
WITH guard AS (
    SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass AS classid, p.oid AS objid
      FROM pg_catalog.pg_proc p WHERE p.pronamespace = 'consistency'::pg_catalog.regnamespace
    UNION ALL
    SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid
      FROM pg_catalog.pg_class c WHERE c.relnamespace = 'consistency'::pg_catalog.regnamespace
    UNION ALL
    SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid
      FROM pg_catalog.pg_type t WHERE t.typnamespace = 'consistency'::pg_catalog.regnamespace
), dependents AS (
    SELECT d.*,
           CASE d.classid
               WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN
                   (SELECT c.relnamespace FROM pg_catalog.pg_class c WHERE c.oid = d.objid)
               WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN
                   (SELECT p.pronamespace FROM pg_catalog.pg_proc p WHERE p.oid = d.objid)
               WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN
                   (SELECT t.typnamespace FROM pg_catalog.pg_type t WHERE t.oid = d.objid)
               WHEN 'pg_catalog.pg_constraint'::pg_catalog.regclass THEN
                   (SELECT k.connamespace FROM pg_catalog.pg_constraint k WHERE k.oid = d.objid)
               WHEN 'pg_catalog.pg_rewrite'::pg_catalog.regclass THEN
                   (SELECT c.relnamespace FROM pg_catalog.pg_rewrite r
                      JOIN pg_catalog.pg_class c ON c.oid = r.ev_class WHERE r.oid = d.objid)
               WHEN 'pg_catalog.pg_attrdef'::pg_catalog.regclass THEN
                   (SELECT c.relnamespace FROM pg_catalog.pg_attrdef a
                      JOIN pg_catalog.pg_class c ON c.oid = a.adrelid WHERE a.oid = d.objid)
               WHEN 'pg_catalog.pg_trigger'::pg_catalog.regclass THEN
                   (SELECT c.relnamespace FROM pg_catalog.pg_trigger t
                      JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid WHERE t.oid = d.objid)
               WHEN 'pg_catalog.pg_policy'::pg_catalog.regclass THEN
                   (SELECT c.relnamespace FROM pg_catalog.pg_policy p
                      JOIN pg_catalog.pg_class c ON c.oid = p.polrelid WHERE p.oid = d.objid)
           END AS namespace
      FROM pg_catalog.pg_depend d
      JOIN guard g ON g.classid = d.refclassid AND g.objid = d.refobjid
     WHERE d.deptype IN ('n', 'a')
)
SELECT DISTINCT pg_catalog.pg_describe_object(x.classid, x.objid, x.objsubid) AS dependent,
       pg_catalog.pg_describe_object(x.refclassid, x.refobjid, 0) AS needs
  FROM dependents x
 WHERE x.namespace IS DISTINCT FROM 'consistency'::pg_catalog.regnamespace
 ORDER BY 1, 2

-- name: uninstall_guard_rows --
-- What the guard's own tables hold: it goes with the schema.
SELECT (SELECT count(*) FROM consistency.alerts) AS alerts,
       (SELECT count(*) FROM consistency.audit_log) AS audit_rows,
       (SELECT count(*) FROM consistency.manual_review_queue
         WHERE status IN ('pending', 'in_progress')) AS open_review_items,
       (SELECT count(*) FROM consistency.check_runs) AS check_runs

-- name: uninstall_cron_jobs --
-- The monitor's pg_cron jobs of this database (`consistency schedule install`).
SELECT j.jobname::text
  FROM cron.job j
 WHERE j.jobname = ANY (%(jobs)s) AND j.database = current_database()
 ORDER BY 1

-- name: uninstall_cron_present --
SELECT pg_catalog.to_regclass('cron.job') IS NOT NULL

-- name: uninstall_unschedule --
SELECT cron.unschedule(%(job)s)

-- name: uninstall_drop_trigger --
DROP TRIGGER {trigger} ON {schema}.{table}

-- name: uninstall_drop_column --
ALTER TABLE public.{table} DROP COLUMN {column}

-- name: uninstall_drop_index --
DROP INDEX IF EXISTS public.{index}

-- name: uninstall_revoke_table --
REVOKE ALL ON TABLE {schema}.{object} FROM {role}

-- name: uninstall_revoke_sequence --
REVOKE ALL ON SEQUENCE {schema}.{object} FROM {role}

-- name: uninstall_drop_schema --
-- Only the schema's own contents remain to go: every dependent outside it
-- was refused above, the triggers dropped.
DROP SCHEMA consistency CASCADE
