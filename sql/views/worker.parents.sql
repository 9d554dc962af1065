-- worker.parents: a parent as the worker sees them: where their push tokens, Google refresh token,
-- time zone and shared calendar come from, and their notification preferences. The one place that
-- decides it; every worker function reads parents here.
--
-- A parent is an auth.users row; a profiles row is optional. Each value comes from the profile
-- when it is set there, otherwise from the same key in auth.users.raw_user_meta_data (where the
-- seed's app writes them with supabase.auth.updateUser({ data })), otherwise:
--   * push token: none;
--   * refresh token: the worker's private store (worker.refresh_tokens, filled by `secure-tokens`);
--   * time zone: UTC. profiles.timezone defaults to 'UTC', so a profile saying 'UTC' counts as not
--     set when the metadata names a zone.
-- devices: every token a reminder goes to: that push token (the profile's, else the metadata's: an
-- older token left in the metadata once the app writes the profile is not a device) and the
-- parent's public.push_tokens, de-duplicated, each with where it came from (profile, metadata,
-- device), so a dead one is cleared there. Preferences come from public.notification_preferences; no row means the defaults
-- (reminder_offsets NULL: the worker's REMINDER_OFFSETS).
DROP VIEW IF EXISTS worker.parents;
CREATE VIEW worker.parents AS
SELECT u.id,
       p.id IS NOT NULL AS has_profile,
       coalesce(nullif(p.expo_push_token, ''), nullif(u.raw_user_meta_data ->> 'expo_push_token', ''))
           AS push_token,
       CASE WHEN nullif(p.expo_push_token, '') IS NOT NULL THEN 'profile'
            WHEN nullif(u.raw_user_meta_data ->> 'expo_push_token', '') IS NOT NULL THEN 'metadata'
       END AS push_token_source,
       (SELECT coalesce(jsonb_agg(jsonb_build_object('token', d.token, 'source', d.source) ORDER BY d.rank, d.token),
                        '[]'::jsonb)
        FROM (
            SELECT DISTINCT ON (c.token) c.token, c.source, c.rank
            FROM (
                SELECT coalesce(nullif(p.expo_push_token, ''), nullif(u.raw_user_meta_data ->> 'expo_push_token', ''))
                           AS token,
                       CASE WHEN nullif(p.expo_push_token, '') IS NOT NULL THEN 'profile' ELSE 'metadata' END AS source,
                       0 AS rank
                UNION ALL
                SELECT t.token, 'device', 1 FROM public.push_tokens t WHERE t.user_id = u.id
            ) c
            WHERE c.token IS NOT NULL
            ORDER BY c.token, c.rank
        ) d) AS devices,
       coalesce(nullif(p.google_refresh_token, ''), nullif(u.raw_user_meta_data ->> 'google_refresh_token', ''),
                s.refresh_token) AS refresh_token,
       CASE WHEN nullif(p.google_refresh_token, '') IS NOT NULL THEN 'profile'
            WHEN nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL THEN 'metadata'
            WHEN s.refresh_token IS NOT NULL THEN 'worker'
       END AS refresh_token_source,
       coalesce(nullif(nullif(p.timezone, ''), 'UTC'), nullif(u.raw_user_meta_data ->> 'timezone', ''),
                nullif(p.timezone, ''), 'UTC') AS timezone,
       nullif(p.google_calendar_id, '') AS calendar_id,
       -- Only lead times the worker can plan (the table's CHECK says so too; an adopted or older row
       -- must not make the view fail): NULL when none is left, which means the defaults.
       (SELECT array_agg(extract(epoch FROM o)::bigint ORDER BY o DESC) FROM unnest(np.reminder_offsets) AS o
        WHERE isfinite(o) AND o BETWEEN interval '1 minute' AND interval '28 days') AS offsets_seconds,
       coalesce(np.push_enabled, true) AS push_enabled,
       coalesce(np.calendar_sync_enabled, true) AS calendar_sync_enabled,
       coalesce(np.muted_children, '{}') AS muted_children,
       np.quiet_hours_start,
       np.quiet_hours_end
FROM auth.users u
LEFT JOIN public.profiles p ON p.id = u.id
LEFT JOIN worker.refresh_tokens s ON s.user_id = u.id
LEFT JOIN public.notification_preferences np ON np.user_id = u.id;
