-- Take SELECT on some columns of a table away from roles, leaving them every other column they
-- could read. PostgreSQL cannot revoke a column from a table-level grant, so a role holding
-- table-level SELECT gets it replaced by column-level SELECT on every other column, and is
-- remembered (worker.column_grants) so that a column the app adds later is granted to it by the
-- next `migrate`, as table-level SELECT would have. Used on tables the app had before the worker
-- (sql/security.sql): the app keeps reading its own columns (e.g. the user-management starter's
-- public profiles), nobody reads the tokens.
CREATE OR REPLACE FUNCTION worker.hide_columns(p_table regclass, p_hidden text[], p_roles text[])
    RETURNS void
    LANGUAGE plpgsql VOLATILE
    SET search_path = ''
AS $$
DECLARE
    v_role text;
    v_grantee text;
    v_visible text;
BEGIN
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO v_visible
    FROM pg_attribute a
    WHERE a.attrelid = p_table AND a.attnum > 0 AND NOT a.attisdropped AND NOT (a.attname = ANY (p_hidden));
    FOREACH v_role IN ARRAY p_roles LOOP
        v_grantee := CASE WHEN v_role = 'PUBLIC' THEN 'PUBLIC' ELSE quote_ident(v_role) END;
        IF EXISTS (
            SELECT 1 FROM pg_class c, aclexplode(c.relacl) acl
            WHERE c.oid = p_table AND acl.privilege_type = 'SELECT'
              AND acl.grantee = CASE WHEN v_role = 'PUBLIC' THEN 0 ELSE to_regrole(v_role)::oid END
        ) THEN
            EXECUTE format('REVOKE SELECT ON %s FROM %s', p_table, v_grantee);
            INSERT INTO worker.column_grants (table_name, role_name) VALUES (p_table::text, v_role)
            ON CONFLICT DO NOTHING;
        END IF;
        IF EXISTS (SELECT 1 FROM worker.column_grants g WHERE g.table_name = p_table::text AND g.role_name = v_role)
        THEN
            EXECUTE format('GRANT SELECT (%s) ON %s TO %s', v_visible, p_table, v_grantee);
        END IF;
        EXECUTE format('REVOKE SELECT (%s) ON %s FROM %s',
                       (SELECT string_agg(quote_ident(h), ', ') FROM unnest(p_hidden) AS h), p_table, v_grantee);
    END LOOP;
END
$$;
