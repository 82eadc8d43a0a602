-- Manual review queue: enqueue, claim, resolve. Every state change is
-- audited through consistency._audit. SECURITY DEFINER so that
-- consistency_reviewer works the queue without any right on its tables.

-- The contract's mapping of reasons to priorities (1 highest .. 5).
CREATE OR REPLACE FUNCTION consistency._review_priority(p_reason text)
RETURNS int
LANGUAGE sql IMMUTABLE PARALLEL SAFE
RETURN CASE p_reason
           WHEN 'appointment_validation_failed' THEN 1
           WHEN 'appointment_rollback' THEN 1
           WHEN 'calendar_booking_failed' THEN 2
           WHEN 'circuit_open' THEN 2
           WHEN 'customer_creation_failed' THEN 3
           WHEN 'service_not_found' THEN 4
           ELSE 5
       END;

CREATE OR REPLACE FUNCTION consistency._review_item_json(p_item consistency.manual_review_queue)
RETURNS jsonb
LANGUAGE sql IMMUTABLE
RETURN jsonb_build_object('status', p_item.status, 'priority', p_item.priority,
                          'assigned_to', p_item.assigned_to,
                          'resolution_notes', p_item.resolution_notes);

-- Who a reviewer is. The guard's owner (or a superuser) may act for anyone
-- by name: the CLI run by an operator, a service that works the queue for
-- people. Any other login is the reviewer it logged in as: naming someone
-- else is refused, so nobody resolves or claims as another reviewer.
CREATE OR REPLACE FUNCTION consistency._require_reviewer(p_reviewer text)
RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM consistency._require_text(p_reviewer, 'reviewer');
    -- current_user is the owner here: the callers are SECURITY DEFINER.
    IF p_reviewer <> session_user AND NOT pg_has_role(session_user, current_user, 'MEMBER') THEN
        RAISE EXCEPTION 'reviewer must be your login %, not %', session_user, p_reviewer
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'log in as the reviewer; only the guard''s owner acts for others';
    END IF;
END
$$;

CREATE OR REPLACE FUNCTION consistency.review_enqueue(
    p_call_id  bigint,
    p_reason   text,
    p_context  jsonb DEFAULT '{}',
    p_priority int DEFAULT NULL,
    p_actor    text DEFAULT 'system')
RETURNS bigint
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_priority int;
    v_id       bigint;
    v_created  boolean;
BEGIN
    PERFORM consistency._require_id(p_call_id, 'call_id');
    PERFORM consistency._require_text(p_reason, 'review reason');
    PERFORM consistency._require_text(p_actor, 'actor');
    IF p_priority IS NOT NULL AND p_priority NOT BETWEEN 1 AND 5 THEN
        RAISE EXCEPTION 'priority must be between 1 and 5, got %', p_priority
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_context IS NOT NULL AND jsonb_typeof(p_context) <> 'object' THEN
        RAISE EXCEPTION 'context must be a JSON object, got %', jsonb_typeof(p_context)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The context is copied into the append-only audit log: bounded.
    IF octet_length(p_context::text) > 65536 THEN
        RAISE EXCEPTION 'context is too large: % bytes (at most 65536)', octet_length(p_context::text)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    PERFORM consistency._require_call(p_call_id);

    v_priority := coalesce(p_priority, consistency._review_priority(p_reason));

    -- The partial unique index is the arbiter: a racing enqueue waits for
    -- the first one's commit, then finds the conflict and returns that
    -- item. The loop covers the item being resolved between the conflict
    -- and the lookup (then a new open item is legitimately due).
    LOOP
        INSERT INTO consistency.manual_review_queue (call_id, reason, priority, context, created_at)
        VALUES (p_call_id, p_reason, v_priority, coalesce(p_context, '{}'), consistency.now())
        ON CONFLICT (call_id, reason) WHERE status IN ('pending', 'in_progress') DO NOTHING
        RETURNING id INTO v_id;
        v_created := v_id IS NOT NULL;
        EXIT WHEN v_created;
        SELECT q.id INTO v_id
          FROM consistency.manual_review_queue q
         WHERE q.call_id = p_call_id AND q.reason = p_reason
           AND q.status IN ('pending', 'in_progress');
        EXIT WHEN v_id IS NOT NULL;
    END LOOP;

    -- An enqueue that found the item already open changed nothing: no audit row.
    IF v_created THEN
        PERFORM consistency._audit(p_actor, 'review.enqueue', 'review_item', v_id::text, NULL,
                                   jsonb_build_object('call_id', p_call_id, 'reason', p_reason,
                                                      'priority', v_priority, 'status', 'pending',
                                                      'context', coalesce(p_context, '{}')));
    END IF;
    RETURN v_id;
END
$$;

CREATE OR REPLACE FUNCTION consistency.review_claim(p_reviewer text)
RETURNS consistency.manual_review_queue
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_item consistency.manual_review_queue;
BEGIN
    PERFORM consistency._require_reviewer(p_reviewer);

    -- SKIP LOCKED: a second reviewer claiming at the same moment passes over
    -- the row the first one is taking instead of waiting for it and then
    -- getting nothing (or the same row).
    UPDATE consistency.manual_review_queue q
       SET status = 'in_progress', assigned_to = p_reviewer, assigned_at = consistency.now()
     WHERE q.id = (SELECT p.id
                     FROM consistency.manual_review_queue p
                    WHERE p.status = 'pending'
                    ORDER BY p.priority, p.created_at, p.id
                    LIMIT 1
                      FOR UPDATE SKIP LOCKED)
    RETURNING q.* INTO v_item;

    IF v_item.id IS NOT NULL THEN
        PERFORM consistency._audit(p_reviewer, 'review.claim', 'review_item', v_item.id::text,
                                   jsonb_build_object('status', 'pending', 'assigned_to', NULL),
                                   consistency._review_item_json(v_item));
    END IF;
    -- Empty queue: a row of NULLs (the composite's NULL), not an error.
    RETURN v_item;
END
$$;

CREATE OR REPLACE FUNCTION consistency.review_resolve(
    p_id       bigint,
    p_reviewer text,
    p_status   text,
    p_notes    text)
RETURNS consistency.manual_review_queue
LANGUAGE plpgsql VOLATILE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_before consistency.manual_review_queue;
    v_after  consistency.manual_review_queue;
BEGIN
    PERFORM consistency._require_id(p_id, 'review item id');
    PERFORM consistency._require_reviewer(p_reviewer);
    IF p_status IS NULL OR p_status NOT IN ('resolved', 'dismissed') THEN
        RAISE EXCEPTION 'status must be resolved or dismissed, got %', coalesce(p_status, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;

    SELECT * INTO v_before FROM consistency.manual_review_queue q WHERE q.id = p_id FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'review item % does not exist', p_id USING ERRCODE = 'no_data_found';
    END IF;
    IF v_before.status NOT IN ('pending', 'in_progress') THEN
        RAISE EXCEPTION 'review item % is already %', p_id, v_before.status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF v_before.assigned_to IS NOT NULL AND v_before.assigned_to <> p_reviewer THEN
        RAISE EXCEPTION 'review item % is assigned to %, not to %', p_id, v_before.assigned_to, p_reviewer
            USING ERRCODE = 'insufficient_privilege';
    END IF;

    UPDATE consistency.manual_review_queue q
       SET status = p_status,
           assigned_to = p_reviewer,
           assigned_at = coalesce(q.assigned_at, consistency.now()),
           resolved_at = consistency.now(),
           resolution_notes = nullif(btrim(p_notes), '')
     WHERE q.id = p_id
    RETURNING q.* INTO v_after;

    PERFORM consistency._audit(p_reviewer, 'review.' || CASE p_status WHEN 'resolved' THEN 'resolve'
                                                                       ELSE 'dismiss' END,
                               'review_item', p_id::text,
                               consistency._review_item_json(v_before),
                               consistency._review_item_json(v_after));
    RETURN v_after;
END
$$;

-- Reviewers have no right on the table, yet need to see the queue they work.
CREATE OR REPLACE FUNCTION consistency.review_list(
    p_status text DEFAULT NULL,
    p_limit  int DEFAULT 100)
RETURNS SETOF consistency.manual_review_queue
LANGUAGE plpgsql STABLE
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_status IS NOT NULL AND p_status NOT IN ('pending', 'in_progress', 'resolved', 'dismissed') THEN
        RAISE EXCEPTION 'status must be pending, in_progress, resolved or dismissed, got %', p_status
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_limit IS NULL OR p_limit <= 0 THEN
        RAISE EXCEPTION 'limit must be a positive number, got %', coalesce(p_limit::text, 'NULL')
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- Open work first, in claim order; closed items after, newest first.
    RETURN QUERY
        SELECT q.*
          FROM consistency.manual_review_queue q
         WHERE p_status IS NULL OR q.status = p_status
         ORDER BY q.status NOT IN ('pending', 'in_progress'),
                  CASE WHEN q.status IN ('pending', 'in_progress') THEN q.priority END,
                  CASE WHEN q.status IN ('pending', 'in_progress') THEN q.created_at END,
                  q.created_at DESC, q.id
         LIMIT p_limit;
END
$$;
