-- Claim the tickets of sent reminders whose Expo receipt is due for checking: one per device the
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
