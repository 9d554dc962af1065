"""What ``check`` asks Expo and Google: one question each that changes nothing and proves the credentials.

Why: a wrong ``EXPO_ACCESS_TOKEN`` or ``GOOGLE_CLIENT_SECRET`` looks fine in the environment and fails
every pass afterwards. Each probe goes through the library the pass itself uses, so what it proves
is what a pass will meet:

* **Expo**: ``POST {EXPO_API_URL}/push/getReceipts`` with ``{"ids": []}`` (exponent-server-sdk parses
  the answer). It sends nothing to anyone, and it carries the access token: Expo answers 401 when
  the token is wrong, or missing while the project demands one (enhanced push security).
* **Google OAuth client**: google-auth refreshes a refresh token that cannot exist. Google's token
  endpoint authenticates the client first: ``invalid_client`` (401) means ``GOOGLE_CLIENT_ID`` or
  ``GOOGLE_CLIENT_SECRET`` is wrong; ``invalid_grant`` (400) means the client was accepted and only
  the made-up token refused, which is the answer a good configuration gets.
* **Google service account**: google-auth mints an access token with the key (the JWT-bearer
  grant). That is all a pass does with it before writing a calendar.

A probe never raises for what the service answers; it returns a :class:`Probe` that says who is to
blame: the configuration (``refused``, naming the variable, never its value), the network or the
service (``unreachable``/``failing``, with the URL), or nobody (``ok``). Answer texts are not
repeated: a token endpoint may quote the request form, secrets included.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from worker.config import ExpoSettings, GoogleSettings

#: Seconds a probe waits for an answer: a person is waiting at a terminal.
PROBE_TIMEOUT = 10.0


class Verdict(StrEnum):
    OK = "ok"
    REFUSED = "refused"  # the service refused the configured credentials: fix the environment
    UNREACHABLE = "unreachable"  # no answer: network, DNS, firewall, a wrong host
    FAILING = "failing"  # an answer, but not one that says anything about the credentials (5xx, 404)


@dataclass(frozen=True)
class Probe:
    """What one probe found. ``variable`` names the setting to fix (``refused``); ``url`` is what was
    asked; ``detail`` is a short text of ours (status code, error code), never the service's prose."""

    verdict: Verdict
    url: str
    detail: str
    variable: str | None = None


# --- Expo ---------------------------------------------------------------------------------------


def probe_expo(expo: ExpoSettings, *, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Ask Expo for the receipts of no tickets, with the configured access token."""
    import requests  # the probes' libraries only when `check` asks
    from exponent_server_sdk import PushClient, PushServerError

    url = f"{expo.api_url}/push/getReceipts"
    parts = urlsplit(expo.api_url)
    with requests.Session() as session:
        session.headers.update({"accept": "application/json", "accept-encoding": "gzip, deflate",
                                "content-type": "application/json"})
        if expo.access_token:
            session.headers["Authorization"] = f"Bearer {expo.access_token}"
        client = PushClient(host=f"{parts.scheme}://{parts.netloc}", api_url=parts.path.rstrip("/"),
                            session=session, timeout=timeout)
        try:
            response = session.post(url, json={"ids": []}, timeout=timeout)
        except requests.RequestException as exc:
            return Probe(Verdict.UNREACHABLE, url, type(exc).__name__)
        status = response.status_code
        if status in (401, 403):
            answered = f"HTTP {status} {_expo_error_code(response)}".strip()
            if not expo.access_token:
                answered += ": the project requires an access token (enhanced push security) and none is set"
            return Probe(Verdict.REFUSED, url, answered, "EXPO_ACCESS_TOKEN")
        try:
            client.validate_and_get_receipts(response)
        except PushServerError as exc:  # Expo's error body, or not Expo's answer at all
            code = _expo_error_code(response)
            return Probe(Verdict.FAILING, url, f"HTTP {status} {code}".strip()
                         if code else f"HTTP {status}, not an answer of Expo's push API ({exc.message})")
        except (requests.HTTPError, ValueError, AttributeError, TypeError) as exc:
            return Probe(Verdict.FAILING, url, f"HTTP {status}, not an answer of Expo's push API "
                                               f"({type(exc).__name__})")
    return Probe(Verdict.OK, url, f"HTTP {status}")


def _expo_error_code(response: Any) -> str:
    """Expo's ``errors[0].code`` (e.g. ``UNAUTHORIZED``), or ''."""
    try:
        errors = response.json().get("errors")
        return str(errors[0].get("code") or "") if errors else ""
    except (ValueError, AttributeError, IndexError, TypeError):
        return ""


# --- Google ---------------------------------------------------------------------------------------


def probe_google_client(google: GoogleSettings, *, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Refresh a made-up refresh token with the configured OAuth client: ``invalid_grant`` proves the
    client id and secret, ``invalid_client`` refutes them."""
    from google.oauth2 import credentials as user_credentials

    token_uri = str(google.token_uri)
    made_up = "1//reminder-worker-check-" + secrets.token_urlsafe(16)  # can exist in no Google account
    creds = user_credentials.Credentials(  # type: ignore[no-untyped-call]
        token=None, refresh_token=made_up, client_id=google.client_id,
        client_secret=str(google.client_secret) if google.client_secret else None, token_uri=token_uri)
    error, description, failure = _refresh(creds, token_uri, timeout)
    if failure is not None:
        return failure
    if error is None:  # Google minted a token for a refresh token nobody issued: not Google's endpoint
        return Probe(Verdict.FAILING, token_uri, "accepted a refresh token that cannot exist: is GOOGLE_TOKEN_URI "
                                                 "Google's token endpoint?")
    if error == "invalid_grant":
        return Probe(Verdict.OK, token_uri, "invalid_grant for a made-up refresh token: the client is accepted")
    if error in ("invalid_client", "unauthorized_client"):
        # Google says which: "The OAuth client was not found." (the id) or "Unauthorized" (the secret).
        lowered = description.lower()
        variable = ("GOOGLE_CLIENT_ID" if "not found" in lowered else
                    "GOOGLE_CLIENT_SECRET" if "unauthorized" in lowered else "GOOGLE_CLIENT_ID / GOOGLE_CLIENT_SECRET")
        return Probe(Verdict.REFUSED, token_uri, error, variable)
    return Probe(Verdict.FAILING, token_uri, error)


def probe_service_account(google: GoogleSettings, *, timeout: float = PROBE_TIMEOUT) -> Probe:
    """Mint an access token with the service account's key (the JWT-bearer grant)."""
    from worker.clients.google import SCOPES, ServiceAccountCredentials

    token_uri = str(google.token_uri)
    info = {"type": "service_account", "client_email": str(google.client_email),
            "private_key": str(google.private_key), "token_uri": token_uri}
    try:
        creds = ServiceAccountCredentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=list(SCOPES))
    except (ValueError, KeyError):
        return Probe(Verdict.REFUSED, token_uri, "google-auth cannot load the key", "GOOGLE_PRIVATE_KEY")
    error, description, failure = _refresh(creds, token_uri, timeout)
    if failure is not None:
        return failure
    if error is None:
        return Probe(Verdict.OK, token_uri, "an access token was minted")
    if error in ("invalid_grant", "invalid_client", "unauthorized_client"):
        lowered = description.lower()
        if "signature" in lowered:
            variable = "GOOGLE_PRIVATE_KEY"  # a key Google does not know for this account (deleted, another's)
        elif "not found" in lowered or error != "invalid_grant":
            variable = "GOOGLE_CLIENT_EMAIL"
        else:
            variable = "GOOGLE_CLIENT_EMAIL / GOOGLE_PRIVATE_KEY"
        return Probe(Verdict.REFUSED, token_uri, error, variable)
    return Probe(Verdict.FAILING, token_uri, error)


def _refresh(creds: Any, token_uri: str, timeout: float) -> tuple[str | None, str, Probe | None]:
    """Refresh ``creds`` once: (OAuth error code or None on success, its description, or a Probe when
    there was no OAuth answer at all). The description is for classifying only: never shown."""
    import requests
    from google.auth import exceptions as auth_exceptions
    from google.auth.transport.requests import Request

    class _Request(Request):
        """google-auth's requests transport with our timeout (a refresh passes none)."""

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            kwargs["timeout"] = timeout
            return super().__call__(*args, **kwargs)  # type: ignore[no-untyped-call]

    with requests.Session() as session:
        try:
            creds.refresh(_Request(session))
        except auth_exceptions.RefreshError as exc:
            data = exc.args[1] if len(exc.args) > 1 and isinstance(exc.args[1], dict) else {}
            error = str(data.get("error") or "")
            if not error:
                return None, "", Probe(Verdict.FAILING, token_uri, "the answer was not an OAuth error "
                                                                   "(is GOOGLE_TOKEN_URI the token endpoint?)")
            return error, str(data.get("error_description") or ""), None
        except auth_exceptions.TransportError as exc:
            cause = exc.args[0] if exc.args else exc
            return None, "", Probe(Verdict.UNREACHABLE, token_uri, type(cause).__name__)
    return None, "", None
