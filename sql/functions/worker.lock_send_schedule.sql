-- One schedule of worker.send_schedule, locked for the caller's transaction (so bookings never
-- overlap, whichever worker makes them), created on first use. Returns the database's clock (the
-- one clock every worker shares) and when the schedule is next free; a schedule booked more than
-- p_max_ahead_seconds ahead (further than any booking could make: the clock was set back) counts
-- as free now. The caller books by moving next_free_at. Used by public.worker_claim_reminders
-- (Expo's limit, booked inside the claim) and public.worker_book_sends (Google's, in blocks).
CREATE OR REPLACE FUNCTION worker.lock_send_schedule(
    p_name text, p_max_ahead_seconds double precision, OUT clock timestamptz, OUT next_free timestamptz
)
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    INSERT INTO worker.send_schedule (name, next_free_at) VALUES (p_name, clock_timestamp())
    ON CONFLICT (name) DO NOTHING;
    SELECT s.next_free_at INTO next_free FROM worker.send_schedule s WHERE s.name = p_name FOR UPDATE;
    clock := clock_timestamp();
    IF next_free > clock + make_interval(secs => p_max_ahead_seconds) THEN
        next_free := clock;
    END IF;
END
$$;
