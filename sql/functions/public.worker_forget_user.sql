-- `python worker/main.py forget-user UUID --yes`: erase what the worker holds about one parent, in
-- one transaction, and say what it erased. p_dry_run: only count, change nothing.
--
-- Deleted: their reminders (by user_id, or by an event of theirs; their worker.push_tickets go with
-- them), their devices (public.push_tokens), their notification_preferences row, their refresh
-- token in the worker's store (worker.refresh_tokens) and the fingerprint of a grant Google refused
-- (worker.revoked_grants).
-- Cleared: the worker's columns of their profile (expo_push_token, google_refresh_token,
-- google_calendar_id; the app's own columns, the time zone included, stay), the expo_push_token
-- and google_refresh_token keys of their user metadata, and on their events the calendar entry id
-- (the command deletes the entries in Google first, see worker_forget_user_calendar) and the
-- worker's retry state (error, attempts, next try: it was about the Google link now forgotten; the
-- next pass syncs such an event at once, without Google). A 'failed' event keeps its reason: it is
-- what the app shows for that event.
-- Kept: the events themselves (the app's data). Deleting the user in Supabase Auth still removes
-- everything of theirs (ON DELETE CASCADE), as before.
--
-- Nothing else is touched: events keep their status and version, so no pass re-syncs them because
-- of this (deleting the preferences row re-plans their live events as any change of preferences
-- does, worker.preferences_on_change; with no device and no grant left, nothing reaches them).
-- in_flight counts what a pass holds under a live lease right now: a pass that claimed one of their
-- events may still write a calendar id or reminders back when it finishes; the command says so.
-- Calling it again erases what appeared since, or nothing. Unknown user: {"found": false}.
CREATE OR REPLACE FUNCTION public.worker_forget_user(p_user uuid, p_dry_run boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_keys constant text[] := ARRAY['expo_push_token', 'google_refresh_token'];
    v_meta jsonb;
    v_reminders uuid[];
    v_tickets integer;
    v_devices integer;
    v_preferences integer;
    v_stored integer;
    v_refused integer;
    v_profile text[];
    v_metadata text[];
    v_events integer;
    v_calendar_ids integer;
    v_maybe integer;
    v_retries integer;
    v_busy_events integer;
    v_busy_reminders integer;
    v_busy_until timestamptz;
    v_grant boolean;
BEGIN
    IF p_dry_run THEN
        SELECT coalesce(u.raw_user_meta_data, '{}'::jsonb) INTO v_meta FROM auth.users u WHERE u.id = p_user;
    ELSE
        -- One erasure of a parent at a time, and no metadata write of the app's in between.
        SELECT coalesce(u.raw_user_meta_data, '{}'::jsonb) INTO v_meta FROM auth.users u WHERE u.id = p_user
        FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('user_id', p_user, 'found', false, 'dry_run', p_dry_run);
    END IF;

    v_reminders := ARRAY(
        SELECT r.id FROM public.reminders r WHERE r.user_id = p_user
        UNION
        SELECT r.id FROM public.reminders r JOIN public.events e ON e.id = r.event_id WHERE e.user_id = p_user);
    SELECT count(*) INTO v_tickets FROM worker.push_tickets t WHERE t.reminder_id = ANY (v_reminders);
    SELECT count(*) INTO v_devices FROM public.push_tokens d WHERE d.user_id = p_user;
    SELECT count(*) INTO v_preferences FROM public.notification_preferences np WHERE np.user_id = p_user;
    SELECT count(*) INTO v_stored FROM worker.refresh_tokens s WHERE s.user_id = p_user;
    SELECT count(*) INTO v_refused FROM worker.revoked_grants g WHERE g.user_id = p_user;
    v_profile := ARRAY(
        SELECT c.name
        FROM public.profiles p
        CROSS JOIN LATERAL (VALUES (1, 'expo_push_token', p.expo_push_token),
                                   (2, 'google_refresh_token', p.google_refresh_token),
                                   (3, 'google_calendar_id', p.google_calendar_id)) AS c(rank, name, value)
        WHERE p.id = p_user AND c.value IS NOT NULL
        ORDER BY c.rank);
    v_metadata := ARRAY(SELECT k FROM unnest(v_keys) AS k WHERE v_meta ? k);
    SELECT count(*),
           count(*) FILTER (WHERE e.google_calendar_id IS NOT NULL),
           count(*) FILTER (WHERE e.google_calendar_id IS NULL
                              AND (e.claim_id IS NOT NULL OR (e.status = 'pending' AND e.attempts > 0))),
           count(*) FILTER (WHERE e.status IS DISTINCT FROM 'failed'
                              AND (e.error_kind IS NOT NULL OR e.error_message IS NOT NULL OR e.attempts > 0
                                   OR e.next_attempt_at IS NOT NULL)),
           count(*) FILTER (WHERE e.claim_id IS NOT NULL AND e.lease_expires_at > now()),
           max(e.lease_expires_at) FILTER (WHERE e.claim_id IS NOT NULL AND e.lease_expires_at > now())
    INTO v_events, v_calendar_ids, v_maybe, v_retries, v_busy_events, v_busy_until
    FROM public.events e
    WHERE e.user_id = p_user;
    SELECT count(*) INTO v_busy_reminders
    FROM public.reminders r
    WHERE r.id = ANY (v_reminders) AND r.status = 'sending' AND r.lease_expires_at > now();
    SELECT pa.refresh_token IS NOT NULL OR pa.calendar_id IS NOT NULL INTO v_grant
    FROM worker.parents pa WHERE pa.id = p_user;

    IF NOT p_dry_run THEN
        DELETE FROM public.reminders r WHERE r.id = ANY (v_reminders);  -- worker.push_tickets cascade
        DELETE FROM public.push_tokens d WHERE d.user_id = p_user;
        DELETE FROM public.notification_preferences np WHERE np.user_id = p_user;
        DELETE FROM worker.refresh_tokens s WHERE s.user_id = p_user;
        DELETE FROM worker.revoked_grants g WHERE g.user_id = p_user;
        IF cardinality(v_profile) > 0 THEN
            UPDATE public.profiles p
            SET expo_push_token = NULL, google_refresh_token = NULL, google_calendar_id = NULL, updated_at = now()
            WHERE p.id = p_user;
        END IF;
        IF cardinality(v_metadata) > 0 THEN
            UPDATE auth.users u
            SET raw_user_meta_data = u.raw_user_meta_data - v_keys
            WHERE u.id = p_user;
        END IF;
        -- Neither a content column nor the status changes: worker.events_on_edit leaves the version.
        UPDATE public.events e
        SET google_calendar_id = NULL,
            error_kind = CASE WHEN e.status = 'failed' THEN e.error_kind END,
            error_message = CASE WHEN e.status = 'failed' THEN e.error_message END,
            attempts = CASE WHEN e.status = 'failed' THEN e.attempts ELSE 0 END,
            next_attempt_at = CASE WHEN e.status = 'failed' THEN e.next_attempt_at END,
            updated_at = now()
        WHERE e.user_id = p_user
          AND (e.google_calendar_id IS NOT NULL
               OR (e.status IS DISTINCT FROM 'failed'
                   AND (e.error_kind IS NOT NULL OR e.error_message IS NOT NULL OR e.attempts > 0
                        OR e.next_attempt_at IS NOT NULL)));
    END IF;

    RETURN jsonb_build_object(
        'user_id', p_user,
        'found', true,
        'dry_run', p_dry_run,
        'deleted', jsonb_build_object(
            'reminders', cardinality(v_reminders),
            'push_tickets', v_tickets,
            'devices', v_devices,
            'preferences', v_preferences,
            'stored_refresh_tokens', v_stored,
            'refused_grants', v_refused),
        'cleared', jsonb_build_object(
            'profile', to_jsonb(v_profile),
            'metadata', to_jsonb(v_metadata),
            'event_calendar_ids', v_calendar_ids,
            'event_retries', v_retries),
        'kept', jsonb_build_object('events', v_events),
        'calendar', jsonb_build_object(
            'entries', v_calendar_ids,
            'maybe', v_maybe,
            'grant', coalesce(v_grant, false)),
        'in_flight', jsonb_build_object(
            'events', v_busy_events,
            'reminders', v_busy_reminders,
            'until', v_busy_until));
END
$$;
