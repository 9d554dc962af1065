-- 004: fewer indexes to maintain on every reminder a pass claims and records.
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
