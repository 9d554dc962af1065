-- worker.parents: where the worker learns a parent's push token, Google refresh token, time zone
-- and shared calendar. The one place that decides it; every worker function reads parents here.
--
-- A parent is an auth.users row; a profiles row is optional. Each value comes from the profile
-- when it is set there, otherwise from the same key in auth.users.raw_user_meta_data (where the
-- seed's app writes them with supabase.auth.updateUser({ data })), otherwise:
--   * push token: none;
--   * refresh token: the worker's private store (worker.refresh_tokens, filled by `secure-tokens`);
--   * time zone: UTC. profiles.timezone defaults to 'UTC', so a profile saying 'UTC' counts as not
--     set when the metadata names a zone.
-- *_source says where the push token was found, so DeviceNotRegistered clears it there.
DROP VIEW IF EXISTS worker.parents;
CREATE VIEW worker.parents AS
SELECT u.id,
       p.id IS NOT NULL AS has_profile,
       coalesce(nullif(p.expo_push_token, ''), nullif(u.raw_user_meta_data ->> 'expo_push_token', ''))
           AS push_token,
       CASE WHEN nullif(p.expo_push_token, '') IS NOT NULL THEN 'profile'
            WHEN nullif(u.raw_user_meta_data ->> 'expo_push_token', '') IS NOT NULL THEN 'metadata'
       END AS push_token_source,
       coalesce(nullif(p.google_refresh_token, ''), nullif(u.raw_user_meta_data ->> 'google_refresh_token', ''),
                s.refresh_token) AS refresh_token,
       CASE WHEN nullif(p.google_refresh_token, '') IS NOT NULL THEN 'profile'
            WHEN nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL THEN 'metadata'
            WHEN s.refresh_token IS NOT NULL THEN 'worker'
       END AS refresh_token_source,
       coalesce(nullif(nullif(p.timezone, ''), 'UTC'), nullif(u.raw_user_meta_data ->> 'timezone', ''),
                nullif(p.timezone, ''), 'UTC') AS timezone,
       nullif(p.google_calendar_id, '') AS calendar_id
FROM auth.users u
LEFT JOIN public.profiles p ON p.id = u.id
LEFT JOIN worker.refresh_tokens s ON s.user_id = u.id;
