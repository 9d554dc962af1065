-- reminder-worker on Supabase: pg_cron calls `python worker/main.py serve` every minute through pg_net.
--
-- NOT a migration: `python worker/main.py migrate` applies only sql/*.sql. Run this file yourself,
-- once per project, in the SQL editor or with psql, after `serve` is deployed and reachable:
--
--   psql "$DATABASE_URL" -f sql/cron/schedule.sql
--
-- Running it again is safe: it replaces the job instead of adding a second one.
--
-- Prerequisites (Supabase dashboard > Database > Extensions, or SQL):
--   create extension if not exists pg_cron;
--   create extension if not exists pg_net;
--
-- The URL and the token live in Supabase Vault, so neither appears in cron.job nor in this file.
-- Create them once (the URL is serve's public base URL, no trailing /run; the token is the exact
-- value of WORKER_TRIGGER_TOKEN that serve was started with):
--
--   select vault.create_secret('https://reminder-worker.example.com', 'reminder_worker_url');
--   select vault.create_secret('<the WORKER_TRIGGER_TOKEN value>', 'reminder_worker_token');
--
-- Rotate the token: update the secret, then restart serve with the new WORKER_TRIGGER_TOKEN:
--
--   select vault.update_secret((select id from vault.secrets where name = 'reminder_worker_token'),
--                              '<the new token>');
--
-- The job reads both secrets at every run, so a rotation needs no change to the job itself.
-- pg_net sends the request after the job's transaction commits and does not wait for the answer;
-- serve answers 202 at once (409 while the previous minute's pass still runs, which is fine).
-- Answers are kept for a while in net._http_response, e.g.:
--   select status_code, content, created from net._http_response order by created desc limit 5;
-- Job runs: select * from cron.job_run_details order by start_time desc limit 5;
--
-- net.http_post(url text, body jsonb, params jsonb, headers jsonb, timeout_milliseconds int):
-- headers given here replace pg_net's default, so Content-Type is set explicitly.

select cron.unschedule(jobid) from cron.job where jobname = 'reminder-worker';

select cron.schedule(
    'reminder-worker',
    '* * * * *',
    $$
    select net.http_post(
        url := rtrim((select decrypted_secret from vault.decrypted_secrets where name = 'reminder_worker_url'), '/')
               || '/run',
        headers := jsonb_build_object(
            'Authorization', 'Bearer ' || (select decrypted_secret from vault.decrypted_secrets
                                           where name = 'reminder_worker_token'),
            'Content-Type', 'application/json'),
        body := '{}'::jsonb,
        timeout_milliseconds := 5000
    )
    $$
);
