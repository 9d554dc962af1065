-- Record a batch of receipt outcomes in one call.
--
-- p_claims: the calling pass's receipt claims; p_outcomes:
--   [{id, outcome, error, error_kind, next_attempt_at, next_check_at, clear_token}]
-- outcome (worker/vocabulary.py ReceiptOutcome):
--   ok        receipt_status 'ok'; the reminder stays 'sent'.
--   failed    not delivered, for good (DeviceNotRegistered, MessageTooBig, ...): 'failed' with the
--             reason, receipt_status 'error'. sent_at_ts is kept: it records when Expo accepted the
--             message. clear_token clears the owner's token where it is kept if it is still the one
--             the reminder was sent to (reminders.push_token; worker.clear_push_tokens).
--   resend    not delivered, worth sending again (MessageRateExceeded): 'pending' with one more
--             attempt and next_attempt_at; after p_max_attempts attempts 'failed', like a send.
--   deferred  not delivered because the project's push credentials are wrong (InvalidCredentials,
--             MismatchSenderId): the operator must act; 'pending' at next_attempt_at, no attempt.
--   missing   no receipt yet: counts a check, asked again at next_check_at.
--   later     Expo could not be asked: asked again at next_check_at, no check counted.
--   unknown   Expo has no receipt 24 hours after accepting: receipt_status 'unknown', settled.
-- Only rows still held by one of p_claims and still unsettled are written.
CREATE OR REPLACE FUNCTION public.worker_record_receipts(
    p_now timestamptz, p_claims uuid[], p_max_attempts integer, p_outcomes jsonb
) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    WITH x AS (
        SELECT * FROM jsonb_to_recordset(p_outcomes) AS o(
            id uuid, outcome text, error text, error_kind text, next_attempt_at timestamptz,
            next_check_at timestamptz, clear_token boolean)
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE
                WHEN x.outcome = 'failed' THEN 'failed'
                WHEN x.outcome = 'deferred' THEN 'pending'
                WHEN x.outcome = 'resend' AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN 'pending'
                WHEN x.outcome = 'resend' THEN 'failed'
                ELSE r.status END,
            retry_count = coalesce(r.retry_count, 0) + CASE WHEN x.outcome = 'resend' THEN 1 ELSE 0 END,
            -- Back to 'pending' to be sent again: Expo's acceptance is void (sent_at_ts IS NULL is
            -- what makes a pending reminder sendable, as in seed 004).
            sent_at_ts = CASE
                WHEN x.outcome = 'deferred' THEN NULL
                WHEN x.outcome = 'resend' AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN NULL
                ELSE r.sent_at_ts END,
            error_message = CASE
                WHEN x.outcome = 'resend' AND coalesce(r.retry_count, 0) + 1 >= p_max_attempts
                    THEN format('gave up after %s attempts: %s', coalesce(r.retry_count, 0) + 1, x.error)
                WHEN x.outcome IN ('failed', 'resend', 'deferred', 'unknown') THEN x.error
                ELSE r.error_message END,
            error_kind = CASE
                WHEN x.outcome IN ('failed', 'resend', 'deferred', 'unknown') THEN x.error_kind
                ELSE r.error_kind END,
            next_attempt_at = CASE
                WHEN x.outcome = 'deferred' THEN x.next_attempt_at
                WHEN x.outcome = 'resend' AND coalesce(r.retry_count, 0) + 1 < p_max_attempts THEN x.next_attempt_at
                ELSE r.next_attempt_at END,
            receipt_status = CASE x.outcome
                WHEN 'ok' THEN 'ok' WHEN 'failed' THEN 'error' WHEN 'resend' THEN 'error'
                WHEN 'deferred' THEN 'error' WHEN 'unknown' THEN 'unknown' END,
            receipt_checked_at = CASE WHEN x.outcome = 'later' THEN r.receipt_checked_at ELSE p_now END,
            receipt_checks = r.receipt_checks + CASE WHEN x.outcome = 'later' THEN 0 ELSE 1 END,
            receipt_next_check_at = CASE WHEN x.outcome IN ('missing', 'later') THEN x.next_check_at END,
            receipt_claim_id = NULL,
            receipt_lease_expires_at = NULL,
            updated_at = CASE WHEN x.outcome IN ('missing', 'later') THEN r.updated_at ELSE p_now END
        FROM x
        WHERE r.id = x.id AND r.receipt_claim_id = ANY (p_claims) AND r.status = 'sent'
          AND r.receipt_status IS NULL
          AND x.outcome IN ('ok', 'failed', 'resend', 'deferred', 'missing', 'unknown', 'later')
        RETURNING r.id, x.outcome, r.status, r.user_id, r.push_token,
                  coalesce(x.clear_token, false) AS clear_token
    ), cleared AS (
        SELECT worker.clear_push_tokens(p_now, ARRAY(
            SELECT (w.user_id, w.push_token)::worker.user_token FROM written w
            WHERE w.clear_token AND w.push_token IS NOT NULL)) AS n
    )
    SELECT jsonb_build_object(
        'ok', count(*) FILTER (WHERE w.outcome = 'ok'),
        'failed', count(*) FILTER (WHERE w.status = 'failed'),
        'resent', count(*) FILTER (WHERE w.status = 'pending' AND w.outcome = 'resend'),
        'deferred', count(*) FILTER (WHERE w.outcome = 'deferred'),
        'missing', count(*) FILTER (WHERE w.outcome IN ('missing', 'later')),
        'unknown', count(*) FILTER (WHERE w.outcome = 'unknown'),
        'tokens_cleared', (SELECT n FROM cleared))
    FROM written w
$$;
