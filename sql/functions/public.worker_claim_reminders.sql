-- Claim due reminders for sending, after settling those that must not be sent; book their sends on
-- the shared Expo schedule. One statement over the due rows, one round trip.
--
-- Due: 'pending', never accepted by Expo (sent_at_ts IS NULL: seed 004's own test of "sent", so a
-- row the app's earlier sender marked that way is never sent again), notify_at_ts <= p_now and its
-- next try due; or 'sending' with a lapsed lease (its worker died). Of those, in this order:
--   * reminders of cancelled events become 'cancelled';
--   * reminders for a parent who turned pushes off, or of an event whose child they muted
--     (notification_preferences), become 'cancelled' with that kind;
--   * reminders whose occurrence already started (the event's start, or for a recurring event
--     reminders.occurs_at) become 'expired' (a late reminder is noise);
--   * a reminder of which a later reminder of the same occurrence is also due (or already sent)
--     becomes 'expired', kind 'superseded': after passes did not run for a while, a parent gets
--     the latest reminder only, not the 24 h and the 3 h one seconds apart;
-- the rest become 'sending' under p_claim and come back with everything the message needs: the
-- event as it is now (the text is rendered at send time), the owner's devices (see worker.parents),
-- the text stored on the row (the worker sends its text back only when it changed); for a row the
-- app wrote before the worker arrived, its own push_token, which the message falls back to.
--
-- The shared limit (p_rate messages a second, 0: none): Expo allows a number of notifications a
-- second per project, whatever the number of workers. worker.send_schedule holds when the schedule
-- is next free, on the database's clock (the one clock every worker shares; p_now may be a test's
-- simulated time). A claim books one slot of 1/p_rate s for every message it claims, from
-- greatest(now + p_lead_seconds, next_free_at), and answers `send_in`: the seconds from the moment it answers to its
-- first slot. Each worker sends its requests no earlier than their slots (worker/steps/push.py). The
-- row is locked for the length of the claim, so bookings never overlap, whichever worker makes
-- them; together the workers never exceed the rate. When the schedule is booked more than
-- p_lookahead_seconds ahead, nothing is claimed: `wait_seconds` says when to ask again (rows claimed
-- long before their slot would only sit leased). A booking further ahead than any claim could make
-- (the database's clock set back) is reset.
--
-- p_claim is new for every call: a call retried after its answer was lost gets the rows it already
-- claimed back (held), instead of leaving them leased to nobody; their sends are not booked again.
CREATE OR REPLACE FUNCTION public.worker_claim_reminders(
    p_now timestamptz, p_claim uuid, p_limit integer, p_lease_seconds integer,
    p_rate double precision DEFAULT 0, p_lookahead_seconds double precision DEFAULT 2,
    p_lead_seconds double precision DEFAULT 0
) RETURNS json
    LANGUAGE plpgsql VOLATILE SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_held uuid[];
    v_ids uuid[] := '{}';
    v_free timestamptz;
    v_clock timestamptz;
    v_send_from timestamptz;
    v_claimed json;
    v_cancelled integer;
    v_expired integer;
    v_superseded integer;
    v_messages integer;
BEGIN
    SELECT coalesce(array_agg(r.id), '{}') INTO v_held
    FROM public.reminders r WHERE r.claim_id = p_claim AND r.status = 'sending';

    IF p_rate > 0 THEN
        -- The schedule runs on the database's clock (every worker reads the same one); the answer
        -- gives the worker durations, measured when it is written, not instants of its own clock.
        SELECT s.clock, s.next_free INTO v_clock, v_free
        FROM worker.lock_send_schedule('expo', p_lookahead_seconds + 60 + greatest(p_limit, 1) * 20 / p_rate) s;
        -- Not before the worker can have the claimed messages ready (p_lead_seconds): a slot it
        -- could only meet late would bunch its request with the next one at Expo.
        v_send_from := greatest(v_clock + make_interval(secs => p_lead_seconds), v_free);
        IF v_send_from > v_clock + make_interval(secs => p_lookahead_seconds + p_lead_seconds)
           AND cardinality(v_held) = 0 THEN
            RETURN json_build_object('claimed', '[]'::json, 'cancelled', 0, 'expired', 0, 'superseded', 0,
                                     'wait_seconds', extract(epoch FROM v_send_from - clock_timestamp())
                                                     - p_lookahead_seconds - p_lead_seconds);
        END IF;
    END IF;

    -- The rows, first (a statement of its own: the next one is planned for that many rows).
    -- Lapsed claims first (rare), then pending rows in notify order along reminders_due_unsent_idx.
    SELECT coalesce(array_agg(id), '{}') INTO v_ids FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'sending' AND r.lease_expires_at <= p_now AND r.claim_id IS DISTINCT FROM p_claim
        ORDER BY r.lease_expires_at
        LIMIT greatest(p_limit - cardinality(v_held), 0)
        FOR UPDATE SKIP LOCKED
    ) lapsed;
    SELECT v_ids || coalesce(array_agg(id), '{}') INTO v_ids FROM (
        SELECT r.id FROM public.reminders r
        WHERE r.status = 'pending' AND r.notify_at_ts <= p_now AND r.sent_at_ts IS NULL
          AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= p_now)
        ORDER BY r.notify_at_ts
        LIMIT greatest(p_limit - cardinality(v_held) - cardinality(v_ids), 0)
        FOR UPDATE SKIP LOCKED
    ) due;

    WITH picked AS (
        SELECT id, false AS held FROM unnest(v_ids) AS id
        UNION ALL SELECT id, true FROM unnest(v_held) AS id
    ), fate AS MATERIALIZED (  -- each fate decided once, however often the UPDATE reads it
        SELECT r.id, p.held, e.id AS event_id, e.title, coalesce(r.occurs_at, e.start_ts) AS start_ts, e.end_ts,
               e.location, e.prep_items, ch.name AS child_name, pa.has_profile, pa.devices, pa.timezone,
               CASE
                   WHEN p.held THEN 'claim'
                   WHEN e.status = 'cancelled' THEN 'event_cancelled'
                   WHEN NOT coalesce(pa.push_enabled, true) THEN 'push_disabled'
                   WHEN e.child_id = ANY (pa.muted_children) THEN 'child_muted'
                   WHEN coalesce(r.occurs_at, e.start_ts) <= p_now THEN 'event_started'
                   WHEN EXISTS (
                       SELECT 1 FROM public.reminders l
                       WHERE l.event_id = r.event_id AND l.occurs_at IS NOT DISTINCT FROM r.occurs_at
                         AND l.notify_at_ts > r.notify_at_ts AND l.notify_at_ts <= p_now
                         AND l.status IN ('pending', 'sending', 'sent')) THEN 'superseded'
                   ELSE 'claim' END AS fate
        FROM picked p
        JOIN public.reminders r ON r.id = p.id
        LEFT JOIN public.events e ON e.id = r.event_id
        LEFT JOIN public.children ch ON ch.id = e.child_id
        -- One parent at a time by id (OFFSET 0 keeps the planner from joining the whole view):
        -- the cost follows the batch, not the number of parents.
        LEFT JOIN LATERAL (SELECT * FROM worker.parents v WHERE v.id = r.user_id OFFSET 0) pa ON true
    ), written AS (
        UPDATE public.reminders r
        SET status = CASE f.fate WHEN 'claim' THEN 'sending'
                                 WHEN 'event_started' THEN 'expired' WHEN 'superseded' THEN 'expired'
                                 ELSE 'cancelled' END,
            error_message = CASE f.fate
                WHEN 'claim' THEN r.error_message
                WHEN 'event_cancelled' THEN 'the event was cancelled'
                WHEN 'push_disabled' THEN 'not sent: the parent turned push reminders off'
                WHEN 'child_muted' THEN 'not sent: the parent muted reminders for this child'
                WHEN 'event_started' THEN 'the event had already started'
                ELSE 'not sent: a later reminder of the same event was due as well, and only the latest is sent'
                END,
            error_kind = CASE f.fate WHEN 'claim' THEN r.error_kind ELSE f.fate END,
            claim_id = CASE f.fate WHEN 'claim' THEN p_claim END,
            lease_expires_at = CASE f.fate WHEN 'claim' THEN p_now + make_interval(secs => p_lease_seconds) END,
            next_attempt_at = CASE f.fate WHEN 'claim' THEN r.next_attempt_at END,
            updated_at = p_now
        FROM fate f
        WHERE r.id = f.id
        RETURNING r.id, f.fate, f.held, r.event_id AS row_event_id, r.user_id, r.notify_at_ts, r.retry_count,
                  r.planned_by_worker, r.message, r.push_token, f.title, f.start_ts, f.end_ts, f.location,
                  f.prep_items, f.child_name, f.has_profile, f.devices, f.timezone
    )
    SELECT coalesce(json_agg(json_build_object(
               'id', w.id,
               'event_id', w.row_event_id,
               'user_id', w.user_id,
               'notify_at_ts', w.notify_at_ts,
               'retry_count', coalesce(w.retry_count, 0),
               'planned_by_worker', w.planned_by_worker,
               'stored_message', w.message,
               'row_push_token', CASE WHEN NOT w.planned_by_worker THEN w.push_token END,
               'title', w.title,
               'start_ts', w.start_ts,
               'end_ts', w.end_ts,
               'location', w.location,
               'prep_items', w.prep_items,
               'child_name', w.child_name,
               'has_profile', coalesce(w.has_profile, false),
               'devices', coalesce(w.devices, '[]'::jsonb),
               'timezone', w.timezone
           ) ORDER BY w.notify_at_ts) FILTER (WHERE w.fate = 'claim'), '[]'::json),
           count(*) FILTER (WHERE w.fate IN ('event_cancelled', 'push_disabled', 'child_muted')),
           count(*) FILTER (WHERE w.fate = 'event_started'),
           count(*) FILTER (WHERE w.fate = 'superseded'),
           -- what this claim books on the schedule: one slot a device (held rows were booked before)
           coalesce(sum(CASE WHEN w.fate = 'claim' AND NOT w.held
                             THEN greatest(jsonb_array_length(coalesce(w.devices, '[]'::jsonb)),
                                           CASE WHEN NOT w.planned_by_worker AND w.push_token IS NOT NULL
                                                THEN 1 ELSE 0 END)
                             ELSE 0 END), 0)
    INTO v_claimed, v_cancelled, v_expired, v_superseded, v_messages
    FROM written w;

    IF p_rate > 0 THEN
        UPDATE worker.send_schedule
        SET next_free_at = v_send_from + make_interval(secs => v_messages / p_rate)
        WHERE name = 'expo';
    END IF;
    RETURN json_build_object(
        'claimed', v_claimed, 'cancelled', v_cancelled, 'expired', v_expired, 'superseded', v_superseded,
        -- seconds from now (as the answer is written) to the first slot booked; negative: already due
        'send_in', CASE WHEN p_rate > 0 THEN extract(epoch FROM v_send_from - clock_timestamp()) END,
        'rate', CASE WHEN p_rate > 0 THEN p_rate END);
END
$$;
