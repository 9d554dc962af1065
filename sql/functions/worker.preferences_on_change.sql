-- Trigger (AFTER INSERT OR UPDATE OR DELETE ON notification_preferences): a parent's new lead times,
-- quiet hours or calendar choice re-plan their events on the next pass.
--
-- Their live events go back to 'pending' (worker.events_on_edit bumps the version), so the events
-- step plans their future unsent reminders again (reminders already due are kept, as for any edit)
-- and syncs the calendar as the parent now wants. Pushes on or off, and muted children, need no
-- re-plan: the push claim reads them when a reminder comes due. SECURITY DEFINER: the parent
-- writing their preferences may not write the events' bookkeeping.
CREATE OR REPLACE FUNCTION worker.preferences_on_change() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
DECLARE
    v_user uuid := CASE WHEN TG_OP = 'DELETE' THEN OLD.user_id ELSE NEW.user_id END;
BEGIN
    IF TG_OP = 'UPDATE' AND (NEW.reminder_offsets, NEW.quiet_hours_start, NEW.quiet_hours_end,
                             NEW.calendar_sync_enabled)
        IS NOT DISTINCT FROM (OLD.reminder_offsets, OLD.quiet_hours_start, OLD.quiet_hours_end,
                              OLD.calendar_sync_enabled) THEN
        RETURN NULL;
    END IF;
    UPDATE public.events e
    SET status = 'pending'
    WHERE e.user_id = v_user AND e.status = 'synced'
      AND (e.start_ts > now() OR e.recurrence IS NOT NULL);
    RETURN NULL;
END
$$;
