-- Forget push tokens Expo says are dead (DeviceNotRegistered), where the worker read them from:
-- the owner's profile, the expo_push_token key of their user metadata, or their devices
-- (public.push_tokens) (see worker.parents).
-- Each is cleared only if it still holds that very token: a parent who registered a new phone
-- meanwhile keeps it. Returns how many places were cleared.
CREATE OR REPLACE FUNCTION worker.clear_push_tokens(p_now timestamptz, p_dead worker.user_token[])
    RETURNS integer
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
AS $$
DECLARE
    v_profiles integer;
    v_metadata integer;
    v_devices integer;
BEGIN
    IF cardinality(p_dead) = 0 THEN
        RETURN 0;
    END IF;
    UPDATE public.profiles p
    SET expo_push_token = NULL, updated_at = p_now
    FROM unnest(p_dead) AS d
    WHERE p.id = d.user_id AND p.expo_push_token = d.token;
    GET DIAGNOSTICS v_profiles = ROW_COUNT;

    UPDATE auth.users u
    SET raw_user_meta_data = u.raw_user_meta_data - 'expo_push_token'
    FROM unnest(p_dead) AS d
    WHERE u.id = d.user_id AND u.raw_user_meta_data ->> 'expo_push_token' = d.token;
    GET DIAGNOSTICS v_metadata = ROW_COUNT;

    DELETE FROM public.push_tokens t
    USING unnest(p_dead) AS d
    WHERE t.user_id = d.user_id AND t.token = d.token;
    GET DIAGNOSTICS v_devices = ROW_COUNT;
    RETURN v_profiles + v_metadata + v_devices;
END
$$;
