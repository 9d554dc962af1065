-- Stop pg_cron from calling reminder-worker's `serve` (see schedule.sql). Safe to run when the job
-- does not exist. The Vault secrets stay; remove them too if serve is gone for good:
--
--   delete from vault.secrets where name in ('reminder_worker_url', 'reminder_worker_token');

select cron.unschedule(jobid) from cron.job where jobname = 'reminder-worker';
