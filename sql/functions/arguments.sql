-- Argument checks shared by the public API: one wording, one error code
-- (22023 invalid_parameter_value) for every refused argument. They refuse
-- what cannot exist (no id, an empty text), never a value a row may hold: a
-- writer may insert a call with id -5, and the guard must still act on it.

CREATE OR REPLACE FUNCTION consistency._require_text(p_value text, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF coalesce(btrim(p_value), '') = '' THEN
        RAISE EXCEPTION '% must not be empty', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION consistency._require_id(p_value bigint, p_what text)
RETURNS void
LANGUAGE plpgsql IMMUTABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_what USING ERRCODE = 'invalid_parameter_value';
    END IF;
END
$$;

-- The call p_call_id (locked FOR UPDATE when p_lock), or 'call % does not
-- exist' (P0002 no_data_found): the one wording of a missing call for the
-- functions that take a call id (validate_booking, on its hot path, raises
-- the same error by hand). Unlike the checks above it refuses a value, not
-- an argument: a call that is not there.
CREATE OR REPLACE FUNCTION consistency._require_call(p_call_id bigint, p_lock boolean DEFAULT false)
RETURNS public.calls
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_call public.calls;
BEGIN
    IF p_lock THEN
        SELECT * INTO v_call FROM public.calls c WHERE c.id = p_call_id FOR UPDATE;
    ELSE
        SELECT * INTO v_call FROM public.calls c WHERE c.id = p_call_id;
    END IF;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'call % does not exist', coalesce(p_call_id::text, 'NULL')
            USING ERRCODE = 'no_data_found';
    END IF;
    RETURN v_call;
END
$$;
