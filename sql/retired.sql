-- Objects an earlier version of the worker defined and this one no longer has: dropped by every
-- `migrate` that changes a definition, before the current definitions are applied.

-- Events waiting for a reconnected Google grant or a fixed time zone are now given back by the
-- events claim (worker_claim_events), which also sees tokens in user metadata.
DROP TRIGGER IF EXISTS profiles_on_change ON public.profiles;
DROP FUNCTION IF EXISTS worker.profiles_on_change();

-- The claims and their writes took new parameters (recurring events' horizon; several devices).
DROP FUNCTION IF EXISTS public.worker_claim_events(timestamptz, uuid, integer, integer);
-- worker_claim_reminders gained p_rate and p_lookahead_seconds (the shared Expo schedule).
DROP FUNCTION IF EXISTS public.worker_claim_reminders(timestamptz, uuid, integer, integer);
