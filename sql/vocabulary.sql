-- The vocabulary of the status columns: the words of worker/vocabulary.py, as CHECK constraints.
--
-- Applied by every `migrate`. tests/unit/test_vocabulary.py proves these lists and the Python
-- enums are the same words. worker.ensure_check (sql/bootstrap.sql) adds or updates a constraint
-- only when every existing row conforms, so an adopted table whose rows hold a word the worker does
-- not know keeps working for the app; `check` reports such rows.

SELECT worker.ensure_check('public.events', 'events_status_check',
    $$status IN ('pending', 'synced', 'failed', 'cancelled')$$);
SELECT worker.ensure_check('public.events', 'events_error_kind_check',
    $$error_kind IN ('invalid_row', 'timezone', 'google_revoked', 'google_refused', 'google_rate_limited',
        'google_unavailable', 'google_config', 'no_token', 'bad_token', 'device_not_registered',
        'expo_credentials', 'expo_unavailable', 'expo_rejected', 'expo_rate_exceeded',
        'receipt_unknown', 'push_disabled', 'child_muted', 'superseded', 'event_started',
        'event_cancelled', 'database_unavailable', 'schema', 'config', 'crash')$$);
SELECT worker.ensure_check('public.reminders', 'reminders_status_check',
    $$status IN ('pending', 'sending', 'sent', 'failed', 'expired', 'cancelled')$$);
SELECT worker.ensure_check('public.reminders', 'reminders_error_kind_check',
    $$error_kind IN ('invalid_row', 'timezone', 'google_revoked', 'google_refused', 'google_rate_limited',
        'google_unavailable', 'google_config', 'no_token', 'bad_token', 'device_not_registered',
        'expo_credentials', 'expo_unavailable', 'expo_rejected', 'expo_rate_exceeded',
        'receipt_unknown', 'push_disabled', 'child_muted', 'superseded', 'event_started',
        'event_cancelled', 'database_unavailable', 'schema', 'config', 'crash')$$);
SELECT worker.ensure_check('public.reminders', 'reminders_receipt_status_check',
    $$receipt_status IN ('ok', 'error', 'unknown')$$);
SELECT worker.ensure_check('public.worker_runs', 'worker_runs_trigger_check',
    $$trigger IN ('cron', 'http', 'manual', 'loop')$$);
SELECT worker.ensure_check('public.worker_runs', 'worker_runs_error_kind_check',
    $$error_kind IN ('invalid_row', 'timezone', 'google_revoked', 'google_refused', 'google_rate_limited',
        'google_unavailable', 'google_config', 'no_token', 'bad_token', 'device_not_registered',
        'expo_credentials', 'expo_unavailable', 'expo_rejected', 'expo_rate_exceeded',
        'receipt_unknown', 'push_disabled', 'child_muted', 'superseded', 'event_started',
        'event_cancelled', 'database_unavailable', 'schema', 'config', 'crash')$$);
