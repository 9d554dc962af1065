-- The triggers the worker puts on tables (their functions are in sql/functions/). Re-applied by
-- every `migrate` that changes a definition. Triggers of one table and timing fire in name order:
-- events_guard (refuse an API role writing bookkeeping) before events_on_edit (bump the version).

DROP TRIGGER IF EXISTS events_guard ON public.events;
CREATE TRIGGER events_guard BEFORE INSERT OR UPDATE ON public.events
    FOR EACH ROW EXECUTE FUNCTION worker.events_guard();

DROP TRIGGER IF EXISTS events_on_edit ON public.events;
CREATE TRIGGER events_on_edit BEFORE UPDATE ON public.events
    FOR EACH ROW EXECUTE FUNCTION worker.events_on_edit();

DROP TRIGGER IF EXISTS profiles_check_timezone ON public.profiles;
CREATE TRIGGER profiles_check_timezone BEFORE INSERT OR UPDATE OF timezone ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION worker.profiles_check_timezone();

DROP TRIGGER IF EXISTS preferences_on_change ON public.notification_preferences;
CREATE TRIGGER preferences_on_change AFTER INSERT OR UPDATE OR DELETE ON public.notification_preferences
    FOR EACH ROW EXECUTE FUNCTION worker.preferences_on_change();

DROP TRIGGER IF EXISTS reminders_forget_tickets ON public.reminders;
CREATE TRIGGER reminders_forget_tickets AFTER DELETE ON public.reminders
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION worker.reminders_forget_tickets();
