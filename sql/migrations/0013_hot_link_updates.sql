-- The write path of a booking flow: a change of a call's link state stays a
-- HOT update.
--
-- Every first appointment and every cancellation writes appointment_made and
-- appointment_link_status. An index naming either column, as a key or in its
-- predicate, makes each of those UPDATEs non-HOT: a new entry in every index
-- of calls. sql/indexes.sql no longer asks for such an index; those that
-- migrate created before (recorded in consistency.installed_objects) go
-- here. An application's own index is never touched.
DO $migration$
DECLARE
    v_index record;
BEGIN
    FOR v_index IN
        SELECT o.name, c.oid
          FROM consistency.installed_objects o
          JOIN pg_catalog.pg_class c
            ON c.relname = o.name AND c.relnamespace = 'public'::regnamespace AND c.relkind = 'i'
          JOIN pg_catalog.pg_index i
            ON i.indexrelid = c.oid AND i.indrelid = 'public.calls'::regclass
         WHERE o.kind = 'index' AND o.table_name = 'calls'
           AND (EXISTS (SELECT FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
                           AND a.attname IN ('appointment_made', 'appointment_link_status'))
                OR pg_catalog.pg_get_expr(i.indpred, i.indrelid)
                   ~ '\m(appointment_made|appointment_link_status)\M')
    LOOP
        EXECUTE format('DROP INDEX public.%I', v_index.name);
        DELETE FROM consistency.installed_objects
         WHERE kind = 'index' AND table_name = 'calls' AND name = v_index.name;
    END LOOP;
END
$migration$;

-- _insert_alerts, the single writer of alerts, returns its ids as an array
-- and reads the throttle window itself (sql/functions/alerts.sql); its
-- earlier form, a set-returning function taking the window, is replaced.
DROP FUNCTION IF EXISTS consistency._insert_alerts(text, text, text, bigint[], text[], jsonb[],
                                                   boolean, timestamptz, interval);
