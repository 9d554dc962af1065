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
)

from worker.standins.expo import ExpoStandIn

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
        [sys.executable, "-m", "worker.standins.expo", "--port", "0", "--latency-ms", "0"],
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
