-- 001: tables, row-level security and privileges of the reminder worker.
--
-- Valid on Supabase and on plain PostgreSQL 14+. Supabase's own objects (the roles anon,
-- authenticated and service_role, auth.users, auth.uid()) are created here only where they are
-- missing, so a plain Postgres behaves like a Supabase project.
--
-- Supabase grants every new table, function and sequence in `public` to anon and authenticated
-- through default privileges; this file therefore revokes explicitly and grants only what the app
-- needs, column by column where a column must stay private.

-- Supabase's roles, where missing. service_role bypasses RLS on Supabase; here it never needs to,
-- because the worker reaches data only through SECURITY DEFINER functions (002).
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
        CREATE ROLE anon NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
        CREATE ROLE authenticated NOLOGIN NOINHERIT;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
        CREATE ROLE service_role NOLOGIN NOINHERIT;
    END IF;
END
$$;

-- Supabase's auth schema, where missing: only what our policies and foreign keys use.
DO $$
BEGIN
    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;
    IF to_regclass('auth.users') IS NULL THEN
        CREATE TABLE auth.users (id uuid PRIMARY KEY);
    END IF;
    IF to_regprocedure('auth.uid()') IS NULL THEN
        -- As Supabase's: the `sub` claim of the request's JWT, NULL when anonymous.
        CREATE FUNCTION auth.uid() RETURNS uuid
            LANGUAGE sql STABLE
            AS $f$
                SELECT nullif(coalesce(
                    current_setting('request.jwt.claim.sub', true),
                    current_setting('request.jwt.claims', true)::jsonb ->> 'sub'
                ), '')::uuid
            $f$;
        GRANT EXECUTE ON FUNCTION auth.uid() TO anon, authenticated, service_role;
    END IF;
END
$$;

-- The worker's private schema: bookkeeping that no API role may see.
CREATE SCHEMA IF NOT EXISTS worker;
REVOKE ALL ON SCHEMA worker FROM PUBLIC;

-- Is `tz` a time zone name PostgreSQL (and so Python's zoneinfo, same IANA database) knows?
CREATE OR REPLACE FUNCTION worker.is_valid_timezone(tz text) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = ''
AS $$
BEGIN
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;

CREATE TABLE IF NOT EXISTS public.profiles (
    id                   uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    expo_push_token      text,
    google_refresh_token text,
    timezone             text NOT NULL DEFAULT 'UTC',
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.children (
    id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    name    text NOT NULL
);
CREATE INDEX IF NOT EXISTS children_user_id_idx ON public.children (user_id);

CREATE TABLE IF NOT EXISTS public.events (
    -- Seed 004's columns, names and types unchanged.
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    child_id           uuid REFERENCES public.children (id) ON DELETE SET NULL,
    title              text NOT NULL,
    start_ts           timestamptz NOT NULL,
    end_ts             timestamptz NOT NULL,
    location           text,
    prep_items         text[],
    status             text DEFAULT 'pending'
        CONSTRAINT events_status_check CHECK (status IN ('pending', 'synced', 'failed', 'cancelled')),
    google_calendar_id text,
    error_message      text,
    created_at         timestamptz DEFAULT now(),
    -- The worker's bookkeeping.
    -- version grows with every edit the worker must act on (trigger below); synced_version is the
    -- version the worker last finished. A pass finishes an event only if its version is unchanged,
    -- so an edit made while a pass was talking to Google is never overwritten by that pass.
    version            bigint NOT NULL DEFAULT 1,
    synced_version     bigint NOT NULL DEFAULT 0,
    attempts           integer NOT NULL DEFAULT 0,
    next_attempt_at    timestamptz,
    claim_id           uuid,
    lease_expires_at   timestamptz,
    synced_at          timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS events_user_id_idx ON public.events (user_id);
-- The events step's claim: only rows with work to do are in this index.
CREATE INDEX IF NOT EXISTS events_todo_idx ON public.events (start_ts)
    WHERE status IN ('pending', 'cancelled') AND synced_version < version;

CREATE TABLE IF NOT EXISTS public.reminders (
    -- Seed 004's columns, names and types unchanged.
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id         uuid REFERENCES public.events (id) ON DELETE CASCADE,
    user_id          uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    notify_at_ts     timestamptz NOT NULL,
    message          text NOT NULL,
    push_token       text,
    sent_at_ts       timestamptz,
    status           text DEFAULT 'pending'
        CONSTRAINT reminders_status_check
        CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'expired', 'cancelled')),
    retry_count      integer DEFAULT 0,
    error_message    text,
    created_at       timestamptz DEFAULT now(),
    UNIQUE (event_id, notify_at_ts),
    -- The worker's bookkeeping: 'sending' rows belong to claim_id until lease_expires_at.
    next_attempt_at  timestamptz,
    claim_id         uuid,
    lease_expires_at timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS reminders_user_id_idx ON public.reminders (user_id);
-- The push step's claim walks this index in notify_at_ts order and stops after one batch.
CREATE INDEX IF NOT EXISTS reminders_due_idx ON public.reminders (notify_at_ts) WHERE status = 'pending';
-- Claims whose worker died: found again once the lease runs out.
CREATE INDEX IF NOT EXISTS reminders_inflight_idx ON public.reminders (lease_expires_at)
    WHERE status = 'sending';

-- An edit the worker must act on puts the event back to 'pending' and bumps its version.
CREATE OR REPLACE FUNCTION worker.events_on_edit() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF (NEW.title, NEW.start_ts, NEW.end_ts, NEW.location, NEW.prep_items, NEW.child_id)
       IS DISTINCT FROM (OLD.title, OLD.start_ts, OLD.end_ts, OLD.location, OLD.prep_items, OLD.child_id) THEN
        NEW.version := OLD.version + 1;
        -- An edit of a cancelled event keeps it cancelled; any other edit needs a new sync.
        IF NEW.status IS NOT DISTINCT FROM OLD.status AND OLD.status IS DISTINCT FROM 'cancelled' THEN
            NEW.status := 'pending';
        END IF;
    ELSIF NEW.status IN ('pending', 'cancelled') AND NEW.status IS DISTINCT FROM OLD.status THEN
        -- Cancelled by the app, or put back to pending by hand (e.g. to retry a failed event).
        NEW.version := OLD.version + 1;
    END IF;
    IF NEW.version <> OLD.version THEN
        NEW.attempts := 0;
        NEW.next_attempt_at := NULL;
        NEW.error_message := NULL;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS events_on_edit ON public.events;
CREATE TRIGGER events_on_edit BEFORE UPDATE ON public.events
    FOR EACH ROW EXECUTE FUNCTION worker.events_on_edit();

-- A profile's time zone must be one the worker can render times in.
CREATE OR REPLACE FUNCTION worker.profiles_check_timezone() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF NOT worker.is_valid_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'profiles.timezone: unknown time zone %', quote_literal(NEW.timezone)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA name such as Europe/Berlin or America/New_York.';
    END IF;
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

DROP TRIGGER IF EXISTS profiles_check_timezone ON public.profiles;
CREATE TRIGGER profiles_check_timezone BEFORE INSERT OR UPDATE OF timezone ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION worker.profiles_check_timezone();

-- Row-level security: a signed-in user sees only their own rows; anon sees none.
ALTER TABLE public.profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.children ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.reminders ENABLE ROW LEVEL SECURITY;

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
REVOKE ALL ON public.profiles, public.children, public.events, public.reminders
    FROM PUBLIC, anon, authenticated, service_role;

-- The refresh token can be written by its owner but never read back through the Data API, not
-- even with the service key: the worker reads it only inside worker_claim_events().
GRANT SELECT (id, expo_push_token, timezone, created_at, updated_at) ON public.profiles
    TO authenticated, service_role;
GRANT INSERT (id, expo_push_token, google_refresh_token, timezone),
      UPDATE (expo_push_token, google_refresh_token, timezone),
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
