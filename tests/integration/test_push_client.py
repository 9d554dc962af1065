"""The Expo client (exponent-server-sdk on our session) against the Expo stand-in's real wire format,
and what the push step makes of each answer (worker.steps.messages.classify)."""

from __future__ import annotations

from standins.expo import ExpoStandIn
from worker.clients.expo import Answer, ExpoPusher, Outbound
from worker.steps.messages import classify
from worker.vocabulary import ErrorKind, PushOutcome


def outcome(answer: Answer) -> str:
    return classify(answer)[0].value


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
    assert [outcome(d) for d in deliveries] == ["sent", "sent"]
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
            assert answered and outcome(deliveries[0]) == "sent"
            assert len(expo.requests) == 3

            expo.fail_next(1, status=400, code="VALIDATION_ERROR", message="bad")
            deliveries, answered = pusher.send([_msg(2, "ExponentPushToken[b]")])
            assert outcome(deliveries[0]) == "failed" and "VALIDATION_ERROR" in (deliveries[0].message or "")
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
    assert outcome(deliveries[0]) == "deferred"
    assert "wrong" not in (deliveries[0].message or "")


def test_ticket_errors_are_classified_and_scrubbed() -> None:
    with ExpoStandIn() as expo:
        pusher = ExpoPusher(expo.url, rate_limit=0, retry_wait=0)
        try:
            deliveries, _ = pusher.send([_msg(1, "ExponentPushToken[unregistered-x]"),
                                         _msg(2, "ExponentPushToken[ratelimited-y]")])
        finally:
            pusher.close()
    gone, slow = deliveries
    assert classify(gone) == (PushOutcome.FAILED, ErrorKind.DEVICE_NOT_REGISTERED)
    assert gone.error == "DeviceNotRegistered"
    assert "DeviceNotRegistered" in (gone.message or "") and "unregistered-x" not in (gone.message or "")
    assert outcome(slow) == "retry"


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
    # (Arrival times at a stand-in in this very process are skewed by the GIL; the window itself is
    # tested on the limiter's clock in tests/unit/test_records.py, and end to end in bench/.)
    assert elapsed >= 1.9


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
    assert [outcome(d) for d in deliveries].count("sent") == 100
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
    assert [outcome(d) for d in deliveries] == ["sent"] * 8
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
    assert [classify(d) for d in deliveries] == [
        ("deferred", ErrorKind.EXPO_CREDENTIALS), ("deferred", ErrorKind.EXPO_CREDENTIALS), ("sent", None)]
