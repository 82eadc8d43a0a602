-- Roles are cluster-wide; several databases of one cluster may each install
-- the guard, so creation tolerates a role that already exists (also when
-- another database's migration creates it concurrently).
DO $roles$
DECLARE
    r text;
BEGIN
    FOREACH r IN ARRAY ARRAY['consistency_app', 'consistency_reviewer', 'consistency_monitor'] LOOP
        IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
            BEGIN
                EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN
                NULL;
            END;
        END IF;
    END LOOP;
END
$roles$;
