-- 002: where the worker keeps what it learns about parents, and what it needs to serve rows that
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
