-- Record one pass in worker_runs and prune what is past retention, in one call.
--
-- Retention (NULL: no pruning in this call, e.g. a pass whose configuration was invalid):
-- * worker_runs older than p_runs_retention_days (WORKER_RUNS_RETENTION_DAYS, default 30);
-- * settled reminders (sent, failed, expired, cancelled) whose notify_at_ts is more than
--   p_reminder_retention_days in the past (REMINDER_RETENTION_DAYS, default 90): long enough for
--   support questions ("did I get the reminder for last month's recital?") and any receipt (Expo
--   keeps them 24 hours), short enough that push tokens and message texts (which name children,
--   places and times: personal data) are not kept without end. Pending and in-flight reminders are
--   never pruned. Events are the app's data and are not pruned here.
-- Each delete takes at most p_prune_limit rows (oldest first), so a pass never stalls on a backlog.
-- Retention counts from least(p_now, now()): the one place a pass does not follow `run --now`, so
-- that trying a pass "next year" cannot delete real history.
CREATE OR REPLACE FUNCTION public.worker_record_run(
    p_now timestamptz, p_started_at timestamptz, p_finished_at timestamptz, p_trigger text,
    p_counts jsonb, p_exit_code integer, p_error text, p_error_kind text,
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
    INSERT INTO public.worker_runs (started_at, finished_at, trigger, counts, exit_code, error, error_kind)
    VALUES (p_started_at, greatest(p_finished_at, p_started_at), p_trigger,
            coalesce(p_counts, '{}'::jsonb), p_exit_code, left(p_error, 2000), p_error_kind)
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
