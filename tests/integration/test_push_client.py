"""The Expo client (exponent-server-sdk on our session) against the Expo stand-in's real wire format."""

from __future__ import annotations

from worker.push import ExpoPusher, Outbound
from worker.standins.expo import ExpoStandIn
from worker.vocabulary import ErrorKind


def _msg(i: int, token: str) -> Outbound:
    return Outbound(f"r{i}", token, "Title", "Body", {"event_id": "e", "reminder_id": f"r{i}"})


def test_both_token_forms_and_headers() -> None:
    with ExpoStandIn(access_token="expo-access") as expo:
        pusher = ExpoPusher(expo.url, access_token="expo-access", rate_limit=0, retry_wait=0)
        try:
            deliveries, answered = pusher.send([_msg(1, "ExponentPushToken[a1]"), _msg(2, "ExpoPushToken[b2]")])
        finally:
            pusher.close()
    assert answered
    assert [d.outcome for d in deliveries] == ["sent", "sent"]
    assert all(d.ticket_id for d in deliveries)
    headers = expo.requests[0].headers
    assert headers["authorization"] == "Bearer expo-access"
    assert headers["content-type"] == "application/json"
    assert "gzip" in headers["accept-encoding"]


def test_a_hundred_messages_a_request() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0)
        try:
            deliveries, _ = pusher.send([_msg(i, f"ExponentPushToken[t{i}]") for i in range(250)])
        finally:
            pusher.close()
    assert len(deliveries) == 250
    assert sorted(r.message_count for r in expo.requests) == [50, 100, 100]


def test_transient_errors_are_retried_in_pass_but_400_is_not() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0, request_attempts=3)
        try:
            expo.fail_next(2, status=503)
            deliveries, answered = pusher.send([_msg(1, "ExponentPushToken[a]")])
            assert answered and deliveries[0].outcome == "sent"
            assert len(expo.requests) == 3

            expo.fail_next(1, status=400, code="VALIDATION_ERROR", message="bad")
            deliveries, answered = pusher.send([_msg(2, "ExponentPushToken[b]")])
            assert deliveries[0].outcome == "failed" and "VALIDATION_ERROR" in (deliveries[0].error or "")
            assert len(expo.requests) == 4
        finally:
            pusher.close()


def test_a_refused_access_token_defers_without_counting() -> None:
    with ExpoStandIn(access_token="right") as expo:
        pusher = ExpoPusher(expo.url, access_token="wrong", rate_limit=0, retry_wait=0)
        try:
            deliveries, answered = pusher.send([_msg(1, "ExponentPushToken[a]")])
        finally:
            pusher.close()
    assert not answered
    assert deliveries[0].outcome == "deferred"
    assert "wrong" not in (deliveries[0].error or "")


def test_ticket_errors_are_classified_and_scrubbed() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0)
        try:
            deliveries, _ = pusher.send([_msg(1, "ExponentPushToken[unregistered-x]"),
                                         _msg(2, "ExponentPushToken[ratelimited-y]")])
        finally:
            pusher.close()
    gone, slow = deliveries
    assert (gone.outcome, gone.clear_token) == ("failed", True)
    assert "DeviceNotRegistered" in (gone.error or "") and "unregistered-x" not in (gone.error or "")
    assert slow.outcome == "retry"


def test_the_rate_limiter_spaces_requests() -> None:
    import time

    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=1000, retry_wait=0, concurrency=6)
        try:
            started = time.monotonic()
            pusher.send([_msg(i, f"ExponentPushToken[t{i}]") for i in range(3000)])
            elapsed = time.monotonic() - started
        finally:
            pusher.close()
    # 3000 messages at 1000/s, starting from an empty window: the last ones go out after ~2 s.
    assert elapsed >= 1.9
    assert expo.max_messages_in_any_window(1.0) <= 1000


def test_a_request_mixing_expo_projects_is_split_by_project() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0)
        try:
            msgs = [_msg(i, f"ExponentPushToken[p{i}]") for i in range(98)]
            msgs += [_msg(98, "ExponentPushToken[project-other-1]"), _msg(99, "ExponentPushToken[project-other-2]")]
            deliveries, answered = pusher.send(msgs)
        finally:
            pusher.close()
    assert answered
    assert [d.outcome for d in deliveries].count("sent") == 100
    assert [r.status for r in expo.requests] == [400, 200, 200]
    assert sorted(r.message_count for r in expo.requests[1:]) == [2, 98]


def test_a_400_for_one_message_is_narrowed_down_to_that_message() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0)
        try:
            expo.fail_next(1, status=400, code="VALIDATION_ERROR", message="\"to\" is invalid")
            # The first request is refused whole; its halves go through (the stand-in refuses once).
            deliveries, _ = pusher.send([_msg(i, f"ExponentPushToken[t{i}]") for i in range(8)])
        finally:
            pusher.close()
    assert [d.outcome for d in deliveries] == ["sent"] * 8
    assert [r.message_count for r in expo.requests] == [8, 4, 4]


def test_credential_tickets_defer_without_failing() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0)
        try:
            deliveries, _ = pusher.send([_msg(1, "ExponentPushToken[ticket-badcreds-1]"),
                                         _msg(2, "ExponentPushToken[ticket-mismatch-2]"),
                                         _msg(3, "ExponentPushToken[fine]")])
        finally:
            pusher.close()
    assert [(d.outcome, d.kind) for d in deliveries] == [
        ("deferred", ErrorKind.EXPO_CREDENTIALS), ("deferred", ErrorKind.EXPO_CREDENTIALS), ("sent", None)]
