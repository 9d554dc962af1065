-- The triggers the worker puts on tables (their functions are in sql/functions/). Re-applied by
-- every `migrate` that changes a definition.

DROP TRIGGER IF EXISTS events_on_edit ON public.events;
CREATE TRIGGER events_on_edit BEFORE UPDATE ON public.events
    FOR EACH ROW EXECUTE FUNCTION worker.events_on_edit();

DROP TRIGGER IF EXISTS profiles_check_timezone ON public.profiles;
CREATE TRIGGER profiles_check_timezone BEFORE INSERT OR UPDATE OF timezone ON public.profiles
    FOR EACH ROW EXECUTE FUNCTION worker.profiles_check_timezone();

DROP TRIGGER IF EXISTS profiles_on_change ON public.profiles;
CREATE TRIGGER profiles_on_change AFTER UPDATE OF google_refresh_token, timezone ON public.profiles
    FOR EACH ROW
    WHEN (NEW.google_refresh_token IS DISTINCT FROM OLD.google_refresh_token
          OR NEW.timezone IS DISTINCT FROM OLD.timezone)
    EXECUTE FUNCTION worker.profiles_on_change();
