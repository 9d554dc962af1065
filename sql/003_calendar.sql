-- 003: what calendar sync needs beyond 001/002.
--
-- * profiles.google_calendar_id: a calendar the parent shared with the worker's service account,
--   used for parents who have no OAuth refresh token. The app writes and reads it like the
--   other profile columns.
-- * events.calendar_error_kind: why the calendar sync of a 'failed' event failed, as a kind the
--   database can act on ('auth' = Google access was revoked). The worker sets it; the app can read
--   it (table-level SELECT) but not write it.
-- * A trigger on profiles: when a parent reconnects Google (google_refresh_token changes), the
--   events that failed because access was revoked go back to the worker. Until then they are left
--   alone: retrying a revoked grant every minute would only hammer Google's token endpoint.
-- * worker_claim_events also returns the owner's google_calendar_id (key owner_calendar_id).
-- * worker_complete_events records calendar_error_kind from the results' optional error_kind key.
--
-- Function signatures are unchanged (CREATE OR REPLACE); the privilege loop of 002 is re-applied
-- at the end because Supabase's default privileges would otherwise hand replaced or new
-- functions in `public` to anon and authenticated.

ALTER TABLE public.profiles ADD COLUMN IF NOT EXISTS google_calendar_id text;

ALTER TABLE public.events ADD COLUMN IF NOT EXISTS calendar_error_kind text;
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_constraint
                   WHERE conname = 'events_calendar_error_kind_check'
                     AND conrelid = 'public.events'::regclass) THEN
        ALTER TABLE public.events ADD CONSTRAINT events_calendar_error_kind_check
            CHECK (calendar_error_kind IN ('auth'));
    END IF;
END
$$;

-- Finding a parent's revoked events must not scan the table.
CREATE INDEX IF NOT EXISTS events_calendar_auth_idx ON public.events (user_id)
    WHERE calendar_error_kind = 'auth';

-- Like the other profile columns: written and read by its owner (and the service role).
GRANT SELECT (google_calendar_id), INSERT (google_calendar_id), UPDATE (google_calendar_id)
    ON public.profiles TO authenticated, service_role;

-- Reconnected: put back what failed for lack of access. A failed live event becomes 'pending'
-- (events_on_edit then bumps its version and clears attempts and the old error); a cancelled
-- event whose calendar entry could not be deleted is offered to the worker again by resetting
-- synced_version (its status stays 'cancelled'). SECURITY DEFINER: the parent updating their own
-- profile may not write the worker's bookkeeping columns.
CREATE OR REPLACE FUNCTION worker.profiles_on_google_reconnect() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    UPDATE public.events e
    SET status = CASE WHEN e.status = 'failed' THEN 'pending' ELSE e.status END,
        synced_version = CASE WHEN e.status = 'cancelled' THEN 0 ELSE e.synced_version END,
        calendar_error_kind = NULL,
        error_message = NULL,
        attempts = 0,
        next_attempt_at = NULL,
        updated_at = now()
    WHERE e.user_id = NEW.id
      AND e.calendar_error_kind = 'auth'
      AND e.status IN ('failed', 'cancelled');
    RETURN NULL;
END
$$;

DROP TRIGGER IF EXISTS profiles_on_google_reconnect ON public.profiles;
CREATE TRIGGER profiles_on_google_reconnect AFTER UPDATE OF google_refresh_token ON public.profiles
    FOR EACH ROW
    WHEN (NEW.google_refresh_token IS DISTINCT FROM OLD.google_refresh_token)
    EXECUTE FUNCTION worker.profiles_on_google_reconnect();

-- As in 002, plus owner_calendar_id (profiles.google_calendar_id).
CREATE OR REPLACE FUNCTION public.worker_claim_events(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer
) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    WITH picked AS (
        SELECT e.id
        FROM public.events e
        WHERE e.status IN ('pending', 'cancelled')
          AND e.synced_version < e.version
          AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= p_now)
          AND (e.lease_expires_at IS NULL OR e.lease_expires_at <= p_now)
        ORDER BY e.start_ts
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.events e
        SET claim_id = p_claim,
            lease_expires_at = p_now + make_interval(secs => p_lease_seconds)
        FROM picked
        WHERE e.id = picked.id
        RETURNING e.*
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'version', c.version,
        'user_id', c.user_id,
        'status', c.status,
        'title', c.title,
        'start_ts', c.start_ts,
        'end_ts', c.end_ts,
        'location', c.location,
        'prep_items', to_jsonb(c.prep_items),
        'google_calendar_id', c.google_calendar_id,
        'attempts', c.attempts,
        'child_name', ch.name,
        'has_profile', p.id IS NOT NULL,
        'timezone', p.timezone,
        'google_refresh_token', p.google_refresh_token,
        'owner_calendar_id', p.google_calendar_id
    ) ORDER BY c.user_id, c.start_ts), '[]'::jsonb)
    FROM claimed c
    LEFT JOIN public.children ch ON ch.id = c.child_id
    LEFT JOIN public.profiles p ON p.id = c.user_id
$$;

-- As in 002, plus calendar_error_kind.
--
-- p_results: [{id, version, outcome, google_calendar_id, error, error_kind, next_attempt_at,
--              reminders}] -- error_kind is optional: 'auth' when Google access was revoked.
-- A pass that does not send error_kind (older passes.plan_event) is still understood: the
-- worker's fixed revoked-access reason ("Google access was revoked; ...") means 'auth'.
-- calendar_error_kind is kept only with a 'failed' outcome; any other outcome clears it.
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
    -- A new name: a session that ran 002's version keeps its temp table (without error_kind)
    -- until its transaction ends.
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.worker_event_results_v3 (
        id uuid PRIMARY KEY, version bigint, outcome text, google_calendar_id text, error text,
        error_kind text, next_attempt_at timestamptz, reminders jsonb, current boolean,
        cancelled boolean
    ) ON COMMIT DROP;
    TRUNCATE pg_temp.worker_event_results_v3;

    -- Only rows this claim still holds; `current` says whether nobody edited them meanwhile.
    INSERT INTO pg_temp.worker_event_results_v3
    SELECT x.id, x.version, x.outcome, x.google_calendar_id, x.error,
           CASE WHEN x.outcome = 'failed' THEN
               coalesce(x.error_kind,
                        CASE WHEN x.error LIKE 'Google access was revoked%' THEN 'auth' END)
           END,
           x.next_attempt_at, coalesce(x.reminders, '[]'::jsonb), e.version = x.version,
           e.status = 'cancelled'
    FROM jsonb_to_recordset(p_results) AS x(
        id uuid, version bigint, outcome text, google_calendar_id text, error text,
        error_kind text, next_attempt_at timestamptz, reminders jsonb)
    JOIN public.events e ON e.id = x.id AND e.claim_id = p_claim;

    INSERT INTO public.reminders (event_id, user_id, notify_at_ts, message, updated_at)
    SELECT e.id, e.user_id, (rem ->> 'notify_at_ts')::timestamptz, rem ->> 'message', p_now
    FROM pg_temp.worker_event_results_v3 x
    JOIN public.events e ON e.id = x.id
    CROSS JOIN LATERAL jsonb_array_elements(x.reminders) AS rem
    WHERE x.current AND NOT x.cancelled
    ON CONFLICT (event_id, notify_at_ts) DO UPDATE
        SET status = 'pending', retry_count = 0, error_message = NULL, next_attempt_at = NULL,
            message = excluded.message, updated_at = excluded.updated_at
        WHERE public.reminders.status = 'cancelled';
    GET DIAGNOSTICS v_planned = ROW_COUNT;

    DELETE FROM public.reminders r
    USING pg_temp.worker_event_results_v3 x
    WHERE r.event_id = x.id AND x.current AND NOT x.cancelled
      AND r.status = 'pending'
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_array_elements(x.reminders) AS rem
          WHERE (rem ->> 'notify_at_ts')::timestamptz = r.notify_at_ts);
    GET DIAGNOSTICS v_unplanned = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'cancelled', error_message = 'event cancelled', next_attempt_at = NULL, updated_at = p_now
    FROM pg_temp.worker_event_results_v3 x
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
        calendar_error_kind = x.error_kind,
        attempts = CASE WHEN x.outcome = 'retry' THEN e.attempts + 1 ELSE 0 END,
        next_attempt_at = CASE WHEN x.outcome = 'retry' THEN x.next_attempt_at END,
        synced_at = CASE WHEN x.outcome = 'synced' AND NOT x.cancelled THEN p_now ELSE e.synced_at END,
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results_v3 x
    WHERE e.id = x.id AND x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_finished = ROW_COUNT;

    UPDATE public.events e
    SET google_calendar_id = coalesce(x.google_calendar_id, e.google_calendar_id),
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results_v3 x
    WHERE e.id = x.id AND NOT x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_stale = ROW_COUNT;

    RETURN jsonb_build_object(
        'finished', v_finished, 'stale', v_stale, 'reminders_planned', v_planned,
        'reminders_unplanned', v_unplanned, 'reminders_cancelled', v_cancelled);
END
$$;

-- Only the service role may call the worker's functions (as at the end of 002).
SELECT worker.restrict_worker_functions();
