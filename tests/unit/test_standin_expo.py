"""Tests of the Expo push stand-in, driven over real HTTP.

Why: the stand-in is what our integration tests, benchmark and demo trust to behave like Expo.
These pin its wire format with plain ``requests`` and prove the real exponent-server-sdk parses it.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from exponent_server_sdk import (
    DeviceNotRegisteredError,
    MessageRateExceededError,
    PushClient,
    PushMessage,
    PushServerError,
    PushTicketError,
)

from standins.expo import ExpoStandIn, experience_id_for

OK = "ExponentPushToken[ok-1]"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def expo() -> Iterator[ExpoStandIn]:
    with ExpoStandIn() as standin:
        yield standin


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _send(http: requests.Session, expo: ExpoStandIn, body: Any, **kw: Any) -> requests.Response:
    return http.post(f"{expo.url}/push/send", json=body, timeout=5, **kw)


def test_tickets_follow_token_script_and_order(expo: ExpoStandIn, http: requests.Session) -> None:
    unreg = "ExponentPushToken[unregistered-1]"
    r = _send(
        http,
        expo,
        [
            {"to": OK, "body": "a"},
            {"to": unreg, "body": "b"},
            {"to": ["ExpoPushToken[ratelimited]", "ExpoPushToken[ok-2]"], "body": "c"},
        ],
    )
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()["data"]
    assert [t["status"] for t in data] == ["ok", "error", "error", "ok"]
    assert data[1] == {
        "status": "error",
        "message": f'"{unreg}" is not a registered push notification recipient',
        "details": {"error": "DeviceNotRegistered", "expoPushToken": unreg},
    }
    assert data[2]["details"]["error"] == "MessageRateExceeded"
    assert len(data[0]["id"]) == 36
    assert [m["to"] for m in expo.messages] == [OK, "ExpoPushToken[ok-2]"]
    assert expo.sent_to("ExpoPushToken[ok-2]")[0]["body"] == "c"
    assert expo.requests[0].message_count == 4
    assert expo.requests[0].status == 200


def test_single_object_gets_single_ticket_and_invalid_token_is_not_registered(
    expo: ExpoStandIn, http: requests.Session
) -> None:
    single = _send(http, expo, {"to": OK, "title": "hi"}).json()["data"]
    assert single["status"] == "ok"
    bad = _send(http, expo, [{"to": "not-a-token"}]).json()["data"][0]
    assert bad["details"]["error"] == "DeviceNotRegistered"


def test_request_level_validation(expo: ExpoStandIn, http: requests.Session) -> None:
    too_many = _send(http, expo, [{"to": f"ExponentPushToken[{i}]"} for i in range(101)])
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["code"] == "PUSH_TOO_MANY_NOTIFICATIONS"
    # Expo's 100 counts recipients, not message objects.
    fan_out = _send(http, expo, [{"to": [f"ExponentPushToken[{i}]" for i in range(101)]}])
    assert fan_out.json()["errors"][0]["code"] == "PUSH_TOO_MANY_NOTIFICATIONS"
    missing_to = _send(http, expo, [{"body": "x"}])
    assert missing_to.status_code == 400
    assert missing_to.json()["errors"][0]["code"] == "VALIDATION_ERROR"
    not_json = http.post(f"{expo.url}/push/send", data=b"{nope", timeout=5)
    assert not_json.status_code == 400
    big = _send(http, expo, [{"to": OK, "data": {"blob": "x" * 5000}}]).json()["data"][0]
    assert big["status"] == "error"
    assert big["details"]["error"] == "MessageTooBig"
    assert expo.messages == []
    assert [rec.status for rec in expo.requests] == [400, 400, 400, 400, 200]


def test_gzip_body_and_scripted_failures(expo: ExpoStandIn, http: requests.Session) -> None:
    expo.fail_next(1, 429)
    expo.fail_next(1, 503)
    raw = gzip.compress(json.dumps([{"to": OK}]).encode())
    headers = {"content-type": "application/json", "content-encoding": "gzip"}

    def post() -> requests.Response:
        return http.post(f"{expo.url}/push/send", data=raw, headers=headers, timeout=5)

    limited = post()
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "1"
    assert limited.json() == {
        "errors": [{"code": "TOO_MANY_REQUESTS", "message": limited.json()["errors"][0]["message"]}]
    }
    assert post().json()["errors"][0]["code"] == "SERVICE_UNAVAILABLE"
    assert post().status_code == 200
    assert [rec.status for rec in expo.requests] == [429, 503, 200]
    assert expo.requests[0].headers["content-encoding"] == "gzip"
    assert len(expo.messages) == 1


def test_access_token_required_when_configured(http: requests.Session) -> None:
    with ExpoStandIn(access_token="s3cret") as expo:
        denied = _send(http, expo, [{"to": OK}])
        assert denied.status_code == 401
        assert denied.json()["errors"][0]["code"] == "UNAUTHORIZED"
        allowed = _send(http, expo, [{"to": OK}], headers={"Authorization": "Bearer s3cret"})
        assert allowed.status_code == 200
        assert expo.requests[1].headers["authorization"] == "Bearer s3cret"


def test_receipts(expo: ExpoStandIn, http: requests.Session) -> None:
    tokens = [OK, "ExponentPushToken[receipt-unregistered]", "ExponentPushToken[receipt-missing]"]
    ids = [t["id"] for t in _send(http, expo, [{"to": tokens}]).json()["data"]]
    r = http.post(f"{expo.url}/push/getReceipts", json={"ids": [*ids, "unknown-id"]}, timeout=5)
    assert r.status_code == 200
    data = r.json()["data"]
    assert set(data) == {ids[0], ids[1]}  # receipt-missing and unknown ids are simply absent
    assert data[ids[0]] == {"status": "ok"}
    assert data[ids[1]]["details"] == {"error": "DeviceNotRegistered", "expoPushToken": tokens[1]}
    assert expo.receipt_requests == [[*ids, "unknown-id"]]
    too_many = http.post(f"{expo.url}/push/getReceipts", json={"ids": ["x"] * 1001}, timeout=5)
    assert too_many.status_code == 400
    assert too_many.json()["errors"][0]["code"] == "PUSH_TOO_MANY_RECEIPTS"
    expo.fail_next_receipts(1, 500)
    failed = http.post(f"{expo.url}/push/getReceipts", json={"ids": ids}, timeout=5)
    assert failed.status_code == 500
    assert failed.json()["errors"][0]["code"] == "INTERNAL_SERVER_ERROR"


def test_real_sdk_parses_answers(expo: ExpoStandIn) -> None:
    with requests.Session() as session:
        session.headers.update({"content-type": "application/json", "accept": "application/json"})
        client = PushClient(host=expo.base_url, session=session)
        tickets = client.publish_multiple(
            [
                PushMessage(to=OK, body="hi"),
                PushMessage(to="ExponentPushToken[unregistered]", body="x"),
                PushMessage(to="ExponentPushToken[ratelimited]", body="y"),
                PushMessage(to="ExponentPushToken[receipt-toobig]", body="z"),
            ]
        )
        tickets[0].validate_response()
        with pytest.raises(DeviceNotRegisteredError):
            tickets[1].validate_response()
        with pytest.raises(MessageRateExceededError):
            tickets[2].validate_response()
        receipts = {r.id: r for r in client.check_receipts_multiple([tickets[0], tickets[3]])}
        assert receipts[tickets[0].id].is_success()
        assert receipts[tickets[3].id].details == {"error": "MessageTooBig"}
        expo.fail_next(1, 500)
        with pytest.raises(PushServerError) as excinfo:
            client.publish(PushMessage(to=OK, body="again"))
        assert excinfo.value.errors == [
            {"code": "INTERNAL_SERVER_ERROR", "message": "An unknown error occurred."}
        ]


def test_keep_alive_is_reused_and_latency_applies(expo: ExpoStandIn, http: requests.Session) -> None:
    expo.latency = 0.05
    start = time.monotonic()
    for _ in range(3):
        assert _send(http, expo, [{"to": OK}]).status_code == 200
    assert time.monotonic() - start >= 0.15
    assert len({rec.client_port for rec in expo.requests}) == 1  # one TCP connection for all three
    expo.reset()
    assert expo.messages == []
    assert expo.requests == []


def test_cli_prints_url_and_stops_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins.expo", "--port", "0", "--latency-ms", "0"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:")
        assert url.endswith("/--/api/v2")
        with requests.Session() as session:
            r = session.post(f"{url}/push/send", json=[{"to": OK}], timeout=5)
        assert r.json()["data"][0]["status"] == "ok"
        proc.terminate()
        assert proc.wait(timeout=5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


# ---------------------------------------------------------------------------- projects (experience ids)


@pytest.mark.parametrize(
    "token, experience_id",
    [
        ("ExponentPushToken[ok-1]", "@family/parentpal"),
        ("ExponentPushToken[project-other-1]", "@family/other"),
        ("ExpoPushToken[x-project-b2c]", "@family/b2c"),
        ("ExponentPushToken[project-]", "@family/parentpal"),  # an empty name names no project
        ("ExponentPushToken[PROJECT-caps]", "@family/parentpal"),  # the marker is lower case
        ("not-a-token", "@family/parentpal"),
    ],
)
def test_experience_id_for(token: str, experience_id: str) -> None:
    assert experience_id_for(token) == experience_id


def test_mixed_projects_are_refused_as_a_whole(expo: ExpoStandIn, http: requests.Session) -> None:
    other_a, other_b = "ExponentPushToken[project-other-a]", "ExponentPushToken[project-other-b]"
    r = _send(http, expo, [{"to": OK, "body": "a"}, {"to": [other_a, other_b, OK], "body": "b"}])
    assert r.status_code == 400
    assert r.json() == {
        "errors": [
            {
                "code": "PUSH_TOO_MANY_EXPERIENCE_IDS",
                "message": "All push notification messages in the same request must be for the same project; "
                "separate your push notifications by project.",
                "details": {"@family/parentpal": [OK], "@family/other": [other_a, other_b]},
            }
        ]
    }
    assert expo.messages == []
    assert expo.message_times == []
    assert [(rec.status, rec.message_count) for rec in expo.requests] == [(400, 4)]
    # Split per project, each request is accepted.
    assert _send(http, expo, [{"to": [other_a, other_b], "body": "b"}]).status_code == 200
    assert _send(http, expo, [{"to": OK, "body": "a"}]).status_code == 200
    assert [m["to"] for m in expo.messages] == [other_a, other_b, OK]


def test_sdk_sees_mixed_projects_as_push_server_error(expo: ExpoStandIn) -> None:
    other = "ExponentPushToken[project-other-1]"
    with requests.Session() as session:
        client = PushClient(host=expo.base_url, session=session)
        with pytest.raises(PushServerError) as excinfo:
            client.publish_multiple([PushMessage(to=OK, body="a"), PushMessage(to=other, body="b")])
    assert excinfo.value.message == "Request failed"
    assert excinfo.value.response.status_code == 400
    assert excinfo.value.errors is not None
    [error] = excinfo.value.errors
    assert error["code"] == "PUSH_TOO_MANY_EXPERIENCE_IDS"
    assert error["details"] == {"@family/parentpal": [OK], "@family/other": [other]}
    assert expo.messages == []


# ---------------------------------------------------------------------------- token markers


@pytest.mark.parametrize(
    "token, ticket_error, receipt_error",
    [
        (OK, None, None),
        ("ExponentPushToken[ticket-badcreds]", "InvalidCredentials", "-"),
        ("ExponentPushToken[ticket-mismatch]", "MismatchSenderId", "-"),
        ("ExponentPushToken[ticket-nul]", "MessageRateExceeded", "-"),
        ("ExponentPushToken[receipt-badcreds]", None, "InvalidCredentials"),
        ("ExponentPushToken[receipt-mismatch]", None, "MismatchSenderId"),
        ("ExponentPushToken[receipt-unregistered]", None, "DeviceNotRegistered"),
        ("ExponentPushToken[receipt-ratelimited]", None, "MessageRateExceeded"),
        ("ExponentPushToken[receipt-toobig]", None, "MessageTooBig"),
        ("ExponentPushToken[unregistered]", "DeviceNotRegistered", "-"),
        ("ExponentPushToken[ratelimited]", "MessageRateExceeded", "-"),
        ("ExponentPushToken[badcreds]", None, None),  # no bare "badcreds" marker exists
        ("ExponentPushToken[mismatch]", None, None),
        ("ExponentPushToken[project-x-ticket-badcreds]", "InvalidCredentials", "-"),
    ],
)
def test_each_marker_maps_to_its_outcome(
    expo: ExpoStandIn, http: requests.Session, token: str, ticket_error: str | None, receipt_error: str | None
) -> None:
    """``receipt_error`` "-" means there is no receipt because the ticket itself is an error."""
    [ticket] = _send(http, expo, [{"to": token, "body": "x"}]).json()["data"]
    if ticket_error is not None:
        assert ticket["status"] == "error"
        assert ticket["details"]["error"] == ticket_error
        assert expo.messages == []
        return
    assert ticket["status"] == "ok"
    assert expo.sent_to(token)
    receipts = http.post(f"{expo.url}/push/getReceipts", json={"ids": [ticket["id"]]}, timeout=5).json()["data"]
    if receipt_error is None:
        assert receipts == {ticket["id"]: {"status": "ok"}}
    else:
        assert receipts[ticket["id"]]["status"] == "error"
        assert receipts[ticket["id"]]["details"]["error"] == receipt_error


def test_ticket_markers_share_no_text_with_other_markers() -> None:
    ticket_markers = ["ticket-badcreds", "ticket-mismatch", "ticket-nul"]
    other_markers = [
        "receipt-unregistered", "receipt-toobig", "receipt-ratelimited", "receipt-badcreds",
        "receipt-mismatch", "receipt-missing", "unregistered", "ratelimited",
    ]  # fmt: skip
    for marker in ticket_markers:
        assert not any(marker in other or other in marker for other in other_markers if other != marker)
        assert not any(marker in other for other in ticket_markers if other != marker)


def test_credentials_ticket_errors_through_the_sdk(expo: ExpoStandIn) -> None:
    with requests.Session() as session:
        client = PushClient(host=expo.base_url, session=session)
        badcreds, mismatch = client.publish_multiple(
            [
                PushMessage(to="ExponentPushToken[ticket-badcreds]", body="a"),
                PushMessage(to="ExponentPushToken[ticket-mismatch]", body="b"),
            ]
        )
    assert not badcreds.is_success()
    assert badcreds.details == {"error": "InvalidCredentials"}
    assert "credentials" in badcreds.message
    with pytest.raises(PushTicketError):
        badcreds.validate_response()
    assert mismatch.details == {"error": "MismatchSenderId"}


def test_ticket_nul_message_carries_nul_and_token(expo: ExpoStandIn, http: requests.Session) -> None:
    token = "ExponentPushToken[ticket-nul-42]"
    r = _send(http, expo, [{"to": token, "body": "x"}])
    assert b"\\u0000" in r.content  # JSON's escape, as Expo sends it
    [ticket] = r.json()["data"]
    assert ticket["status"] == "error"
    assert ticket["details"]["error"] == "MessageRateExceeded"
    assert "\x00" in ticket["message"]
    assert token in ticket["message"]
    assert expo.messages == []


# ---------------------------------------------------------------------------- rate accounting


def test_messages_per_second_and_sliding_window(expo: ExpoStandIn, http: requests.Session) -> None:
    assert expo.messages_per_second() == {}
    assert expo.max_messages_in_any_window() == 0
    # A refused first request still starts the clock; error tickets are not counted.
    expo.fail_next(1, 503)
    assert _send(http, expo, [{"to": OK}]).status_code == 503
    tokens = [f"ExponentPushToken[ok-{i}]" for i in range(3)]
    _send(http, expo, [{"to": [*tokens, "ExponentPushToken[unregistered]"]}])
    time.sleep(1.1)
    _send(http, expo, [{"to": tokens[:2]}])
    assert expo.messages_per_second() == {0: 3, 1: 2}
    assert len(expo.message_times) == len(expo.messages) == 5
    assert expo.max_messages_in_any_window(1.0) == 3
    assert expo.max_messages_in_any_window(5.0) == 5
    with pytest.raises(ValueError):
        expo.max_messages_in_any_window(0)
    expo.reset()
    assert expo.messages_per_second() == {}
    assert expo.message_times == []


def test_sliding_window_arithmetic(expo: ExpoStandIn) -> None:
    expo.message_times.extend([10.0, 10.2, 10.9, 11.0, 11.05, 13.0, 13.5])
    assert expo.max_messages_in_any_window(1.0) == 4  # 10.2, 10.9, 11.0, 11.05
    assert expo.max_messages_in_any_window(0.5) == 3  # 10.9, 11.0, 11.05
    assert expo.max_messages_in_any_window(0.01) == 1


def test_per_second_buckets_leave_no_gaps(expo: ExpoStandIn, http: requests.Session) -> None:
    _send(http, expo, [{"to": OK}])
    first = expo.message_times[0]
    expo.message_times.extend([first + 2.5, first + 2.9])
    assert expo.messages_per_second() == {0: 1, 1: 0, 2: 2}


# ---------------------------------------------------------------------------- credentials probe


def test_empty_receipts_request_is_a_credentials_probe(http: requests.Session) -> None:
    with ExpoStandIn(access_token="s3cret") as expo:
        probe = f"{expo.url}/push/getReceipts"
        missing = http.post(probe, json={"ids": []}, timeout=5)
        assert missing.status_code == 401
        assert missing.json()["errors"][0]["code"] == "UNAUTHORIZED"
        wrong = http.post(probe, json={"ids": []}, headers={"Authorization": "Bearer nope"}, timeout=5)
        assert wrong.status_code == 401
        right = http.post(probe, json={"ids": []}, headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert right.status_code == 200
        assert right.json() == {"data": {}}
        assert expo.messages == []
    with ExpoStandIn() as open_expo:
        r = http.post(f"{open_expo.url}/push/getReceipts", json={"ids": []}, timeout=5)
        assert (r.status_code, r.json()) == (200, {"data": {}})


def test_empty_receipts_probe_through_the_sdk() -> None:
    """The SDK's check_receipts_multiple([]) sends nothing, so the probe is posted by hand and the
    SDK only parses the answer (as a ``check`` built on it would)."""
    with ExpoStandIn(access_token="s3cret") as expo, requests.Session() as session:
        client = PushClient(host=expo.base_url, session=session)
        probe = f"{expo.url}/push/getReceipts"
        ok = session.post(probe, json={"ids": []}, headers={"Authorization": "Bearer s3cret"}, timeout=5)
        assert client.validate_and_get_receipts(ok) == []
        denied = session.post(probe, json={"ids": []}, headers={"Authorization": "Bearer wrong"}, timeout=5)
        with pytest.raises(PushServerError) as excinfo:
            client.validate_and_get_receipts(denied)
        assert excinfo.value.errors is not None
        assert excinfo.value.errors[0]["code"] == "UNAUTHORIZED"
