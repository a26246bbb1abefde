"""Provider HTTP failures are normalized into the few kinds the worker acts on."""

from __future__ import annotations

import email.utils
import json

import aiohttp
import pytest
from multidict import CIMultiDict

from bot.errors import GeneratorError, GeneratorErrorKind
from bot.generators.base import (
    JobState,
    classify_http_error,
    classify_transport_error,
    parse_retry_after,
)

K = GeneratorErrorKind


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (400, {"error": "prompt must not be empty"}, K.INVALID_INPUT),
        (422, {"detail": [{"loc": ["body", "duration"], "msg": "must be <= 10"}]}, K.INVALID_INPUT),
        (404, {"detail": "Prediction not found"}, K.INVALID_INPUT),
        (413, "Request Entity Too Large", K.INVALID_INPUT),
        (401, {"detail": "Invalid token."}, K.AUTH),
        (403, {"error": {"message": "You do not have access to this model"}}, K.AUTH),
        (402, {"detail": "Insufficient credit"}, K.AUTH),
        (429, {"detail": "Request was throttled."}, K.RATE_LIMITED),
        (500, {"error": "internal error"}, K.UNAVAILABLE),
        (502, b"<html><body>Bad Gateway</body></html>", K.UNAVAILABLE),
        (503, None, K.UNAVAILABLE),
        (504, "upstream timed out", K.UNAVAILABLE),
        (408, None, K.UNAVAILABLE),
        (200, {"unexpected": True}, K.UNKNOWN),
        (302, "", K.UNKNOWN),
    ],
)
def test_status_codes_map_to_kinds(status: int, body: object, kind: GeneratorErrorKind):
    error = classify_http_error(status, body, {})
    assert isinstance(error, GeneratorError)
    assert error.kind == kind
    assert f"HTTP {status}" in error.message


@pytest.mark.parametrize(
    "body",
    [
        {"detail": "NSFW content detected. Try a different prompt."},
        {"error": {"message": "Your request was rejected by our safety system."}},
        {"error": {"code": "content_policy_violation", "message": "Request refused"}},
        "The prompt violates our Content Policy",
        {"errors": ["Input was flagged by moderation"]},
        json.dumps({"detail": "blocked by moderation"}).encode(),
    ],
)
def test_content_policy_words_make_a_content_policy_error(body: object):
    error = classify_http_error(400, body, {})
    assert error.kind == K.CONTENT_POLICY
    assert not error.transient


def test_a_content_policy_refusal_on_403_or_422_is_still_content_policy():
    assert classify_http_error(403, {"detail": "nsfw"}, {}).kind == K.CONTENT_POLICY
    assert classify_http_error(422, {"detail": "safety check failed"}, {}).kind == K.CONTENT_POLICY


def test_451_is_content_policy():
    assert classify_http_error(451, None, {}).kind == K.CONTENT_POLICY


def test_parameter_names_that_contain_policy_words_are_not_refusals():
    body = {"detail": "safety_tolerance must be between 0 and 6; disable_nsfw_checker is read-only"}
    assert classify_http_error(422, body, {}).kind == K.INVALID_INPUT


def test_policy_words_do_not_turn_auth_rate_limits_or_outages_into_refusals():
    assert classify_http_error(401, {"detail": "moderation key invalid"}, {}).kind == K.AUTH
    assert classify_http_error(429, {"detail": "safety queue full"}, {}).kind == K.RATE_LIMITED
    assert classify_http_error(503, {"detail": "safety service down"}, {}).kind == K.UNAVAILABLE


@pytest.mark.parametrize(
    "body",
    [
        b"\x00\x01\x02\xff\xfe binary junk",
        b"<!DOCTYPE html><html><title>Attention Required! | Cloudflare</title></html>",
        '{"detail": "unterminated',
        object(),
    ],
)
def test_a_garbage_body_on_a_4xx_is_unknown(body: object):
    error = classify_http_error(403, body, {})
    assert error.kind == K.UNKNOWN
    assert error.transient
    assert "unreadable response body" in error.message


def test_the_providers_message_is_kept_short_in_the_error():
    error = classify_http_error(400, {"error": {"message": "x" * 5000}}, {}, provider="replicate")
    assert error.message.startswith("replicate HTTP 400 (invalid input): xxx")
    assert len(error.message) < 400


def test_rate_limited_takes_retry_after_in_seconds():
    error = classify_http_error(429, {"detail": "slow down"}, {"Retry-After": "17"})
    assert error.kind == K.RATE_LIMITED
    assert error.retry_after == 17.0
    assert error.transient


def test_retry_after_is_found_whatever_the_header_case_or_container():
    assert classify_http_error(429, None, {"retry-after": "3"}).retry_after == 3.0
    assert classify_http_error(429, None, CIMultiDict({"RETRY-AFTER": "4"})).retry_after == 4.0
    assert classify_http_error(429, None, [("Retry-After", "5")]).retry_after == 5.0


def test_retry_after_as_an_http_date():
    when = email.utils.formatdate(1_000_030, usegmt=True)
    assert parse_retry_after({"Retry-After": when}, now=1_000_000) == pytest.approx(30)
    assert parse_retry_after({"Retry-After": when}, now=1_000_100) == 0.0


def test_retry_after_ms_and_the_body_field_are_understood():
    assert classify_http_error(429, None, {"retry-after-ms": "1500"}).retry_after == 1.5
    assert classify_http_error(429, {"retry_after": 2.5}, {}).retry_after == 2.5


def test_unreadable_retry_after_is_ignored():
    assert classify_http_error(429, None, {"Retry-After": "soon"}).retry_after is None
    assert classify_http_error(429, None, {"Retry-After": "-5"}).retry_after == 0.0
    assert classify_http_error(429, None, None).retry_after is None


def test_unavailable_keeps_retry_after_but_other_kinds_drop_it():
    assert classify_http_error(503, None, {"Retry-After": "60"}).retry_after == 60.0
    assert classify_http_error(400, None, {"Retry-After": "60"}).retry_after is None


def test_timeouts_and_connection_failures_are_unavailable():
    assert classify_transport_error(TimeoutError()).kind == K.UNAVAILABLE
    assert classify_transport_error(ConnectionRefusedError()).kind == K.UNAVAILABLE
    assert classify_transport_error(aiohttp.ServerDisconnectedError()).kind == K.UNAVAILABLE
    assert classify_transport_error(RuntimeError("what")).kind == K.UNKNOWN


def test_an_aiohttp_response_error_is_classified_by_its_status():
    exc = aiohttp.ClientResponseError(
        request_info=None,  # type: ignore[arg-type]
        history=(),
        status=429,
        message="Too Many Requests",
        headers=CIMultiDict({"Retry-After": "9"}),
    )
    error = classify_transport_error(exc, provider="fal")
    assert (error.kind, error.retry_after) == (K.RATE_LIMITED, 9.0)


def test_job_states_are_plain_strings_that_know_when_they_are_final():
    assert JobState("done") is JobState.DONE and JobState.DONE == "done"
    assert [s.finished for s in JobState] == [False, False, True, True, True]
