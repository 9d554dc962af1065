-- `python worker/main.py forget-user UUID --yes`, before the erasure: what that command needs to
-- delete the calendar entries the worker made for one parent, and nothing else calls it.
--
-- entries: their events with a calendar entry id (google_calendar_id), and those whose entry may
-- exist although no id was recorded (known = false: a pass claimed the event and never finished,
-- or a try failed after Google may have stored it); the command derives our id for those, as the
-- events step does for a cancelled event. The grant (the refresh token, wherever the worker reads
-- it: worker.parents, and the calendar shared with the service account) comes back only when there
-- is an entry to delete, to this service-role-only call, exactly as worker_claim_events hands it to
-- a pass; the command keeps it in memory for the deletions and never prints or logs it.
-- Unknown user: {"found": false}.
CREATE OR REPLACE FUNCTION public.worker_forget_user_calendar(p_user uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_entries jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM auth.users u WHERE u.id = p_user) THEN
        RETURN jsonb_build_object('user_id', p_user, 'found', false);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'event_id', e.id,
               'entry_id', e.google_calendar_id,
               'known', e.google_calendar_id IS NOT NULL
           ) ORDER BY e.google_calendar_id IS NULL, e.start_ts, e.id), '[]'::jsonb)
    INTO v_entries
    FROM public.events e
    WHERE e.user_id = p_user
      AND (e.google_calendar_id IS NOT NULL
           OR e.claim_id IS NOT NULL
           OR (e.status = 'pending' AND e.attempts > 0));
    RETURN (
        SELECT jsonb_build_object(
            'user_id', p_user,
            'found', true,
            'entries', v_entries,
            'refresh_token', CASE WHEN jsonb_array_length(v_entries) > 0 THEN pa.refresh_token END,
            'calendar_id', CASE WHEN jsonb_array_length(v_entries) > 0 THEN pa.calendar_id END)
        FROM worker.parents pa
        WHERE pa.id = p_user);
END
$$;
