"""reminder-worker: events into Google Calendar, reminders through Expo push, one pass at a time."""

__version__ = "0.1.0"
