-- 001: the tables the worker uses, created where missing and adopted where the app has them.
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
