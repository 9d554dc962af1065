-- The columns of public.profiles, as one comparable text (sql/security.sql grants column by column
-- on an adopted profiles table, so a column the app adds later needs a new grant: `migrate` compares
-- this with what security.sql last recorded).
CREATE OR REPLACE FUNCTION worker.profiles_columns() RETURNS text
    LANGUAGE sql STABLE
    SET search_path = ''
AS $$
    SELECT string_agg(a.attname::text, ',' ORDER BY a.attname)
    FROM pg_attribute a
    WHERE a.attrelid = 'public.profiles'::regclass AND a.attnum > 0 AND NOT a.attisdropped
$$;
