-- Row-level security, policies and privileges. Re-applied by every `migrate` that changes a
-- definition.
--
-- Supabase grants every new table, function and sequence in `public` to anon and authenticated
-- through default privileges; so this file revokes explicitly and grants only what the app needs,
-- column by column where a column must stay private.

-- A signed-in user sees only their own rows; anon sees none.
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.children ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.reminders ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.worker_runs ENABLE ROW LEVEL SECURITY;

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

-- Privileges. Start from nothing (undoing Supabase's default grants), then grant what the app uses.
REVOKE ALL ON public.profiles, public.children, public.events, public.reminders, public.worker_runs
    FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE public.worker_runs_id_seq FROM PUBLIC, anon, authenticated, service_role;

-- The refresh token can be written by its owner but never read back through the Data API, not
-- even with the service key: the worker reads it only inside worker_claim_events().
GRANT SELECT (id, expo_push_token, timezone, google_calendar_id, updated_at) ON public.profiles
    TO authenticated, service_role;
GRANT INSERT (id, expo_push_token, google_refresh_token, timezone, google_calendar_id),
      UPDATE (expo_push_token, google_refresh_token, timezone, google_calendar_id),
      DELETE
    ON public.profiles TO authenticated, service_role;

GRANT SELECT, INSERT, UPDATE, DELETE ON public.children TO authenticated, service_role;

-- The app writes an event's content and may cancel it; the bookkeeping columns are the worker's.
GRANT SELECT ON public.events TO authenticated, service_role;
GRANT INSERT (id, user_id, child_id, title, start_ts, end_ts, location, prep_items, status),
      UPDATE (child_id, title, start_ts, end_ts, location, prep_items, status),
      DELETE
    ON public.events TO authenticated, service_role;

GRANT SELECT ON public.reminders TO authenticated, service_role;

-- Run history: for operators with the service role (and through worker_status()); RLS is on with
-- no policy, so on plain Postgres only worker_status() reads it.
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
