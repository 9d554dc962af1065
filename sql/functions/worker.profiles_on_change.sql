-- Trigger (AFTER UPDATE OF google_refresh_token, timezone ON profiles): give back to the worker the
-- events that waited for something only the parent could fix.
--
-- * A new refresh token (the parent reconnected Google): events failed with 'google_revoked'.
--   Until then they are left alone: retrying a revoked grant every minute would only hammer
--   Google's token endpoint.
-- * A new time zone: events failed with 'timezone'.
-- A failed live event becomes 'pending' (events_on_edit then bumps its version and clears the old
-- error); a cancelled event whose calendar entry could not be deleted is offered again by
-- resetting synced_version. SECURITY DEFINER: the parent may not write the bookkeeping columns.
CREATE OR REPLACE FUNCTION worker.profiles_on_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_kinds text[] := '{}';
BEGIN
    IF NEW.google_refresh_token IS DISTINCT FROM OLD.google_refresh_token THEN
        v_kinds := v_kinds || 'google_revoked'::text;
    END IF;
    IF NEW.timezone IS DISTINCT FROM OLD.timezone THEN
        v_kinds := v_kinds || 'timezone'::text;
    END IF;
    IF cardinality(v_kinds) = 0 THEN
        RETURN NULL;
    END IF;
    UPDATE public.events e
    SET status = CASE WHEN e.status = 'failed' THEN 'pending' ELSE e.status END,
        synced_version = CASE WHEN e.status = 'cancelled' THEN 0 ELSE e.synced_version END,
        error_kind = NULL,
        error_message = NULL,
        attempts = 0,
        next_attempt_at = NULL,
        updated_at = now()
    WHERE e.user_id = NEW.id
      AND e.error_kind = ANY (v_kinds)
      AND e.status IN ('failed', 'cancelled');
    RETURN NULL;
END
$$;
