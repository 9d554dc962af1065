-- Record what Expo's receipts said, one call a batch: first each device's ticket, then each reminder
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
