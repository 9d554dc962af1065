-- Claim due reminders for sending, after settling those that must not be sent.
--
-- Due: 'pending', never accepted by Expo (sent_at_ts IS NULL: seed 004's own test of "sent", so a
-- row the app's earlier sender marked that way is never sent again), notify_at_ts <= p_now and its
-- next try due; or 'sending' with a lapsed lease (its worker died). Of those, in this order:
--   * reminders of cancelled events become 'cancelled';
--   * reminders for a parent who turned pushes off, or of an event whose child they muted
--     (notification_preferences), become 'cancelled' with that kind;
--   * reminders whose occurrence already started (the event's start, or for a recurring event
--     reminders.occurs_at) become 'expired' (a late reminder is noise);
--   * a reminder of which a later reminder of the same occurrence is also due (or already sent)
--     becomes 'expired', kind 'superseded': after passes did not run for a while, a parent gets
--     the latest reminder only, not the 24 h and the 3 h one seconds apart;
-- the rest become 'sending' under p_claim and come back with everything the message needs: the
-- event as it is now (the text is rendered at send time), the owner's current push token (see
-- worker.parents); for a row the app wrote before the worker arrived, its stored message and its
-- own push_token, which the message falls back to.
--
-- p_claim is new for every call: a call retried after its answer was lost gets the rows it already
-- claimed back (held), instead of leaving them leased to nobody.
CREATE OR REPLACE FUNCTION public.worker_claim_reminders(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_held uuid[];
    v_ids uuid[];
    v_more uuid[];
    v_cancelled integer;
    v_unwanted integer;
    v_expired integer;
    v_superseded integer;
    v_claimed jsonb;
BEGIN
    SELECT coalesce(array_agg(r.id), '{}') INTO v_held
    FROM public.reminders r WHERE r.claim_id = p_claim AND r.status = 'sending';

    -- Lapsed claims first (rare), then pending rows in notify order along reminders_due_idx.
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'sending' AND r.lease_expires_at <= p_now
        ORDER BY r.lease_expires_at
        LIMIT greatest(p_limit - cardinality(v_held), 0)
        FOR UPDATE SKIP LOCKED
    ) lapsed;

    SELECT coalesce(array_agg(id), '{}') INTO v_more FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'pending' AND r.notify_at_ts <= p_now AND r.sent_at_ts IS NULL
          AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)
        ORDER BY r.notify_at_ts
        LIMIT greatest(p_limit - cardinality(v_held) - cardinality(v_ids), 0)
        FOR UPDATE SKIP LOCKED
    ) due;
    v_ids := v_ids || v_more;

    UPDATE public.reminders r
    SET status = 'cancelled', error_message = 'the event was cancelled', error_kind = 'event_cancelled',
        claim_id = NULL, lease_expires_at = NULL, next_attempt_at = NULL, updated_at = p_now
    FROM public.events e
    WHERE r.id = ANY (v_ids) AND e.id = r.event_id AND e.status = 'cancelled';
    GET DIAGNOSTICS v_cancelled = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'cancelled',
        error_kind = CASE WHEN NOT pa.push_enabled THEN 'push_disabled' ELSE 'child_muted' END,
        error_message = CASE WHEN NOT pa.push_enabled THEN 'not sent: the parent turned push reminders off'
                             ELSE 'not sent: the parent muted reminders for this child' END,
        claim_id = NULL, lease_expires_at = NULL, next_attempt_at = NULL, updated_at = p_now
    FROM public.events e, worker.parents pa
    WHERE r.id = ANY (v_ids) AND e.id = r.event_id AND pa.id = r.user_id AND r.status IN ('pending', 'sending')
      AND (NOT pa.push_enabled OR e.child_id = ANY (pa.muted_children));
    GET DIAGNOSTICS v_unwanted = ROW_COUNT;
    v_cancelled := v_cancelled + v_unwanted;

    UPDATE public.reminders r
    SET status = 'expired', error_message = 'the event had already started',
        error_kind = 'event_started', claim_id = NULL, lease_expires_at = NULL, next_attempt_at = NULL,
        updated_at = p_now
    FROM public.events e
    WHERE r.id = ANY (v_ids) AND e.id = r.event_id AND coalesce(r.occurs_at, e.start_ts) <= p_now
      AND r.status IN ('pending', 'sending');
    GET DIAGNOSTICS v_expired = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'expired',
        error_message = 'not sent: a later reminder of the same event was due as well, and only the latest is sent',
        error_kind = 'superseded', claim_id = NULL, lease_expires_at = NULL, next_attempt_at = NULL,
        updated_at = p_now
    WHERE r.id = ANY (v_ids) AND r.status IN ('pending', 'sending')
      AND EXISTS (
          SELECT 1 FROM public.reminders l
          WHERE l.event_id = r.event_id AND l.occurs_at IS NOT DISTINCT FROM r.occurs_at
            AND l.notify_at_ts > r.notify_at_ts AND l.notify_at_ts <= p_now
            AND l.status IN ('pending', 'sending', 'sent'));
    GET DIAGNOSTICS v_superseded = ROW_COUNT;

    WITH claimed AS (
        UPDATE public.reminders r
        SET status = 'sending', claim_id = p_claim,
            lease_expires_at = p_now + make_interval(secs => p_lease_seconds), updated_at = p_now
        WHERE r.id = ANY (v_ids) AND r.status IN ('pending', 'sending')
        RETURNING r.*
    ), rows AS (
        SELECT * FROM claimed
        UNION ALL
        SELECT r.* FROM public.reminders r WHERE r.id = ANY (v_held)
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'event_id', c.event_id,
        'user_id', c.user_id,
        'notify_at_ts', c.notify_at_ts,
        'retry_count', coalesce(c.retry_count, 0),
        'planned_by_worker', c.planned_by_worker,
        'stored_message', CASE WHEN NOT c.planned_by_worker THEN c.message END,
        'row_push_token', CASE WHEN NOT c.planned_by_worker THEN c.push_token END,
        'title', e.title,
        'start_ts', coalesce(c.occurs_at, e.start_ts),
        'end_ts', e.end_ts,
        'location', e.location,
        'prep_items', to_jsonb(e.prep_items),
        'child_name', ch.name,
        'has_profile', coalesce(pa.has_profile, false),
        'devices', coalesce(pa.devices, '[]'::jsonb),
        'timezone', pa.timezone
    ) ORDER BY c.notify_at_ts), '[]'::jsonb)
    INTO v_claimed
    FROM rows c
    LEFT JOIN public.events e ON e.id = c.event_id
    LEFT JOIN public.children ch ON ch.id = e.child_id
    LEFT JOIN worker.parents pa ON pa.id = c.user_id;

    RETURN jsonb_build_object('claimed', v_claimed, 'cancelled', v_cancelled,
                              'expired', v_expired, 'superseded', v_superseded);
END
$$;
