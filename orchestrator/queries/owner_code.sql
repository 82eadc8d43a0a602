-- Named queries of orchestrator/owner_code.py: what a session that is not the
-- guard's owner checks, in the catalog alone, before it reads or calls
-- anything the owner controls. They run with search_path pinned to
-- pg_catalog (owner_code_pin runs first whenever it may have changed).

-- name: owner_code_session --
-- Who this session is, who owns the guard, and what it may do about it.
SELECT session_user::text,
       current_user::text,
       (SELECT pg_catalog.pg_get_userbyid(n.nspowner)::text FROM pg_catalog.pg_namespace n
         WHERE n.nspname = 'consistency'::name),
       (SELECT r.rolsuper FROM pg_catalog.pg_roles r
         WHERE r.rolname = session_user),
       pg_catalog.current_setting('restrict_nonsystem_relation_kind'::text, true) IS NOT NULL

-- name: owner_code_may_become --
SELECT pg_catalog.pg_has_role(session_user, %(role)s::text::name, 'MEMBER'::text)

-- name: owner_code_set_role --
SET ROLE {role}

-- name: owner_code_guard_relations --
-- Every relation of the guard's schema (indexes go with their tables).
SELECT c.oid::pg_catalog.regclass::text
  FROM pg_catalog.pg_class c
 WHERE c.relnamespace = pg_catalog.to_regnamespace('consistency'::text)
   AND c.relkind <> 'i'::"char"
 ORDER BY 1

-- name: owner_code_pin --
-- After anything that ran the owner's code: a SECURITY DEFINER function may
-- still set a session setting that outlives it (set_config(..., false)), such
-- as a search_path that puts a look-alike of a built-in before pg_catalog.
SELECT pg_catalog.set_config('search_path'::text, %(search_path)s::text, false),
       CASE WHEN %(restrict_views)s::boolean
            THEN pg_catalog.set_config('restrict_nonsystem_relation_kind'::text, 'view'::text,
                                       false) END

-- name: owner_code --
-- One line for each piece of code not built into PostgreSQL that the session
-- would run with its own rights (nothing: the session may go on):
--   relations it reads: anything but a plain table, sequence or index; row
--     security, rules (a view is one), child tables, columns of a type of
--     the owner's; expressions the planner evaluates while it plans a read
--     (index expressions and predicates, statistics, CHECK constraints);
--   relations it writes (%(writes)s): also defaults and generated columns,
--     domain constraints of their columns, and their triggers;
--   every deferrable trigger of the database (deferred, it fires at COMMIT,
--     outside whatever SECURITY DEFINER function queued it);
--   routines it calls (%(routines)s, "schema.name": every overload);
--   with %(known)s (the names of the guard's routines), routines and
--     operators in schema consistency that the guard does not define, and
--     elsewhere routines, operators and types of other roles than
--     superusers named like built-ins (look-alikes of what its SQL calls).
-- A SECURITY DEFINER routine is safe: PostgreSQL refuses SET ROLE and SET
-- SESSION AUTHORIZATION inside it, so its code keeps its owner's rights. So
-- is a built-in routine without side effects (not VOLATILE, or one of a few
-- volatile ones that only make values), and a SQL-standard body (BEGIN
-- ATOMIC / RETURN) that reads no table and calls only safe routines.
WITH RECURSIVE
named (name, written) AS (
    SELECT x, false FROM pg_catalog.unnest(%(relations)s::text[]) AS x
    UNION ALL
    SELECT x, true FROM pg_catalog.unnest(%(writes)s::text[]) AS x
),
rel (oid, written) AS (
    SELECT c.oid, pg_catalog.bool_or(x.written)
      FROM named x
      JOIN pg_catalog.pg_class c ON c.oid = pg_catalog.to_regclass(x.name)
     GROUP BY c.oid
),
relation_hazard (line) AS (
    SELECT c.oid::pg_catalog.regclass::text || CASE c.relkind
               WHEN 'v' THEN ' is a view' WHEN 'm' THEN ' is a materialized view'
               WHEN 'f' THEN ' is a foreign table' WHEN 'p' THEN ' is a partitioned table'
               ELSE ' is not a plain table' END
      FROM rel r JOIN pg_catalog.pg_class c ON c.oid = r.oid
     WHERE c.relkind::text <> ALL ('{r,S,i}'::text[])
    UNION ALL
    SELECT c.oid::pg_catalog.regclass::text || ' has row security'
      FROM rel r JOIN pg_catalog.pg_class c ON c.oid = r.oid
     WHERE c.relrowsecurity
    UNION ALL
    SELECT c.oid::pg_catalog.regclass::text || ' has rules'
      FROM rel r JOIN pg_catalog.pg_class c ON c.oid = r.oid
     WHERE c.relhasrules AND c.relkind = 'r'::"char"
    UNION ALL
    SELECT c.oid::pg_catalog.regclass::text || ' has child table '
           || i.inhrelid::pg_catalog.regclass::text
      FROM rel r JOIN pg_catalog.pg_class c ON c.oid = r.oid
      JOIN pg_catalog.pg_inherits i ON i.inhparent = c.oid
    UNION ALL
    -- Enums hold no code; a domain's checks are looked at below; any other
    -- type of the owner's (a composite, a range) is refused.
    SELECT 'column ' || r.oid::pg_catalog.regclass::text || '.'
           || pg_catalog.quote_ident(a.attname::text) || ' is of type '
           || pg_catalog.format_type(a.atttypid, a.atttypmod)
      FROM rel r
      JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
      JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
      LEFT JOIN pg_catalog.pg_type e ON e.oid = t.typelem
      LEFT JOIN pg_catalog.pg_type b ON b.oid = t.typbasetype
     WHERE a.attnum > 0::int2 AND NOT a.attisdropped
       AND t.oid >= 16384::oid
       AND t.typtype <> 'e'::"char"
       AND NOT (t.typtype = 'd'::"char"
                AND (b.oid < 16384::oid
                     OR b.typtype = 'e'::"char"))
       AND NOT (t.typcategory = 'A'::"char"
                AND (e.oid < 16384::oid
                     OR e.typtype = 'e'::"char"))
),
trg (oid, relid, name, fn, qual) AS (
    SELECT t.oid, t.tgrelid, t.tgname, t.tgfoid, t.tgqual::text
      FROM pg_catalog.pg_trigger t
     WHERE NOT t.tgisinternal
       AND (t.tgdeferrable OR t.tgrelid IN (SELECT r.oid FROM rel r WHERE r.written))
),
expr (what, tree) AS (
    SELECT 'index ' || i.indexrelid::pg_catalog.regclass::text, e.tree
      FROM rel r
      JOIN pg_catalog.pg_index i ON i.indrelid = r.oid
     CROSS JOIN LATERAL (VALUES (i.indexprs::text), (i.indpred::text)) AS e (tree)
     WHERE e.tree IS NOT NULL
    UNION ALL
    SELECT 'statistics object ' || pg_catalog.quote_ident(s.stxname::text), s.stxexprs::text
      FROM rel r
      JOIN pg_catalog.pg_statistic_ext s ON s.stxrelid = r.oid
     WHERE s.stxexprs IS NOT NULL
    UNION ALL
    SELECT 'constraint ' || pg_catalog.quote_ident(k.conname::text) || ' on '
           || r.oid::pg_catalog.regclass::text, k.conbin::text
      FROM rel r
      JOIN pg_catalog.pg_constraint k ON k.conrelid = r.oid
     WHERE k.conbin IS NOT NULL
    UNION ALL
    SELECT 'the default of ' || r.oid::pg_catalog.regclass::text || '.'
           || pg_catalog.quote_ident(a.attname::text), d.adbin::text
      FROM rel r
      JOIN pg_catalog.pg_attrdef d ON d.adrelid = r.oid
      JOIN pg_catalog.pg_attribute a ON a.attrelid = d.adrelid
                                    AND a.attnum = d.adnum
     WHERE r.written
    UNION ALL
    SELECT 'the domain of ' || r.oid::pg_catalog.regclass::text || '.'
           || pg_catalog.quote_ident(a.attname::text), k.conbin::text
      FROM rel r
      JOIN pg_catalog.pg_attribute a ON a.attrelid = r.oid
      JOIN pg_catalog.pg_constraint k ON k.contypid = a.atttypid
     WHERE r.written AND a.attnum > 0::int2 AND k.conbin IS NOT NULL
    UNION ALL
    SELECT 'the condition of trigger ' || pg_catalog.quote_ident(t.name::text) || ' on '
           || t.relid::pg_catalog.regclass::text, t.qual
      FROM trg t WHERE t.qual IS NOT NULL
),
root (what, fn) AS (
    SELECT e.what, m[1]::oid
      FROM expr e
     CROSS JOIN LATERAL pg_catalog.regexp_matches(
           e.tree, ':(?:funcid|aggfnoid|winfnoid) (\d+)'::text, 'g'::text) AS m
    UNION ALL
    SELECT e.what, o.oprcode::oid
      FROM expr e
     CROSS JOIN LATERAL pg_catalog.regexp_matches(e.tree, ':opno (\d+)'::text, 'g'::text) AS m
      JOIN pg_catalog.pg_operator o ON o.oid = m[1]::oid
    UNION ALL
    SELECT e.what, o.oprcode::oid
      FROM expr e
     CROSS JOIN LATERAL pg_catalog.regexp_matches(e.tree, ':opnos \(o ([\d ]+)\)'::text,
                                                  'g'::text) AS m
     CROSS JOIN LATERAL pg_catalog.string_to_array(m[1], ' '::text) AS s (opnos)
     CROSS JOIN LATERAL pg_catalog.unnest(s.opnos) AS n (opno)
      JOIN pg_catalog.pg_operator o ON o.oid = n.opno::oid
    UNION ALL
    SELECT CASE WHEN t.relid IN (SELECT r.oid FROM rel r WHERE r.written)
                THEN 'trigger ' ELSE 'deferrable trigger ' END
           || pg_catalog.quote_ident(t.name::text) || ' on '
           || t.relid::pg_catalog.regclass::text, t.fn
      FROM trg t
    UNION ALL
    SELECT 'the call of ' || x, p.oid
      FROM pg_catalog.unnest(%(routines)s::text[]) AS x
      JOIN pg_catalog.pg_proc p
        ON p.pronamespace =
               pg_catalog.to_regnamespace(pg_catalog.split_part(x, '.'::text, 1))
       AND p.proname = pg_catalog.split_part(x, '.'::text, 2)::name
),
-- Routines each root runs, through SQL-standard bodies that are not
-- SECURITY DEFINER (what a safe routine calls in turn is its own business).
reach (what, fn) AS (
    SELECT what, fn FROM root
    UNION
    SELECT r.what, c.fn
      FROM reach r
      JOIN pg_catalog.pg_proc p ON p.oid = r.fn
     CROSS JOIN LATERAL (
            SELECT m[1]::oid FROM pg_catalog.regexp_matches(
                p.prosqlbody::text, ':(?:funcid|aggfnoid|winfnoid) (\d+)'::text, 'g'::text) AS m
            UNION ALL
            SELECT o.oprcode::oid FROM pg_catalog.regexp_matches(
                p.prosqlbody::text, ':opno (\d+)'::text, 'g'::text) AS m
              JOIN pg_catalog.pg_operator o ON o.oid = m[1]::oid
           ) AS c (fn)
     WHERE p.prosqlbody IS NOT NULL AND NOT p.prosecdef
       AND p.oid >= 16384::oid
),
routine_hazard (line) AS (
    SELECT DISTINCT r.what || ' runs ' || p.oid::pg_catalog.regprocedure::text
           || CASE WHEN p.oid < 16384::oid
                   THEN ' (a built-in function with side effects)'
                   WHEN p.prosqlbody IS NOT NULL THEN ' (its body reads a table)'
                   ELSE ' (not SECURITY DEFINER)' END
      FROM reach r
      JOIN pg_catalog.pg_proc p ON p.oid = r.fn
     WHERE NOT p.prosecdef
       AND CASE WHEN p.oid < 16384::oid THEN
                    (p.provolatile = 'v'::"char"
                     AND p.proname::text <> ALL ('{nextval,currval,clock_timestamp,timeofday,random,gen_random_uuid,suppress_redundant_updates_trigger,tsvector_update_trigger,tsvector_update_trigger_column}'::text[])
                     -- The statistics collector's counters: read only.
                     AND p.proname::text NOT LIKE 'pg\_stat\_get\_%%'::text)
                    -- Stable, but they read whatever relation they are given.
                    OR p.proname::text LIKE '%%\_to\_xml%%'::text
                WHEN p.prosqlbody IS NOT NULL THEN
                    EXISTS (SELECT FROM pg_catalog.regexp_matches(
                                p.prosqlbody::text, ':relid (\d+)'::text, 'g'::text) AS m
                             WHERE m[1]::oid >= 16384::oid)
                ELSE true END
),
unknown_hazard (line) AS (
    SELECT 'routine ' || p.oid::pg_catalog.regprocedure::text
           || ' is not one of the guard''s'
      FROM pg_catalog.pg_proc p
     WHERE %(known)s::text[] IS NOT NULL
       AND p.pronamespace = pg_catalog.to_regnamespace('consistency'::text)
       AND p.proname::text <> ALL (%(known)s::text[])
    UNION ALL
    SELECT 'operator ' || o.oid::pg_catalog.regoperator::text || ' is not one of the guard''s'
      FROM pg_catalog.pg_operator o
     WHERE %(known)s::text[] IS NOT NULL
       AND o.oprnamespace = pg_catalog.to_regnamespace('consistency'::text)
    UNION ALL
    -- Look-alikes of built-ins elsewhere: with search_path changed by code
    -- that ran before (a SECURITY DEFINER function may do that), they would
    -- stand in for what the guard's SQL names without a schema.
    SELECT x.kind || ' ' || x.name || ' has the name of a built-in'
      FROM (SELECT 'routine', p.oid::pg_catalog.regprocedure::text, p.pronamespace, p.proowner,
                   EXISTS (SELECT FROM pg_catalog.pg_proc b
                            WHERE b.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
                              AND b.proname = p.proname)
              FROM pg_catalog.pg_proc p
            UNION ALL
            SELECT 'operator', o.oid::pg_catalog.regoperator::text, o.oprnamespace, o.oprowner,
                   EXISTS (SELECT FROM pg_catalog.pg_operator b
                            WHERE b.oprnamespace = 'pg_catalog'::pg_catalog.regnamespace
                              AND b.oprname = o.oprname)
              FROM pg_catalog.pg_operator o
            UNION ALL
            SELECT 'type', t.oid::pg_catalog.regtype::text, t.typnamespace, t.typowner,
                   EXISTS (SELECT FROM pg_catalog.pg_type b
                            WHERE b.typnamespace = 'pg_catalog'::pg_catalog.regnamespace
                              AND b.typname = t.typname)
              FROM pg_catalog.pg_type t) AS x (kind, name, namespace, owner, shadows)
      JOIN pg_catalog.pg_roles r ON r.oid = x.owner
     WHERE %(known)s::text[] IS NOT NULL AND x.shadows AND NOT r.rolsuper
       AND x.namespace <> ALL (ARRAY[coalesce(pg_catalog.to_regnamespace('consistency'::text)::oid,
                                              0::oid),
                                     'pg_catalog'::pg_catalog.regnamespace,
                                     'information_schema'::pg_catalog.regnamespace]::oid[])
)
SELECT line FROM relation_hazard
UNION ALL
SELECT line FROM routine_hazard
UNION ALL
SELECT line FROM unknown_hazard
 ORDER BY 1
 LIMIT 10

-- name: owner_code_abort --
-- Aborts the transaction in the server, so that no COMMIT can follow: it
-- would fire the triggers owner_code found.
DO $$
BEGIN
    RAISE EXCEPTION 'a deferrable trigger would run code of the guard''s owner at COMMIT'
        USING ERRCODE = 'insufficient_privilege';
END
$$
