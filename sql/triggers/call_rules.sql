-- G2, G4-G7 on calls, and the guard of the appointment counter. BEFORE ROW
-- triggers that only adjust NEW. Their WHEN clauses are the rules themselves:
-- true only for a row that breaks one, so consistent writes (including every
-- UPDATE made by the appointment sync) never enter PL/pgSQL, and a corrected
-- row cannot fire them again (no loops, one alert of a kind per change).
DROP TRIGGER IF EXISTS calls_rules_insert ON public.calls;
CREATE TRIGGER calls_rules_insert
    BEFORE INSERT ON public.calls
    FOR EACH ROW
    WHEN (NEW.active_appointment_count IS DISTINCT FROM 0
          OR NEW.appointment_made
          OR NEW.appointment_link_status = 'linked'
          OR (NEW.session_outcome = 'appointment_booked'
              AND NEW.appointment_link_status NOT IN ('pending_creation', 'cancelled', 'creation_failed'))
          OR NEW.direction IS NULL OR NEW.direction = ''
          OR (NEW.customer_id IS NULL AND NEW.customer_link_status = 'linked')
          OR (NEW.customer_id IS NOT NULL
              AND (NEW.customer_link_status IS DISTINCT FROM 'linked'
                   OR NEW.customer_linked_at IS NULL OR NEW.customer_link_method IS NULL)))
    EXECUTE FUNCTION consistency._call_rules();

DROP TRIGGER IF EXISTS calls_rules_update ON public.calls;
CREATE TRIGGER calls_rules_update
    BEFORE UPDATE ON public.calls
    FOR EACH ROW
    WHEN (NEW.appointment_made IS DISTINCT FROM (NEW.active_appointment_count > 0)
          OR (NEW.appointment_link_status = 'linked') IS DISTINCT FROM (NEW.active_appointment_count > 0)
          OR (NEW.active_appointment_count = 0
              AND NEW.session_outcome = 'appointment_booked'
              AND NEW.appointment_link_status NOT IN ('pending_creation', 'cancelled', 'creation_failed'))
          OR (NEW.active_appointment_count > 0
              AND NEW.session_outcome NOT IN ('appointment_booked', 'appointment_rescheduled'))
          OR NEW.direction IS NULL OR NEW.direction = ''
          OR (NEW.customer_id IS NULL AND NEW.customer_link_status = 'linked')
          OR (NEW.customer_id IS NOT NULL
              AND (NEW.customer_link_status IS DISTINCT FROM 'linked'
                   OR NEW.customer_linked_at IS NULL OR NEW.customer_link_method IS NULL
                   OR NEW.customer_id IS DISTINCT FROM OLD.customer_id)))
    EXECUTE FUNCTION consistency._call_rules();

-- pg_trigger_depth() in a WHEN clause is the depth of the statement being
-- checked: 0 for an application's own UPDATE, >= 1 for the sync triggers'.
-- resync_calls() writes at depth 0 and is let through by a local setting.
DROP TRIGGER IF EXISTS calls_counter_guard ON public.calls;
CREATE TRIGGER calls_counter_guard
    BEFORE UPDATE ON public.calls
    FOR EACH ROW
    WHEN (NEW.active_appointment_count IS DISTINCT FROM OLD.active_appointment_count
          AND pg_trigger_depth() = 0)
    EXECUTE FUNCTION consistency._call_counter_guard();
