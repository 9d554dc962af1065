-- `python worker/main.py secure-tokens`: move Google refresh tokens out of user metadata into the
-- worker's private store (worker.refresh_tokens).
--
-- Why: the seed's app writes the refresh token with supabase.auth.updateUser({ data }), into
-- auth.users.raw_user_meta_data, which the parent can read and which travels inside every access
-- token the app sends. The worker reads tokens from the store as well (worker.parents), so it keeps
-- syncing. One statement: the token is stored and removed from the metadata in one transaction, so
-- there is no moment where it is in neither; a metadata value that changed meanwhile (the parent
-- reconnected) stays for the next run. Running it again moves nothing more. p_dry_run: only count.
CREATE OR REPLACE FUNCTION public.worker_secure_tokens(p_dry_run boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_found integer;
    v_moved integer := 0;
BEGIN
    SELECT count(*) INTO v_found
    FROM auth.users u
    WHERE nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL;
    IF p_dry_run OR v_found = 0 THEN
        RETURN jsonb_build_object('in_metadata', v_found, 'moved', 0, 'dry_run', p_dry_run);
    END IF;
    WITH found AS (
        SELECT u.id, u.raw_user_meta_data ->> 'google_refresh_token' AS token
        FROM auth.users u
        WHERE nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL
        FOR UPDATE OF u
    ), stored AS (
        INSERT INTO worker.refresh_tokens (user_id, refresh_token, moved_at)
        SELECT f.id, f.token, now() FROM found f
        ON CONFLICT (user_id) DO UPDATE SET refresh_token = excluded.refresh_token, moved_at = excluded.moved_at
        RETURNING user_id, refresh_token
    )
    UPDATE auth.users u
    SET raw_user_meta_data = u.raw_user_meta_data - 'google_refresh_token'
    FROM stored s
    WHERE u.id = s.user_id AND u.raw_user_meta_data ->> 'google_refresh_token' = s.refresh_token;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN jsonb_build_object('in_metadata', v_found, 'moved', v_moved, 'dry_run', false);
END
$$;
