-- Is `tz` a time zone name PostgreSQL (and so Python's zoneinfo, same IANA database) knows?
CREATE OR REPLACE FUNCTION worker.is_valid_timezone(tz text) RETURNS boolean
    LANGUAGE plpgsql STABLE
    SET search_path = ''
AS $$
BEGIN
    PERFORM now() AT TIME ZONE tz;
    RETURN true;
EXCEPTION WHEN invalid_parameter_value THEN
    RETURN false;
END
$$;
