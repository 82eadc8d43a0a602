-- plpgsql_check over every PL/pgSQL function of the guard. Trigger functions
-- are checked against each table they are attached to, with the transition
-- table names of that trigger.
WITH fns AS (
    SELECT p.oid, p.prorettype = 'pg_catalog.trigger'::regtype AS is_trigger
      FROM pg_proc p
      JOIN pg_namespace n ON n.oid = p.pronamespace
      JOIN pg_language l ON l.oid = p.prolang
     WHERE n.nspname = 'consistency' AND l.lanname = 'plpgsql'
), targets AS (
    SELECT f.oid, 0::oid AS relid, NULL::name AS newtable, NULL::name AS oldtable
      FROM fns f WHERE NOT f.is_trigger
    UNION ALL
    SELECT f.oid, t.tgrelid, t.tgnewtable, t.tgoldtable
      FROM fns f JOIN pg_trigger t ON t.tgfoid = f.oid
     WHERE f.is_trigger
)
SELECT t.oid::regprocedure::text, coalesce(r.level, 'ok'),
       coalesce(r.message || coalesce(' (line ' || r.lineno || ')', ''), '')
  FROM targets t
  LEFT JOIN LATERAL testing.plpgsql_check_function_tb(
           t.oid, t.relid, newtable => t.newtable, oldtable => t.oldtable) r ON true
