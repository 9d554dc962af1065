"""The pure parts of worker.steps.calendar: entry ids, entry bodies, error classification."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httplib2
import pytest
from google.auth.exceptions import RefreshError, TransportError
from googleapiclient.errors import HttpError

from worker.clients import google
from worker.clients.google import http_error_parts
from worker.config import ConfigError, Settings
from worker.records import EventRow
from worker.retry import RateLimiter
from worker.steps import calendar as cs
from worker.vocabulary import ErrorKind, EventOutcome

START = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


def row(**kw: Any) -> EventRow:
    base: dict[str, Any] = {
        "id": str(uuid.uuid4()), "version": 1, "user_id": str(uuid.uuid4()), "status": "pending",
        "title": "Soccer practice", "start_ts": START, "end_ts": START + timedelta(hours=1),
        "location": "Field 4", "prep_items": ("shin guards", "water"), "google_calendar_id": None,
        "attempts": 0, "child_name": "Emma", "has_profile": True, "timezone": "America/New_York",
        "google_refresh_token": "1//refresh",
    }
    base.update(kw)
    return EventRow(**base)


def http_error(status: int, reason: str | None = None, message: str = "msg") -> HttpError:
    errors = [{"domain": "global", "reason": reason, "message": message}] if reason else []
    content = json.dumps({"error": {"errors": errors, "code": status, "message": message}}).encode()
    return HttpError(httplib2.Response({"status": status}), content, uri="http://x/calendar/v3/...")


# -- ids -------------------------------------------------------------------------------------------


def test_event_id_is_the_uuid_hex_and_valid_base32hex() -> None:
    event_id = "6F9619FF-8B86-D011-B42D-00C04FC964FF"
    derived = cs.calendar_event_id(event_id)
    assert derived == "6f9619ff8b86d011b42d00c04fc964ff"
    assert re.fullmatch(r"[a-v0-9]{5,1024}", derived)
    assert cs.calendar_event_id(event_id.lower()) == derived  # stable whatever the spelling


def test_event_id_rejects_non_uuids() -> None:
    with pytest.raises(ValueError, match="hexadecimal"):
        cs.calendar_event_id("not-a-uuid")


# -- entry body ------------------------------------------------------------------------------------


def test_body_has_summary_times_in_owner_zone_location_prep_items_and_marker() -> None:
    r = row()
    body = cs.entry_body(r, (timedelta(hours=24), timedelta(hours=3), timedelta(minutes=30)))
    assert body == {
        "summary": "Soccer practice (Emma)",
        "start": {"dateTime": "2026-11-24T09:00:00-05:00", "timeZone": "America/New_York"},
        "end": {"dateTime": "2026-11-24T10:00:00-05:00", "timeZone": "America/New_York"},
        "location": "Field 4",
        "description": "Bring:\n- shin guards\n- water",
        "extendedProperties": {"private": {"reminderWorkerEventId": r.id}},
        "reminders": {"useDefault": False, "overrides": [
            {"method": "popup", "minutes": 1440}, {"method": "popup", "minutes": 180},
            {"method": "popup", "minutes": 30}]},
    }


def test_body_insert_carries_id_and_restore_carries_confirmed() -> None:
    r = row()
    assert cs.entry_body(r, (), with_id=True)["id"] == cs.calendar_event_id(r.id)
    assert "status" not in cs.entry_body(r, ())
    assert cs.entry_body(r, (), restore=True)["status"] == "confirmed"


def test_body_without_child_location_or_items_and_with_unknown_zone() -> None:
    body = cs.entry_body(row(child_name=None, location=None, prep_items=(None, " "), timezone="Mars/Base"), ())
    assert body["summary"] == "Soccer practice"
    assert "location" not in body
    assert "description" not in body
    assert body["start"] == {"dateTime": "2026-11-24T14:00:00+00:00", "timeZone": "UTC"}


def test_body_time_is_right_across_daylight_saving() -> None:
    summer = datetime(2026, 7, 1, 14, 0, tzinfo=UTC)
    body = cs.entry_body(row(start_ts=summer, end_ts=summer + timedelta(minutes=45),
                             timezone="Europe/Berlin"), ())
    assert body["start"]["dateTime"] == "2026-07-01T16:00:00+02:00"
    assert body["end"]["dateTime"] == "2026-07-01T16:45:00+02:00"


def test_overrides_rounded_clamped_deduplicated_at_most_five_nearest_kept() -> None:
    offsets = [timedelta(days=28), timedelta(days=2), timedelta(hours=24), timedelta(hours=3),
               timedelta(minutes=30), timedelta(seconds=90), timedelta(seconds=100), timedelta(seconds=20)]
    assert cs.reminder_overrides(offsets) == [
        {"method": "popup", "minutes": m} for m in (1440, 180, 30, 2, 0)]
    assert cs.reminder_overrides([timedelta(days=40)]) == [{"method": "popup", "minutes": 40320}]


# -- classification ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "reason", "outcome", "stop"), [
    (403, "rateLimitExceeded", "retry", True),
    (403, "userRateLimitExceeded", "retry", True),
    (403, "quotaExceeded", "retry", True),
    (429, "rateLimitExceeded", "retry", True),
    (500, "backendError", "retry", False),
    (503, None, "retry", False),
    (401, "authError", "retry", True),
    (409, "duplicate", "retry", False),
    (400, "invalid", "failed", False),
    (400, "timeRangeEmpty", "failed", False),
    (403, "forbidden", "failed", False),
    (403, "forbiddenForNonOrganizer", "failed", False),
    (404, "notFound", "failed", False),
    (418, None, "failed", False),
])
def test_http_errors_follow_googles_guide(status: int, reason: str | None, outcome: str, stop: bool) -> None:
    failure = cs.classify_exception(http_error(status, reason, "Some text"))
    assert failure is not None
    # Google itself failing (5xx) is told apart from what concerns this user or this event.
    expected_kind = (ErrorKind.GOOGLE_UNAVAILABLE if status >= 500 or status in (401, 409)
                     else ErrorKind.GOOGLE_RATE_LIMITED if outcome == "retry" else ErrorKind.GOOGLE_REFUSED)
    assert (failure.outcome, failure.stop_user, failure.kind) == (outcome, stop, expected_kind)
    assert str(status) in failure.message
    assert "Some text" in failure.message


def test_http_error_parts_read_googles_error_shape() -> None:
    assert http_error_parts(http_error(403, "forbidden", "Forbidden")) == (403, "forbidden", "Forbidden")
    bare = HttpError(httplib2.Response({"status": 502}), b"<html>oops</html>")
    assert http_error_parts(bare) == (502, None, bare.reason)


def test_invalid_grant_is_revoked_access_for_a_parent_but_retry_for_the_service_account() -> None:
    exc = RefreshError("invalid_grant: Token has been expired or revoked.", {"error": "invalid_grant"})
    parent = cs.classify_exception(exc)
    assert parent == cs.Failure(EventOutcome.FAILED, cs.REVOKED_REASON, ErrorKind.GOOGLE_REVOKED, stop_user=True)
    assert cs.REVOKED_REASON == "Google access was revoked; reconnect Google Calendar in the app"
    robot = cs.classify_exception(exc, service_account_used=True)
    assert robot is not None
    assert robot.outcome == "retry"
    assert "GOOGLE_PRIVATE_KEY" in robot.message


def test_other_refresh_and_network_errors_are_transient() -> None:
    client = cs.classify_exception(RefreshError("invalid_client: Unauthorized", {}))
    assert client is not None
    assert (client.outcome, client.stop_user) == ("retry", True)
    assert "GOOGLE_CLIENT_ID" in client.message
    for exc in (TimeoutError("timed out"), ConnectionRefusedError(111, "refused"),
                httplib2.ServerNotFoundError("no dns"), TransportError("reset"),
                RefreshError("server_error: try later", {}, retryable=True)):
        failure = cs.classify_exception(exc)
        assert failure is not None
        assert (failure.outcome, failure.stop_user, failure.kind) == ("retry", True, ErrorKind.GOOGLE_UNAVAILABLE), exc


def test_unexpected_exceptions_are_not_classified() -> None:
    assert cs.classify_exception(KeyError("bug")) is None


# -- the rate limiter and the factory ---------------------------------------------------------------


def test_rate_limiter_waits_for_the_window_to_slide() -> None:
    clock = [100.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter(3, 60.0, clock=lambda: clock[0], sleep=sleep)
    assert [limiter.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]
    clock[0] += 10
    assert limiter.acquire() == pytest.approx(50.0)
    assert slept == [pytest.approx(50.0)]


def _calendar(env: dict[str, str]) -> cs.CalendarSync | None:
    settings = Settings.from_env(env)
    return cs.calendar_from_settings(settings.google, settings.passes.reminder_offsets)


def test_factory_is_off_without_google_settings_and_on_with_either_kind() -> None:
    assert _calendar({}) is None
    oauth = _calendar(
        {"GOOGLE_CLIENT_ID": "id", "GOOGLE_CLIENT_SECRET": "secret", "CALENDAR_CONCURRENCY": "3"})
    assert oauth is not None
    with oauth:
        assert oauth.client.oauth_configured
        assert oauth.concurrency == 3
        assert oauth.client.api_url == "https://www.googleapis.com/"


def test_factory_rejects_an_unusable_private_key_as_configuration() -> None:
    env = {"GOOGLE_CLIENT_EMAIL": "robot@p.iam.gserviceaccount.com", "GOOGLE_PRIVATE_KEY": "not a key"}
    with pytest.raises(ConfigError) as info:
        _calendar(env)
    assert info.value.variable == "GOOGLE_PRIVATE_KEY"


def test_service_account_credentials_never_start_the_regional_access_boundary_lookup() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    creds = google.ServiceAccountCredentials.from_service_account_info(
        {"client_email": "robot@p.iam.gserviceaccount.com", "private_key": pem,
         "token_uri": "http://127.0.0.1:9/token"}, scopes=list(google.SCOPES))
    assert creds._is_regional_access_boundary_lookup_required() is False
    started: list[object] = []
    creds._rab_manager.refresh_manager.start_refresh = lambda *a: started.append(a)
    creds._maybe_start_regional_access_boundary_refresh(None, "https://www.googleapis.com/calendar/v3/x")
    assert started == []


# -- Retry-After ------------------------------------------------------------------------------------


def _rate_limited(retry_after: str | None) -> HttpError:
    headers: dict[str, Any] = {"status": 429}
    if retry_after is not None:
        headers["retry-after"] = retry_after
    content = json.dumps({"error": {"errors": [{"domain": "usageLimits", "reason": "rateLimitExceeded",
                                                "message": "Rate Limit Exceeded"}], "code": 429}}).encode()
    return HttpError(httplib2.Response(headers), content, uri="http://x/calendar/v3/...")


def test_a_rate_limit_carries_googles_retry_after_as_seconds_or_a_date() -> None:
    import email.utils

    assert google.retry_after_seconds(_rate_limited("120")) == 120.0
    when = email.utils.format_datetime(datetime(2026, 11, 22, 9, 1, tzinfo=UTC), usegmt=True)
    assert google.retry_after_seconds(_rate_limited(when), now=datetime(2026, 11, 22, 9, 0, tzinfo=UTC).timestamp()) \
        == pytest.approx(60.0)
    assert google.retry_after_seconds(_rate_limited("soon")) is None
    assert google.retry_after_seconds(_rate_limited(None)) is None
    failure = cs.classify_exception(_rate_limited("120"))
    assert failure is not None
    assert (failure.kind, failure.stop_user, failure.retry_after) == (ErrorKind.GOOGLE_RATE_LIMITED, True, 120.0)
    assert cs.classify_exception(http_error(503, "backendError")).retry_after is None  # type: ignore[union-attr]


def test_the_next_try_waits_for_retry_after_but_never_past_the_longest_backoff() -> None:
    from worker.records import CalendarOutcome
    from worker.steps.events import plan_event

    passes = Settings.from_env({"RETRY_BASE_SECONDS": "30", "RETRY_MAX_SECONDS": "3600"}).passes
    now = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)

    def next_try(retry_after: float | None) -> datetime:
        outcome = CalendarOutcome(EventOutcome.RETRY, None, "rate limited", ErrorKind.GOOGLE_RATE_LIMITED, retry_after)
        result = plan_event(row(attempts=0), outcome, passes, now)
        assert result.next_attempt_at is not None
        return result.next_attempt_at

    assert next_try(None) <= now + timedelta(seconds=60)  # the backoff's first step (with jitter)
    assert next_try(600) == now + timedelta(seconds=600)
    assert next_try(86400) == now + timedelta(seconds=3600)
