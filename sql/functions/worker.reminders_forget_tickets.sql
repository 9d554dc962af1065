-- Trigger (AFTER DELETE ON reminders, once per statement): a deleted reminder's Expo tickets
-- (worker.push_tickets) go with it. What a foreign key would do, without a check per ticket on every
-- send; it fires for deletes cascaded from events and auth.users as well.
CREATE OR REPLACE FUNCTION worker.reminders_forget_tickets() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    DELETE FROM worker.push_tickets t USING gone g WHERE t.reminder_id = g.id;
    RETURN NULL;
END
$$;
