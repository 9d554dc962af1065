-- Trigger (BEFORE INSERT OR UPDATE OF timezone ON profiles): a profile's time zone must be one the
-- worker can render times in. Rows written before the worker arrived are not checked; the worker
-- fails their events and reminders alone (error_kind 'timezone') until the zone is fixed.
-- SECURITY DEFINER: the parent writing their profile has no access to the worker schema.
CREATE OR REPLACE FUNCTION worker.profiles_check_timezone() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER
    SET search_path = ''
AS $$
BEGIN
    IF NEW.timezone IS NOT NULL AND NOT worker.is_valid_timezone(NEW.timezone) THEN
        RAISE EXCEPTION 'profiles.timezone: unknown time zone %', quote_literal(NEW.timezone)
            USING ERRCODE = 'invalid_parameter_value',
                  HINT = 'Use an IANA name such as Europe/Berlin or America/New_York.';
    END IF;
    RETURN NEW;
END
$$;
