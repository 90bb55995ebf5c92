"""The Intercom client over real HTTP against the sandbox: URLs, headers, results, classification."""

from __future__ import annotations

import logging
import socket
import time

import pytest

from integrations.intercom.client import (
    AuthenticationError,
    IntercomClient,
    PermanentError,
    RateLimit,
    RateLimitedError,
    RetryableError,
    classify,
    error_for,
)
from integrations.models import Destination


def sandbox_client(sandbox, **kwargs) -> IntercomClient:
    options = {"connect_timeout": 2.0, "read_timeout": 5.0, **kwargs}
    return IntercomClient(base_url=sandbox.url, token=sandbox.token, api_version="2.16", **options)


@pytest.mark.parametrize(
    ("region", "base_url"),
    [
        (Destination.Region.US, "https://api.intercom.io"),
        (Destination.Region.EU, "https://api.eu.intercom.io"),
        (Destination.Region.AU, "https://api.au.intercom.io"),
    ],
)
def test_each_region_gets_its_base_url(region, base_url):
    destination = Destination(pk=7, region=region, access_token="tok-region", api_version="2.14")

    client = IntercomClient.from_destination(destination)

    assert client.base_url == base_url
    assert client.url_for("/me") == f"{base_url}/me"
    assert client.api_version == "2.14"


def test_a_custom_base_url_reaches_the_sandbox(intercom_sandbox, settings):
    settings.SWITCHBOARD_INTERCOM_READ_TIMEOUT = 3.5
    destination = Destination(
        pk=8,
        region=Destination.Region.CUSTOM,
        base_url=intercom_sandbox.url + "/",
        access_token=intercom_sandbox.token,
    )

    client = IntercomClient.from_destination(destination)
    result = client.me()

    assert client.timeout[1] == 3.5
    assert result.status == 200
    assert result.body["type"] == "admin"
    assert result.url == f"{intercom_sandbox.url}/me"


def test_clients_are_reused_per_destination_and_token(intercom_sandbox):
    destination = Destination(
        pk=9, region="custom", base_url=intercom_sandbox.url, access_token="first-token"
    )
    first = IntercomClient.from_destination(destination)
    assert IntercomClient.from_destination(destination) is first

    destination.access_token = "rotated-token"
    assert IntercomClient.from_destination(destination) is not first


def test_every_request_carries_intercoms_headers(intercom_sandbox):
    client = sandbox_client(intercom_sandbox)

    client.request("POST", "/contacts", body={"role": "user", "external_id": "u-1"})

    [logged] = intercom_sandbox.requests
    headers = {k.lower(): v for k, v in logged["headers"].items()}
    assert logged["authorized"] is True
    assert headers["intercom-version"] == "2.16"
    assert headers["accept"] == "application/json"
    assert headers["content-type"] == "application/json"
    assert headers["user-agent"].startswith("switchboard/")


def test_a_result_holds_status_body_excerpt_and_duration(intercom_sandbox):
    client = sandbox_client(intercom_sandbox)

    result = client.request("POST", "/contacts", body={"role": "user", "external_id": "u-2"})

    assert result.status == 200
    assert result.ok
    assert result.body["external_id"] == "u-2"
    assert '"external_id": "u-2"' in result.excerpt
    assert result.duration_ms >= 0
    assert result.network_error == ""


def test_long_answers_are_cut_to_an_excerpt(intercom_sandbox):
    client = sandbox_client(intercom_sandbox)
    long_name = "n" * 200
    for index in range(40):
        client.request("POST", "/tags", body={"name": f"{long_name}{index}"})

    result = client.request("GET", "/tags")

    assert len(result.excerpt) == 4096
    assert len(result.body["data"]) == 40  # the parsed body is whole


def test_query_parameters_are_encoded(intercom_sandbox):
    client = sandbox_client(intercom_sandbox)
    client.request("POST", "/companies", body={"company_id": "a&b c", "name": "Acme"})

    result = client.request("GET", "/companies", params={"company_id": "a&b c"})

    assert result.status == 200
    assert [c["name"] for c in result.body["data"]] == ["Acme"]


# --- classification -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "creating", "kind", "error_class"),
    [
        (400, False, "permanent", PermanentError),
        (401, False, "auth", AuthenticationError),
        (403, False, "permanent", PermanentError),
        (404, False, "permanent", PermanentError),
        (408, False, "retryable", RetryableError),
        (409, True, "retryable", RetryableError),
        (409, False, "permanent", PermanentError),
        (422, False, "permanent", PermanentError),
        (429, False, "rate_limited", RateLimitedError),
        (500, False, "retryable", RetryableError),
        (502, False, "retryable", RetryableError),
        (503, False, "retryable", RetryableError),
        (504, False, "retryable", RetryableError),
    ],
)
def test_each_status_is_classified(intercom_sandbox, status, creating, kind, error_class):
    intercom_sandbox.configure(force_status=status, force_count=1)
    client = sandbox_client(intercom_sandbox)

    result = client.request("POST", "/contacts", body={"role": "user", "external_id": "u-3"})
    verdict = classify(result, creating=creating)

    assert result.status == status
    assert verdict.kind == kind
    assert verdict.code  # Intercom's error code from the error.list envelope
    error = error_for(result, creating=creating)
    assert type(error) is error_class
    assert error.status == status
    assert error.code == verdict.code
    assert verdict.message in str(error)


def test_success_is_success(intercom_sandbox):
    result = sandbox_client(intercom_sandbox).me()

    assert classify(result).kind == "success"
    with pytest.raises(ValueError):
        error_for(result)


def test_a_wrong_token_is_an_authentication_error(intercom_sandbox):
    client = IntercomClient(base_url=intercom_sandbox.url, token="wrong", api_version="2.16")

    result = client.me()

    assert result.status == 401
    assert classify(result).kind == "auth"
    assert classify(result).message == "Access Token Invalid"


def test_a_refused_connection_is_a_retryable_network_error():
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = IntercomClient(
        base_url=f"http://127.0.0.1:{port}", token="tok", api_version="2.16", connect_timeout=1
    )

    result = client.me()

    assert result.status is None
    assert "ConnectionError" in result.network_error
    assert classify(result).kind == "retryable"
    assert isinstance(error_for(result), RetryableError)


def test_a_hanging_answer_times_out_as_retryable(intercom_sandbox):
    intercom_sandbox.configure(hang_rate=1.0, hang_seconds=5)
    client = sandbox_client(intercom_sandbox, read_timeout=0.3)

    result = client.me()

    assert result.status is None
    assert result.network_error.startswith("timeout")
    assert classify(result).kind == "retryable"


def test_rate_limit_headers_are_read(intercom_sandbox):
    intercom_sandbox.configure(rate_limit=3)
    client = sandbox_client(intercom_sandbox)

    first = client.me()

    assert first.rate_limit is not None
    assert first.rate_limit.limit == 3
    assert first.rate_limit.remaining == 2
    assert first.rate_limit.reset_at % 10 == 0
    assert first.rate_limit.reset_at > time.time() - 1


def test_a_429_carries_the_reset_time(intercom_sandbox):
    intercom_sandbox.configure(rate_limit=1)
    client = sandbox_client(intercom_sandbox)
    client.me()

    # The window may roll over between the two calls; then the second one is allowed.
    second = client.me()
    if second.status != 429:
        second = client.me()

    assert second.status == 429
    error = error_for(second)
    assert isinstance(error, RateLimitedError)
    assert error.reset_at == second.rate_limit.reset_at
    assert error.code == "rate_limit_exceeded"


def test_the_limiter_is_asked_before_and_told_after_each_request(intercom_sandbox):
    intercom_sandbox.configure(rate_limit=50)
    calls: list[tuple] = []

    class RecordingLimiter:
        def acquire(self) -> None:
            calls.append(("acquire",))

        def observe(self, rate_limit: RateLimit | None, status: int | None) -> None:
            calls.append(("observe", rate_limit.limit if rate_limit else None, status))

    client = sandbox_client(intercom_sandbox, limiter=RecordingLimiter())
    client.me()
    client.request("GET", "/contacts/nobody")

    assert calls == [("acquire",), ("observe", 50, 200), ("acquire",), ("observe", 50, 404)]


# --- secrets --------------------------------------------------------------------------------


def test_the_token_never_appears_in_logs_reprs_or_errors(intercom_sandbox, caplog):
    caplog.set_level(logging.DEBUG)
    token = intercom_sandbox.token
    client = sandbox_client(intercom_sandbox)
    wrong = IntercomClient(base_url=intercom_sandbox.url, token="s3cret-wrong", api_version="2.16")
    unreachable = IntercomClient(
        base_url="http://127.0.0.1:9", token=token, api_version="2.16", connect_timeout=0.5
    )

    results = [
        client.me(),
        client.request("PUT", "/contacts/missing", body={"name": "x"}),
        wrong.me(),
        unreachable.me(),
    ]
    errors = [error_for(r) for r in results if not r.ok]

    texts = [caplog.text, repr(client), repr(wrong), repr(unreachable)]
    texts += [repr(r) for r in results] + [str(e) for e in errors] + [repr(e) for e in errors]
    assert caplog.records  # the client does log each exchange
    for text in texts:
        assert token not in text
        assert "s3cret-wrong" not in text
    logged_headers = [str(r["headers"]) for r in intercom_sandbox.requests]
    assert all(token not in h for h in logged_headers)


def test_a_netrc_entry_does_not_replace_the_token(intercom_sandbox, tmp_path, monkeypatch):
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login someone password other-secret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))

    result = sandbox_client(intercom_sandbox).me()

    assert result.status == 200
    assert intercom_sandbox.requests[0]["authorized"] is True
