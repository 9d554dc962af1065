-- 002: the worker's SQL functions. Every state change a pass makes happens here, in sets.
--
-- Conventions:
-- * p_now is the pass's clock (`run --now` moves it); no function reads now() for its decisions.
-- * A claim marks rows with the pass's claim id and a lease. Every later write is guarded by that
--   claim (and, for events, by the version the pass read), so a late or duplicate worker cannot
--   overwrite a newer outcome. A row whose lease ran out can be claimed again.
-- * Functions return jsonb, so the direct Postgres gateway and the Data API (PostgREST rpc) read
--   the very same document.
-- * SECURITY DEFINER with an empty search_path: they run as the tables' owner, and every name
--   is schema-qualified. EXECUTE belongs to service_role alone (see the end of this file).

-- Claim events with calendar or reminder work to do: pending (new or edited) and due for another
-- try, or cancelled and not yet cleaned up. Soonest events first: their reminders matter most.
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
        'google_refresh_token', p.google_refresh_token
    ) ORDER BY c.user_id, c.start_ts), '[]'::jsonb)
    FROM claimed c
    LEFT JOIN public.children ch ON ch.id = c.child_id
    LEFT JOIN public.profiles p ON p.id = c.user_id
$$;

-- Record the outcome of a batch of claimed events, plan their reminders, and release them.
--
-- p_results: [{id, version, outcome: synced|failed|retry, google_calendar_id, error,
--              next_attempt_at, reminders: [{notify_at_ts, message}]}]
-- outcome is the calendar's: 'synced' (done, or nothing to do), 'failed' (permanent; error says
-- why), 'retry' (transient; try again at next_attempt_at). google_calendar_id is the entry's id
-- after this pass (NULL once a cancelled event's entry is deleted).
-- * A live event gets its reminders planned whatever the calendar outcome (a calendar failure
--   must not cost a parent their reminders); a planned time that already has a row keeps it
--   (ON CONFLICT), except that a row cancelled earlier (event cancelled, then restored) is
--   planned again. Unsent reminders at times no longer planned (the event moved) go.
-- * A cancelled event's unsent reminders become cancelled; it stays 'cancelled'.
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
        next_attempt_at timestamptz, reminders jsonb, current boolean, cancelled boolean
    ) ON COMMIT DROP;
    TRUNCATE pg_temp.worker_event_results;

    -- Only rows this claim still holds; `current` says whether nobody edited them meanwhile.
    INSERT INTO pg_temp.worker_event_results
    SELECT x.id, x.version, x.outcome, x.google_calendar_id, x.error, x.next_attempt_at,
           coalesce(x.reminders, '[]'::jsonb), e.version = x.version, e.status = 'cancelled'
    FROM jsonb_to_recordset(p_results) AS x(
        id uuid, version bigint, outcome text, google_calendar_id text, error text,
        next_attempt_at timestamptz, reminders jsonb)
    JOIN public.events e ON e.id = x.id AND e.claim_id = p_claim;

    INSERT INTO public.reminders (event_id, user_id, notify_at_ts, message, updated_at)
    SELECT e.id, e.user_id, (rem ->> 'notify_at_ts')::timestamptz, rem ->> 'message', p_now
    FROM pg_temp.worker_event_results x
    JOIN public.events e ON e.id = x.id
    CROSS JOIN LATERAL jsonb_array_elements(x.reminders) AS rem
    WHERE x.current AND NOT x.cancelled
    ON CONFLICT (event_id, notify_at_ts) DO UPDATE
        SET status = 'pending', retry_count = 0, error_message = NULL, next_attempt_at = NULL,
            message = excluded.message, updated_at = excluded.updated_at
        WHERE public.reminders.status = 'cancelled';
    GET DIAGNOSTICS v_planned = ROW_COUNT;

    DELETE FROM public.reminders r
    USING pg_temp.worker_event_results x
    WHERE r.event_id = x.id AND x.current AND NOT x.cancelled
      AND r.status = 'pending'
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_array_elements(x.reminders) AS rem
          WHERE (rem ->> 'notify_at_ts')::timestamptz = r.notify_at_ts);
    GET DIAGNOSTICS v_unplanned = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'cancelled', error_message = 'event cancelled', next_attempt_at = NULL, updated_at = p_now
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
        attempts = CASE WHEN x.outcome = 'retry' THEN e.attempts + 1 ELSE 0 END,
        next_attempt_at = CASE WHEN x.outcome = 'retry' THEN x.next_attempt_at END,
        synced_at = CASE WHEN x.outcome = 'synced' AND NOT x.cancelled THEN p_now ELSE e.synced_at END,
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results x
    WHERE e.id = x.id AND x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_finished = ROW_COUNT;

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

-- Claim due reminders for sending, after settling those that must not be sent.
--
-- Due: 'pending', notify_at_ts <= p_now and its next try due; or 'sending' with a lapsed lease
-- (its worker died). Of those, reminders of cancelled events become 'cancelled' and reminders of
-- events that already started become 'expired'; the rest become 'sending' under this claim and
-- come back with everything the message and the send need.
CREATE OR REPLACE FUNCTION public.worker_claim_reminders(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_ids uuid[];
    v_more uuid[];
    v_cancelled integer;
    v_expired integer;
    v_claimed jsonb;
BEGIN
    -- Lapsed claims first (rare), then pending rows in notify order along reminders_due_idx.
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'sending' AND r.lease_expires_at <= p_now
        ORDER BY r.lease_expires_at
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ) lapsed;

    SELECT coalesce(array_agg(id), '{}') INTO v_more FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
          AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)
        ORDER BY r.notify_at_ts
        LIMIT greatest(p_limit - cardinality(v_ids), 0)
        FOR UPDATE SKIP LOCKED
    ) due;
    v_ids := v_ids || v_more;

    UPDATE public.reminders r
    SET status = 'cancelled', error_message = 'event cancelled', claim_id = NULL,
        lease_expires_at = NULL, next_attempt_at = NULL, updated_at = p_now
    FROM public.events e
    WHERE r.id = ANY (v_ids) AND e.id = r.event_id AND e.status = 'cancelled';
    GET DIAGNOSTICS v_cancelled = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'expired', error_message = 'the event had already started', claim_id = NULL,
        lease_expires_at = NULL, next_attempt_at = NULL, updated_at = p_now
    FROM public.events e
    WHERE r.id = ANY (v_ids) AND e.id = r.event_id AND e.start_ts <= p_now
      AND r.status IN ('pending', 'sending');
    GET DIAGNOSTICS v_expired = ROW_COUNT;

    WITH claimed AS (
        UPDATE public.reminders r
        SET status = 'sending', claim_id = p_claim,
            lease_expires_at = p_now + make_interval(secs => p_lease_seconds), updated_at = p_now
        WHERE r.id = ANY (v_ids) AND r.status IN ('pending', 'sending')
        RETURNING r.*
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'event_id', c.event_id,
        'user_id', c.user_id,
        'notify_at_ts', c.notify_at_ts,
        'retry_count', c.retry_count,
        'title', e.title,
        'start_ts', e.start_ts,
        'end_ts', e.end_ts,
        'location', e.location,
        'prep_items', to_jsonb(e.prep_items),
        'child_name', ch.name,
        'has_profile', p.id IS NOT NULL,
        'push_token', p.expo_push_token,
        'timezone', p.timezone
    ) ORDER BY c.notify_at_ts), '[]'::jsonb)
    INTO v_claimed
    FROM claimed c
    JOIN public.events e ON e.id = c.event_id
    LEFT JOIN public.children ch ON ch.id = e.child_id
    LEFT JOIN public.profiles p ON p.id = c.user_id;

    RETURN jsonb_build_object('claimed', v_claimed, 'cancelled', v_cancelled, 'expired', v_expired);
END
$$;

-- Record the outcomes of a batch of sends in one call.
--
-- p_outcomes: [{id, outcome: sent|retry|failed|deferred, error, message, push_token, ticket_id,
--               next_attempt_at, clear_token}]
-- Only rows still 'sending' under this claim are written: a pass whose lease lapsed and whose
-- rows another pass took over cannot overwrite that pass's outcome. A 'retry' counts one failed
-- attempt; the attempt that reaches p_max_attempts makes the reminder 'failed'. 'deferred' (Expo
-- refused our credentials: not the reminder's fault) waits for next_attempt_at without counting
-- an attempt. clear_token
-- removes the push token from the owner's profile if it is still the one that failed.
CREATE OR REPLACE FUNCTION public.worker_record_push_outcomes(
    p_now timestamptz, p_claim uuid, p_max_attempts integer, p_outcomes jsonb
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_counts jsonb;
    v_cleared integer;
BEGIN
    WITH x AS (
        SELECT * FROM jsonb_to_recordset(p_outcomes) AS o(
            id uuid, outcome text, error text, message text, push_token text, ticket_id text,
            next_attempt_at timestamptz, clear_token boolean)
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE
                WHEN x.outcome = 'sent' THEN 'sent'
                WHEN x.outcome = 'deferred' THEN 'pending'
                WHEN x.outcome = 'retry' AND r.retry_count + 1 < p_max_attempts THEN 'pending'
                ELSE 'failed' END,
            retry_count = r.retry_count + CASE WHEN x.outcome = 'retry' THEN 1 ELSE 0 END,
            sent_at_ts = CASE WHEN x.outcome = 'sent' THEN p_now ELSE r.sent_at_ts END,
            error_message = CASE
                WHEN x.outcome = 'sent' THEN NULL
                WHEN x.outcome = 'retry' AND r.retry_count + 1 >= p_max_attempts
                    THEN format('gave up after %s attempts: %s', r.retry_count + 1, x.error)
                ELSE x.error END,
            next_attempt_at = CASE
                WHEN x.outcome = 'deferred' THEN x.next_attempt_at
                WHEN x.outcome = 'retry' AND r.retry_count + 1 < p_max_attempts THEN x.next_attempt_at END,
            message = coalesce(x.message, r.message),
            push_token = coalesce(x.push_token, r.push_token),
            claim_id = NULL,
            lease_expires_at = NULL,
            updated_at = p_now
        FROM x
        WHERE r.id = x.id AND r.claim_id = p_claim AND r.status = 'sending'
        RETURNING r.status
    )
    SELECT jsonb_build_object(
        'sent', count(*) FILTER (WHERE status = 'sent'),
        'retried', count(*) FILTER (WHERE status = 'pending'),
        'failed', count(*) FILTER (WHERE status = 'failed'))
    INTO v_counts
    FROM written;

    UPDATE public.profiles p
    SET expo_push_token = NULL, updated_at = p_now
    FROM jsonb_to_recordset(p_outcomes) AS x(id uuid, push_token text, clear_token boolean)
    JOIN public.reminders r ON r.id = x.id
    WHERE x.clear_token AND p.id = r.user_id AND p.expo_push_token = x.push_token;
    GET DIAGNOSTICS v_cleared = ROW_COUNT;

    RETURN v_counts || jsonb_build_object('tokens_cleared', v_cleared);
END
$$;

-- The schema version the database is at: the number of the newest applied migration.
CREATE OR REPLACE FUNCTION public.worker_schema_version() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT jsonb_build_object('version', coalesce(max(version), 0)) FROM worker.schema_migrations
$$;

-- Only the service role may call the worker's functions. PostgreSQL grants EXECUTE to PUBLIC by
-- default, and Supabase's default privileges to anon and authenticated: take both back.
CREATE OR REPLACE FUNCTION worker.restrict_worker_functions() RETURNS void
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid::regprocedure FROM pg_proc p
        JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname LIKE 'worker\_%'
    LOOP
        EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon, authenticated', f);
        EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO service_role', f);
    END LOOP;
    REVOKE ALL ON ALL FUNCTIONS IN SCHEMA worker FROM PUBLIC, anon, authenticated;
END
$$;
-- Every migration that creates or replaces a worker function ends with this call.
SELECT worker.restrict_worker_functions();
