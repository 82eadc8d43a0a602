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
