-- A push token as a person may see it (`export-user`): enough to tell one phone from another,
-- never enough to send to it. An Expo token keeps its shape and at most its last 4 characters
-- (ExponentPushToken[***a1b2]); a token shorter than 12 characters inside the brackets, or of
-- another shape, shows none of its own beyond that. NULL stays NULL.
CREATE OR REPLACE FUNCTION worker.mask_push_token(p_token text) RETURNS text
    LANGUAGE sql IMMUTABLE
    SET search_path = ''
AS $$
    SELECT CASE
        WHEN p_token IS NULL THEN NULL
        WHEN p_token ~ '^Expo(nent)?PushToken\[[^]]*\]$' THEN
            substring(p_token FROM '^(Expo(?:nent)?PushToken)\[') || '[***'
            || CASE WHEN length(p_token) - strpos(p_token, '[') - 1 >= 12 THEN right(left(p_token, -1), 4) ELSE '' END
            || ']'
        WHEN length(p_token) >= 16 THEN '***' || right(p_token, 4)
        ELSE '***'
    END
$$;
