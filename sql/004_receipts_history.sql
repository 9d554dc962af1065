-- 004: delivery receipts, token hygiene, run history, retention, and the status view.
--
-- Same conventions as 002: p_now is the pass's clock, writes are guarded by a claim, results are
-- jsonb (both gateways read the same document), SECURITY DEFINER with an empty search_path, and
-- EXECUTE for service_role alone (the revoke/grant loop at the end of this file).
--
-- Receipts. An ok ticket only says Expo *accepted* a message; whether Apple/Google took it is in
-- the receipt, available for about 24 hours after sending. About RECEIPT_DELAY_SECONDS (15 min)
-- after sending, a pass asks for it and settles the reminder:
--   ok                    receipt_status 'ok'; status stays 'sent'.
--   DeviceNotRegistered   status 'failed', error_message 'delivery failed: DeviceNotRegistered...',
--                         and the owner's token is cleared if it is still the one we sent to.
--   MessageTooBig, InvalidCredentials, MismatchSenderId, any other error
--                         status 'failed' with the reason.
--   MessageRateExceeded   sent again: back to 'pending' with retry_count + 1 and next_attempt_at
--                         (after PUSH_MAX_ATTEMPTS attempts: 'failed', like a send).
--   no receipt yet        polled again later (backoff); still none 24 hours after sending:
--                         receipt_status 'unknown', never polled again.
-- Status choice: a delivery failure makes the reminder 'failed' although Expo had accepted it
-- (sent_at_ts is kept: it records when Expo accepted the message, as the contract says). A parent
-- did not get the reminder, and 'failed' is what the app and the status view look for; the
-- receipt_status column tells the two kinds of failure apart ('error': failed after acceptance).
-- A reminder sent again keeps its old sent_at_ts until Expo accepts it again, which overwrites it
-- together with the ticket id and resets the receipt columns.

ALTER TABLE public.reminders
    ADD COLUMN IF NOT EXISTS expo_ticket_id text,
    ADD COLUMN IF NOT EXISTS receipt_status text
        CONSTRAINT reminders_receipt_status_check CHECK (receipt_status IN ('ok', 'error', 'unknown')),
    ADD COLUMN IF NOT EXISTS receipt_checked_at timestamptz,
    ADD COLUMN IF NOT EXISTS receipt_checks integer NOT NULL DEFAULT 0,
    ADD COLUMN IF NOT EXISTS receipt_next_check_at timestamptz,
    -- A receipt check's claim: separate from claim_id/lease_expires_at, which belong to sending.
    -- Only 'sent' rows carry one, and the push claim never touches 'sent' rows.
    ADD COLUMN IF NOT EXISTS receipt_claim_id uuid,
    ADD COLUMN IF NOT EXISTS receipt_lease_expires_at timestamptz;

-- The receipts claim walks this index in sent order; only unsettled receipts are in it.
CREATE INDEX IF NOT EXISTS reminders_receipt_due_idx ON public.reminders (sent_at_ts)
    WHERE status = 'sent' AND expo_ticket_id IS NOT NULL AND receipt_status IS NULL;
-- Retention walks settled rows in notify order; the status view counts recent failures.
CREATE INDEX IF NOT EXISTS reminders_settled_idx ON public.reminders (notify_at_ts)
    WHERE status IN ('sent', 'failed', 'expired', 'cancelled');
CREATE INDEX IF NOT EXISTS reminders_failed_idx ON public.reminders (updated_at) WHERE status = 'failed';

-- 002's function, now storing the ticket id of an accepted message (signature and guards as
-- before). An accepted message starts a fresh receipt cycle: a reminder sent again after
-- MessageRateExceeded gets its new ticket checked, not the old one.
CREATE OR REPLACE FUNCTION public.worker_record_push_outcomes(
    p_now timestamptz, p_claim uuid, p_max_attempts integer, p_outcomes jsonb
) RETURNS jsonb
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_counts jsonb;
    v_cleared integer;
BEGIN
    WITH x AS (
        SELECT * FROM jsonb_to_recordset(p_outcomes) AS o(
            id uuid, outcome text, error text, message text, push_token text, ticket_id text,
            next_attempt_at timestamptz, clear_token boolean)
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE
                WHEN x.outcome = 'sent' THEN 'sent'
                WHEN x.outcome = 'deferred' THEN 'pending'
                WHEN x.outcome = 'retry' AND r.retry_count + 1 < p_max_attempts THEN 'pending'
                ELSE 'failed' END,
            retry_count = r.retry_count + CASE WHEN x.outcome = 'retry' THEN 1 ELSE 0 END,
            sent_at_ts = CASE WHEN x.outcome = 'sent' THEN p_now ELSE r.sent_at_ts END,
            error_message = CASE
                WHEN x.outcome = 'sent' THEN NULL
                WHEN x.outcome = 'retry' AND r.retry_count + 1 >= p_max_attempts
                    THEN format('gave up after %s attempts: %s', r.retry_count + 1, x.error)
                ELSE x.error END,
            next_attempt_at = CASE
                WHEN x.outcome = 'deferred' THEN x.next_attempt_at
                WHEN x.outcome = 'retry' AND r.retry_count + 1 < p_max_attempts THEN x.next_attempt_at END,
            message = coalesce(x.message, r.message),
            push_token = coalesce(x.push_token, r.push_token),
            expo_ticket_id = CASE WHEN x.outcome = 'sent' THEN nullif(x.ticket_id, '') ELSE r.expo_ticket_id END,
            receipt_status = CASE WHEN x.outcome = 'sent' THEN NULL ELSE r.receipt_status END,
            receipt_checked_at = CASE WHEN x.outcome = 'sent' THEN NULL ELSE r.receipt_checked_at END,
            receipt_checks = CASE WHEN x.outcome = 'sent' THEN 0 ELSE r.receipt_checks END,
            receipt_next_check_at = CASE WHEN x.outcome = 'sent' THEN NULL ELSE r.receipt_next_check_at END,
            receipt_claim_id = NULL,
            receipt_lease_expires_at = NULL,
            claim_id = NULL,
            lease_expires_at = NULL,
            updated_at = p_now
        FROM x
        WHERE r.id = x.id AND r.claim_id = p_claim AND r.status = 'sending'
        RETURNING r.status
    )
    SELECT jsonb_build_object(
        'sent', count(*) FILTER (WHERE status = 'sent'),
        'retried', count(*) FILTER (WHERE status = 'pending'),
        'failed', count(*) FILTER (WHERE status = 'failed'))
    INTO v_counts
    FROM written;

    UPDATE public.profiles p
    SET expo_push_token = NULL, updated_at = p_now
    FROM jsonb_to_recordset(p_outcomes) AS x(id uuid, push_token text, clear_token boolean)
    JOIN public.reminders r ON r.id = x.id
    WHERE x.clear_token AND p.id = r.user_id AND p.expo_push_token = x.push_token;
    GET DIAGNOSTICS v_cleared = ROW_COUNT;

    RETURN v_counts || jsonb_build_object('tokens_cleared', v_cleared);
END
$$;

-- Claim reminders whose receipt is due: sent, with a ticket, receipt not settled, sent at least
-- p_delay_seconds ago, next check due, and not held by another pass's live receipt claim.
-- Oldest first: their receipts are the nearest to being forgotten by Expo.
CREATE OR REPLACE FUNCTION public.worker_claim_receipts(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer, p_delay_seconds integer
) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    WITH picked AS (
        SELECT r.id
        FROM public.reminders r
        WHERE r.status = 'sent' AND r.expo_ticket_id IS NOT NULL AND r.receipt_status IS NULL
          AND r.sent_at_ts <= p_now - make_interval(secs => p_delay_seconds)
          AND (r.receipt_next_check_at IS NULL OR r.receipt_next_check_at <= p_now)
          AND (r.receipt_lease_expires_at IS NULL OR r.receipt_lease_expires_at <= p_now)
        ORDER BY r.sent_at_ts
        LIMIT p_limit
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE public.reminders r
        SET receipt_claim_id = p_claim,
            receipt_lease_expires_at = p_now + make_interval(secs => p_lease_seconds)
        FROM picked
        WHERE r.id = picked.id
        RETURNING r.id, r.expo_ticket_id, r.sent_at_ts, r.receipt_checks, r.retry_count
    )
    SELECT coalesce(jsonb_agg(jsonb_build_object(
        'id', c.id,
        'ticket_id', c.expo_ticket_id,
        'sent_at_ts', c.sent_at_ts,
        'receipt_checks', c.receipt_checks,
        'retry_count', c.retry_count
    ) ORDER BY c.sent_at_ts), '[]'::jsonb)
    FROM claimed c
$$;

-- Record a batch of receipt outcomes in one call.
--
-- p_outcomes: [{id, outcome: ok|failed|resend|missing|unknown|later, error, next_attempt_at,
--               next_check_at, clear_token}]
-- 'missing' (no receipt yet) counts a check and waits for next_check_at; 'later' (Expo could not
-- be asked) waits without counting one; 'unknown' settles a receipt Expo no longer has. Only rows
-- still held by this receipt claim and still unsettled are written. clear_token clears the owner's
-- token if it is still the one this reminder was sent to (reminders.push_token).
CREATE OR REPLACE FUNCTION public.worker_record_receipts(
    p_now timestamptz, p_claim uuid, p_max_attempts integer, p_outcomes jsonb
) RETURNS jsonb
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
    WITH x AS (
        SELECT * FROM jsonb_to_recordset(p_outcomes) AS o(
            id uuid, outcome text, error text, next_attempt_at timestamptz, next_check_at timestamptz,
            clear_token boolean)
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE
                WHEN x.outcome = 'failed' THEN 'failed'
                WHEN x.outcome = 'resend' AND r.retry_count + 1 < p_max_attempts THEN 'pending'
                WHEN x.outcome = 'resend' THEN 'failed'
                ELSE r.status END,
            retry_count = r.retry_count + CASE WHEN x.outcome = 'resend' THEN 1 ELSE 0 END,
            error_message = CASE
                WHEN x.outcome = 'resend' AND r.retry_count + 1 >= p_max_attempts
                    THEN format('gave up after %s attempts: %s', r.retry_count + 1, x.error)
                WHEN x.outcome IN ('failed', 'resend', 'unknown') THEN x.error
                ELSE r.error_message END,
            next_attempt_at = CASE
                WHEN x.outcome = 'resend' AND r.retry_count + 1 < p_max_attempts THEN x.next_attempt_at
                ELSE r.next_attempt_at END,
            receipt_status = CASE x.outcome
                WHEN 'ok' THEN 'ok' WHEN 'failed' THEN 'error' WHEN 'resend' THEN 'error'
                WHEN 'unknown' THEN 'unknown' END,
            receipt_checked_at = CASE WHEN x.outcome = 'later' THEN r.receipt_checked_at ELSE p_now END,
            receipt_checks = r.receipt_checks + CASE WHEN x.outcome = 'later' THEN 0 ELSE 1 END,
            receipt_next_check_at = CASE WHEN x.outcome IN ('missing', 'later') THEN x.next_check_at END,
            receipt_claim_id = NULL,
            receipt_lease_expires_at = NULL,
            updated_at = CASE WHEN x.outcome IN ('missing', 'later') THEN r.updated_at ELSE p_now END
        FROM x
        WHERE r.id = x.id AND r.receipt_claim_id = p_claim AND r.status = 'sent'
          AND r.receipt_status IS NULL
          AND x.outcome IN ('ok', 'failed', 'resend', 'missing', 'unknown', 'later')
        RETURNING r.id, x.outcome, r.status, r.user_id, r.push_token, coalesce(x.clear_token, false) AS clear_token
    ), cleared AS (
        UPDATE public.profiles p
        SET expo_push_token = NULL, updated_at = p_now
        FROM written w
        WHERE w.clear_token AND p.id = w.user_id AND p.expo_push_token = w.push_token
        RETURNING p.id
    )
    SELECT jsonb_build_object(
        'ok', count(*) FILTER (WHERE w.outcome = 'ok'),
        'failed', count(*) FILTER (WHERE w.status = 'failed'),
        'resent', count(*) FILTER (WHERE w.status = 'pending'),
        'missing', count(*) FILTER (WHERE w.outcome IN ('missing', 'later')),
        'unknown', count(*) FILTER (WHERE w.outcome = 'unknown'),
        'tokens_cleared', (SELECT count(*) FROM cleared))
    FROM written w
$$;

-- Run history: one row per pass, readable by operators with the service role (and through
-- worker_status). Row-level security is on with no policy, and the API roles have no privileges:
-- on Supabase the service role bypasses RLS; on plain Postgres use worker_status().
CREATE TABLE IF NOT EXISTS public.worker_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,  -- the pass's clock (`run --now` moves it)
    finished_at timestamptz NOT NULL,  -- started_at + the pass's real duration
    trigger     text NOT NULL
        CONSTRAINT worker_runs_trigger_check CHECK (trigger IN ('cron', 'http', 'manual', 'loop')),
    counts      jsonb NOT NULL DEFAULT '{}'::jsonb,  -- the summary line's counts
    exit_code   integer NOT NULL,
    error       text,
    recorded_at timestamptz NOT NULL DEFAULT now()  -- the database's wall clock
);
CREATE INDEX IF NOT EXISTS worker_runs_started_at_idx ON public.worker_runs (started_at);
ALTER TABLE public.worker_runs ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON public.worker_runs FROM PUBLIC, anon, authenticated, service_role;
REVOKE ALL ON SEQUENCE public.worker_runs_id_seq FROM PUBLIC, anon, authenticated, service_role;
GRANT SELECT ON public.worker_runs TO service_role;

-- Record one pass and prune, in one call.
--
-- Retention (NULL: no pruning in this call, e.g. a pass whose configuration was invalid):
-- * worker_runs older than p_runs_retention_days (WORKER_RUNS_RETENTION_DAYS, default 30);
-- * settled reminders (sent, failed, expired, cancelled) whose notify_at_ts is more than
--   p_reminder_retention_days in the past (REMINDER_RETENTION_DAYS, default 90): long enough for
--   support questions ("did I get the reminder for last month's recital?") and any receipt (Expo
--   keeps them 24 hours), short enough that push tokens and message texts (which name children,
--   places and times: personal data) are not kept without end. Pending and in-flight reminders are
--   never pruned. Events are the app's data and are not pruned here; deleting a user (GDPR erasure)
--   removes their profile, events and reminders through ON DELETE CASCADE from auth.users.
-- Each delete takes at most p_prune_limit rows (oldest first), so a pass never stalls on a backlog;
-- a pass a minute catches up quickly. Retention counts from least(p_now, now()): the one place a
-- pass does not follow `run --now`, so that trying a pass "next year" cannot delete real history.
CREATE OR REPLACE FUNCTION public.worker_record_run(
    p_now timestamptz, p_started_at timestamptz, p_finished_at timestamptz, p_trigger text,
    p_counts jsonb, p_exit_code integer, p_error text,
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
    INSERT INTO public.worker_runs (started_at, finished_at, trigger, counts, exit_code, error)
    VALUES (p_started_at, greatest(p_finished_at, p_started_at), p_trigger,
            coalesce(p_counts, '{}'::jsonb), p_exit_code, left(p_error, 2000))
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

-- Everything `python worker/main.py status` shows, in one document, so it works over both
-- gateways. Reasons are grouped by their text with push tokens masked (an operator's terminal is
-- no place for them); user lists are capped at 20, with totals beside them.
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
                'duration_s', round(extract(epoch FROM w.finished_at - w.started_at)::numeric, 3),
                'trigger', w.trigger, 'exit_code', w.exit_code, 'error', w.error, 'counts', w.counts
            ) ORDER BY w.started_at DESC, w.id DESC), '[]'::jsonb)
            FROM (SELECT * FROM public.worker_runs ORDER BY started_at DESC, id DESC LIMIT 10) w),
        'runs_24h', (
            SELECT jsonb_build_object('total', count(*), 'failed', count(*) FILTER (WHERE w.exit_code <> 0))
            FROM public.worker_runs w
            WHERE w.started_at > p_now - interval '24 hours' AND w.started_at <= p_now),
        'reminders', (
            SELECT jsonb_build_object(
                'due_now', count(*) FILTER (WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
                                            AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)),
                'oldest_due', min(r.notify_at_ts) FILTER (WHERE r.status = 'pending' AND r.notify_at_ts <= p_now
                                            AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)),
                'in_flight', count(*) FILTER (WHERE r.status = 'sending'),
                'in_flight_lapsed', count(*) FILTER (WHERE r.status = 'sending' AND r.lease_expires_at <= p_now),
                'waiting_retry', count(*) FILTER (WHERE r.status = 'pending' AND r.next_attempt_at > p_now),
                'awaiting_receipt', count(*) FILTER (WHERE r.status = 'sent' AND r.expo_ticket_id IS NOT NULL
                                                     AND r.receipt_status IS NULL))
            FROM public.reminders r
            WHERE r.status IN ('pending', 'sending')
               OR (r.status = 'sent' AND r.expo_ticket_id IS NOT NULL AND r.receipt_status IS NULL)),
        'failed_24h', (
            SELECT coalesce(jsonb_agg(jsonb_build_object('reason', f.reason, 'count', f.n)
                                      ORDER BY f.n DESC, f.reason), '[]'::jsonb)
            FROM (
                SELECT left(regexp_replace(coalesce(r.error_message, '(no reason given)'),
                                           'Expo(nent)?PushToken\[[^]]*\]', 'ExpoPushToken[***]', 'g'),
                            160) AS reason,
                       count(*) AS n
                FROM public.reminders r
                WHERE r.status = 'failed' AND r.updated_at > p_now - interval '24 hours'
                GROUP BY 1) f),
        'events', (
            SELECT jsonb_build_object(
                'waiting_sync', count(*) FILTER (WHERE e.status = 'pending'),
                'retrying', count(*) FILTER (WHERE e.status = 'pending' AND e.attempts > 0),
                'cancelling', count(*) FILTER (WHERE e.status = 'cancelled'),
                'oldest_waiting', min(e.updated_at) FILTER (WHERE e.status = 'pending'))
            FROM public.events e
            WHERE e.status IN ('pending', 'cancelled') AND e.synced_version < e.version),
        'google_revoked', (
            SELECT jsonb_build_object(
                'users', count(*),
                'list', coalesce(jsonb_agg(jsonb_build_object('user_id', g.user_id, 'events', g.n, 'last', g.last)
                                           ORDER BY g.last DESC) FILTER (WHERE g.rank <= 20), '[]'::jsonb))
            FROM (
                SELECT e.user_id, count(*) AS n, max(e.updated_at) AS last,
                       row_number() OVER (ORDER BY max(e.updated_at) DESC) AS rank
                FROM public.events e
                -- 003 may mark these with calendar_error_kind 'auth'; read through to_jsonb so this
                -- view does not depend on that column existing.
                WHERE e.status = 'failed'
                  AND (e.error_message ILIKE '%revoked%' OR e.error_message ILIKE '%invalid_grant%'
                       OR to_jsonb(e) ->> 'calendar_error_kind' = 'auth')
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
                JOIN public.profiles p ON p.id = r.user_id
                WHERE p.expo_push_token IS NULL AND r.status = 'failed'
                  AND r.error_message ILIKE '%DeviceNotRegistered%'
                GROUP BY r.user_id) t)
    )
$$;

-- Only the service role may call the worker's functions (as at the end of 002): new functions get
-- EXECUTE for PUBLIC by default, and for anon and authenticated through Supabase's defaults.
SELECT worker.restrict_worker_functions();
