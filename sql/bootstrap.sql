-- Bootstrap: what every other file of sql/ may rely on. Applied first by every `migrate`, and
-- idempotent: each statement creates only what is missing.
--
-- Supabase's own objects (the roles anon, authenticated and service_role, the auth schema,
-- auth.users and auth.uid()) are created here only where they are missing, so a plain PostgreSQL
-- behaves like a Supabase project and the same files run on both. On Supabase nothing of these
-- is touched: nothing is ever added to auth.users.

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

DO $$
BEGIN
    IF to_regnamespace('auth') IS NULL THEN
        CREATE SCHEMA auth;
        GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
    END IF;
    IF to_regclass('auth.users') IS NULL THEN
        -- Supabase's table has many more columns; the worker reads id and the metadata the app
        -- writes with supabase.auth.updateUser({ data }).
        CREATE TABLE auth.users (
            id                 uuid PRIMARY KEY,
            raw_user_meta_data jsonb
        );
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

-- The worker's private schema: bookkeeping and internal functions no API role may see.
CREATE SCHEMA IF NOT EXISTS worker;
REVOKE ALL ON SCHEMA worker FROM PUBLIC;

-- Which migrations (sql/migrations/) were applied, with the checksum of the file as applied.
CREATE TABLE IF NOT EXISTS worker.schema_migrations (
    version    integer PRIMARY KEY,
    filename   text NOT NULL,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- The checksum of the definitions (functions, vocabulary, triggers, security) last applied.
CREATE TABLE IF NOT EXISTS worker.schema_definitions (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);

-- Add a CHECK constraint, or bring one up to date, without ever failing on the app's rows.
--
-- The worker adopts tables the app already has, so a status column may hold words the worker
-- does not know. A constraint those rows break would make every later UPDATE of them fail, which
-- would break the app; then the constraint is left out (NOTICE) and `check` reports the rows.
-- The expression is kept as the constraint's comment, so an unchanged constraint costs one
-- catalog read and no lock. Returns whether the constraint is in place afterwards.
CREATE OR REPLACE FUNCTION worker.ensure_check(p_table regclass, p_name text, p_expression text)
    RETURNS boolean
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    v_oid oid;
    v_conforms boolean;
BEGIN
    SELECT c.oid INTO v_oid FROM pg_constraint c WHERE c.conrelid = p_table AND c.conname = p_name;
    IF v_oid IS NOT NULL THEN
        IF obj_description(v_oid, 'pg_constraint') IS NOT DISTINCT FROM p_expression THEN
            RETURN true;
        END IF;
    END IF;
    EXECUTE format('SELECT NOT EXISTS (SELECT 1 FROM %s WHERE NOT (%s))', p_table, p_expression)
        INTO v_conforms;
    IF NOT v_conforms THEN
        RAISE NOTICE 'reminder-worker: % has rows outside (%); constraint % left as it was',
            p_table, p_expression, p_name;
        RETURN false;
    END IF;
    IF v_oid IS NOT NULL THEN
        EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', p_table, p_name);
    END IF;
    EXECUTE format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%s)', p_table, p_name, p_expression);
    EXECUTE format('COMMENT ON CONSTRAINT %I ON %s IS %L', p_name, p_table, p_expression);
    RETURN true;
END
$$;
REVOKE ALL ON FUNCTION worker.ensure_check(regclass, text, text) FROM PUBLIC;

-- Which of the worker's tables the app already had when the worker first arrived ("adopted"), and
-- which the worker created. Recorded once, before the first migration runs: sql/security.sql gives
-- the worker's own tables its strict privileges, and leaves the app's privileges on adopted tables
-- as they are, taking away only what the worker must protect (tokens, its bookkeeping).
CREATE TABLE IF NOT EXISTS worker.table_origin (
    table_name  text PRIMARY KEY,
    adopted     boolean NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO worker.table_origin (table_name, adopted)
SELECT t, to_regclass(t) IS NOT NULL
FROM unnest(ARRAY['public.profiles', 'public.children', 'public.events', 'public.reminders',
                  'public.notification_preferences', 'public.push_tokens']) AS t
ON CONFLICT (table_name) DO NOTHING;
