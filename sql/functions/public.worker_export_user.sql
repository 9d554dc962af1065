-- `python worker/main.py export-user UUID`: everything the worker holds about one parent, as one
-- document (a subject access request; both gateways, one round trip). Nothing is changed. json,
-- not jsonb: its keys stay in the order written here, for the person who reads it.
--
-- * profile: what the worker reads from the parent (worker.parents, the one place that decides):
--   whether a profiles row exists, the time zone as the worker uses it, where the push token it
--   uses comes from, the calendar the parent shared with the worker's service account.
-- * tokens: every push token held for the parent, wherever it is (profile, user metadata, each
--   public.push_tokens device), masked by worker.mask_push_token; the Google refresh token only as
--   'present' or 'absent' with every place one is held (profile, metadata, worker_store: the
--   worker's private store), never its value; when Google refused a grant of theirs.
-- * preferences: their public.notification_preferences row, or null (the defaults).
-- * events: all their events with the columns the worker reads or writes; the app's other columns
--   (location, prep items, ...) are the app's to export.
-- * reminders: every reminder of theirs (by user_id, or by an event of theirs: rows the app wrote
--   before the worker may lack user_id), with its outcome; deliveries: what Expo answered per
--   device (worker.push_tickets), tokens masked.
-- Error texts are stored scrubbed of secrets; push tokens in them are masked again here.
-- Unknown user: {"user_id": ..., "found": false}.
CREATE OR REPLACE FUNCTION public.worker_export_user(p_user uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_meta jsonb;
    v_reminders uuid[];
    v_token_re constant text := 'Expo(nent)?PushToken\[[^]]*\]';
BEGIN
    SELECT coalesce(u.raw_user_meta_data, '{}'::jsonb) INTO v_meta FROM auth.users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        RETURN json_build_object('user_id', p_user, 'found', false);
    END IF;

    v_reminders := ARRAY(
        SELECT r.id FROM public.reminders r WHERE r.user_id = p_user
        UNION
        SELECT r.id FROM public.reminders r JOIN public.events e ON e.id = r.event_id WHERE e.user_id = p_user);

    RETURN (
        SELECT json_build_object(
            'user_id', p_user,
            'found', true,
            'exported_at', now(),
            'profile', json_build_object(
                'exists', pa.has_profile,
                'timezone', pa.timezone,
                'push_token_source', pa.push_token_source,
                'google_calendar_id', pa.calendar_id),
            'tokens', json_build_object(
                'push', (
                    SELECT coalesce(json_agg(t.doc ORDER BY t.rank, t.created_at, t.doc ->> 'token'), '[]'::json)
                    FROM (
                        SELECT 0 AS rank, NULL::timestamptz AS created_at,
                               json_build_object('source', 'profile',
                                                  'token', worker.mask_push_token(p.expo_push_token)) AS doc
                        FROM public.profiles p
                        WHERE p.id = p_user AND nullif(p.expo_push_token, '') IS NOT NULL
                        UNION ALL
                        SELECT 1, NULL,
                               json_build_object('source', 'metadata',
                                                  'token', worker.mask_push_token(v_meta ->> 'expo_push_token'))
                        WHERE nullif(v_meta ->> 'expo_push_token', '') IS NOT NULL
                        UNION ALL
                        SELECT 2, d.created_at,
                               json_build_object('source', 'device', 'token', worker.mask_push_token(d.token),
                                                  'created_at', d.created_at, 'last_seen_at', d.last_seen_at)
                        FROM public.push_tokens d
                        WHERE d.user_id = p_user) t),
                'google_refresh_token', CASE WHEN pa.refresh_token IS NOT NULL THEN 'present' ELSE 'absent' END,
                'google_refresh_token_in', to_json(ARRAY(
                    SELECT w.place FROM (
                        SELECT 1 AS rank, 'profile' AS place
                        FROM public.profiles p
                        WHERE p.id = p_user AND nullif(p.google_refresh_token, '') IS NOT NULL
                        UNION ALL
                        SELECT 2, 'metadata' WHERE nullif(v_meta ->> 'google_refresh_token', '') IS NOT NULL
                        UNION ALL
                        SELECT 3, 'worker_store' FROM worker.refresh_tokens s WHERE s.user_id = p_user
                    ) w ORDER BY w.rank)),
                'google_grant_refused_at', (SELECT g.revoked_at FROM worker.revoked_grants g WHERE g.user_id = p_user)),
            'preferences', (
                SELECT (to_jsonb(np) - 'user_id')::json FROM public.notification_preferences np WHERE np.user_id = p_user),
            'events', (
                SELECT coalesce(json_agg(json_build_object(
                    'id', e.id,
                    'title', e.title,
                    'start_ts', e.start_ts,
                    'end_ts', e.end_ts,
                    'status', e.status,
                    'recurrence', e.recurrence,
                    'google_calendar_id', e.google_calendar_id,
                    'error_kind', e.error_kind,
                    'error_message', regexp_replace(e.error_message, v_token_re, 'ExpoPushToken[***]', 'g'),
                    'synced_at', e.synced_at
                ) ORDER BY e.start_ts, e.id), '[]'::json)
                FROM public.events e
                WHERE e.user_id = p_user),
            'reminders', (
                SELECT coalesce(json_agg(json_build_object(
                    'id', r.id,
                    'event_id', r.event_id,
                    'notify_at_ts', r.notify_at_ts,
                    'occurs_at', r.occurs_at,
                    'status', r.status,
                    'message', r.message,
                    'push_token', worker.mask_push_token(r.push_token),
                    'sent_at_ts', r.sent_at_ts,
                    'retry_count', r.retry_count,
                    'error_kind', r.error_kind,
                    'error_message', regexp_replace(r.error_message, v_token_re, 'ExpoPushToken[***]', 'g'),
                    'expo_ticket_id', r.expo_ticket_id,
                    'receipt_status', r.receipt_status
                ) ORDER BY r.notify_at_ts, r.id), '[]'::json)
                FROM public.reminders r
                WHERE r.id = ANY (v_reminders)),
            'deliveries', (
                SELECT coalesce(json_agg(json_build_object(
                    'reminder_id', t.reminder_id,
                    'token', worker.mask_push_token(t.token),
                    'ticket_id', t.ticket_id,
                    'sent_at', t.sent_at,
                    'receipt_status', t.receipt_status,
                    'receipt_error', regexp_replace(t.receipt_error, v_token_re, 'ExpoPushToken[***]', 'g'),
                    'receipt_checks', t.receipt_checks
                ) ORDER BY t.sent_at, t.reminder_id, t.ticket_id), '[]'::json)
                FROM worker.push_tickets t
                WHERE t.reminder_id = ANY (v_reminders)))
        FROM worker.parents pa
        WHERE pa.id = p_user);
END
$$;
