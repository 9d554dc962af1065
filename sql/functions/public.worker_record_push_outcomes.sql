-- Record the outcomes of sends: one call for one or a few Expo requests, as soon as they return.
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
