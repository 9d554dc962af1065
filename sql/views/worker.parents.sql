-- worker.parents: where the worker learns a parent's push token, Google refresh token, time zone
-- and shared calendar. The one place that decides it; every worker function reads parents here.
--
-- A parent is an auth.users row; their profile (public.profiles) may be missing.
DROP VIEW IF EXISTS worker.parents;
CREATE VIEW worker.parents AS
SELECT u.id,
       p.id IS NOT NULL                 AS has_profile,
       nullif(p.expo_push_token, '')    AS push_token,
       nullif(p.google_refresh_token, '') AS refresh_token,
       coalesce(nullif(p.timezone, ''), 'UTC') AS timezone,
       nullif(p.google_calendar_id, '') AS calendar_id
FROM auth.users u
LEFT JOIN public.profiles p ON p.id = u.id;
