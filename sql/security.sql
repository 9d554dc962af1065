-- Row-level security, policies and privileges. Re-applied by every `migrate` that changes a
-- definition (or finds a new column on profiles).
--
-- Two kinds of tables (worker.table_origin, recorded before the first migration ran):
-- * The worker's own (it created them): strict. Supabase grants every new table in `public` to anon
--   and authenticated through default privileges, so everything is revoked and only what the app
--   needs is granted back, column by column where a column must stay private.
-- * Adopted (the app had them): the app's privileges and policies stay as they are; only what the
--   worker must protect is taken away: nobody reads a push or refresh token through the API (the
--   starter's "Public profiles are viewable by everyone." would otherwise show them), nobody writes
--   reminders (the worker's table) or the events' bookkeeping (trigger events_guard).

-- A signed-in user sees only their own rows; anon sees none (besides policies the app had).
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.children ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.worker_runs ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.notification_preferences ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.push_tokens ENABLE ROW LEVEL SECURITY;

DROP POLICY IF EXISTS profiles_own ON public.profiles;
CREATE POLICY profiles_own ON public.profiles FOR ALL TO authenticated
    USING (id = (SELECT auth.uid())) WITH CHECK (id = (SELECT auth.uid()));

DROP POLICY IF EXISTS children_own ON public.children;
CREATE POLICY children_own ON public.children FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

DROP POLICY IF EXISTS events_own ON public.events;
CREATE POLICY events_own ON public.events FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid()))
    WITH CHECK (
        user_id = (SELECT auth.uid())
        AND (child_id IS NULL OR EXISTS (
            SELECT 1 FROM public.children c WHERE c.id = child_id AND c.user_id = (SELECT auth.uid())
        ))
    );

DROP POLICY IF EXISTS reminders_own ON public.reminders;
CREATE POLICY reminders_own ON public.reminders FOR SELECT TO authenticated
    USING (user_id = (SELECT auth.uid()));

DROP POLICY IF EXISTS notification_preferences_own ON public.notification_preferences;
CREATE POLICY notification_preferences_own ON public.notification_preferences FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

DROP POLICY IF EXISTS push_tokens_own ON public.push_tokens;
CREATE POLICY push_tokens_own ON public.push_tokens FOR ALL TO authenticated
    USING (user_id = (SELECT auth.uid())) WITH CHECK (user_id = (SELECT auth.uid()));

DO $$
DECLARE
    v_adopted text[] := ARRAY(SELECT o.table_name FROM worker.table_origin o WHERE o.adopted);
BEGIN
    -- profiles -----------------------------------------------------------------------------------
    IF 'public.profiles' = ANY (v_adopted) THEN
        PERFORM worker.hide_columns('public.profiles', ARRAY['expo_push_token', 'google_refresh_token'],
                                    ARRAY['PUBLIC', 'anon', 'authenticated', 'service_role']);
    ELSE
        REVOKE ALL ON public.profiles FROM PUBLIC, anon, authenticated, service_role;
        -- The refresh token can be written by its owner but never read back through the Data API,
        -- not even with the service key: the worker reads it only inside its functions.
        GRANT SELECT (id, expo_push_token, timezone, google_calendar_id, updated_at) ON public.profiles
            TO authenticated, service_role;
        GRANT INSERT (id, expo_push_token, google_refresh_token, timezone, google_calendar_id),
              UPDATE (expo_push_token, google_refresh_token, timezone, google_calendar_id),
              DELETE
            ON public.profiles TO authenticated, service_role;
    END IF;

    -- children -----------------------------------------------------------------------------------
    IF NOT 'public.children' = ANY (v_adopted) THEN
        REVOKE ALL ON public.children FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.children TO authenticated, service_role;
    END IF;

    -- events: the app writes an event's content and may cancel it; the bookkeeping is the worker's.
    IF NOT 'public.events' = ANY (v_adopted) THEN
        REVOKE ALL ON public.events FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.events TO authenticated, service_role;
        GRANT INSERT (id, user_id, child_id, title, start_ts, end_ts, location, prep_items, status),
              UPDATE (child_id, title, start_ts, end_ts, location, prep_items, status),
              DELETE
            ON public.events TO authenticated, service_role;
    END IF;

    -- preferences and devices: each parent reads and writes their own (policies above).
    IF NOT 'public.notification_preferences' = ANY (v_adopted) THEN
        REVOKE ALL ON public.notification_preferences FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.notification_preferences TO authenticated, service_role;
    END IF;
    IF 'public.push_tokens' = ANY (v_adopted) THEN
        PERFORM worker.hide_columns('public.push_tokens', ARRAY['token'], ARRAY['PUBLIC', 'anon']);
    ELSE
        REVOKE ALL ON public.push_tokens FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT, INSERT, UPDATE, DELETE ON public.push_tokens TO authenticated, service_role;
    END IF;

    -- reminders: the worker's table; parents read their own.
    IF 'public.reminders' = ANY (v_adopted) THEN
        REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.reminders FROM PUBLIC, anon, authenticated;
        PERFORM worker.hide_columns('public.reminders', ARRAY['push_token'], ARRAY['PUBLIC', 'anon', 'authenticated']);
    ELSE
        REVOKE ALL ON public.reminders FROM PUBLIC, anon, authenticated, service_role;
        GRANT SELECT ON public.reminders TO authenticated, service_role;
    END IF;
END
$$;

-- Run history: for operators with the service role (and through worker_status()); RLS is on with
-- no policy, so on plain Postgres only worker_status() reads it.
REVOKE ALL ON public.worker_runs FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE public.worker_runs_id_seq FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.worker_runs TO service_role;

-- The worker's internal objects: nobody but their owner.
REVOKE ALL ON ALL TABLES IN SCHEMA worker FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA worker FROM PUBLIC, anon, authenticated, service_role;

-- Only the service role may call the worker's functions. PostgreSQL grants EXECUTE to PUBLIC by
-- default, and Supabase's default privileges to anon and authenticated: take both back.
DO $$
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
END
$$;

-- The profiles columns this file granted on (see worker.profiles_columns()); `migrate` records the
-- definitions' checksum in the same row after this file.
INSERT INTO worker.schema_definitions (id, checksum, profiles_columns)
VALUES (true, '', worker.profiles_columns())
ON CONFLICT (id) DO UPDATE SET profiles_columns = excluded.profiles_columns;
