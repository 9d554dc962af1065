-- 003: what parents expect beyond the seed: notification preferences, several devices per parent,
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
