-- Claim events with calendar or reminder work to do: pending (new or edited) and due for another
-- try, or cancelled and not yet cleaned up. Soonest events first: their reminders matter most.
-- Then recurring events whose reminders are planned less than half of p_horizon_seconds ahead
-- (RECURRENCE_HORIZON_DAYS): every pass extends the horizon; needs_sync says whether Google must
-- be told anything (false: only more reminders to plan).
--
-- First, events that waited for something only their parent could fix are given back:
--   * failed with google_revoked, once the parent's refresh token (wherever the app writes it,
--     see worker.parents) is no longer the one Google refused (worker.revoked_grants);
--   * failed with timezone, once the parent's time zone is one the worker knows.
-- A failed live event goes back to 'pending' (worker.events_on_edit bumps its version and clears
-- the old error); a cancelled one whose calendar entry could not be deleted is offered again.
--
-- p_claim is new for every call, so a call retried after its answer was lost (the connection
-- dropped after the commit) is answered with the rows it already claimed, instead of leaving them
-- leased to nobody. Returns everything the events step needs, one JSON object per event; values
-- are passed as the database holds them (a year-10000 start included: the worker sets such a row
-- aside by itself).
CREATE OR REPLACE FUNCTION public.worker_claim_events(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer, p_horizon_seconds integer
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_rows jsonb;
BEGIN
    WITH ready AS (
        SELECT e.id
        FROM public.events e
        JOIN worker.parents pa ON pa.id = e.user_id
        LEFT JOIN worker.revoked_grants g ON g.user_id = e.user_id
        WHERE e.status IN ('failed', 'cancelled') AND e.error_kind IN ('google_revoked', 'timezone')
          AND CASE e.error_kind
                  WHEN 'google_revoked' THEN pa.refresh_token IS NOT NULL
                       AND encode(sha256(convert_to(pa.refresh_token, 'UTF8')), 'hex') IS DISTINCT FROM g.token_sha256
                  ELSE worker.is_valid_timezone(pa.timezone) END
        FOR UPDATE OF e SKIP LOCKED
    )
    UPDATE public.events e
    SET status = CASE WHEN e.status = 'failed' THEN 'pending' ELSE e.status END,
        synced_version = CASE WHEN e.status = 'cancelled' THEN 0 ELSE e.synced_version END,
        error_kind = NULL, error_message = NULL, attempts = 0, next_attempt_at = NULL, updated_at = p_now
    FROM ready
    WHERE e.id = ready.id;

    WITH held AS (
        SELECT e.id FROM public.events e
        WHERE e.claim_id = p_claim AND e.lease_expires_at > p_now
    ), picked AS (
        SELECT e.id
        FROM public.events e
        WHERE e.status IN ('pending', 'cancelled')
          AND e.synced_version < e.version
          AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= p_now)
          AND (e.lease_expires_at IS NULL OR e.lease_expires_at <= p_now)
        ORDER BY e.start_ts
        LIMIT greatest(p_limit - (SELECT count(*) FROM held), 0)
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        SELECT e.id
        FROM public.events e
        WHERE e.recurrence IS NOT NULL AND e.status = 'synced'
          AND (e.planned_until IS NULL
               OR e.planned_until < p_now + make_interval(secs => p_horizon_seconds / 2))
          AND (e.lease_expires_at IS NULL OR e.lease_expires_at <= p_now)
        ORDER BY e.planned_until NULLS FIRST
        LIMIT greatest(p_limit - (SELECT count(*) FROM held) - (SELECT count(*) FROM picked), 0)
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.events e
        SET claim_id = p_claim,
            lease_expires_at = p_now + make_interval(secs => p_lease_seconds)
        FROM (SELECT id FROM picked UNION SELECT id FROM extended) chosen
        WHERE e.id = chosen.id
        RETURNING e.*
    ), rows AS (
        SELECT * FROM claimed
        UNION ALL
        SELECT e.* FROM public.events e JOIN held ON held.id = e.id
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
        'needs_sync', c.synced_version < c.version,
        'recurrence', c.recurrence,
        'planned_until', c.planned_until,
        'child_id', c.child_id,
        'child_name', ch.name,
        'has_profile', coalesce(pa.has_profile, false),
        'timezone', pa.timezone,
        'google_refresh_token', pa.refresh_token,
        'owner_calendar_id', pa.calendar_id,
        'calendar_sync_enabled', coalesce(pa.calendar_sync_enabled, true),
        'offsets_seconds', to_jsonb(pa.offsets_seconds),
        'quiet_hours_start', pa.quiet_hours_start,
        'quiet_hours_end', pa.quiet_hours_end
    ) ORDER BY c.user_id, c.start_ts), '[]'::jsonb)
    INTO v_rows
    FROM rows c
    LEFT JOIN public.children ch ON ch.id = c.child_id
    LEFT JOIN worker.parents pa ON pa.id = c.user_id;
    RETURN v_rows;
END
$$;
