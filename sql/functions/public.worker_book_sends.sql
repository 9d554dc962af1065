-- Book p_count requests on a schedule every worker of the database shares (worker.send_schedule),
-- p_rate a second: a limit that holds for the project, not for one worker. The events step books
-- Google Calendar's requests this way in blocks ('google': GOOGLE_MAX_REQUESTS_PER_SECOND), and
-- each worker spaces its requests 1/p_rate s apart from the start of its block; the push step books
-- Expo's inside its claim (public.worker_claim_reminders), by the same rules:
--   * the database's clock is the one clock (a pass's p_now may be simulated);
--   * the row is locked for the call, so bookings never overlap, whichever worker makes them;
--   * booked more than p_lookahead_seconds ahead: nothing is booked, `wait_seconds` says when to
--     ask again;
--   * booked further ahead than any booking could make (the clock was set back): reset.
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
    INSERT INTO worker.send_schedule (name, next_free_at) VALUES (p_name, clock_timestamp())
    ON CONFLICT (name) DO NOTHING;
    SELECT s.next_free_at INTO v_free FROM worker.send_schedule s WHERE s.name = p_name FOR UPDATE;
    v_clock := clock_timestamp();
    IF v_free > v_clock + make_interval(secs => p_lookahead_seconds + 60 + p_count / p_rate) THEN
        v_free := v_clock;
    END IF;
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
