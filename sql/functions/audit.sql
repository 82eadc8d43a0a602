-- The audit log is append-only; _audit is the single writer so every
-- module records the same shape (actor, action, target, before, after).

CREATE OR REPLACE FUNCTION consistency._audit(
    p_actor       text,
    p_action      text,
    p_target_type text,
    p_target_id   text,
    p_before      jsonb DEFAULT NULL,
    p_after       jsonb DEFAULT NULL)
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_id bigint;
BEGIN
    INSERT INTO consistency.audit_log (actor, action, target_type, target_id, before, after)
    VALUES (p_actor, p_action, p_target_type, p_target_id, p_before, p_after)
    RETURNING id INTO v_id;
    RETURN v_id;
END
$$;

-- SECURITY DEFINER, as every trigger function of the guard's tables: a
-- session that is not the owner (migrate run by a DBA) writes these tables
-- and refuses to fire any trigger that would run with its own rights.
CREATE OR REPLACE FUNCTION consistency._audit_log_refuse_change()
RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE EXCEPTION 'consistency.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;
