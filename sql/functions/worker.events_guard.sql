-- Trigger (BEFORE INSERT OR UPDATE ON events): the worker's bookkeeping columns are the worker's.
--
-- On the worker's own events table the API roles have no privilege on them anyway (sql/security.sql);
-- on an events table the app had before the worker arrived, the app keeps its privileges on the
-- table, so this trigger refuses an API role (anon, authenticated) that changes one of them. A
-- client writing a whole row back unchanged is fine.
CREATE OR REPLACE FUNCTION worker.events_guard() RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = ''
AS $$
DECLARE
    v_column text;
BEGIN
    IF current_user NOT IN ('anon', 'authenticated') THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'INSERT' THEN
        v_column := CASE
            WHEN NEW.version IS DISTINCT FROM 1 THEN 'version'
            WHEN NEW.synced_version IS DISTINCT FROM 0 THEN 'synced_version'
            WHEN NEW.attempts IS DISTINCT FROM 0 THEN 'attempts'
            WHEN NEW.next_attempt_at IS NOT NULL THEN 'next_attempt_at'
            WHEN NEW.claim_id IS NOT NULL THEN 'claim_id'
            WHEN NEW.lease_expires_at IS NOT NULL THEN 'lease_expires_at'
            WHEN NEW.synced_at IS NOT NULL THEN 'synced_at'
            WHEN NEW.error_kind IS NOT NULL THEN 'error_kind'
        END;
    ELSE
        v_column := CASE
            WHEN NEW.version IS DISTINCT FROM OLD.version THEN 'version'
            WHEN NEW.synced_version IS DISTINCT FROM OLD.synced_version THEN 'synced_version'
            WHEN NEW.attempts IS DISTINCT FROM OLD.attempts THEN 'attempts'
            WHEN NEW.next_attempt_at IS DISTINCT FROM OLD.next_attempt_at THEN 'next_attempt_at'
            WHEN NEW.claim_id IS DISTINCT FROM OLD.claim_id THEN 'claim_id'
            WHEN NEW.lease_expires_at IS DISTINCT FROM OLD.lease_expires_at THEN 'lease_expires_at'
            WHEN NEW.synced_at IS DISTINCT FROM OLD.synced_at THEN 'synced_at'
            WHEN NEW.error_kind IS DISTINCT FROM OLD.error_kind THEN 'error_kind'
        END;
    END IF;
    IF v_column IS NOT NULL THEN
        RAISE EXCEPTION 'events.% is the reminder worker''s bookkeeping; the app may not write it', v_column
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;
