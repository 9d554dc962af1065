-- Everything `python worker/main.py status` (and `check`) shows, in one document, so it works over
-- both gateways and costs one round trip. Every state is read from columns (status, error_kind),
-- never inferred from message text. Reasons shown are grouped by kind and text with push tokens
-- masked (an operator's terminal is no place for them); user lists are capped at 20, with totals.
-- Runs are ordered by when they really happened (recorded_at); started_at is the clock the pass
-- ran with (`run --now` moves it).
CREATE OR REPLACE FUNCTION public.worker_status(p_now timestamptz) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'now', p_now,
        'schema_version', (SELECT coalesce(max(m.version), 0) FROM worker.schema_migrations m),
        'runs', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                'id', w.id, 'started_at', w.started_at, 'finished_at', w.finished_at,
                'recorded_at', w.recorded_at,
                'duration_s', round(extract(epoch FROM w.finished_at - w.started_at)::numeric, 3),
                'trigger', w.trigger, 'exit_code', w.exit_code, 'error', w.error,
                'error_kind', w.error_kind, 'counts', w.counts
            ) ORDER BY w.recorded_at DESC, w.id DESC), '[]'::jsonb)
            FROM (SELECT * FROM public.worker_runs ORDER BY recorded_at DESC, id DESC LIMIT 10) w),
        'runs_24h', (
            SELECT jsonb_build_object('total', count(*), 'failed', count(*) FILTER (WHERE w.exit_code <> 0))
            FROM public.worker_runs w
            WHERE w.recorded_at > now() - interval '24 hours'),
        -- The newest pass that did not finish cleanly, and whether a clean one came after it.
        'last_problem', (
            SELECT jsonb_build_object(
                'recorded_at', w.recorded_at, 'exit_code', w.exit_code, 'error', w.error,
                'error_kind', w.error_kind,
                'since_ok', EXISTS (SELECT 1 FROM public.worker_runs o
                                    WHERE o.exit_code = 0 AND o.recorded_at > w.recorded_at))
            FROM public.worker_runs w
            WHERE w.exit_code <> 0
            ORDER BY w.recorded_at DESC, w.id DESC
            LIMIT 1),
        'reminders', (
            SELECT jsonb_build_object(
                'due_now', count(*) FILTER (WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
                                            AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)),
                'oldest_due', min(r.notify_at_ts) FILTER (WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
                                            AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)),
                'in_flight', count(*) FILTER (WHERE r.status = 'sending'),
                'in_flight_lapsed', count(*) FILTER (WHERE r.status = 'sending' AND r.lease_expires_at <= p_now),
                'waiting_retry', count(*) FILTER (WHERE r.status = 'pending' AND r.next_attempt_at > p_now
                                                  AND r.error_kind IS DISTINCT FROM 'expo_credentials'),
                'held_expo_credentials', count(*) FILTER (WHERE r.status = 'pending'
                                                          AND r.error_kind = 'expo_credentials'),
                'awaiting_receipt', count(*) FILTER (WHERE r.status = 'sent' AND r.expo_ticket_id IS NOT NULL
                                                     AND r.receipt_status IS NULL))
            FROM public.reminders r
            WHERE r.status IN ('pending', 'sending')
               OR (r.status = 'sent' AND r.expo_ticket_id IS NOT NULL AND r.receipt_status IS NULL)),
        'failed_24h', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('kind', f.kind, 'reason', f.reason, 'count', f.n)
                                      ORDER BY f.n DESC, f.reason), '[]'::jsonb)
            FROM (
                SELECT r.error_kind AS kind,
                       left(regexp_replace(coalesce(r.error_message, '(no reason given)'),
                                           'Expo(nent)?PushToken\[[^]]*\]', 'ExpoPushToken[***]', 'g'),
                            160) AS reason,
                       count(*) AS n
                FROM public.reminders r
                WHERE r.status = 'failed' AND r.updated_at > p_now - interval '24 hours'
                GROUP BY 1, 2) f),
        'events', (
            SELECT jsonb_build_object(
                'waiting_sync', count(*) FILTER (WHERE e.status = 'pending'),
                'retrying', count(*) FILTER (WHERE e.status = 'pending' AND e.attempts > 0),
                'cancelling', count(*) FILTER (WHERE e.status = 'cancelled'),
                'oldest_waiting', min(e.updated_at) FILTER (WHERE e.status = 'pending'))
            FROM public.events e
            WHERE e.status IN ('pending', 'cancelled') AND e.synced_version < e.version),
        'events_failed', (
            SELECT coalesce(jsonb_object_agg(k.kind, k.n), '{}'::jsonb)
            FROM (SELECT coalesce(e.error_kind, 'unspecified') AS kind, count(*) AS n
                  FROM public.events e WHERE e.status = 'failed' GROUP BY 1) k),
        'google_revoked', (
            SELECT jsonb_build_object(
                'users', count(*),
                'list', coalesce(jsonb_agg(jsonb_build_object('user_id', g.user_id, 'events', g.n, 'last', g.last)
                                           ORDER BY g.last DESC) FILTER (WHERE g.rank <= 20), '[]'::jsonb))
            FROM (
                SELECT e.user_id, count(*) AS n, max(e.updated_at) AS last,
                       row_number() OVER (ORDER BY max(e.updated_at) DESC) AS rank
                FROM public.events e
                WHERE e.status IN ('failed', 'cancelled') AND e.error_kind = 'google_revoked'
                GROUP BY e.user_id) g),
        'tokens_cleared', (
            SELECT jsonb_build_object(
                'users', count(*),
                'list', coalesce(jsonb_agg(jsonb_build_object('user_id', t.user_id, 'reminders', t.n, 'last', t.last)
                                           ORDER BY t.last DESC) FILTER (WHERE t.rank <= 20), '[]'::jsonb))
            FROM (
                SELECT r.user_id, count(*) AS n, max(r.updated_at) AS last,
                       row_number() OVER (ORDER BY max(r.updated_at) DESC) AS rank
                FROM public.reminders r
                JOIN worker.parents pa ON pa.id = r.user_id
                WHERE pa.push_token IS NULL AND r.status = 'failed'
                  AND r.error_kind = 'device_not_registered'
                GROUP BY r.user_id) t)
    )
$$;
