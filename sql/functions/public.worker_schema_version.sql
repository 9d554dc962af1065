-- Where the database's worker schema stands: the newest applied migration and the checksum of the
-- definitions last applied (sql/functions, sql/views, sql/triggers.sql, sql/security.sql).
-- `check` compares both with the code's.
CREATE OR REPLACE FUNCTION public.worker_schema_version() RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER
    SET search_path = ''
AS $$
    SELECT jsonb_build_object(
        'version', (SELECT coalesce(max(m.version), 0) FROM worker.schema_migrations m),
        'definitions', (SELECT d.checksum FROM worker.schema_definitions d))
$$;
