-- G1, G3: appointments keep their calls' link state. Statement-level AFTER
-- triggers with transition tables: one set-based UPDATE of calls per
-- statement, whatever the number of rows. PostgreSQL refuses transition
-- tables on UPDATE OF col triggers, so the UPDATE trigger fires for every
-- UPDATE and filters by netting deltas (see consistency._link_sync_update).
DROP TRIGGER IF EXISTS appointments_link_sync_insert ON public.appointments;
CREATE TRIGGER appointments_link_sync_insert
    AFTER INSERT ON public.appointments
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._link_sync_insert();

DROP TRIGGER IF EXISTS appointments_link_sync_update ON public.appointments;
CREATE TRIGGER appointments_link_sync_update
    AFTER UPDATE ON public.appointments
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._link_sync_update();

DROP TRIGGER IF EXISTS appointments_link_sync_delete ON public.appointments;
CREATE TRIGGER appointments_link_sync_delete
    AFTER DELETE ON public.appointments
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._link_sync_delete();

DROP TRIGGER IF EXISTS appointments_link_sync_truncate ON public.appointments;
CREATE TRIGGER appointments_link_sync_truncate
    AFTER TRUNCATE ON public.appointments
    FOR EACH STATEMENT EXECUTE FUNCTION consistency._link_sync_truncate();
