-- Trigger (BEFORE UPDATE ON events): an edit the worker must act on puts the event back to
-- 'pending' and bumps its version, so the next pass re-syncs and re-plans it. The app writes
-- content columns (a recurring event's rule among them); version, attempts and the error columns
-- are the worker's.
CREATE OR REPLACE FUNCTION worker.events_on_edit() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
BEGIN
    IF (NEW.title, NEW.start_ts, NEW.end_ts, NEW.location, NEW.prep_items, NEW.child_id, NEW.recurrence)
       IS DISTINCT FROM (OLD.title, OLD.start_ts, OLD.end_ts, OLD.location, OLD.prep_items, OLD.child_id,
                         OLD.recurrence) THEN
        NEW.version := OLD.version + 1;
        -- An edit of a cancelled event keeps it cancelled; any other edit needs a new sync.
        IF NEW.status IS NOT DISTINCT FROM OLD.status AND OLD.status IS DISTINCT FROM 'cancelled' THEN
            NEW.status := 'pending';
        END IF;
    ELSIF NEW.status IN ('pending', 'cancelled') AND NEW.status IS DISTINCT FROM OLD.status THEN
        -- Cancelled by the app, or put back to pending by hand (e.g. to retry a failed event).
        NEW.version := OLD.version + 1;
    END IF;
    IF NEW.version <> OLD.version THEN
        NEW.attempts := 0;
        NEW.next_attempt_at := NULL;
        NEW.error_message := NULL;
        NEW.error_kind := NULL;
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;
