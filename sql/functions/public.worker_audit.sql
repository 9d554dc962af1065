-- What `python worker/main.py check` reports about a live database, in one document (both gateways):
-- * missing: worker columns or functions this code needs and the database lacks;
-- * readable_tokens: grants that let an API role read a Google refresh token, or another parent's
--   push token (anon at all; authenticated while a policy besides the worker's own lets them read
--   other parents' profiles, like the user-management starter's public read);
-- * rls_off: tables the worker uses with row-level security off;
-- * unknown_statuses: rows in a status the worker does not know (left alone by every pass);
-- * sent_but_pending: reminders 'pending' with sent_at_ts set (sent by an earlier sender; left alone);
-- * refresh_tokens_in_metadata: parents whose Google refresh token is in their user metadata
--   (`python worker/main.py secure-tokens` moves them into the worker's private store);
-- * constraints_missing: vocabulary constraints left out because rows break them.
-- The words come from the caller (worker/vocabulary.py), the one place they are written down.
CREATE OR REPLACE FUNCTION public.worker_audit(
    p_event_statuses text[], p_reminder_statuses text[], p_constraints text[]
) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_needed_columns text[] := ARRAY[
        'profiles.expo_push_token', 'profiles.google_refresh_token', 'profiles.timezone',
        'profiles.google_calendar_id', 'children.name', 'events.version', 'events.synced_version',
        'events.attempts', 'events.next_attempt_at', 'events.claim_id', 'events.lease_expires_at',
        'events.error_kind', 'reminders.claim_id', 'reminders.lease_expires_at', 'reminders.error_kind',
        'reminders.expo_ticket_id', 'reminders.receipt_status', 'reminders.planned_by_worker',
        'events.recurrence', 'events.planned_until', 'reminders.occurs_at'];
    v_needed_functions text[] := ARRAY[
        'worker_claim_events', 'worker_complete_events', 'worker_claim_reminders', 'worker_record_push_outcomes',
        'worker_claim_receipts', 'worker_record_receipts', 'worker_record_run', 'worker_status',
        'worker_schema_version', 'worker_secure_tokens', 'worker_audit', 'worker_pending_events',
        'worker_export_user', 'worker_forget_user', 'worker_forget_user_calendar'];
    v_missing jsonb;
    v_readable jsonb;
BEGIN
    SELECT coalesce(jsonb_agg(n ORDER BY n), '[]'::jsonb) INTO v_missing FROM (
        SELECT c AS n FROM unnest(v_needed_columns) AS c
        WHERE NOT EXISTS (
            SELECT 1 FROM pg_attribute a
            WHERE a.attrelid = to_regclass('public.' || split_part(c, '.', 1))
              AND a.attname = split_part(c, '.', 2) AND NOT a.attisdropped)
        UNION ALL
        SELECT f || '()' FROM unnest(v_needed_functions) AS f
        WHERE NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace s ON s.oid = p.pronamespace
                          WHERE s.nspname = 'public' AND p.proname = f)) m;

    SELECT coalesce(jsonb_agg(r.role || ' can read profiles.' || r.col ORDER BY r.role, r.col), '[]'::jsonb)
    INTO v_readable
    FROM (VALUES ('anon', 'google_refresh_token'), ('authenticated', 'google_refresh_token'),
                 ('anon', 'expo_push_token'), ('authenticated', 'expo_push_token')) AS r(role, col)
    WHERE to_regrole(r.role) IS NOT NULL
      AND has_column_privilege(r.role, 'public.profiles', r.col, 'SELECT')
      AND (r.col = 'google_refresh_token' OR r.role = 'anon' OR EXISTS (
          SELECT 1 FROM pg_policies pol
          WHERE pol.schemaname = 'public' AND pol.tablename = 'profiles' AND pol.policyname <> 'profiles_own'
            AND pol.cmd IN ('SELECT', 'ALL') AND pol.permissive = 'PERMISSIVE'
            AND (pol.roles && ARRAY['public', 'authenticated']::name[])));

    RETURN jsonb_build_object(
        'missing', v_missing,
        'readable_tokens', v_readable,
        'rls_off', (
            SELECT coalesce(jsonb_agg(t ORDER BY t), '[]'::jsonb)
            FROM unnest(ARRAY['public.profiles', 'public.children', 'public.events', 'public.reminders',
                              'public.worker_runs']) AS t
            WHERE NOT coalesce((SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = to_regclass(t)), false)),
        'unknown_statuses', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('table', u.tbl, 'status', u.status, 'rows', u.n)
                                      ORDER BY u.tbl, u.status), '[]'::jsonb)
            FROM (
                SELECT 'events' AS tbl, coalesce(e.status, '(null)') AS status, count(*) AS n FROM public.events e
                WHERE e.status IS NULL OR NOT e.status = ANY (p_event_statuses)
                GROUP BY 2
                UNION ALL
                SELECT 'reminders', coalesce(r.status, '(null)'), count(*) FROM public.reminders r
                WHERE r.status IS NULL OR NOT r.status = ANY (p_reminder_statuses)
                GROUP BY 2) u),
        'sent_but_pending', (SELECT count(*) FROM public.reminders r
                             WHERE r.status = 'pending' AND r.sent_at_ts IS NOT NULL),
        'refresh_tokens_in_metadata', (
            SELECT count(*) FROM auth.users u
            WHERE nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL),
        'constraints_missing', (
            SELECT coalesce(jsonb_agg(c ORDER BY c), '[]'::jsonb)
            FROM unnest(p_constraints) AS c
            WHERE NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conname = c)));
END
$$;
