-- Everything about the guard's schemas that an install must get right,
-- as a set of lines (column order is deliberately ignored: an application
-- that already had calls gets the guard's columns appended). Sorted, the
-- lines of a fresh install are tests/schema.snapshot: each line starts with
-- what it describes, so a change reads as a diff of that object's line. No
-- OIDs or times; role names are those of the test cluster (owner postgres).
SELECT 'column ' || c.oid::regclass || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
       || CASE WHEN a.attnotnull THEN ' not null' ELSE '' END
       || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
       || coalesce(' acl ' || a.attacl::text, '')
  FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace
  JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
  LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
 WHERE n.nspname IN ('consistency', 'public') AND c.relkind IN ('r', 'v', 'm', 'p')
UNION ALL
SELECT 'constraint ' || conrelid::regclass || ' ' || conname || ' ' || pg_get_constraintdef(oid)
  FROM pg_constraint
 WHERE connamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('consistency', 'public'))
UNION ALL
SELECT 'index ' || pg_get_indexdef(i.indexrelid)
  FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid
 WHERE c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('consistency', 'public'))
UNION ALL
SELECT 'function ' || p.oid::regprocedure || ' body ' || md5(pg_get_functiondef(p.oid))
       || ' acl ' || coalesce(p.proacl::text, 'default')
  FROM pg_proc p
 WHERE p.pronamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('consistency', 'public'))
UNION ALL
SELECT 'trigger ' || pg_get_triggerdef(t.oid)
  FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
 WHERE NOT t.tgisinternal
   AND c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('consistency', 'public'))
UNION ALL
SELECT 'acl ' || c.oid::regclass || ' ' || coalesce(c.relacl::text, 'default')
  FROM pg_class c
 WHERE c.relnamespace IN (SELECT oid FROM pg_namespace WHERE nspname IN ('consistency', 'public'))
   AND c.relkind IN ('r', 'v', 'm', 'S')
UNION ALL
SELECT 'schema ' || nspname || ' ' || coalesce(nspacl::text, 'default')
  FROM pg_namespace WHERE nspname = 'consistency'
UNION ALL
SELECT 'setting ' || key || ' = ' || value::text FROM consistency.settings
