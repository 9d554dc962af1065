-- Record the outcome of claimed events, plan their reminders, and release them: one call a batch.
--
-- p_results: [{id, version, outcome, google_calendar_id, error, error_kind, next_attempt_at,
--              planned_until, reminders: [{notify_at_ts, occurs_at, message}]}]
-- planned_until: how far ahead a recurring event's reminders are now planned (NULL: one-off).
-- outcome (worker/vocabulary.py EventOutcome): 'synced' (done, or nothing to do), 'failed'
-- (permanent; error and error_kind say why), 'retry' (transient; again at next_attempt_at).
-- google_calendar_id is the entry's id after this pass (NULL once a cancelled event's entry is gone).
--
-- * A live event gets its reminders planned whatever the calendar said (a calendar failure must
--   not cost a parent their reminders). A planned time that already has a row keeps it
--   (ON CONFLICT); a row cancelled earlier (event cancelled, then restored) is planned again.
-- * An edit never loses a reminder that is due: unsent reminders whose time is still ahead and no
--   longer planned (the event moved, the lead times changed) go; unsent reminders already due stay
--   and are sent by the push step, whose text is rendered from the event as it is now (new title,
--   new time), unless the event has started by then.
-- * A cancelled event's unsent reminders become cancelled; it stays 'cancelled'.
-- * A parent whose grant Google refused gets the token's fingerprint in worker.revoked_grants; the
--   events claim gives their events back once the token is another one.
-- * An event whose version changed since the claim (edited meanwhile) keeps its new edit: only the
--   calendar id is remembered and the claim released; the next claim picks the edit up.
CREATE OR REPLACE FUNCTION public.worker_complete_events(
    p_now timestamptz, p_claim uuid, p_results jsonb
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_planned integer;
    v_unplanned integer;
    v_cancelled integer;
    v_finished integer;
    v_stale integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.worker_event_results (
        id uuid PRIMARY KEY, version bigint, outcome text, google_calendar_id text, error text,
        error_kind text, next_attempt_at timestamptz, planned_until timestamptz, reminders jsonb, current boolean,
        cancelled boolean
    ) ON COMMIT DROP;
    TRUNCATE pg_temp.worker_event_results;

    -- Only rows this claim still holds; `current` says whether nobody edited them meanwhile.
    INSERT INTO pg_temp.worker_event_results
    SELECT x.id, x.version, x.outcome, x.google_calendar_id, x.error,
           CASE WHEN x.outcome IN ('failed', 'retry') THEN x.error_kind END,
           x.next_attempt_at, x.planned_until, coalesce(x.reminders, '[]'::jsonb), e.version = x.version,
           e.status = 'cancelled'
    FROM jsonb_to_recordset(p_results) AS x(
        id uuid, version bigint, outcome text, google_calendar_id text, error text,
        error_kind text, next_attempt_at timestamptz, planned_until timestamptz, reminders jsonb)
    JOIN public.events e ON e.id = x.id AND e.claim_id = p_claim;

    INSERT INTO public.reminders (event_id, user_id, notify_at_ts, occurs_at, message, status, retry_count,
                                  planned_by_worker, updated_at)
    SELECT e.id, e.user_id, (rem ->> 'notify_at_ts')::timestamptz, (rem ->> 'occurs_at')::timestamptz,
           rem ->> 'message', 'pending', 0, true, p_now
    FROM pg_temp.worker_event_results x
    JOIN public.events e ON e.id = x.id
    CROSS JOIN LATERAL jsonb_array_elements(x.reminders) AS rem
    WHERE x.current AND NOT x.cancelled
    ON CONFLICT (event_id, notify_at_ts) DO UPDATE
        SET status = 'pending', retry_count = 0, error_message = NULL, error_kind = NULL, sent_at_ts = NULL,
            next_attempt_at = NULL, message = excluded.message, occurs_at = excluded.occurs_at,
            planned_by_worker = true,
            updated_at = excluded.updated_at
        WHERE public.reminders.status = 'cancelled';
    GET DIAGNOSTICS v_planned = ROW_COUNT;

    DELETE FROM public.reminders r
    USING pg_temp.worker_event_results x
    WHERE r.event_id = x.id AND x.current AND NOT x.cancelled
      AND r.status = 'pending'
      AND r.notify_at_ts > p_now
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_array_elements(x.reminders) AS rem
          WHERE (rem ->> 'notify_at_ts')::timestamptz = r.notify_at_ts);
    GET DIAGNOSTICS v_unplanned = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'cancelled', error_message = 'the event was cancelled', error_kind = 'event_cancelled',
        next_attempt_at = NULL, updated_at = p_now
    FROM pg_temp.worker_event_results x
    WHERE r.event_id = x.id AND x.current AND x.cancelled AND r.status = 'pending';
    GET DIAGNOSTICS v_cancelled = ROW_COUNT;

    UPDATE public.events e
    SET status = CASE
                     WHEN x.cancelled THEN 'cancelled'
                     WHEN x.outcome = 'synced' THEN 'synced'
                     WHEN x.outcome = 'failed' THEN 'failed'
                     ELSE e.status END,
        synced_version = CASE WHEN x.outcome = 'retry' THEN e.synced_version ELSE e.version END,
        google_calendar_id = x.google_calendar_id,
        error_message = CASE WHEN x.outcome IN ('failed', 'retry') THEN x.error END,
        error_kind = x.error_kind,
        attempts = CASE WHEN x.outcome = 'retry' THEN e.attempts + 1 ELSE 0 END,
        next_attempt_at = CASE WHEN x.outcome = 'retry' THEN x.next_attempt_at END,
        synced_at = CASE WHEN x.outcome = 'synced' AND NOT x.cancelled THEN p_now ELSE e.synced_at END,
        planned_until = x.planned_until,
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results x
    WHERE e.id = x.id AND x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_finished = ROW_COUNT;

    -- Google refused the parent's grant: remember which token, so their events wait until it changes.
    INSERT INTO worker.revoked_grants (user_id, token_sha256, revoked_at)
    SELECT DISTINCT ON (e.user_id) e.user_id, encode(sha256(convert_to(pa.refresh_token, 'UTF8')), 'hex'), p_now
    FROM pg_temp.worker_event_results x
    JOIN public.events e ON e.id = x.id
    JOIN worker.parents pa ON pa.id = e.user_id
    WHERE x.current AND x.error_kind = 'google_revoked' AND pa.refresh_token IS NOT NULL
    ON CONFLICT (user_id) DO UPDATE SET token_sha256 = excluded.token_sha256, revoked_at = excluded.revoked_at;

    UPDATE public.events e
    SET google_calendar_id = coalesce(x.google_calendar_id, e.google_calendar_id),
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results x
    WHERE e.id = x.id AND NOT x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_stale = ROW_COUNT;

    RETURN jsonb_build_object(
        'finished', v_finished, 'stale', v_stale, 'reminders_planned', v_planned,
        'reminders_unplanned', v_unplanned, 'reminders_cancelled', v_cancelled);
END
$$;
