-- Claim sent reminders whose Expo receipt is due for checking.
--
-- An ok ticket only says Expo *accepted* a message; whether Apple/Google took it is in the receipt,
-- available for about 24 hours after sending. About p_delay_seconds (RECEIPT_DELAY_SECONDS,
-- 15 min) after sending, a pass asks for it (worker/receipts.py) and settles the reminder with
-- worker_record_receipts. A receipt claim is separate from the push claim (receipt_claim_id): only
-- 'sent' rows carry one, and the push claim never touches 'sent' rows. As for the other claims,
-- p_claim is new for every call, and a retried call gets the rows it already holds back.
CREATE OR REPLACE FUNCTION public.worker_claim_receipts(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer, p_delay_seconds integer
) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    WITH held AS (
        SELECT r.id FROM public.reminders r
        WHERE r.receipt_claim_id = p_claim AND r.status = 'sent' AND r.receipt_status IS NULL
    ), picked AS (
        SELECT r.id
        FROM public.reminders r
        WHERE r.status = 'sent' AND r.expo_ticket_id IS NOT NULL AND r.receipt_status IS NULL
          AND r.sent_at_ts <= p_now - make_interval(secs => p_delay_seconds)
          AND (r.receipt_next_check_at IS NULL OR r.receipt_next_check_at <= p_now)
          AND (r.receipt_lease_expires_at IS NULL OR r.receipt_lease_expires_at <= p_now)
        ORDER BY r.sent_at_ts
        LIMIT greatest(p_limit - (SELECT count(*) FROM held), 0)
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.reminders r
        SET receipt_claim_id = p_claim,
            receipt_lease_expires_at = p_now + make_interval(secs => p_lease_seconds)
        FROM picked
        WHERE r.id = picked.id
        RETURNING r.id, r.expo_ticket_id, r.sent_at_ts, r.receipt_checks, r.retry_count
    ), rows AS (
        SELECT * FROM claimed
        UNION ALL
        SELECT r.id, r.expo_ticket_id, r.sent_at_ts, r.receipt_checks, r.retry_count
        FROM public.reminders r JOIN held ON held.id = r.id
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'ticket_id', c.expo_ticket_id,
        'sent_at_ts', c.sent_at_ts,
        'receipt_checks', c.receipt_checks,
        'retry_count', coalesce(c.retry_count, 0)
    ) ORDER BY c.sent_at_ts), '[]'::jsonb)
    FROM rows c
$$;
