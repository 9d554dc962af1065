-- The events waiting for the events step: 'pending' (new or edited) and not yet synced at their
-- current version, soonest first, at most p_limit of them. Read-only: it claims nothing and changes
-- nothing, so it answers the seed's health check (`await ReminderWorker()._get_pending_events()`,
-- worker/api.py) while passes run. Events waiting for a later try are listed too, with their
-- attempts and next_attempt_at. Only what says where an event stands: no token, nothing secret.
CREATE OR REPLACE FUNCTION public.worker_pending_events(p_limit integer) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', e.id,
        'user_id', e.user_id,
        'title', e.title,
        'start_ts', e.start_ts,
        'end_ts', e.end_ts,
        'status', e.status,
        'attempts', e.attempts,
        'next_attempt_at', e.next_attempt_at,
        'error_message', e.error_message
    ) ORDER BY e.start_ts, e.id), '[]'::jsonb)
    FROM (
        SELECT ev.id, ev.user_id, ev.title, ev.start_ts, ev.end_ts, ev.status, ev.attempts,
               ev.next_attempt_at, ev.error_message
        FROM public.events ev
        WHERE ev.status = 'pending' AND ev.synced_version < ev.version
        ORDER BY ev.start_ts, ev.id
        LIMIT greatest(p_limit, 0)
    ) e
$$;
