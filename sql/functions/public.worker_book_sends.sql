-- Book p_count requests on a schedule every worker of the database shares (worker.send_schedule),
-- p_rate a second: a limit that holds for the project, not for one worker. The events step books
-- Google Calendar's requests this way in blocks ('google': GOOGLE_MAX_REQUESTS_PER_SECOND), and
-- each worker spaces its requests 1/p_rate s apart from the start of its block; the push step books
-- Expo's inside its claim (public.worker_claim_reminders), by the same rules: the schedule locked
-- and read on the database's clock (worker.lock_send_schedule); booked more than
-- p_lookahead_seconds ahead, nothing is booked and `wait_seconds` says when to ask again.
-- Answers {send_in, rate}: the block's first slot, in seconds from the answer, or {wait_seconds}.
CREATE OR REPLACE FUNCTION public.worker_book_sends(
    p_name text, p_count integer, p_rate double precision, p_lookahead_seconds double precision DEFAULT 2
) RETURNS json
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_free timestamptz;
    v_clock timestamptz;
    v_from timestamptz;
BEGIN
    IF p_name IS NULL OR p_count IS NULL OR p_count < 1 OR p_rate IS NULL OR p_rate <= 0 THEN
        RAISE EXCEPTION 'worker_book_sends: a name, a count >= 1 and a rate > 0 are needed'
            USING ERRCODE = '22023';
    END IF;
    SELECT s.clock, s.next_free INTO v_clock, v_free
    FROM worker.lock_send_schedule(p_name, p_lookahead_seconds + 60 + p_count / p_rate) s;
    v_from := greatest(v_clock, v_free);
    IF v_from > v_clock + make_interval(secs => p_lookahead_seconds) THEN
        RETURN json_build_object('wait_seconds',
                                 extract(epoch FROM v_from - clock_timestamp()) - p_lookahead_seconds);
    END IF;
    UPDATE worker.send_schedule SET next_free_at = v_from + make_interval(secs => p_count / p_rate)
    WHERE name = p_name;
    RETURN json_build_object('send_in', extract(epoch FROM v_from - clock_timestamp()), 'rate', p_rate);
END
$$;
