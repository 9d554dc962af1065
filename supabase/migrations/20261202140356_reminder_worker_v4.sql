-- reminder-worker schema version 4, as one Supabase CLI migration (`supabase db push`).
--
-- GENERATED from sql/ by `python -m worker.db.supabase_cli --write`: never edit it by hand.
-- It does what `python worker/main.py migrate` does, in one transaction, and records what it did
-- the same way (worker.schema_migrations, worker.schema_definitions): either tool may run
-- before or after the other. It applies only what the database lacks; on a database with a
-- newer worker schema it changes nothing. See worker/db/supabase_cli.py.
--
-- Step 1: the lock `migrate` takes, whether this file has anything to do, then sql/bootstrap.sql.
DO $rw_step$
BEGIN
    PERFORM set_config('lock_timeout', '10s', true);
    PERFORM pg_advisory_xact_lock(1380273481);
    PERFORM set_config('reminder_worker.migrated', 'off', true);
    PERFORM set_config('reminder_worker.definitions', 'off', true);
    IF to_regclass('worker.schema_migrations') IS NOT NULL THEN
        IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version > 4) THEN
            RAISE NOTICE 'reminder-worker: this database has a worker schema newer than version 4; this file changes nothing';
            PERFORM set_config('reminder_worker.apply', 'v4:skip', true);
            RETURN;
        END IF;
    END IF;
    PERFORM set_config('reminder_worker.apply', 'v4:run', true);
    -- sql/bootstrap.sql
    EXECUTE $rw_sql$-- Bootstrap: what every other file of sql/ may rely on. Applied first by every `migrate`, and
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
$rw_sql$;
END
$rw_step$;

-- Step 2: what the database recorded must be this code's migrations, as `migrate` demands.
DO $rw_step$
DECLARE
    v_row record;
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    FOR v_row IN
        SELECT s.filename AS recorded_name, s.checksum AS recorded_checksum, k.filename, k.checksum
        FROM worker.schema_migrations s
        LEFT JOIN (VALUES
            (1, '001_tables.sql', 'b567600eb30aaca25edf2223ab7aee9639f041b782a30460c0c1fbb208b8df64'),
            (2, '002_tokens_and_adoption.sql', '82b7cdf338a25c81feb13ead4e106c8f0b01c2e2a101a777d39671e5bff220d8'),
            (3, '003_preferences_devices_recurrence.sql', 'b49fc2d0d4018ab7eef05a28a955ba33851fc9ef2c4ff392ea1f5f451c8c415e'),
            (4, '004_leaner_reminders.sql', 'e77b0579bcafb39cb3bf2e92072a008e0885e4285607d629c7cba2f408d86dd0')
        ) AS k (version, filename, checksum) ON k.version = s.version
        ORDER BY s.version
    LOOP
        IF v_row.filename IS DISTINCT FROM v_row.recorded_name THEN
            RAISE EXCEPTION 'reminder-worker: the database records migration %, which schema version 4 does not have: it was set up by another (newer, or pre-release) version; deploy the matching worker, or restore a backup taken before it', v_row.recorded_name;
        ELSIF v_row.checksum IS DISTINCT FROM v_row.recorded_checksum THEN
            RAISE EXCEPTION 'reminder-worker: sql/migrations/% was changed after it was applied to this database: the database runs the old text; undo the edit and put the change in a new migration', v_row.filename;
        END IF;
    END LOOP;
END
$rw_step$;

-- Step 3: sql/migrations/001_tables.sql, once; recorded with its sha256 as `migrate` records it.
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version = 1) THEN
        RETURN;
    END IF;
    EXECUTE $rw_sql$-- 001: the tables the worker uses, created where missing and adopted where the app has them.
--
-- Seed 004 says the service "expects these tables to exist": the app usually has events,
-- reminders, children and a profiles table (often Supabase's user-management starter) before the
-- worker arrives. So every table is created with its key only where it is missing, and every column
-- the worker needs is added where it is missing. Nothing here drops, renames or rewrites a column or
-- a row of the app's: new columns have defaults, and the existing rows keep every value.
--
-- Only tables, columns and indexes live in migrations. Functions, the status vocabulary (CHECK
-- constraints), triggers, row-level security and grants are definitions: sql/functions/,
-- sql/vocabulary.sql, sql/triggers.sql and sql/security.sql, applied by every `migrate` after the
-- migrations, so the current truth of each is one file.

CREATE TABLE IF NOT EXISTS public.profiles (
    id uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE
);
ALTER TABLE public.profiles
    ADD COLUMN IF NOT EXISTS expo_push_token    text,
    ADD COLUMN IF NOT EXISTS google_refresh_token text,
    ADD COLUMN IF NOT EXISTS timezone           text NOT NULL DEFAULT 'UTC',
    -- A calendar the parent shared with the worker's service account (used without a refresh token).
    ADD COLUMN IF NOT EXISTS google_calendar_id text,
    ADD COLUMN IF NOT EXISTS updated_at         timestamptz DEFAULT now();

CREATE TABLE IF NOT EXISTS public.children (
    id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    name    text NOT NULL
);
CREATE INDEX IF NOT EXISTS children_user_id_idx ON public.children (user_id);

-- Seed 004's events, its columns with their names and types.
CREATE TABLE IF NOT EXISTS public.events (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id            uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    child_id           uuid REFERENCES public.children (id) ON DELETE SET NULL,
    title              text NOT NULL,
    start_ts           timestamptz NOT NULL,
    end_ts             timestamptz NOT NULL,
    location           text,
    prep_items         text[],
    status             text DEFAULT 'pending',
    google_calendar_id text,
    error_message      text,
    created_at         timestamptz DEFAULT now()
);
-- The worker's bookkeeping beside them.
-- version grows with every edit the worker must act on (sql/triggers.sql); synced_version is the
-- version the worker last finished. A pass finishes an event only if its version is unchanged, so
-- an edit made while a pass was talking to Google is never overwritten by that pass. Existing rows
-- start at version 1, synced_version 0: 'pending' ones are taken by the next pass, the others are
-- left as they are (a 'synced' event keeps its calendar entry and its reminders).
ALTER TABLE public.events
    ADD COLUMN IF NOT EXISTS version          bigint NOT NULL DEFAULT 1,
    ADD COLUMN IF NOT EXISTS synced_version   bigint NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS attempts         integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS next_attempt_at  timestamptz,
    ADD COLUMN IF NOT EXISTS claim_id         uuid,
    ADD COLUMN IF NOT EXISTS lease_expires_at timestamptz,
    ADD COLUMN IF NOT EXISTS synced_at        timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at       timestamptz NOT NULL DEFAULT now(),
    -- Why the last try failed, as a word of the vocabulary (worker/vocabulary.py ErrorKind):
    -- what `status` reports and what triggers act on (a reconnected Google grant, a fixed zone).
    ADD COLUMN IF NOT EXISTS error_kind       text;
CREATE INDEX IF NOT EXISTS events_user_id_idx ON public.events (user_id);
-- The events step's claim: only rows with work to do are in this index.
CREATE INDEX IF NOT EXISTS events_todo_idx ON public.events (start_ts)
    WHERE status IN ('pending', 'cancelled') AND synced_version < version;
-- A parent's events waiting for something of the parent's (a Google grant, a time zone).
-- A claim's own rows (a call retried after its answer was lost finds them again).
CREATE INDEX IF NOT EXISTS events_claim_idx ON public.events (claim_id) WHERE claim_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS events_error_kind_idx ON public.events (user_id, error_kind)
    WHERE error_kind IS NOT NULL;

-- Seed 004's reminders, its columns with their names and types.
CREATE TABLE IF NOT EXISTS public.reminders (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    event_id      uuid REFERENCES public.events (id) ON DELETE CASCADE,
    user_id       uuid REFERENCES auth.users (id) ON DELETE CASCADE,
    notify_at_ts  timestamptz NOT NULL,
    message       text NOT NULL,
    push_token    text,
    sent_at_ts    timestamptz,
    status        text DEFAULT 'pending',
    retry_count   integer DEFAULT 0,
    error_message text,
    created_at    timestamptz DEFAULT now(),
    UNIQUE (event_id, notify_at_ts)
);
-- The worker's bookkeeping: 'sending' rows belong to claim_id until lease_expires_at. Receipts have
-- a claim of their own (only 'sent' rows carry one; the push claim never touches 'sent' rows).
ALTER TABLE public.reminders
    ADD COLUMN IF NOT EXISTS next_attempt_at          timestamptz,
    ADD COLUMN IF NOT EXISTS claim_id                 uuid,
    ADD COLUMN IF NOT EXISTS lease_expires_at         timestamptz,
    ADD COLUMN IF NOT EXISTS updated_at               timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN IF NOT EXISTS error_kind               text,
    ADD COLUMN IF NOT EXISTS expo_ticket_id           text,
    ADD COLUMN IF NOT EXISTS receipt_status           text,
    ADD COLUMN IF NOT EXISTS receipt_checked_at       timestamptz,
    ADD COLUMN IF NOT EXISTS receipt_checks           integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS receipt_next_check_at    timestamptz,
    ADD COLUMN IF NOT EXISTS receipt_claim_id         uuid,
    ADD COLUMN IF NOT EXISTS receipt_lease_expires_at timestamptz;
-- The seed declares UNIQUE (event_id, notify_at_ts); an adopted table without it gets it (the
-- planner's ON CONFLICT needs it), unless its rows already break it (then `check` reports them).
DO $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM pg_index i
        WHERE i.indrelid = 'public.reminders'::regclass AND i.indisunique AND i.indpred IS NULL
          AND (SELECT array_agg(a.attname ORDER BY a.attname) FROM pg_attribute a
               WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey))
              = ARRAY['event_id', 'notify_at_ts']::name[]
    ) AND NOT EXISTS (
        SELECT 1 FROM public.reminders GROUP BY event_id, notify_at_ts HAVING count(*) > 1
    ) THEN
        ALTER TABLE public.reminders ADD CONSTRAINT reminders_event_id_notify_at_ts_key
            UNIQUE (event_id, notify_at_ts);
    END IF;
END
$$;
CREATE INDEX IF NOT EXISTS reminders_user_id_idx ON public.reminders (user_id);
CREATE INDEX IF NOT EXISTS reminders_event_id_idx ON public.reminders (event_id);
-- The push step's claim walks this index in notify_at_ts order and stops after one batch.
CREATE INDEX IF NOT EXISTS reminders_due_idx ON public.reminders (notify_at_ts) WHERE status = 'pending';
-- Claims whose worker died: found again once the lease runs out.
CREATE INDEX IF NOT EXISTS reminders_inflight_idx ON public.reminders (lease_expires_at)
    WHERE status = 'sending';
CREATE INDEX IF NOT EXISTS reminders_claim_idx ON public.reminders (claim_id) WHERE claim_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS reminders_receipt_claim_idx ON public.reminders (receipt_claim_id)
    WHERE receipt_claim_id IS NOT NULL;
-- The receipts claim walks this index in sent order; only unsettled receipts are in it.
CREATE INDEX IF NOT EXISTS reminders_receipt_due_idx ON public.reminders (sent_at_ts)
    WHERE status = 'sent' AND expo_ticket_id IS NOT NULL AND receipt_status IS NULL;
-- Retention walks settled rows in notify order.
CREATE INDEX IF NOT EXISTS reminders_settled_idx ON public.reminders (notify_at_ts)
    WHERE status IN ('sent', 'failed', 'expired', 'cancelled');
-- The status view counts recent failures and held-back reminders by kind.
CREATE INDEX IF NOT EXISTS reminders_error_kind_idx ON public.reminders (error_kind, updated_at)
    WHERE error_kind IS NOT NULL;

-- Run history: one row per pass, for `status`, operators and dashboards.
CREATE TABLE IF NOT EXISTS public.worker_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,  -- the pass's clock (`run --now` moves it)
    finished_at timestamptz NOT NULL,  -- started_at + the pass's real duration
    trigger     text NOT NULL,         -- cron | http | manual | loop
    counts      jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the summary line's counts
    exit_code   integer NOT NULL,
    error       text,
    error_kind  text,                  -- why the pass exited non-zero, as a vocabulary word
    recorded_at timestamptz NOT NULL DEFAULT now()  -- the database's wall clock
);
CREATE INDEX IF NOT EXISTS worker_runs_started_at_idx ON public.worker_runs (started_at);
CREATE INDEX IF NOT EXISTS worker_runs_recorded_at_idx ON public.worker_runs (recorded_at);
$rw_sql$;
    INSERT INTO worker.schema_migrations (version, filename, checksum)
        VALUES (1, '001_tables.sql', 'b567600eb30aaca25edf2223ab7aee9639f041b782a30460c0c1fbb208b8df64');
    PERFORM set_config('reminder_worker.migrated', 'on', true);
END
$rw_step$;

-- Step 3: sql/migrations/002_tokens_and_adoption.sql, once; recorded with its sha256 as `migrate` records it.
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version = 2) THEN
        RETURN;
    END IF;
    EXECUTE $rw_sql$-- 002: where the worker keeps what it learns about parents, and what it needs to serve rows that
-- existed before it.
--
-- * worker.refresh_tokens: the worker's private store of Google refresh tokens, filled by
--   `python worker/main.py secure-tokens` from user metadata (where the seed's app writes them:
--   readable by the parent and carried in every access token the app sends). No API role can
--   reach the worker schema.
-- * worker.revoked_grants: a fingerprint (sha256) of the refresh token Google refused, per parent.
--   Their events stay 'failed' (kind google_revoked) until the parent's token is a different one,
--   wherever the app writes it (profile or metadata): the events claim then gives them back.
-- * reminders.planned_by_worker: rows the worker planned are rendered at send time from the event;
--   rows the app wrote before the worker arrived are sent with their stored message.

CREATE TABLE IF NOT EXISTS worker.refresh_tokens (
    user_id       uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    refresh_token text NOT NULL,
    moved_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS worker.revoked_grants (
    user_id      uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    token_sha256 text NOT NULL,
    revoked_at   timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE public.reminders
    ADD COLUMN IF NOT EXISTS planned_by_worker boolean NOT NULL DEFAULT false;

-- (parent, push token): what worker.clear_push_tokens is handed.
DO $$
BEGIN
    IF to_regtype('worker.user_token') IS NULL THEN
        CREATE TYPE worker.user_token AS (user_id uuid, token text);
    END IF;
END
$$;

-- Events waiting for something only the parent can fix: the events claim looks at these first.
CREATE INDEX IF NOT EXISTS events_waiting_idx ON public.events (user_id)
    WHERE status IN ('failed', 'cancelled') AND error_kind IN ('google_revoked', 'timezone');

-- The push claim's walk: due, never accepted by Expo. Rows the app's earlier sender marked as sent
-- (sent_at_ts set, status still 'pending') stay out of it instead of being walked past every time.
CREATE INDEX IF NOT EXISTS reminders_due_unsent_idx ON public.reminders (notify_at_ts)
    WHERE status = 'pending' AND sent_at_ts IS NULL;
DROP INDEX IF EXISTS public.reminders_due_idx;

-- The profiles columns sql/security.sql last granted on: when the app adds a column to an adopted
-- profiles table, the next `migrate` grants it again (see worker.profiles_columns()).
ALTER TABLE worker.schema_definitions ADD COLUMN IF NOT EXISTS profiles_columns text;

-- Roles whose table-level SELECT on an adopted table the worker replaced by column-level SELECT
-- (worker.hide_columns): they get every new column the app adds, as table-level SELECT would give.
CREATE TABLE IF NOT EXISTS worker.column_grants (
    table_name text NOT NULL,
    role_name  text NOT NULL,
    PRIMARY KEY (table_name, role_name)
);
$rw_sql$;
    INSERT INTO worker.schema_migrations (version, filename, checksum)
        VALUES (2, '002_tokens_and_adoption.sql', '82b7cdf338a25c81feb13ead4e106c8f0b01c2e2a101a777d39671e5bff220d8');
    PERFORM set_config('reminder_worker.migrated', 'on', true);
END
$rw_step$;

-- Step 3: sql/migrations/003_preferences_devices_recurrence.sql, once; recorded with its sha256 as `migrate` records it.
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version = 3) THEN
        RETURN;
    END IF;
    EXECUTE $rw_sql$-- 003: what parents expect beyond the seed: notification preferences, several devices per parent,
-- recurring events.
--
-- * public.notification_preferences: one optional row per parent; no row means the defaults.
-- * public.push_tokens: a parent's further devices; a reminder goes to every device.
-- * events.recurrence: an RFC 5545 rule (null: a one-off event). Reminders of a recurring event are
--   planned occurrence by occurrence within a rolling horizon: events.planned_until says how far.
-- * reminders.occurs_at: the start of the occurrence a reminder is for (null: the event's start_ts).
-- * worker.push_tickets: what Expo answered for each device a reminder was sent to, for receipts.

CREATE TABLE IF NOT EXISTS public.notification_preferences (
    user_id               uuid PRIMARY KEY REFERENCES auth.users (id) ON DELETE CASCADE,
    reminder_offsets      interval[],
    push_enabled          boolean NOT NULL DEFAULT true,
    calendar_sync_enabled boolean NOT NULL DEFAULT true,
    muted_children        uuid[] NOT NULL DEFAULT '{}',
    quiet_hours_start     time,
    quiet_hours_end       time,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT notification_preferences_quiet_hours_check
        CHECK ((quiet_hours_start IS NULL) = (quiet_hours_end IS NULL)),
    -- Lead times the worker can plan: 1 to 10 of them, each from a minute to 28 days (as REMINDER_OFFSETS).
    CONSTRAINT notification_preferences_offsets_check
        CHECK (reminder_offsets IS NULL OR (cardinality(reminder_offsets) BETWEEN 1 AND 10
               AND interval '1 minute' <= ALL (reminder_offsets) AND interval '28 days' >= ALL (reminder_offsets)))
);

CREATE TABLE IF NOT EXISTS public.push_tokens (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
    token        text UNIQUE NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS push_tokens_user_id_idx ON public.push_tokens (user_id);

ALTER TABLE public.events
    ADD COLUMN IF NOT EXISTS recurrence    text,
    ADD COLUMN IF NOT EXISTS planned_until timestamptz;
-- Recurring events whose reminders are planned less far ahead than the horizon asks.
CREATE INDEX IF NOT EXISTS events_recurring_idx ON public.events (planned_until)
    WHERE recurrence IS NOT NULL AND status = 'synced';

ALTER TABLE public.reminders
    ADD COLUMN IF NOT EXISTS occurs_at timestamptz;

CREATE TABLE IF NOT EXISTS worker.push_tickets (
    reminder_id              uuid NOT NULL REFERENCES public.reminders (id) ON DELETE CASCADE,
    token                    text NOT NULL,
    ticket_id                text NOT NULL,
    sent_at                  timestamptz NOT NULL,
    receipt_status           text,  -- ok | error | unknown (worker/vocabulary.py ReceiptStatus)
    receipt_outcome          text,  -- what the receipt meant (ReceiptOutcome), once settled
    receipt_error            text,
    receipt_error_kind       text,
    receipt_checks           integer NOT NULL DEFAULT 0,
    receipt_next_check_at    timestamptz,
    receipt_claim_id         uuid,
    receipt_lease_expires_at timestamptz,
    PRIMARY KEY (reminder_id, token)
);
-- The receipts claim walks unsettled tickets in sent order.
CREATE INDEX IF NOT EXISTS push_tickets_due_idx ON worker.push_tickets (sent_at) WHERE receipt_status IS NULL;
CREATE INDEX IF NOT EXISTS push_tickets_claim_idx ON worker.push_tickets (receipt_claim_id)
    WHERE receipt_claim_id IS NOT NULL;

-- Receipts still awaited when this migration runs move to the per-device tickets.
INSERT INTO worker.push_tickets (reminder_id, token, ticket_id, sent_at)
SELECT r.id, coalesce(r.push_token, ''), r.expo_ticket_id, r.sent_at_ts
FROM public.reminders r
WHERE r.status = 'sent' AND r.expo_ticket_id IS NOT NULL AND r.receipt_status IS NULL AND r.sent_at_ts IS NOT NULL
ON CONFLICT (reminder_id, token) DO NOTHING;
$rw_sql$;
    INSERT INTO worker.schema_migrations (version, filename, checksum)
        VALUES (3, '003_preferences_devices_recurrence.sql', 'b49fc2d0d4018ab7eef05a28a955ba33851fc9ef2c4ff392ea1f5f451c8c415e');
    PERFORM set_config('reminder_worker.migrated', 'on', true);
END
$rw_step$;

-- Step 3: sql/migrations/004_leaner_reminders.sql, once; recorded with its sha256 as `migrate` records it.
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF EXISTS (SELECT 1 FROM worker.schema_migrations WHERE version = 4) THEN
        RETURN;
    END IF;
    EXECUTE $rw_sql$-- 004: fewer indexes to maintain on every reminder a pass claims and records.
--
-- Each reminder a pass sends changes status twice (pending -> sending -> sent), and every index of
-- public.reminders is written each time. Three of them no longer serve a query:
-- * reminders_receipt_due_idx and reminders_receipt_claim_idx: receipts are claimed per device from
--   worker.push_tickets since migration 003 (the worker's own columns, never the app's);
-- * reminders_event_id_idx: the UNIQUE (event_id, notify_at_ts) index answers every lookup by event.
--   Dropped only when that index is there to take over.
DROP INDEX IF EXISTS public.reminders_receipt_due_idx;
DROP INDEX IF EXISTS public.reminders_receipt_claim_idx;
DO $$
BEGIN
    IF EXISTS (
        SELECT 1 FROM pg_index i
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE i.indrelid = 'public.reminders'::regclass AND i.indisunique AND a.attname = 'event_id'
          AND i.indnatts >= 2
    ) THEN
        DROP INDEX IF EXISTS public.reminders_event_id_idx;
    END IF;
END
$$;

-- One Expo limit shared by every worker of this database (PUSH_RATE_LIMIT): the claim books the
-- sends of what it claims on one schedule (see public.worker_claim_reminders). One row per limit.
CREATE TABLE IF NOT EXISTS worker.send_schedule (
    name         text PRIMARY KEY,
    next_free_at timestamptz NOT NULL
);

-- worker.push_tickets without a foreign key to public.reminders: the key's check ran once for every
-- ticket a pass wrote (a trigger call per row, two thirds of the cost of recording a send). The
-- trigger reminders_forget_tickets (sql/triggers.sql) deletes a deleted reminder's tickets instead,
-- once per statement, cascaded deletes from events and auth.users included.
DO $$
DECLARE
    v_name text;
BEGIN
    FOR v_name IN
        SELECT c.conname FROM pg_constraint c
        WHERE c.conrelid = 'worker.push_tickets'::regclass AND c.contype = 'f'
          AND c.confrelid = 'public.reminders'::regclass
    LOOP
        EXECUTE format('ALTER TABLE worker.push_tickets DROP CONSTRAINT %I', v_name);
    END LOOP;
END
$$;
-- Tickets of reminders deleted before this migration ran (none should be left; the key kept them).
DELETE FROM worker.push_tickets t WHERE NOT EXISTS (SELECT 1 FROM public.reminders r WHERE r.id = t.reminder_id);
$rw_sql$;
    INSERT INTO worker.schema_migrations (version, filename, checksum)
        VALUES (4, '004_leaner_reminders.sql', 'e77b0579bcafb39cb3bf2e92072a008e0885e4285607d629c7cba2f408d86dd0');
    PERFORM set_config('reminder_worker.migrated', 'on', true);
END
$rw_step$;

-- Step 4: the definitions, when `migrate` would apply them: a migration was applied, their
-- checksum differs from the one recorded, or profiles has columns other than those security.sql
-- last granted on (worker.db.migrate._definitions_stale).
DO $rw_step$
DECLARE
    v_stale boolean;
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.migrated') = 'on'
       OR NOT EXISTS (SELECT 1 FROM worker.schema_definitions
                      WHERE checksum = '1dd68c2952e015cc95f5a6a72dfa902a49a7c5355d61fdf56b435e9996121cb4') THEN
        v_stale := true;
    ELSIF to_regproc('worker.profiles_columns') IS NULL THEN
        v_stale := true;
    ELSE
        v_stale := worker.profiles_columns() IS DISTINCT FROM
            (SELECT d.profiles_columns FROM worker.schema_definitions d);
    END IF;
    IF v_stale THEN
        PERFORM set_config('reminder_worker.definitions', 'on', true);
    END IF;
END
$rw_step$;

-- sql/retired.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Objects an earlier version of the worker defined and this one no longer has: dropped by every
-- `migrate` that changes a definition, before the current definitions are applied.

-- Events waiting for a reconnected Google grant or a fixed time zone are now given back by the
-- events claim (worker_claim_events), which also sees tokens in user metadata.
DROP TRIGGER IF EXISTS profiles_on_change ON public.profiles;
DROP FUNCTION IF EXISTS worker.profiles_on_change();

-- The claims and their writes took new parameters (recurring events' horizon; several devices).
DROP FUNCTION IF EXISTS public.worker_claim_events(timestamptz, uuid, integer, integer);
-- worker_claim_reminders gained p_rate and p_lookahead_seconds (the shared Expo schedule).
DROP FUNCTION IF EXISTS public.worker_claim_reminders(timestamptz, uuid, integer, integer);
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/views/worker.parents.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- worker.parents: a parent as the worker sees them: where their push tokens, Google refresh token,
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
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.clear_push_tokens.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Forget push tokens Expo says are dead (DeviceNotRegistered), where the worker read them from:
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
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.events_guard.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Trigger (BEFORE INSERT OR UPDATE ON events): the worker's bookkeeping columns are the worker's.
--
-- On the worker's own events table the API roles have no privilege on them anyway (sql/security.sql);
-- on an events table the app had before the worker arrived, the app keeps its privileges on the
-- table, so this trigger refuses an API role (anon, authenticated) that changes one of them. A
-- client writing a whole row back unchanged is fine.
CREATE OR REPLACE FUNCTION worker.events_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    v_column text;
BEGIN
    IF current_user NOT IN ('anon', 'authenticated') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        v_column := CASE
            WHEN NEW.version IS DISTINCT FROM 1 THEN 'version'
            WHEN NEW.synced_version IS DISTINCT FROM 0 THEN 'synced_version'
            WHEN NEW.attempts IS DISTINCT FROM 0 THEN 'attempts'
            WHEN NEW.next_attempt_at IS NOT NULL THEN 'next_attempt_at'
            WHEN NEW.claim_id IS NOT NULL THEN 'claim_id'
            WHEN NEW.lease_expires_at IS NOT NULL THEN 'lease_expires_at'
            WHEN NEW.synced_at IS NOT NULL THEN 'synced_at'
            WHEN NEW.error_kind IS NOT NULL THEN 'error_kind'
        END;
    ELSE
        v_column := CASE
            WHEN NEW.version IS DISTINCT FROM OLD.version THEN 'version'
            WHEN NEW.synced_version IS DISTINCT FROM OLD.synced_version THEN 'synced_version'
            WHEN NEW.attempts IS DISTINCT FROM OLD.attempts THEN 'attempts'
            WHEN NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at THEN 'next_attempt_at'
            WHEN NEW.claim_id IS DISTINCT FROM OLD.claim_id THEN 'claim_id'
            WHEN NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN 'lease_expires_at'
            WHEN NEW.synced_at IS DISTINCT FROM OLD.synced_at THEN 'synced_at'
            WHEN NEW.error_kind IS DISTINCT FROM OLD.error_kind THEN 'error_kind'
        END;
    END IF;
    IF v_column IS NOT NULL THEN
        RAISE EXCEPTION 'events.% is the reminder worker''s bookkeeping; the app may not write it', v_column
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.events_on_edit.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Trigger (BEFORE UPDATE ON events): an edit the worker must act on puts the event back to
-- 'pending' and bumps its version, so the next pass re-syncs and re-plans it. The app writes
-- content columns (a recurring event's rule among them); version, attempts and the error columns
-- are the worker's.
CREATE OR REPLACE FUNCTION worker.events_on_edit() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF (NEW.title, NEW.start_ts, NEW.end_ts, NEW.location, NEW.prep_items, NEW.child_id, NEW.recurrence)
       IS DISTINCT FROM (OLD.title, OLD.start_ts, OLD.end_ts, OLD.location, OLD.prep_items, OLD.child_id,
                         OLD.recurrence) THEN
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
        NEW.error_kind := NULL;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.hide_columns.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Take SELECT on some columns of a table away from roles, leaving them every other column they
-- could read. PostgreSQL cannot revoke a column from a table-level grant, so a role holding
-- table-level SELECT gets it replaced by column-level SELECT on every other column, and is
-- remembered (worker.column_grants) so that a column the app adds later is granted to it by the
-- next `migrate`, as table-level SELECT would have. Used on tables the app had before the worker
-- (sql/security.sql): the app keeps reading its own columns (e.g. the user-management starter's
-- public profiles), nobody reads the tokens.
CREATE OR REPLACE FUNCTION worker.hide_columns(p_table regclass, p_hidden text[], p_roles text[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
AS $$
DECLARE
    v_role text;
    v_grantee text;
    v_visible text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_visible
    FROM pg_attribute a
    WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped AND NOT (a.attname = ANY (p_hidden));
    FOREACH v_role IN ARRAY p_roles LOOP
        v_grantee := CASE WHEN v_role = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(v_role) END;
        IF EXISTS (
            SELECT 1 FROM pg_class c, aclexplode(c.relacl) acl
            WHERE c.oid = p_table AND acl.privilege_type = 'SELECT'
              AND acl.grantee = CASE WHEN v_role = 'PUBLIC' THEN 0 ELSE to_regrole(v_role)::oid END
        ) THEN
            EXECUTE format('REVOKE SELECT ON %s FROM %s', p_table, v_grantee);
            INSERT INTO worker.column_grants (table_name, role_name) VALUES (p_table::text, v_role)
            ON CONFLICT DO NOTHING;
        END IF;
        IF EXISTS (SELECT 1 FROM worker.column_grants g WHERE g.table_name = p_table::text AND g.role_name = v_role)
        THEN
            EXECUTE format('GRANT SELECT (%s) ON %s TO %s', v_visible, p_table, v_grantee);
        END IF;
        EXECUTE format('REVOKE SELECT (%s) ON %s FROM %s',
                       (SELECT string_agg(quote_ident(h), ', ') FROM unnest(p_hidden) AS h), p_table, v_grantee);
    END LOOP;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.is_valid_timezone.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Is `tz` a time zone name PostgreSQL (and so Python's zoneinfo, same IANA database) knows?
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
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.lock_send_schedule.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- One schedule of worker.send_schedule, locked for the caller's transaction (so bookings never
-- overlap, whichever worker makes them), created on first use. Returns the database's clock (the
-- one clock every worker shares) and when the schedule is next free; a schedule booked more than
-- p_max_ahead_seconds ahead (further than any booking could make: the clock was set back) counts
-- as free now. The caller books by moving next_free_at. Used by public.worker_claim_reminders
-- (Expo's limit, booked inside the claim) and public.worker_book_sends (Google's, in blocks).
CREATE OR REPLACE FUNCTION worker.lock_send_schedule(
    p_name text, p_max_ahead_seconds double precision, OUT clock timestamptz, OUT next_free timestamptz
)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    INSERT INTO worker.send_schedule (name, next_free_at) VALUES (p_name, clock_timestamp())
    ON CONFLICT (name) DO NOTHING;
    SELECT s.next_free_at INTO next_free FROM worker.send_schedule s WHERE s.name = p_name FOR UPDATE;
    clock := clock_timestamp();
    IF next_free > clock + make_interval(secs => p_max_ahead_seconds) THEN
        next_free := clock;
    END IF;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.mask_push_token.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- A push token as a person may see it (`export-user`): enough to tell one phone from another,
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
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.preferences_on_change.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Trigger (AFTER INSERT OR UPDATE OR DELETE ON notification_preferences): a parent's new lead times,
-- quiet hours or calendar choice re-plan their events on the next pass.
--
-- Their live events go back to 'pending' (worker.events_on_edit bumps the version), so the events
-- step plans their future unsent reminders again (reminders already due are kept, as for any edit)
-- and syncs the calendar as the parent now wants. Pushes on or off, and muted children, need no
-- re-plan: the push claim reads them when a reminder comes due. SECURITY DEFINER: the parent
-- writing their preferences may not write the events' bookkeeping.
CREATE OR REPLACE FUNCTION worker.preferences_on_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.reminder_offsets, NEW.quiet_hours_start, NEW.quiet_hours_end,
                             NEW.calendar_sync_enabled)
        IS NOT DISTINCT FROM (OLD.reminder_offsets, OLD.quiet_hours_start, OLD.quiet_hours_end,
                              OLD.calendar_sync_enabled) THEN
        RETURN NULL;
    END IF;
    UPDATE public.events e
    SET status = 'pending'
    WHERE e.user_id = v_user AND e.status = 'synced'
      AND (e.start_ts > now() OR e.recurrence IS NOT NULL);
    RETURN NULL;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.profiles_check_timezone.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Trigger (BEFORE INSERT OR UPDATE OF timezone ON profiles): a profile's time zone must be one the
-- worker can render times in. Rows written before the worker arrived are not checked; the worker
-- fails their events and reminders alone (error_kind 'timezone') until the zone is fixed.
-- SECURITY DEFINER: the parent writing their profile has no access to the worker schema.
CREATE OR REPLACE FUNCTION worker.profiles_check_timezone() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF NEW.timezone IS NOT NULL AND NOT worker.is_valid_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'profiles.timezone: unknown time zone %', quote_literal(NEW.timezone)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA name such as Europe/Berlin or America/New_York.';
    END IF;
    RETURN NEW;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.profiles_columns.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- The columns of public.profiles, as one comparable text (sql/security.sql grants column by column
-- on an adopted profiles table, so a column the app adds later needs a new grant: `migrate` compares
-- this with what security.sql last recorded).
CREATE OR REPLACE FUNCTION worker.profiles_columns() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = ''
AS $$
    SELECT string_agg(a.attname::text, ',' ORDER BY a.attname)
    FROM pg_attribute a
    WHERE a.attrelid = 'public.profiles'::regclass AND a.attnum > 0 AND NOT a.attisdropped
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/worker.reminders_forget_tickets.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Trigger (AFTER DELETE ON reminders, once per statement): a deleted reminder's Expo tickets
-- (worker.push_tickets) go with it. What a foreign key would do, without a check per ticket on every
-- send; it fires for deletes cascaded from events and auth.users as well.
CREATE OR REPLACE FUNCTION worker.reminders_forget_tickets() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    DELETE FROM worker.push_tickets t USING gone g WHERE t.reminder_id = g.id;
    RETURN NULL;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_audit.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- What `python worker/main.py check` reports about a live database, in one document (both gateways):
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
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_book_sends.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Book p_count requests on a schedule every worker of the database shares (worker.send_schedule),
-- p_rate a second: a limit that holds for the project, not for one worker. The events step books
-- Google Calendar's requests this way in blocks ('google': GOOGLE_MAX_REQUESTS_PER_SECOND), and
-- each worker spaces its requests 1/p_rate s apart from the start of its block; the push step books
-- Expo's inside its claim (public.worker_claim_reminders), by the same rules: the schedule locked
-- and read on the database's clock (worker.lock_send_schedule); booked more than
-- p_lookahead_seconds ahead, nothing is booked and `wait_seconds` says when to ask again.
-- Answers {send_in, rate}: the block's first slot, in seconds from the answer, or {wait_seconds}.
CREATE OR REPLACE FUNCTION public.worker_book_sends(
    p_name text, p_count integer, p_rate double precision, p_lookahead_seconds double precision DEFAULT 2
) RETURNS json
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_free timestamptz;
    v_clock timestamptz;
    v_from timestamptz;
BEGIN
    IF p_name IS NULL OR p_count IS NULL OR p_count < 1 OR p_rate IS NULL OR p_rate <= 0 THEN
        RAISE EXCEPTION 'worker_book_sends: a name, a count >= 1 and a rate > 0 are needed'
            USING ERRCODE = '22023';
    END IF;
    SELECT s.clock, s.next_free INTO v_clock, v_free
    FROM worker.lock_send_schedule(p_name, p_lookahead_seconds + 60 + p_count / p_rate) s;
    v_from := greatest(v_clock, v_free);
    IF v_from > v_clock + make_interval(secs => p_lookahead_seconds) THEN
        RETURN json_build_object('wait_seconds',
                                 extract(epoch FROM v_from - clock_timestamp()) - p_lookahead_seconds);
    END IF;
    UPDATE worker.send_schedule SET next_free_at = v_from + make_interval(secs => p_count / p_rate)
    WHERE name = p_name;
    RETURN json_build_object('send_in', extract(epoch FROM v_from - clock_timestamp()), 'rate', p_rate);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_claim_events.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Claim events with calendar or reminder work to do: pending (new or edited) and due for another
-- try, or cancelled and not yet cleaned up. Soonest events first: their reminders matter most.
-- Then recurring events whose reminders are planned less than half of p_horizon_seconds ahead
-- (RECURRENCE_HORIZON_DAYS): every pass extends the horizon; needs_sync says whether Google must
-- be told anything (false: only more reminders to plan).
--
-- First, events that waited for something only their parent could fix are given back:
--   * failed with google_revoked, once the parent's refresh token (wherever the app writes it,
--     see worker.parents) is no longer the one Google refused (worker.revoked_grants);
--   * failed with timezone, once the parent's time zone is one the worker knows.
-- A failed live event goes back to 'pending' (worker.events_on_edit bumps its version and clears
-- the old error); a cancelled one whose calendar entry could not be deleted is offered again.
--
-- p_claim is new for every call, so a call retried after its answer was lost (the connection
-- dropped after the commit) is answered with the rows it already claimed, instead of leaving them
-- leased to nobody. Returns everything the events step needs, one JSON object per event; values
-- are passed as the database holds them (a year-10000 start included: the worker sets such a row
-- aside by itself).
CREATE OR REPLACE FUNCTION public.worker_claim_events(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer, p_horizon_seconds integer
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_rows jsonb;
BEGIN
    WITH ready AS (
        SELECT e.id
        FROM public.events e
        JOIN worker.parents pa ON pa.id = e.user_id
        LEFT JOIN worker.revoked_grants g ON g.user_id = e.user_id
        WHERE e.status IN ('failed', 'cancelled') AND e.error_kind IN ('google_revoked', 'timezone')
          AND CASE e.error_kind
                  WHEN 'google_revoked' THEN pa.refresh_token IS NOT NULL
                       AND encode(sha256(convert_to(pa.refresh_token, 'UTF8')), 'hex') IS DISTINCT FROM g.token_sha256
                  ELSE worker.is_valid_timezone(pa.timezone) END
        FOR UPDATE OF e SKIP LOCKED
    )
    UPDATE public.events e
    SET status = CASE WHEN e.status = 'failed' THEN 'pending' ELSE e.status END,
        synced_version = CASE WHEN e.status = 'cancelled' THEN 0 ELSE e.synced_version END,
        error_kind = NULL, error_message = NULL, attempts = 0, next_attempt_at = NULL, updated_at = p_now
    FROM ready
    WHERE e.id = ready.id;

    WITH held AS (
        SELECT e.id FROM public.events e
        WHERE e.claim_id = p_claim AND e.lease_expires_at > p_now
    ), picked AS (
        SELECT e.id
        FROM public.events e
        WHERE e.status IN ('pending', 'cancelled')
          AND e.synced_version < e.version
          AND (e.next_attempt_at IS NULL OR e.next_attempt_at <= p_now)
          AND (e.lease_expires_at IS NULL OR e.lease_expires_at <= p_now)
        ORDER BY e.start_ts
        LIMIT greatest(p_limit - (SELECT count(*) FROM held), 0)
        FOR UPDATE SKIP LOCKED
    ), extended AS (
        SELECT e.id
        FROM public.events e
        WHERE e.recurrence IS NOT NULL AND e.status = 'synced'
          AND (e.planned_until IS NULL
               OR e.planned_until < p_now + make_interval(secs => p_horizon_seconds / 2))
          AND (e.lease_expires_at IS NULL OR e.lease_expires_at <= p_now)
        ORDER BY e.planned_until NULLS FIRST
        LIMIT greatest(p_limit - (SELECT count(*) FROM held) - (SELECT count(*) FROM picked), 0)
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.events e
        SET claim_id = p_claim,
            lease_expires_at = p_now + make_interval(secs => p_lease_seconds)
        FROM (SELECT id FROM picked UNION SELECT id FROM extended) chosen
        WHERE e.id = chosen.id
        RETURNING e.*
    ), rows AS (
        SELECT * FROM claimed
        UNION ALL
        SELECT e.* FROM public.events e JOIN held ON held.id = e.id
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'version', c.version,
        'user_id', c.user_id,
        'status', c.status,
        'title', c.title,
        'start_ts', c.start_ts,
        'end_ts', c.end_ts,
        'location', c.location,
        'prep_items', to_jsonb(c.prep_items),
        'google_calendar_id', c.google_calendar_id,
        'attempts', c.attempts,
        'needs_sync', c.synced_version < c.version,
        'recurrence', c.recurrence,
        'planned_until', c.planned_until,
        'child_id', c.child_id,
        'child_name', ch.name,
        'has_profile', coalesce(pa.has_profile, false),
        'timezone', pa.timezone,
        'google_refresh_token', pa.refresh_token,
        'owner_calendar_id', pa.calendar_id,
        'calendar_sync_enabled', coalesce(pa.calendar_sync_enabled, true),
        'offsets_seconds', to_jsonb(pa.offsets_seconds),
        'quiet_hours_start', pa.quiet_hours_start,
        'quiet_hours_end', pa.quiet_hours_end
    ) ORDER BY c.user_id, c.start_ts), '[]'::jsonb)
    INTO v_rows
    FROM rows c
    LEFT JOIN public.children ch ON ch.id = c.child_id
    LEFT JOIN worker.parents pa ON pa.id = c.user_id;
    RETURN v_rows;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_claim_receipts.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Claim the tickets of sent reminders whose Expo receipt is due for checking: one per device the
-- reminder went to (worker.push_tickets).
--
-- An ok ticket only says Expo *accepted* a message; whether Apple/Google took it is in the receipt,
-- available for about 24 hours after sending. About p_delay_seconds (RECEIPT_DELAY_SECONDS,
-- 15 min) after sending, a pass asks for it (worker/steps/receipts.py) and settles the ticket with
-- worker_record_receipts. A receipt claim is separate from the push claim (receipt_claim_id on the
-- ticket). As for the other claims, p_claim is new for every call, and a retried call gets the
-- tickets it already holds back.
CREATE OR REPLACE FUNCTION public.worker_claim_receipts(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer, p_delay_seconds integer
) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    WITH held AS (
        SELECT t.reminder_id, t.token FROM worker.push_tickets t
        WHERE t.receipt_claim_id = p_claim AND t.receipt_status IS NULL
    ), picked AS (
        SELECT t.reminder_id, t.token
        FROM worker.push_tickets t
        JOIN public.reminders r ON r.id = t.reminder_id
        WHERE t.receipt_status IS NULL AND r.status = 'sent'
          AND t.sent_at <= p_now - make_interval(secs => p_delay_seconds)
          AND (t.receipt_next_check_at IS NULL OR t.receipt_next_check_at <= p_now)
          AND (t.receipt_lease_expires_at IS NULL OR t.receipt_lease_expires_at <= p_now)
        ORDER BY t.sent_at
        LIMIT greatest(p_limit - (SELECT count(*) FROM held), 0)
        FOR UPDATE OF t SKIP LOCKED
    ), claimed AS (
        UPDATE worker.push_tickets t
        SET receipt_claim_id = p_claim,
            receipt_lease_expires_at = p_now + make_interval(secs => p_lease_seconds)
        FROM picked
        WHERE t.reminder_id = picked.reminder_id AND t.token = picked.token
        RETURNING t.*
    ), rows AS (
        SELECT * FROM claimed
        UNION ALL
        SELECT t.* FROM worker.push_tickets t JOIN held ON held.reminder_id = t.reminder_id AND held.token = t.token
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.reminder_id,
        'token', c.token,
        'ticket_id', c.ticket_id,
        'sent_at_ts', c.sent_at,
        'receipt_checks', c.receipt_checks,
        'retry_count', coalesce(r.retry_count, 0)
    ) ORDER BY c.sent_at), '[]'::jsonb)
    FROM rows c
    JOIN public.reminders r ON r.id = c.reminder_id
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_claim_reminders.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Claim due reminders for sending, after settling those that must not be sent; book their sends on
-- the shared Expo schedule. One statement over the due rows, one round trip.
--
-- Due: 'pending', never accepted by Expo (sent_at_ts IS NULL: seed 004's own test of "sent", so a
-- row the app's earlier sender marked that way is never sent again), notify_at_ts <= p_now and its
-- next try due; or 'sending' with a lapsed lease (its worker died). Of those, in this order:
--   * reminders of cancelled events become 'cancelled';
--   * reminders for a parent who turned pushes off, or of an event whose child they muted
--     (notification_preferences), become 'cancelled' with that kind;
--   * reminders whose occurrence already started (the event's start, or for a recurring event
--     reminders.occurs_at) become 'expired' (a late reminder is noise);
--   * a reminder of which a later reminder of the same occurrence is also due (or already sent)
--     becomes 'expired', kind 'superseded': after passes did not run for a while, a parent gets
--     the latest reminder only, not the 24 h and the 3 h one seconds apart;
-- the rest become 'sending' under p_claim and come back with everything the message needs: the
-- event as it is now (the text is rendered at send time), the owner's devices (see worker.parents),
-- the text stored on the row (the worker sends its text back only when it changed); for a row the
-- app wrote before the worker arrived, its own push_token, which the message falls back to.
--
-- The shared limit (p_rate messages a second, 0: none): Expo allows a number of notifications a
-- second per project, whatever the number of workers. worker.send_schedule holds when the schedule
-- is next free, on the database's clock (the one clock every worker shares; p_now may be a test's
-- simulated time). A claim books one slot of 1/p_rate s for every message it claims, from
-- greatest(now + p_lead_seconds, next_free_at), and answers `send_in`: the seconds from the moment it answers to its
-- first slot. Each worker sends its requests no earlier than their slots (worker/steps/push.py). The
-- row is locked for the length of the claim, so bookings never overlap, whichever worker makes
-- them; together the workers never exceed the rate. When the schedule is booked more than
-- p_lookahead_seconds ahead, nothing is claimed: `wait_seconds` says when to ask again (rows claimed
-- long before their slot would only sit leased). A booking further ahead than any claim could make
-- (the database's clock set back) is reset.
--
-- p_claim is new for every call: a call retried after its answer was lost gets the rows it already
-- claimed back (held), instead of leaving them leased to nobody; their sends are not booked again.
CREATE OR REPLACE FUNCTION public.worker_claim_reminders(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer,
    p_rate double precision DEFAULT 0, p_lookahead_seconds double precision DEFAULT 2,
    p_lead_seconds double precision DEFAULT 0
) RETURNS json
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_held uuid[];
    v_ids uuid[] := '{}';
    v_free timestamptz;
    v_clock timestamptz;
    v_send_from timestamptz;
    v_claimed json;
    v_cancelled integer;
    v_expired integer;
    v_superseded integer;
    v_messages integer;
BEGIN
    SELECT coalesce(array_agg(r.id), '{}') INTO v_held
    FROM public.reminders r WHERE r.claim_id = p_claim AND r.status = 'sending';

    IF p_rate > 0 THEN
        -- The schedule runs on the database's clock (every worker reads the same one); the answer
        -- gives the worker durations, measured when it is written, not instants of its own clock.
        SELECT s.clock, s.next_free INTO v_clock, v_free
        FROM worker.lock_send_schedule('expo', p_lookahead_seconds + 60 + greatest(p_limit, 1) * 20 / p_rate) s;
        -- Not before the worker can have the claimed messages ready (p_lead_seconds): a slot it
        -- could only meet late would bunch its request with the next one at Expo.
        v_send_from := greatest(v_clock + make_interval(secs => p_lead_seconds), v_free);
        IF v_send_from > v_clock + make_interval(secs => p_lookahead_seconds + p_lead_seconds)
           AND cardinality(v_held) = 0 THEN
            RETURN json_build_object('claimed', '[]'::json, 'cancelled', 0, 'expired', 0, 'superseded', 0,
                                     'wait_seconds', extract(epoch FROM v_send_from - clock_timestamp())
                                                     - p_lookahead_seconds - p_lead_seconds);
        END IF;
    END IF;

    -- The rows, first (a statement of its own: the next one is planned for that many rows).
    -- Lapsed claims first (rare), then pending rows in notify order along reminders_due_unsent_idx.
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'sending' AND r.lease_expires_at <= p_now AND r.claim_id IS DISTINCT FROM p_claim
        ORDER BY r.lease_expires_at
        LIMIT greatest(p_limit - cardinality(v_held), 0)
        FOR UPDATE SKIP LOCKED
    ) lapsed;
    SELECT v_ids || coalesce(array_agg(id), '{}') INTO v_ids FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'pending' AND r.notify_at_ts <= p_now AND r.sent_at_ts IS NULL
          AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)
        ORDER BY r.notify_at_ts
        LIMIT greatest(p_limit - cardinality(v_held) - cardinality(v_ids), 0)
        FOR UPDATE SKIP LOCKED
    ) due;

    WITH picked AS (
        SELECT id, false AS held FROM unnest(v_ids) AS id
        UNION ALL SELECT id, true FROM unnest(v_held) AS id
    ), fate AS MATERIALIZED (  -- each fate decided once, however often the UPDATE reads it
        SELECT r.id, p.held, e.id AS event_id, e.title, coalesce(r.occurs_at, e.start_ts) AS start_ts, e.end_ts,
               e.location, e.prep_items, ch.name AS child_name, pa.has_profile, pa.devices, pa.timezone,
               CASE
                   WHEN p.held THEN 'claim'
                   WHEN e.status = 'cancelled' THEN 'event_cancelled'
                   WHEN NOT coalesce(pa.push_enabled, true) THEN 'push_disabled'
                   WHEN e.child_id = ANY (pa.muted_children) THEN 'child_muted'
                   WHEN coalesce(r.occurs_at, e.start_ts) <= p_now THEN 'event_started'
                   WHEN EXISTS (
                       SELECT 1 FROM public.reminders l
                       WHERE l.event_id = r.event_id AND l.occurs_at IS NOT DISTINCT FROM r.occurs_at
                         AND l.notify_at_ts > r.notify_at_ts AND l.notify_at_ts <= p_now
                         AND l.status IN ('pending', 'sending', 'sent')) THEN 'superseded'
                   ELSE 'claim' END AS fate
        FROM picked p
        JOIN public.reminders r ON r.id = p.id
        LEFT JOIN public.events e ON e.id = r.event_id
        LEFT JOIN public.children ch ON ch.id = e.child_id
        -- One parent at a time by id (OFFSET 0 keeps the planner from joining the whole view):
        -- the cost follows the batch, not the number of parents.
        LEFT JOIN LATERAL (SELECT * FROM worker.parents v WHERE v.id = r.user_id OFFSET 0) pa ON true
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE f.fate WHEN 'claim' THEN 'sending'
                                 WHEN 'event_started' THEN 'expired' WHEN 'superseded' THEN 'expired'
                                 ELSE 'cancelled' END,
            error_message = CASE f.fate
                WHEN 'claim' THEN r.error_message
                WHEN 'event_cancelled' THEN 'the event was cancelled'
                WHEN 'push_disabled' THEN 'not sent: the parent turned push reminders off'
                WHEN 'child_muted' THEN 'not sent: the parent muted reminders for this child'
                WHEN 'event_started' THEN 'the event had already started'
                ELSE 'not sent: a later reminder of the same event was due as well, and only the latest is sent'
                END,
            error_kind = CASE f.fate WHEN 'claim' THEN r.error_kind ELSE f.fate END,
            claim_id = CASE f.fate WHEN 'claim' THEN p_claim END,
            lease_expires_at = CASE f.fate WHEN 'claim' THEN p_now + make_interval(secs => p_lease_seconds) END,
            next_attempt_at = CASE f.fate WHEN 'claim' THEN r.next_attempt_at END,
            updated_at = p_now
        FROM fate f
        WHERE r.id = f.id
        RETURNING r.id, f.fate, f.held, r.event_id AS row_event_id, r.user_id, r.notify_at_ts, r.retry_count,
                  r.planned_by_worker, r.message, r.push_token, f.title, f.start_ts, f.end_ts, f.location,
                  f.prep_items, f.child_name, f.has_profile, f.devices, f.timezone
    )
    SELECT coalesce(json_agg(json_build_object(
               'id', w.id,
               'event_id', w.row_event_id,
               'user_id', w.user_id,
               'notify_at_ts', w.notify_at_ts,
               'retry_count', coalesce(w.retry_count, 0),
               'planned_by_worker', w.planned_by_worker,
               'stored_message', w.message,
               'row_push_token', CASE WHEN NOT w.planned_by_worker THEN w.push_token END,
               'title', w.title,
               'start_ts', w.start_ts,
               'end_ts', w.end_ts,
               'location', w.location,
               'prep_items', w.prep_items,
               'child_name', w.child_name,
               'has_profile', coalesce(w.has_profile, false),
               'devices', coalesce(w.devices, '[]'::jsonb),
               'timezone', w.timezone
           ) ORDER BY w.notify_at_ts) FILTER (WHERE w.fate = 'claim'), '[]'::json),
           count(*) FILTER (WHERE w.fate IN ('event_cancelled', 'push_disabled', 'child_muted')),
           count(*) FILTER (WHERE w.fate = 'event_started'),
           count(*) FILTER (WHERE w.fate = 'superseded'),
           -- what this claim books on the schedule: one slot a device (held rows were booked before)
           coalesce(sum(CASE WHEN w.fate = 'claim' AND NOT w.held
                             THEN greatest(jsonb_array_length(coalesce(w.devices, '[]'::jsonb)),
                                           CASE WHEN NOT w.planned_by_worker AND w.push_token IS NOT NULL
                                                THEN 1 ELSE 0 END)
                             ELSE 0 END), 0)
    INTO v_claimed, v_cancelled, v_expired, v_superseded, v_messages
    FROM written w;

    IF p_rate > 0 THEN
        UPDATE worker.send_schedule
        SET next_free_at = v_send_from + make_interval(secs => v_messages / p_rate)
        WHERE name = 'expo';
    END IF;
    RETURN json_build_object(
        'claimed', v_claimed, 'cancelled', v_cancelled, 'expired', v_expired, 'superseded', v_superseded,
        -- seconds from now (as the answer is written) to the first slot booked; negative: already due
        'send_in', CASE WHEN p_rate > 0 THEN extract(epoch FROM v_send_from - clock_timestamp()) END,
        'rate', CASE WHEN p_rate > 0 THEN p_rate END);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_complete_events.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Record the outcome of claimed events, plan their reminders, and release them: one call a batch.
--
-- p_results: [{id, version, outcome, google_calendar_id, error, error_kind, next_attempt_at,
--              planned_until, reminders: [{notify_at_ts, occurs_at, message}]}]
-- planned_until: how far ahead a recurring event's reminders are now planned (NULL: one-off).
-- outcome (worker/vocabulary.py EventOutcome): 'synced' (done, or nothing to do), 'failed'
-- (permanent; error and error_kind say why), 'retry' (transient; again at next_attempt_at).
-- google_calendar_id is the entry's id after this pass (NULL once a cancelled event's entry is gone).
--
-- * A live event gets its reminders planned whatever the calendar said (a calendar failure must
--   not cost a parent their reminders). A planned time that already has a row keeps it
--   (ON CONFLICT); a row cancelled earlier (event cancelled, then restored) is planned again.
-- * An edit never loses a reminder that is due: unsent reminders whose time is still ahead and no
--   longer planned (the event moved, the lead times changed) go; unsent reminders already due stay
--   and are sent by the push step, whose text is rendered from the event as it is now (new title,
--   new time), unless the event has started by then.
-- * A cancelled event's unsent reminders become cancelled; it stays 'cancelled'.
-- * A parent whose grant Google refused gets the token's fingerprint in worker.revoked_grants; the
--   events claim gives their events back once the token is another one.
-- * An event whose version changed since the claim (edited meanwhile) keeps its new edit: only the
--   calendar id is remembered and the claim released; the next claim picks the edit up.
CREATE OR REPLACE FUNCTION public.worker_complete_events(
    p_now timestamptz, p_claim uuid, p_results jsonb
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_planned integer;
    v_unplanned integer;
    v_cancelled integer;
    v_finished integer;
    v_stale integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.worker_event_results (
        id uuid PRIMARY KEY, version bigint, outcome text, google_calendar_id text, error text,
        error_kind text, next_attempt_at timestamptz, planned_until timestamptz, reminders jsonb, current boolean,
        cancelled boolean
    ) ON COMMIT DROP;
    TRUNCATE pg_temp.worker_event_results;

    -- Only rows this claim still holds; `current` says whether nobody edited them meanwhile.
    INSERT INTO pg_temp.worker_event_results
    SELECT x.id, x.version, x.outcome, x.google_calendar_id, x.error,
           CASE WHEN x.outcome IN ('failed', 'retry') THEN x.error_kind END,
           x.next_attempt_at, x.planned_until, coalesce(x.reminders, '[]'::jsonb), e.version = x.version,
           e.status = 'cancelled'
    FROM jsonb_to_recordset(p_results) AS x(
        id uuid, version bigint, outcome text, google_calendar_id text, error text,
        error_kind text, next_attempt_at timestamptz, planned_until timestamptz, reminders jsonb)
    JOIN public.events e ON e.id = x.id AND e.claim_id = p_claim;

    INSERT INTO public.reminders (event_id, user_id, notify_at_ts, occurs_at, message, status, retry_count,
                                  planned_by_worker, updated_at)
    SELECT e.id, e.user_id, (rem ->> 'notify_at_ts')::timestamptz, (rem ->> 'occurs_at')::timestamptz,
           rem ->> 'message', 'pending', 0, true, p_now
    FROM pg_temp.worker_event_results x
    JOIN public.events e ON e.id = x.id
    CROSS JOIN LATERAL jsonb_array_elements(x.reminders) AS rem
    WHERE x.current AND NOT x.cancelled
    ON CONFLICT (event_id, notify_at_ts) DO UPDATE
        SET status = 'pending', retry_count = 0, error_message = NULL, error_kind = NULL, sent_at_ts = NULL,
            next_attempt_at = NULL, message = excluded.message, occurs_at = excluded.occurs_at,
            planned_by_worker = true,
            updated_at = excluded.updated_at
        WHERE public.reminders.status = 'cancelled';
    GET DIAGNOSTICS v_planned = ROW_COUNT;

    DELETE FROM public.reminders r
    USING pg_temp.worker_event_results x
    WHERE r.event_id = x.id AND x.current AND NOT x.cancelled
      AND r.status = 'pending'
      AND r.notify_at_ts > p_now
      AND NOT EXISTS (
          SELECT 1 FROM jsonb_array_elements(x.reminders) AS rem
          WHERE (rem ->> 'notify_at_ts')::timestamptz = r.notify_at_ts);
    GET DIAGNOSTICS v_unplanned = ROW_COUNT;

    UPDATE public.reminders r
    SET status = 'cancelled', error_message = 'the event was cancelled', error_kind = 'event_cancelled',
        next_attempt_at = NULL, updated_at = p_now
    FROM pg_temp.worker_event_results x
    WHERE r.event_id = x.id AND x.current AND x.cancelled AND r.status = 'pending';
    GET DIAGNOSTICS v_cancelled = ROW_COUNT;

    UPDATE public.events e
    SET status = CASE
                     WHEN x.cancelled THEN 'cancelled'
                     WHEN x.outcome = 'synced' THEN 'synced'
                     WHEN x.outcome = 'failed' THEN 'failed'
                     ELSE e.status END,
        synced_version = CASE WHEN x.outcome = 'retry' THEN e.synced_version ELSE e.version END,
        google_calendar_id = x.google_calendar_id,
        error_message = CASE WHEN x.outcome IN ('failed', 'retry') THEN x.error END,
        error_kind = x.error_kind,
        attempts = CASE WHEN x.outcome = 'retry' THEN e.attempts + 1 ELSE 0 END,
        next_attempt_at = CASE WHEN x.outcome = 'retry' THEN x.next_attempt_at END,
        synced_at = CASE WHEN x.outcome = 'synced' AND NOT x.cancelled THEN p_now ELSE e.synced_at END,
        planned_until = x.planned_until,
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results x
    WHERE e.id = x.id AND x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_finished = ROW_COUNT;

    -- Google refused the parent's grant: remember which token, so their events wait until it changes.
    INSERT INTO worker.revoked_grants (user_id, token_sha256, revoked_at)
    SELECT DISTINCT ON (e.user_id) e.user_id, encode(sha256(convert_to(pa.refresh_token, 'UTF8')), 'hex'), p_now
    FROM pg_temp.worker_event_results x
    JOIN public.events e ON e.id = x.id
    JOIN worker.parents pa ON pa.id = e.user_id
    WHERE x.current AND x.error_kind = 'google_revoked' AND pa.refresh_token IS NOT NULL
    ON CONFLICT (user_id) DO UPDATE SET token_sha256 = excluded.token_sha256, revoked_at = excluded.revoked_at;

    UPDATE public.events e
    SET google_calendar_id = coalesce(x.google_calendar_id, e.google_calendar_id),
        claim_id = NULL,
        lease_expires_at = NULL
    FROM pg_temp.worker_event_results x
    WHERE e.id = x.id AND NOT x.current AND e.claim_id = p_claim;
    GET DIAGNOSTICS v_stale = ROW_COUNT;

    RETURN jsonb_build_object(
        'finished', v_finished, 'stale', v_stale, 'reminders_planned', v_planned,
        'reminders_unplanned', v_unplanned, 'reminders_cancelled', v_cancelled);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_export_user.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- `python worker/main.py export-user UUID`: everything the worker holds about one parent, as one
-- document (a subject access request; both gateways, one round trip). Nothing is changed. json,
-- not jsonb: its keys stay in the order written here, for the person who reads it.
--
-- * profile: what the worker reads from the parent (worker.parents, the one place that decides):
--   whether a profiles row exists, the time zone as the worker uses it, where the push token it
--   uses comes from, the calendar the parent shared with the worker's service account.
-- * tokens: every push token held for the parent, wherever it is (profile, user metadata, each
--   public.push_tokens device), masked by worker.mask_push_token; the Google refresh token only as
--   'present' or 'absent' with every place one is held (profile, metadata, worker_store: the
--   worker's private store), never its value; when Google refused a grant of theirs.
-- * preferences: their public.notification_preferences row, or null (the defaults).
-- * events: all their events with the columns the worker reads or writes; the app's other columns
--   (location, prep items, ...) are the app's to export.
-- * reminders: every reminder of theirs (by user_id, or by an event of theirs: rows the app wrote
--   before the worker may lack user_id), with its outcome; deliveries: what Expo answered per
--   device (worker.push_tickets), tokens masked.
-- Error texts are stored scrubbed of secrets; push tokens in them are masked again here.
-- Unknown user: {"user_id": ..., "found": false}.
CREATE OR REPLACE FUNCTION public.worker_export_user(p_user uuid) RETURNS json
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_meta jsonb;
    v_reminders uuid[];
    v_token_re constant text := 'Expo(nent)?PushToken\[[^]]*\]';
BEGIN
    SELECT coalesce(u.raw_user_meta_data, '{}'::jsonb) INTO v_meta FROM auth.users u WHERE u.id = p_user;
    IF NOT FOUND THEN
        RETURN json_build_object('user_id', p_user, 'found', false);
    END IF;

    v_reminders := ARRAY(
        SELECT r.id FROM public.reminders r WHERE r.user_id = p_user
        UNION
        SELECT r.id FROM public.reminders r JOIN public.events e ON e.id = r.event_id WHERE e.user_id = p_user);

    RETURN (
        SELECT json_build_object(
            'user_id', p_user,
            'found', true,
            'exported_at', now(),
            'profile', json_build_object(
                'exists', pa.has_profile,
                'timezone', pa.timezone,
                'push_token_source', pa.push_token_source,
                'google_calendar_id', pa.calendar_id),
            'tokens', json_build_object(
                'push', (
                    SELECT coalesce(json_agg(t.doc ORDER BY t.rank, t.created_at, t.doc ->> 'token'), '[]'::json)
                    FROM (
                        SELECT 0 AS rank, NULL::timestamptz AS created_at,
                               json_build_object('source', 'profile',
                                                  'token', worker.mask_push_token(p.expo_push_token)) AS doc
                        FROM public.profiles p
                        WHERE p.id = p_user AND nullif(p.expo_push_token, '') IS NOT NULL
                        UNION ALL
                        SELECT 1, NULL,
                               json_build_object('source', 'metadata',
                                                  'token', worker.mask_push_token(v_meta ->> 'expo_push_token'))
                        WHERE nullif(v_meta ->> 'expo_push_token', '') IS NOT NULL
                        UNION ALL
                        SELECT 2, d.created_at,
                               json_build_object('source', 'device', 'token', worker.mask_push_token(d.token),
                                                  'created_at', d.created_at, 'last_seen_at', d.last_seen_at)
                        FROM public.push_tokens d
                        WHERE d.user_id = p_user) t),
                'google_refresh_token', CASE WHEN pa.refresh_token IS NOT NULL THEN 'present' ELSE 'absent' END,
                'google_refresh_token_in', to_json(ARRAY(
                    SELECT w.place FROM (
                        SELECT 1 AS rank, 'profile' AS place
                        FROM public.profiles p
                        WHERE p.id = p_user AND nullif(p.google_refresh_token, '') IS NOT NULL
                        UNION ALL
                        SELECT 2, 'metadata' WHERE nullif(v_meta ->> 'google_refresh_token', '') IS NOT NULL
                        UNION ALL
                        SELECT 3, 'worker_store' FROM worker.refresh_tokens s WHERE s.user_id = p_user
                    ) w ORDER BY w.rank)),
                'google_grant_refused_at', (SELECT g.revoked_at FROM worker.revoked_grants g WHERE g.user_id = p_user)),
            'preferences', (
                SELECT (to_jsonb(np) - 'user_id')::json FROM public.notification_preferences np WHERE np.user_id = p_user),
            'events', (
                SELECT coalesce(json_agg(json_build_object(
                    'id', e.id,
                    'title', e.title,
                    'start_ts', e.start_ts,
                    'end_ts', e.end_ts,
                    'status', e.status,
                    'recurrence', e.recurrence,
                    'google_calendar_id', e.google_calendar_id,
                    'error_kind', e.error_kind,
                    'error_message', regexp_replace(e.error_message, v_token_re, 'ExpoPushToken[***]', 'g'),
                    'synced_at', e.synced_at
                ) ORDER BY e.start_ts, e.id), '[]'::json)
                FROM public.events e
                WHERE e.user_id = p_user),
            'reminders', (
                SELECT coalesce(json_agg(json_build_object(
                    'id', r.id,
                    'event_id', r.event_id,
                    'notify_at_ts', r.notify_at_ts,
                    'occurs_at', r.occurs_at,
                    'status', r.status,
                    'message', r.message,
                    'push_token', worker.mask_push_token(r.push_token),
                    'sent_at_ts', r.sent_at_ts,
                    'retry_count', r.retry_count,
                    'error_kind', r.error_kind,
                    'error_message', regexp_replace(r.error_message, v_token_re, 'ExpoPushToken[***]', 'g'),
                    'expo_ticket_id', r.expo_ticket_id,
                    'receipt_status', r.receipt_status
                ) ORDER BY r.notify_at_ts, r.id), '[]'::json)
                FROM public.reminders r
                WHERE r.id = ANY (v_reminders)),
            'deliveries', (
                SELECT coalesce(json_agg(json_build_object(
                    'reminder_id', t.reminder_id,
                    'token', worker.mask_push_token(t.token),
                    'ticket_id', t.ticket_id,
                    'sent_at', t.sent_at,
                    'receipt_status', t.receipt_status,
                    'receipt_error', regexp_replace(t.receipt_error, v_token_re, 'ExpoPushToken[***]', 'g'),
                    'receipt_checks', t.receipt_checks
                ) ORDER BY t.sent_at, t.reminder_id, t.ticket_id), '[]'::json)
                FROM worker.push_tickets t
                WHERE t.reminder_id = ANY (v_reminders)))
        FROM worker.parents pa
        WHERE pa.id = p_user);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_forget_user.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- `python worker/main.py forget-user UUID --yes`: erase what the worker holds about one parent, in
-- one transaction, and say what it erased. p_dry_run: only count, change nothing.
--
-- Deleted: their reminders (by user_id, or by an event of theirs; their worker.push_tickets go with
-- them), their devices (public.push_tokens), their notification_preferences row, their refresh
-- token in the worker's store (worker.refresh_tokens) and the fingerprint of a grant Google refused
-- (worker.revoked_grants).
-- Cleared: the worker's columns of their profile (expo_push_token, google_refresh_token,
-- google_calendar_id; the app's own columns, the time zone included, stay), the expo_push_token
-- and google_refresh_token keys of their user metadata, and on their events the calendar entry id
-- (the command deletes the entries in Google first, see worker_forget_user_calendar) and the
-- worker's retry state (error, attempts, next try: it was about the Google link now forgotten; the
-- next pass syncs such an event at once, without Google). A 'failed' event keeps its reason: it is
-- what the app shows for that event.
-- Kept: the events themselves (the app's data). Deleting the user in Supabase Auth still removes
-- everything of theirs (ON DELETE CASCADE), as before.
--
-- Nothing else is touched: events keep their status and version, so no pass re-syncs them because
-- of this (deleting the preferences row re-plans their live events as any change of preferences
-- does, worker.preferences_on_change; with no device and no grant left, nothing reaches them).
-- in_flight counts what a pass holds under a live lease right now: a pass that claimed one of their
-- events may still write a calendar id or reminders back when it finishes; the command says so.
-- Calling it again erases what appeared since, or nothing. Unknown user: {"found": false}.
CREATE OR REPLACE FUNCTION public.worker_forget_user(p_user uuid, p_dry_run boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_keys constant text[] := ARRAY['expo_push_token', 'google_refresh_token'];
    v_meta jsonb;
    v_reminders uuid[];
    v_tickets integer;
    v_devices integer;
    v_preferences integer;
    v_stored integer;
    v_refused integer;
    v_profile text[];
    v_metadata text[];
    v_events integer;
    v_calendar_ids integer;
    v_maybe integer;
    v_retries integer;
    v_busy_events integer;
    v_busy_reminders integer;
    v_busy_until timestamptz;
    v_grant boolean;
BEGIN
    IF p_dry_run THEN
        SELECT coalesce(u.raw_user_meta_data, '{}'::jsonb) INTO v_meta FROM auth.users u WHERE u.id = p_user;
    ELSE
        -- One erasure of a parent at a time, and no metadata write of the app's in between.
        SELECT coalesce(u.raw_user_meta_data, '{}'::jsonb) INTO v_meta FROM auth.users u WHERE u.id = p_user
        FOR UPDATE;
    END IF;
    IF NOT FOUND THEN
        RETURN jsonb_build_object('user_id', p_user, 'found', false, 'dry_run', p_dry_run);
    END IF;

    v_reminders := ARRAY(
        SELECT r.id FROM public.reminders r WHERE r.user_id = p_user
        UNION
        SELECT r.id FROM public.reminders r JOIN public.events e ON e.id = r.event_id WHERE e.user_id = p_user);
    SELECT count(*) INTO v_tickets FROM worker.push_tickets t WHERE t.reminder_id = ANY (v_reminders);
    SELECT count(*) INTO v_devices FROM public.push_tokens d WHERE d.user_id = p_user;
    SELECT count(*) INTO v_preferences FROM public.notification_preferences np WHERE np.user_id = p_user;
    SELECT count(*) INTO v_stored FROM worker.refresh_tokens s WHERE s.user_id = p_user;
    SELECT count(*) INTO v_refused FROM worker.revoked_grants g WHERE g.user_id = p_user;
    v_profile := ARRAY(
        SELECT c.name
        FROM public.profiles p
        CROSS JOIN LATERAL (VALUES (1, 'expo_push_token', p.expo_push_token),
                                   (2, 'google_refresh_token', p.google_refresh_token),
                                   (3, 'google_calendar_id', p.google_calendar_id)) AS c(rank, name, value)
        WHERE p.id = p_user AND c.value IS NOT NULL
        ORDER BY c.rank);
    v_metadata := ARRAY(SELECT k FROM unnest(v_keys) AS k WHERE v_meta ? k);
    SELECT count(*),
           count(*) FILTER (WHERE e.google_calendar_id IS NOT NULL),
           count(*) FILTER (WHERE e.google_calendar_id IS NULL
                              AND (e.claim_id IS NOT NULL OR (e.status = 'pending' AND e.attempts > 0))),
           count(*) FILTER (WHERE e.status IS DISTINCT FROM 'failed'
                              AND (e.error_kind IS NOT NULL OR e.error_message IS NOT NULL OR e.attempts > 0
                                   OR e.next_attempt_at IS NOT NULL)),
           count(*) FILTER (WHERE e.claim_id IS NOT NULL AND e.lease_expires_at > now()),
           max(e.lease_expires_at) FILTER (WHERE e.claim_id IS NOT NULL AND e.lease_expires_at > now())
    INTO v_events, v_calendar_ids, v_maybe, v_retries, v_busy_events, v_busy_until
    FROM public.events e
    WHERE e.user_id = p_user;
    SELECT count(*) INTO v_busy_reminders
    FROM public.reminders r
    WHERE r.id = ANY (v_reminders) AND r.status = 'sending' AND r.lease_expires_at > now();
    SELECT pa.refresh_token IS NOT NULL OR pa.calendar_id IS NOT NULL INTO v_grant
    FROM worker.parents pa WHERE pa.id = p_user;

    IF NOT p_dry_run THEN
        DELETE FROM public.reminders r WHERE r.id = ANY (v_reminders);  -- worker.push_tickets cascade
        DELETE FROM public.push_tokens d WHERE d.user_id = p_user;
        DELETE FROM public.notification_preferences np WHERE np.user_id = p_user;
        DELETE FROM worker.refresh_tokens s WHERE s.user_id = p_user;
        DELETE FROM worker.revoked_grants g WHERE g.user_id = p_user;
        IF cardinality(v_profile) > 0 THEN
            UPDATE public.profiles p
            SET expo_push_token = NULL, google_refresh_token = NULL, google_calendar_id = NULL, updated_at = now()
            WHERE p.id = p_user;
        END IF;
        IF cardinality(v_metadata) > 0 THEN
            UPDATE auth.users u
            SET raw_user_meta_data = u.raw_user_meta_data - v_keys
            WHERE u.id = p_user;
        END IF;
        -- Neither a content column nor the status changes: worker.events_on_edit leaves the version.
        UPDATE public.events e
        SET google_calendar_id = NULL,
            error_kind = CASE WHEN e.status = 'failed' THEN e.error_kind END,
            error_message = CASE WHEN e.status = 'failed' THEN e.error_message END,
            attempts = CASE WHEN e.status = 'failed' THEN e.attempts ELSE 0 END,
            next_attempt_at = CASE WHEN e.status = 'failed' THEN e.next_attempt_at END,
            updated_at = now()
        WHERE e.user_id = p_user
          AND (e.google_calendar_id IS NOT NULL
               OR (e.status IS DISTINCT FROM 'failed'
                   AND (e.error_kind IS NOT NULL OR e.error_message IS NOT NULL OR e.attempts > 0
                        OR e.next_attempt_at IS NOT NULL)));
    END IF;

    RETURN jsonb_build_object(
        'user_id', p_user,
        'found', true,
        'dry_run', p_dry_run,
        'deleted', jsonb_build_object(
            'reminders', cardinality(v_reminders),
            'push_tickets', v_tickets,
            'devices', v_devices,
            'preferences', v_preferences,
            'stored_refresh_tokens', v_stored,
            'refused_grants', v_refused),
        'cleared', jsonb_build_object(
            'profile', to_jsonb(v_profile),
            'metadata', to_jsonb(v_metadata),
            'event_calendar_ids', v_calendar_ids,
            'event_retries', v_retries),
        'kept', jsonb_build_object('events', v_events),
        'calendar', jsonb_build_object(
            'entries', v_calendar_ids,
            'maybe', v_maybe,
            'grant', coalesce(v_grant, false)),
        'in_flight', jsonb_build_object(
            'events', v_busy_events,
            'reminders', v_busy_reminders,
            'until', v_busy_until));
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_forget_user_calendar.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- `python worker/main.py forget-user UUID --yes`, before the erasure: what that command needs to
-- delete the calendar entries the worker made for one parent, and nothing else calls it.
--
-- entries: their events with a calendar entry id (google_calendar_id), and those whose entry may
-- exist although no id was recorded (known = false: a pass claimed the event and never finished,
-- or a try failed after Google may have stored it); the command derives our id for those, as the
-- events step does for a cancelled event. The grant (the refresh token, wherever the worker reads
-- it: worker.parents, and the calendar shared with the service account) comes back only when there
-- is an entry to delete, to this service-role-only call, exactly as worker_claim_events hands it to
-- a pass; the command keeps it in memory for the deletions and never prints or logs it.
-- Unknown user: {"found": false}.
CREATE OR REPLACE FUNCTION public.worker_forget_user_calendar(p_user uuid) RETURNS jsonb
    LANGUAGE plpgsql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_entries jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM auth.users u WHERE u.id = p_user) THEN
        RETURN jsonb_build_object('user_id', p_user, 'found', false);
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'event_id', e.id,
               'entry_id', e.google_calendar_id,
               'known', e.google_calendar_id IS NOT NULL
           ) ORDER BY e.google_calendar_id IS NULL, e.start_ts, e.id), '[]'::jsonb)
    INTO v_entries
    FROM public.events e
    WHERE e.user_id = p_user
      AND (e.google_calendar_id IS NOT NULL
           OR e.claim_id IS NOT NULL
           OR (e.status = 'pending' AND e.attempts > 0));
    RETURN (
        SELECT jsonb_build_object(
            'user_id', p_user,
            'found', true,
            'entries', v_entries,
            'refresh_token', CASE WHEN jsonb_array_length(v_entries) > 0 THEN pa.refresh_token END,
            'calendar_id', CASE WHEN jsonb_array_length(v_entries) > 0 THEN pa.calendar_id END)
        FROM worker.parents pa
        WHERE pa.id = p_user);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_pending_events.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- The events waiting for the events step: 'pending' (new or edited) and not yet synced at their
-- current version, soonest first, at most p_limit of them. Read-only: it claims nothing and changes
-- nothing, so it answers the seed's health check (`await ReminderWorker()._get_pending_events()`,
-- worker/api.py) while passes run. Events waiting for a later try are listed too, with their
-- attempts and next_attempt_at. Only what says where an event stands: no token, nothing secret.
CREATE OR REPLACE FUNCTION public.worker_pending_events(p_limit integer) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', e.id,
        'user_id', e.user_id,
        'title', e.title,
        'start_ts', e.start_ts,
        'end_ts', e.end_ts,
        'status', e.status,
        'attempts', e.attempts,
        'next_attempt_at', e.next_attempt_at,
        'error_message', e.error_message
    ) ORDER BY e.start_ts, e.id), '[]'::jsonb)
    FROM (
        SELECT ev.id, ev.user_id, ev.title, ev.start_ts, ev.end_ts, ev.status, ev.attempts,
               ev.next_attempt_at, ev.error_message
        FROM public.events ev
        WHERE ev.status = 'pending' AND ev.synced_version < ev.version
        ORDER BY ev.start_ts, ev.id
        LIMIT greatest(p_limit, 0)
    ) e
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_record_push_outcomes.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Record the outcomes of sends: one call for one or a few Expo requests, as soon as they return.
--
-- p_claims: the claim ids of the calling pass whose rows this call may write; p_outcomes, compact
-- (only what the database does not know; absent keys are null):
--   [{id, outcome, error, error_kind, next_attempt_at, message, tickets: [[token, ticket_id]],
--     dead_tokens: [token]}]
-- message is the text sent, when it differs from what the row holds. A reminder goes to every
-- device of its parent: tickets are the devices Expo accepted it for (kept in worker.push_tickets
-- for the receipts step; the first one is also reminders.push_token and expo_ticket_id, seed 004's
-- columns), dead_tokens the devices Expo says are gone.
-- outcome (worker/vocabulary.py PushOutcome):
--   sent      Expo accepted the message for at least one device: 'sent', sent_at_ts, its tickets
--             (a fresh receipt cycle).
--   retry     transient: one more failed attempt; the attempt that reaches p_max_attempts makes the
--             reminder 'failed', else 'pending' again at next_attempt_at.
--   failed    permanent: 'failed' with the reason.
--   deferred  not the reminder's fault (Expo refused the project's credentials): 'pending' again at
--             next_attempt_at, no attempt counted; error and kind stay for `status` to show.
--   released  claimed but never sent (the pass stopped early): 'pending' again, as it was.
-- Only rows still 'sending' under one of p_claims are written, so a pass whose lease lapsed and
-- whose rows another pass took over cannot overwrite that pass's outcome, and a call retried after
-- its answer was lost writes nothing twice. dead_tokens are removed from where the owner's tokens
-- are kept, each only if it is still there (DeviceNotRegistered): worker.clear_push_tokens.
CREATE OR REPLACE FUNCTION public.worker_record_push_outcomes(
    p_now timestamptz, p_claims uuid[], p_max_attempts integer, p_outcomes jsonb
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_counts jsonb;
    v_cleared integer;
BEGIN
    WITH x AS MATERIALIZED (
        SELECT * FROM jsonb_to_recordset(p_outcomes) AS o(
            id uuid, outcome text, error text, error_kind text, next_attempt_at timestamptz, message text,
            tickets jsonb, dead_tokens jsonb)
    ), resent AS (
        -- A reminder accepted again starts a fresh receipt cycle: tickets of devices it no longer
        -- went to go (those it went to again are replaced below; no row is touched twice).
        DELETE FROM worker.push_tickets t
        USING x, public.reminders r
        WHERE t.reminder_id = x.id AND x.outcome = 'sent' AND r.id = x.id AND r.claim_id = ANY (p_claims)
          AND r.status = 'sending'
          AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(x.tickets) AS nt WHERE nt ->> 0 = t.token)
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE
                WHEN x.outcome = 'sent' THEN 'sent'
                WHEN x.outcome IN ('deferred', 'released') THEN 'pending'
                WHEN x.outcome = 'retry' AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN 'pending'
                ELSE 'failed' END,
            retry_count = coalesce(r.retry_count, 0) + CASE WHEN x.outcome = 'retry' THEN 1 ELSE 0 END,
            sent_at_ts = CASE WHEN x.outcome = 'sent' THEN p_now ELSE r.sent_at_ts END,
            error_message = CASE
                WHEN x.outcome = 'sent' THEN NULL
                WHEN x.outcome = 'released' THEN r.error_message
                WHEN x.outcome = 'retry' AND coalesce(r.retry_count, 0) + 1 >= p_max_attempts
                    THEN format('gave up after %s attempts: %s', coalesce(r.retry_count, 0) + 1, x.error)
                ELSE x.error END,
            error_kind = CASE
                WHEN x.outcome = 'sent' THEN NULL
                WHEN x.outcome = 'released' THEN r.error_kind
                ELSE x.error_kind END,
            next_attempt_at = CASE
                WHEN x.outcome = 'deferred' THEN x.next_attempt_at
                WHEN x.outcome = 'released' THEN r.next_attempt_at
                WHEN x.outcome = 'retry' AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN x.next_attempt_at
                END,
            message = coalesce(x.message, r.message),
            push_token = coalesce(x.tickets -> 0 ->> 0, r.push_token),
            expo_ticket_id = CASE WHEN x.outcome = 'sent' THEN x.tickets -> 0 ->> 1 ELSE r.expo_ticket_id END,
            receipt_status = CASE WHEN x.outcome = 'sent' THEN NULL ELSE r.receipt_status END,
            receipt_checked_at = CASE WHEN x.outcome = 'sent' THEN NULL ELSE r.receipt_checked_at END,
            receipt_checks = CASE WHEN x.outcome = 'sent' THEN 0 ELSE r.receipt_checks END,
            receipt_next_check_at = CASE WHEN x.outcome = 'sent' THEN NULL ELSE r.receipt_next_check_at END,
            claim_id = NULL,
            lease_expires_at = NULL,
            updated_at = p_now
        FROM x
        WHERE r.id = x.id AND r.claim_id = ANY (p_claims) AND r.status = 'sending'
        RETURNING r.id, x.outcome, r.status, r.sent_at_ts, x.tickets
    ), tickets AS (
        INSERT INTO worker.push_tickets (reminder_id, token, ticket_id, sent_at)
        SELECT w.id, t ->> 0, t ->> 1, w.sent_at_ts
        FROM written w CROSS JOIN LATERAL jsonb_array_elements(coalesce(w.tickets, '[]'::jsonb)) AS t
        WHERE w.outcome = 'sent' AND t ->> 1 IS NOT NULL
        ON CONFLICT (reminder_id, token) DO UPDATE
            SET ticket_id = excluded.ticket_id, sent_at = excluded.sent_at, receipt_status = NULL,
                receipt_error = NULL, receipt_checks = 0, receipt_next_check_at = NULL, receipt_claim_id = NULL,
                receipt_lease_expires_at = NULL
        RETURNING 1
    )
    SELECT jsonb_build_object(
        'sent', count(*) FILTER (WHERE status = 'sent'),
        'retried', count(*) FILTER (WHERE status = 'pending' AND outcome = 'retry'),
        'deferred', count(*) FILTER (WHERE outcome = 'deferred'),
        'released', count(*) FILTER (WHERE outcome = 'released'),
        'failed', count(*) FILTER (WHERE status = 'failed'),
        'tickets', (SELECT count(*) FROM tickets))
    INTO v_counts
    FROM written;

    v_cleared := 0;
    IF jsonb_path_exists(p_outcomes, '$[*].dead_tokens') THEN
        v_cleared := worker.clear_push_tokens(p_now, ARRAY(
            SELECT (r.user_id, dead.token)::worker.user_token
            FROM jsonb_to_recordset(p_outcomes) AS x(id uuid, dead_tokens jsonb)
            JOIN public.reminders r ON r.id = x.id
            CROSS JOIN LATERAL jsonb_array_elements_text(coalesce(x.dead_tokens, '[]'::jsonb)) AS dead(token)));
    END IF;
    RETURN v_counts || jsonb_build_object('tokens_cleared', v_cleared);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_record_receipts.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Record what Expo's receipts said, one call a batch: first each device's ticket, then each reminder
-- all of whose tickets are settled.
--
-- p_claims: the calling pass's receipt claims; p_outcomes:
--   [{id (the reminder), token, outcome, error, error_kind, next_attempt_at, next_check_at}]
-- outcome per ticket (worker/vocabulary.py ReceiptOutcome):
--   ok        delivered to that device.
--   failed    not delivered, for good (DeviceNotRegistered, MessageTooBig, ...). A device Expo says
--             is gone (error_kind device_not_registered) is forgotten where the parent's tokens are
--             kept, if it is still there (worker.clear_push_tokens).
--   resend    not delivered, worth sending again (MessageRateExceeded).
--   deferred  not delivered because the project's push credentials are wrong (InvalidCredentials,
--             MismatchSenderId): the operator must act.
--   missing   no receipt yet: counts a check, asked again at next_check_at.
--   later     Expo could not be asked: asked again at next_check_at, no check counted.
--   unknown   Expo has no receipt 24 hours after accepting: settled as unknown.
-- A reminder is settled once every one of its tickets is:
--   * delivered to at least one device: receipt_status 'ok', it stays 'sent';
--   * else worth sending again: 'pending' with one more attempt and next_attempt_at (after
--     p_max_attempts attempts: 'failed', like a send), sent_at_ts cleared (Expo's acceptance is void:
--     sent_at_ts IS NULL is what makes a pending reminder sendable, as in seed 004);
--   * else held for the operator (deferred): 'pending' at next_attempt_at, no attempt counted;
--   * else failed on every device: 'failed' with the reason, receipt_status 'error'. sent_at_ts is
--     kept: it records when Expo accepted the message;
--   * else (no receipt ever): receipt_status 'unknown'.
-- Only tickets still held by one of p_claims and still unsettled are written.
CREATE OR REPLACE FUNCTION public.worker_record_receipts(
    p_now timestamptz, p_claims uuid[], p_max_attempts integer, p_outcomes jsonb
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_counts jsonb;
    v_cleared integer;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS pg_temp.worker_receipt_results (
        reminder_id uuid, token text, outcome text, error text, error_kind text, next_attempt_at timestamptz,
        next_check_at timestamptz, PRIMARY KEY (reminder_id, token)
    ) ON COMMIT DROP;
    TRUNCATE pg_temp.worker_receipt_results;

    WITH x AS (
        SELECT * FROM jsonb_to_recordset(p_outcomes) AS o(
            id uuid, token text, outcome text, error text, error_kind text, next_attempt_at timestamptz,
            next_check_at timestamptz)
        WHERE o.outcome IN ('ok', 'failed', 'resend', 'deferred', 'missing', 'unknown', 'later')
    ), written AS (
        UPDATE worker.push_tickets t
        SET receipt_status = CASE x.outcome
                WHEN 'ok' THEN 'ok' WHEN 'unknown' THEN 'unknown'
                WHEN 'missing' THEN NULL WHEN 'later' THEN NULL ELSE 'error' END,
            receipt_outcome = CASE WHEN x.outcome IN ('missing', 'later') THEN NULL ELSE x.outcome END,
            receipt_error = x.error,
            receipt_error_kind = x.error_kind,
            receipt_checks = t.receipt_checks + CASE WHEN x.outcome = 'later' THEN 0 ELSE 1 END,
            receipt_next_check_at = CASE WHEN x.outcome IN ('missing', 'later') THEN x.next_check_at END,
            receipt_claim_id = NULL,
            receipt_lease_expires_at = NULL
        FROM x
        WHERE t.reminder_id = x.id AND t.token = x.token AND t.receipt_claim_id = ANY (p_claims)
          AND t.receipt_status IS NULL
        RETURNING t.reminder_id, t.token, x.outcome, x.error, x.error_kind, x.next_attempt_at, x.next_check_at
    )
    INSERT INTO pg_temp.worker_receipt_results SELECT * FROM written;

    v_cleared := worker.clear_push_tokens(p_now, ARRAY(
        SELECT (r.user_id, w.token)::worker.user_token
        FROM pg_temp.worker_receipt_results w
        JOIN public.reminders r ON r.id = w.reminder_id
        WHERE w.outcome = 'failed' AND w.error_kind = 'device_not_registered'));

    -- Each reminder whose tickets are all settled now: what its devices add up to.
    WITH settled AS (
        SELECT t.reminder_id,
               bool_or(t.receipt_outcome = 'ok') AS delivered,
               bool_or(t.receipt_outcome = 'resend') AS resend,
               bool_or(t.receipt_outcome = 'deferred') AS deferred,
               bool_or(t.receipt_outcome = 'failed') AS failed,
               (array_agg(t.receipt_error ORDER BY t.receipt_outcome = 'resend' DESC, t.receipt_outcome = 'deferred' DESC,
                          t.token) FILTER (WHERE t.receipt_status = 'error'))[1] AS error,
               (array_agg(t.receipt_error_kind ORDER BY t.receipt_outcome = 'resend' DESC,
                          t.receipt_outcome = 'deferred' DESC, t.token)
                    FILTER (WHERE t.receipt_status = 'error'))[1] AS error_kind,
               -- unknown: the receipt never came, or the ticket's row could not be read (its reason)
               (array_agg(t.receipt_error ORDER BY t.token)
                    FILTER (WHERE t.receipt_outcome = 'unknown' AND t.receipt_error IS NOT NULL))[1] AS unknown_error,
               (array_agg(t.receipt_error_kind ORDER BY t.token)
                    FILTER (WHERE t.receipt_outcome = 'unknown' AND t.receipt_error IS NOT NULL))[1] AS unknown_kind,
               max(w.next_attempt_at) AS next_attempt_at
        FROM worker.push_tickets t
        LEFT JOIN pg_temp.worker_receipt_results w ON w.reminder_id = t.reminder_id AND w.token = t.token
        WHERE t.reminder_id IN (SELECT DISTINCT reminder_id FROM pg_temp.worker_receipt_results)
        GROUP BY t.reminder_id
        HAVING bool_and(t.receipt_status IS NOT NULL)
    )
    UPDATE public.reminders r
    SET status = CASE
            WHEN s.delivered THEN r.status
            WHEN s.resend AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN 'pending'
            WHEN s.resend THEN 'failed'
            WHEN s.deferred THEN 'pending'
            WHEN s.failed THEN 'failed'
            ELSE r.status END,
        retry_count = coalesce(r.retry_count, 0) + CASE WHEN NOT s.delivered AND s.resend THEN 1 ELSE 0 END,
        sent_at_ts = CASE
            WHEN NOT s.delivered AND s.resend AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN NULL
            WHEN NOT s.delivered AND NOT s.resend AND s.deferred THEN NULL
            ELSE r.sent_at_ts END,
        next_attempt_at = CASE
            WHEN NOT s.delivered AND (s.resend OR s.deferred) THEN s.next_attempt_at
            ELSE r.next_attempt_at END,
        error_message = CASE
            WHEN s.delivered THEN r.error_message
            WHEN s.resend AND coalesce(r.retry_count, 0) + 1 >= p_max_attempts
                THEN format('gave up after %s attempts: %s', coalesce(r.retry_count, 0) + 1, s.error)
            WHEN s.resend OR s.deferred OR s.failed THEN s.error
            ELSE coalesce(s.unknown_error,
                          'receipt unknown: Expo had no receipt 24 hours after accepting the message') END,
        error_kind = CASE
            WHEN s.delivered THEN r.error_kind
            WHEN s.resend OR s.deferred OR s.failed THEN s.error_kind
            ELSE coalesce(s.unknown_kind, 'receipt_unknown') END,
        receipt_status = CASE
            WHEN s.delivered THEN 'ok'
            WHEN s.resend OR s.deferred OR s.failed THEN 'error'
            ELSE 'unknown' END,
        updated_at = p_now
    FROM settled s
    WHERE r.id = s.reminder_id AND r.status = 'sent' AND r.receipt_status IS NULL;

    -- Every reminder asked about: when, how many times its most-asked device was, and when the next
    -- of its unsettled devices is asked again (what status and the seed's columns show).
    UPDATE public.reminders r
    SET receipt_checked_at = CASE WHEN m.asked THEN p_now ELSE r.receipt_checked_at END,
        receipt_checks = m.checks, receipt_next_check_at = m.next_check_at
    FROM (SELECT t.reminder_id, max(t.receipt_checks) AS checks,
                 min(t.receipt_next_check_at) FILTER (WHERE t.receipt_status IS NULL) AS next_check_at,
                 bool_or(w.outcome IS DISTINCT FROM 'later') FILTER (WHERE w.reminder_id IS NOT NULL) AS asked
          FROM worker.push_tickets t
          LEFT JOIN pg_temp.worker_receipt_results w ON w.reminder_id = t.reminder_id AND w.token = t.token
          WHERE t.reminder_id IN (SELECT reminder_id FROM pg_temp.worker_receipt_results)
          GROUP BY t.reminder_id) m
    WHERE r.id = m.reminder_id;

    SELECT jsonb_build_object(
        'ok', count(*) FILTER (WHERE w.outcome = 'ok'),
        'failed', count(*) FILTER (WHERE w.outcome = 'failed'),
        'resent', count(*) FILTER (WHERE w.outcome = 'resend'),
        'deferred', count(*) FILTER (WHERE w.outcome = 'deferred'),
        'missing', count(*) FILTER (WHERE w.outcome IN ('missing', 'later')),
        'unknown', count(*) FILTER (WHERE w.outcome = 'unknown'),
        'tokens_cleared', v_cleared)
    INTO v_counts
    FROM pg_temp.worker_receipt_results w;
    RETURN v_counts;
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_record_run.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Record one pass in worker_runs and prune what is past retention, in one call.
--
-- Retention (NULL: no pruning in this call, e.g. a pass whose configuration was invalid):
-- * worker_runs older than p_runs_retention_days (WORKER_RUNS_RETENTION_DAYS, default 30);
-- * settled reminders (sent, failed, expired, cancelled) whose notify_at_ts is more than
--   p_reminder_retention_days in the past (REMINDER_RETENTION_DAYS, default 90): long enough for
--   support questions ("did I get the reminder for last month's recital?") and any receipt (Expo
--   keeps them 24 hours), short enough that push tokens and message texts (which name children,
--   places and times: personal data) are not kept without end. Pending and in-flight reminders are
--   never pruned. Events are the app's data and are not pruned here.
-- Each delete takes at most p_prune_limit rows (oldest first), so a pass never stalls on a backlog.
-- Retention counts from least(p_now, now()): the one place a pass does not follow `run --now`, so
-- that trying a pass "next year" cannot delete real history.
CREATE OR REPLACE FUNCTION public.worker_record_run(
    p_now timestamptz, p_started_at timestamptz, p_finished_at timestamptz, p_trigger text,
    p_counts jsonb, p_exit_code integer, p_error text, p_error_kind text,
    p_runs_retention_days integer, p_reminder_retention_days integer, p_prune_limit integer
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_id bigint;
    v_runs integer := 0;
    v_reminders integer := 0;
BEGIN
    INSERT INTO public.worker_runs (started_at, finished_at, trigger, counts, exit_code, error, error_kind)
    VALUES (p_started_at, greatest(p_finished_at, p_started_at), p_trigger,
            coalesce(p_counts, '{}'::jsonb), p_exit_code, left(p_error, 2000), p_error_kind)
    RETURNING id INTO v_id;

    IF p_runs_retention_days IS NOT NULL THEN
        DELETE FROM public.worker_runs w
        WHERE w.id IN (
            SELECT o.id FROM public.worker_runs o
            WHERE o.started_at < least(p_now, now()) - make_interval(days => p_runs_retention_days)
            ORDER BY o.started_at
            LIMIT p_prune_limit
            FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS v_runs = ROW_COUNT;
    END IF;

    IF p_reminder_retention_days IS NOT NULL THEN
        DELETE FROM public.reminders r
        WHERE r.id IN (
            SELECT o.id FROM public.reminders o
            WHERE o.status IN ('sent', 'failed', 'expired', 'cancelled')
              AND o.notify_at_ts < least(p_now, now()) - make_interval(days => p_reminder_retention_days)
            ORDER BY o.notify_at_ts
            LIMIT p_prune_limit
            FOR UPDATE SKIP LOCKED);
        GET DIAGNOSTICS v_reminders = ROW_COUNT;
    END IF;

    RETURN jsonb_build_object('id', v_id, 'runs_pruned', v_runs, 'reminders_pruned', v_reminders);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_schema_version.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Where the database's worker schema stands: the newest applied migration and the checksum of the
-- definitions last applied (sql/functions, sql/views, sql/triggers.sql, sql/security.sql).
-- `check` compares both with the code's.
CREATE OR REPLACE FUNCTION public.worker_schema_version() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'version', (SELECT coalesce(max(m.version), 0) FROM worker.schema_migrations m),
        'definitions', (SELECT d.checksum FROM worker.schema_definitions d))
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_secure_tokens.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- `python worker/main.py secure-tokens`: move Google refresh tokens out of user metadata into the
-- worker's private store (worker.refresh_tokens).
--
-- Why: the seed's app writes the refresh token with supabase.auth.updateUser({ data }), into
-- auth.users.raw_user_meta_data, which the parent can read and which travels inside every access
-- token the app sends. The worker reads tokens from the store as well (worker.parents), so it keeps
-- syncing. One statement: the token is stored and removed from the metadata in one transaction, so
-- there is no moment where it is in neither; a metadata value that changed meanwhile (the parent
-- reconnected) stays for the next run. Running it again moves nothing more. p_dry_run: only count.
CREATE OR REPLACE FUNCTION public.worker_secure_tokens(p_dry_run boolean) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_found integer;
    v_moved integer := 0;
BEGIN
    SELECT count(*) INTO v_found
    FROM auth.users u
    WHERE nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL;
    IF p_dry_run OR v_found = 0 THEN
        RETURN jsonb_build_object('in_metadata', v_found, 'moved', 0, 'dry_run', p_dry_run);
    END IF;
    WITH found AS (
        SELECT u.id, u.raw_user_meta_data ->> 'google_refresh_token' AS token
        FROM auth.users u
        WHERE nullif(u.raw_user_meta_data ->> 'google_refresh_token', '') IS NOT NULL
        FOR UPDATE OF u
    ), stored AS (
        INSERT INTO worker.refresh_tokens (user_id, refresh_token, moved_at)
        SELECT f.id, f.token, now() FROM found f
        ON CONFLICT (user_id) DO UPDATE SET refresh_token = excluded.refresh_token, moved_at = excluded.moved_at
        RETURNING user_id, refresh_token
    )
    UPDATE auth.users u
    SET raw_user_meta_data = u.raw_user_meta_data - 'google_refresh_token'
    FROM stored s
    WHERE u.id = s.user_id AND u.raw_user_meta_data ->> 'google_refresh_token' = s.refresh_token;
    GET DIAGNOSTICS v_moved = ROW_COUNT;
    RETURN jsonb_build_object('in_metadata', v_found, 'moved', v_moved, 'dry_run', false);
END
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/functions/public.worker_status.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Everything `python worker/main.py status` (and `check`) shows, in one document, so it works over
-- both gateways and costs one round trip. Every state is read from columns (status, error_kind),
-- never inferred from message text. Reasons shown are grouped by kind and text with push tokens
-- masked (an operator's terminal is no place for them); user lists are capped at 20, with totals.
-- Runs are ordered by when they really happened (recorded_at); started_at is the clock the pass
-- ran with (`run --now` moves it).
CREATE OR REPLACE FUNCTION public.worker_status(p_now timestamptz) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'now', p_now,
        'schema_version', (SELECT coalesce(max(m.version), 0) FROM worker.schema_migrations m),
        'runs', (
            SELECT coalesce(jsonb_agg(jsonb_build_object(
                'id', w.id, 'started_at', w.started_at, 'finished_at', w.finished_at,
                'recorded_at', w.recorded_at,
                'duration_s', round(extract(epoch FROM w.finished_at - w.started_at)::numeric, 3),
                'trigger', w.trigger, 'exit_code', w.exit_code, 'error', w.error,
                'error_kind', w.error_kind, 'counts', w.counts
            ) ORDER BY w.recorded_at DESC, w.id DESC), '[]'::jsonb)
            FROM (SELECT * FROM public.worker_runs ORDER BY recorded_at DESC, id DESC LIMIT 10) w),
        'runs_24h', (
            SELECT jsonb_build_object('total', count(*), 'failed', count(*) FILTER (WHERE w.exit_code <> 0))
            FROM public.worker_runs w
            WHERE w.recorded_at > now() - interval '24 hours'),
        -- The newest pass that did not finish cleanly, and whether a clean one came after it.
        'last_problem', (
            SELECT jsonb_build_object(
                'recorded_at', w.recorded_at, 'exit_code', w.exit_code, 'error', w.error,
                'error_kind', w.error_kind,
                'since_ok', EXISTS (SELECT 1 FROM public.worker_runs o
                                    WHERE o.exit_code = 0 AND o.recorded_at > w.recorded_at))
            FROM public.worker_runs w
            WHERE w.exit_code <> 0
            ORDER BY w.recorded_at DESC, w.id DESC
            LIMIT 1),
        'reminders', (
            SELECT jsonb_build_object(
                'due_now', count(*) FILTER (WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
                                            AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)),
                'oldest_due', min(r.notify_at_ts) FILTER (WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
                                            AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)),
                'in_flight', count(*) FILTER (WHERE r.status = 'sending'),
                'in_flight_lapsed', count(*) FILTER (WHERE r.status = 'sending' AND r.lease_expires_at <= p_now),
                'waiting_retry', count(*) FILTER (WHERE r.status = 'pending' AND r.next_attempt_at > p_now
                                                  AND r.error_kind IS DISTINCT FROM 'expo_credentials'),
                'held_expo_credentials', count(*) FILTER (WHERE r.status = 'pending'
                                                          AND r.error_kind = 'expo_credentials'),
                'awaiting_receipt', count(*) FILTER (WHERE r.status = 'sent' AND r.expo_ticket_id IS NOT NULL
                                                     AND r.receipt_status IS NULL))
            FROM public.reminders r
            WHERE r.status IN ('pending', 'sending')
               OR (r.status = 'sent' AND r.expo_ticket_id IS NOT NULL AND r.receipt_status IS NULL)),
        'failed_24h', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('kind', f.kind, 'reason', f.reason, 'count', f.n)
                                      ORDER BY f.n DESC, f.reason), '[]'::jsonb)
            FROM (
                SELECT r.error_kind AS kind,
                       left(regexp_replace(coalesce(r.error_message, '(no reason given)'),
                                           'Expo(nent)?PushToken\[[^]]*\]', 'ExpoPushToken[***]', 'g'),
                            160) AS reason,
                       count(*) AS n
                FROM public.reminders r
                WHERE r.status = 'failed' AND r.updated_at > p_now - interval '24 hours'
                GROUP BY 1, 2) f),
        'events', (
            SELECT jsonb_build_object(
                'waiting_sync', count(*) FILTER (WHERE e.status = 'pending'),
                'retrying', count(*) FILTER (WHERE e.status = 'pending' AND e.attempts > 0),
                'cancelling', count(*) FILTER (WHERE e.status = 'cancelled'),
                'oldest_waiting', min(e.updated_at) FILTER (WHERE e.status = 'pending'))
            FROM public.events e
            WHERE e.status IN ('pending', 'cancelled') AND e.synced_version < e.version),
        'events_failed', (
            SELECT coalesce(jsonb_object_agg(k.kind, k.n), '{}'::jsonb)
            FROM (SELECT coalesce(e.error_kind, 'unspecified') AS kind, count(*) AS n
                  FROM public.events e WHERE e.status = 'failed' GROUP BY 1) k),
        'google_revoked', (
            SELECT jsonb_build_object(
                'users', count(*),
                'list', coalesce(jsonb_agg(jsonb_build_object('user_id', g.user_id, 'events', g.n, 'last', g.last)
                                           ORDER BY g.last DESC) FILTER (WHERE g.rank <= 20), '[]'::jsonb))
            FROM (
                SELECT e.user_id, count(*) AS n, max(e.updated_at) AS last,
                       row_number() OVER (ORDER BY max(e.updated_at) DESC) AS rank
                FROM public.events e
                WHERE e.status IN ('failed', 'cancelled') AND e.error_kind = 'google_revoked'
                GROUP BY e.user_id) g),
        'tokens_cleared', (
            SELECT jsonb_build_object(
                'users', count(*),
                'list', coalesce(jsonb_agg(jsonb_build_object('user_id', t.user_id, 'reminders', t.n, 'last', t.last)
                                           ORDER BY t.last DESC) FILTER (WHERE t.rank <= 20), '[]'::jsonb))
            FROM (
                SELECT r.user_id, count(*) AS n, max(r.updated_at) AS last,
                       row_number() OVER (ORDER BY max(r.updated_at) DESC) AS rank
                FROM public.reminders r
                JOIN worker.parents pa ON pa.id = r.user_id
                WHERE pa.push_token IS NULL AND r.status = 'failed'
                  AND r.error_kind = 'device_not_registered'
                GROUP BY r.user_id) t)
    )
$$;
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/triggers.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- The triggers the worker puts on tables (their functions are in sql/functions/). Re-applied by
-- every `migrate` that changes a definition. Triggers of one table and timing fire in name order:
-- events_guard (refuse an API role writing bookkeeping) before events_on_edit (bump the version).

DROP TRIGGER IF EXISTS events_guard ON public.events;
CREATE TRIGGER events_guard BEFORE INSERT OR UPDATE ON public.events
    FOR EACH ROW EXECUTE FUNCTION worker.events_guard();

DROP TRIGGER IF EXISTS events_on_edit ON public.events;
CREATE TRIGGER events_on_edit BEFORE UPDATE ON public.events
    FOR EACH ROW EXECUTE FUNCTION worker.events_on_edit();

DROP TRIGGER IF EXISTS profiles_check_timezone ON public.profiles;
CREATE TRIGGER profiles_check_timezone BEFORE INSERT OR UPDATE OF timezone ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION worker.profiles_check_timezone();

DROP TRIGGER IF EXISTS preferences_on_change ON public.notification_preferences;
CREATE TRIGGER preferences_on_change AFTER INSERT OR UPDATE OR DELETE ON public.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION worker.preferences_on_change();

DROP TRIGGER IF EXISTS reminders_forget_tickets ON public.reminders;
CREATE TRIGGER reminders_forget_tickets AFTER DELETE ON public.reminders
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION worker.reminders_forget_tickets();
$rw_sql$;
    END IF;
END
$rw_step$;

-- sql/security.sql
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        EXECUTE $rw_sql$-- Row-level security, policies and privileges. Re-applied by every `migrate` that changes a
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
$rw_sql$;
    END IF;
END
$rw_step$;

-- The definitions' checksum, as `migrate` records it.
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    IF current_setting('reminder_worker.definitions') = 'on' THEN
        INSERT INTO worker.schema_definitions (checksum) VALUES ('1dd68c2952e015cc95f5a6a72dfa902a49a7c5355d61fdf56b435e9996121cb4')
            ON CONFLICT (id) DO UPDATE SET checksum = excluded.checksum, applied_at = now();
    END IF;
END
$rw_step$;

-- Step 5: sql/vocabulary.sql (CHECK constraints; costs nothing when unchanged).
DO $rw_step$
BEGIN
    CASE current_setting('reminder_worker.apply', true)
        WHEN 'v4:run' THEN NULL;
        WHEN 'v4:skip' THEN RETURN;
        ELSE RAISE EXCEPTION 'reminder-worker: run this file whole, in one transaction (as supabase db push does; psql needs --single-transaction)';
    END CASE;
    EXECUTE $rw_sql$-- The vocabulary of the status columns: the words of worker/vocabulary.py, as CHECK constraints.
--
-- Applied by every `migrate`. tests/unit/test_vocabulary.py proves these lists and the Python
-- enums are the same words. worker.ensure_check (sql/bootstrap.sql) adds or updates a constraint
-- only when every existing row conforms, so an adopted table whose rows hold a word the worker does
-- not know keeps working for the app; `check` reports such rows.

SELECT worker.ensure_check('public.events', 'events_status_check',
    $$status IN ('pending', 'synced', 'failed', 'cancelled')$$);
SELECT worker.ensure_check('public.events', 'events_error_kind_check',
    $$error_kind IN ('invalid_row', 'timezone', 'google_revoked', 'google_refused', 'google_rate_limited',
        'google_unavailable', 'google_config', 'no_token', 'bad_token', 'device_not_registered',
        'expo_credentials', 'expo_unavailable', 'expo_rejected', 'expo_rate_exceeded',
        'receipt_unknown', 'push_disabled', 'child_muted', 'superseded', 'event_started',
        'event_cancelled', 'database_unavailable', 'schema', 'config', 'crash')$$);
SELECT worker.ensure_check('public.reminders', 'reminders_status_check',
    $$status IN ('pending', 'sending', 'sent', 'failed', 'expired', 'cancelled')$$);
SELECT worker.ensure_check('public.reminders', 'reminders_error_kind_check',
    $$error_kind IN ('invalid_row', 'timezone', 'google_revoked', 'google_refused', 'google_rate_limited',
        'google_unavailable', 'google_config', 'no_token', 'bad_token', 'device_not_registered',
        'expo_credentials', 'expo_unavailable', 'expo_rejected', 'expo_rate_exceeded',
        'receipt_unknown', 'push_disabled', 'child_muted', 'superseded', 'event_started',
        'event_cancelled', 'database_unavailable', 'schema', 'config', 'crash')$$);
SELECT worker.ensure_check('public.reminders', 'reminders_receipt_status_check',
    $$receipt_status IN ('ok', 'error', 'unknown')$$);
SELECT worker.ensure_check('public.worker_runs', 'worker_runs_trigger_check',
    $$trigger IN ('cron', 'http', 'manual', 'loop')$$);
SELECT worker.ensure_check('public.worker_runs', 'worker_runs_error_kind_check',
    $$error_kind IN ('invalid_row', 'timezone', 'google_revoked', 'google_refused', 'google_rate_limited',
        'google_unavailable', 'google_config', 'no_token', 'bad_token', 'device_not_registered',
        'expo_credentials', 'expo_unavailable', 'expo_rejected', 'expo_rate_exceeded',
        'receipt_unknown', 'push_disabled', 'child_muted', 'superseded', 'event_started',
        'event_cancelled', 'database_unavailable', 'schema', 'config', 'crash')$$);
$rw_sql$;
END
$rw_step$;
