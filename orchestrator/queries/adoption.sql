-- Named queries of adoption: rendering the guard's SQL for an application
-- (orchestrator.render) and comparing its tables with the profile
-- (orchestrator.adoption). All read the catalog only.

-- name: render_time_columns --
-- Every timestamp column of calls and appointments: without time zone?
-- nullable?
SELECT c.relname::text, a.attname::text, a.atttypid = 'pg_catalog.timestamp'::pg_catalog.regtype,
       NOT a.attnotnull
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
 WHERE c.oid IN (pg_catalog.to_regclass('public.calls'), pg_catalog.to_regclass('public.appointments'))
   AND a.attnum > 0 AND NOT a.attisdropped
   AND a.atttypid IN ('pg_catalog.timestamp'::pg_catalog.regtype,
                      'pg_catalog.timestamptz'::pg_catalog.regtype)

-- name: render_call_id_fk --
-- Does appointments.call_id reference calls (so no appointment can name a
-- call that does not exist)? True when the tables do not exist yet: the
-- guard creates them with that foreign key.
SELECT pg_catalog.to_regclass('public.appointments') IS NULL
    OR EXISTS (SELECT FROM pg_catalog.pg_constraint k
                JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
               WHERE k.conrelid = pg_catalog.to_regclass('public.appointments') AND k.contype = 'f'
                 AND k.confrelid = pg_catalog.to_regclass('public.calls')
                 AND pg_catalog.array_length(k.conkey, 1) = 1 AND a.attname = 'call_id')

-- name: render_quote --
-- Profile values quoted by the server's own rules (quote_ident, quote_literal).
SELECT 'i', v, pg_catalog.quote_ident(v) FROM pg_catalog.unnest(%(identifiers)s::text[]) v
UNION ALL
SELECT 'l', v, pg_catalog.quote_literal(v) FROM pg_catalog.unnest(%(literals)s::text[]) v

-- name: adoption_tables --
SELECT pg_catalog.to_regclass('public.calls') IS NOT NULL,
       pg_catalog.to_regclass('public.appointments') IS NOT NULL

-- name: adoption_columns --
-- Every column of calls and appointments: its type (a domain by its base
-- type's category), nullability and length limit.
SELECT c.relname::text, a.attname::text, pg_catalog.format_type(a.atttypid, a.atttypmod),
       coalesce(b.typcategory, t.typcategory)::text, coalesce(b.oid, t.oid)::regtype::text,
       a.attnotnull,
       CASE WHEN coalesce(b.oid, t.oid) IN ('pg_catalog.varchar'::pg_catalog.regtype,
                                            'pg_catalog.bpchar'::pg_catalog.regtype)
                 AND coalesce(nullif(t.typtypmod, -1), a.atttypmod) > 4
            THEN coalesce(nullif(t.typtypmod, -1), a.atttypmod) - 4 END
  FROM pg_catalog.pg_attribute a
  JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
  JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
  LEFT JOIN pg_catalog.pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
 WHERE c.oid IN (pg_catalog.to_regclass('public.calls'), pg_catalog.to_regclass('public.appointments'))
   AND a.attnum > 0 AND NOT a.attisdropped

-- name: adoption_checks --
-- CHECK constraints of calls and appointments on exactly one column, as
-- PostgreSQL prints their expression (evaluated for the guard's values).
SELECT c.relname::text, a.attname::text, k.conname::text,
       pg_catalog.pg_get_expr(k.conbin, k.conrelid)
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_class c ON c.oid = k.conrelid
  JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
 WHERE c.oid IN (pg_catalog.to_regclass('public.calls'), pg_catalog.to_regclass('public.appointments'))
   AND k.contype = 'c' AND pg_catalog.array_length(k.conkey, 1) = 1

-- name: adoption_link_fks --
-- Columns of calls that reference appointments (foreign keys of one column):
-- other ways a call may point at its appointment.
SELECT a.attname::text, k.conname::text
  FROM pg_catalog.pg_constraint k
  JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]
 WHERE k.conrelid = pg_catalog.to_regclass('public.calls') AND k.contype = 'f'
   AND k.confrelid = pg_catalog.to_regclass('public.appointments')
   AND pg_catalog.array_length(k.conkey, 1) = 1
 ORDER BY 1

-- name: adoption_time_zone --
SELECT pg_catalog.timezone(%(zone)s, pg_catalog.now()) IS NOT NULL

-- name: adoption_values_in_use --
-- At most 20 values a column holds, to suggest one in a refusal.
SELECT string_agg(pg_catalog.quote_literal(v), ', ' ORDER BY v)
  FROM (SELECT DISTINCT {column}::text AS v FROM {table} WHERE {column} IS NOT NULL LIMIT 20) x

-- name: stored_profile --
SELECT name, profile, source_file, applied_at
  FROM consistency.adoption_profile

-- name: stored_profile_exists --
SELECT pg_catalog.to_regclass('consistency.adoption_profile') IS NOT NULL

-- name: store_profile --
INSERT INTO consistency.adoption_profile (name, profile, source, source_file, applied_at)
VALUES (%(name)s, %(profile)s::jsonb, %(source)s, %(source_file)s, clock_timestamp())
ON CONFLICT (singleton) DO UPDATE
   SET name = EXCLUDED.name, profile = EXCLUDED.profile, source = EXCLUDED.source,
       source_file = EXCLUDED.source_file, applied_at = EXCLUDED.applied_at

-- name: adopt --
SELECT rule, column_name, to_value, from_values, rows
  FROM consistency._adopt(%(profile)s)

-- name: adoption_foreign_triggers --
-- Triggers of calls and appointments that carry a name of the guard's own
-- (sql/triggers drops and recreates those) but call no function of the guard.
SELECT c.relname::text, t.tgname::text
  FROM pg_catalog.pg_trigger t
  JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
  JOIN pg_catalog.pg_proc p ON p.oid = t.tgfoid
 WHERE c.oid IN (pg_catalog.to_regclass('public.calls'), pg_catalog.to_regclass('public.appointments'))
   AND NOT t.tgisinternal AND t.tgname = ANY (%(names)s::text[])
   AND p.pronamespace <> COALESCE(pg_catalog.to_regnamespace('consistency'), 0)
 ORDER BY 1, 2
