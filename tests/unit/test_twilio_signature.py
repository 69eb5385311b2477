"""Twilio request signatures, TwiML and webhook options, without a server."""

from __future__ import annotations

from xml.etree import ElementTree

import pytest
from multidict import MultiDict
from twilio.request_validator import RequestValidator

from omni_rtc.calls import CallOptions
from signaling.twilio import options_from, twilio_signature, twiml, url_variants
from signaling.validation import BadRequest

TOKEN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("url", "params"),
    [
        ("https://example.org/twilio/voice", []),
        ("https://example.org/twilio/voice?voice=Ethan&instructions=Be%20brief", []),
        (
            "https://example.org:8443/twilio/voice",
            [("CallSid", "CA1"), ("From", "+15550100"), ("Digits", "2"), ("Digits", "1")],
        ),
        ("wss://example.org/twilio/stream", []),
        ("https://example.org/twilio/voice", [("Caller", "Zoë ☎"), ("A", ""), ("B", "x&y=z")]),
    ],
)
def test_signature_matches_twilios_own_validator(url: str, params: list[tuple[str, str]]) -> None:
    expected = RequestValidator(TOKEN).compute_signature(url, MultiDict(params))
    assert twilio_signature(TOKEN, url, params) == expected
    assert twilio_signature("another-token-entirely-0000000000", url, params) != expected


def test_url_variants_cover_schemes_and_default_ports() -> None:
    variants = url_variants("https://example.org/twilio/voice?voice=Ethan")
    for url in (
        "https://example.org/twilio/voice?voice=Ethan",
        "https://example.org:443/twilio/voice?voice=Ethan",
        "http://example.org/twilio/voice?voice=Ethan",
        "wss://example.org/twilio/voice?voice=Ethan",
    ):
        assert url in variants
    assert "http://127.0.0.1:8080/x" in url_variants("https://127.0.0.1:8080/x")
    assert "https://[::1]:8080/x" in url_variants("https://[::1]:8080/x")


def test_twiml_escapes_and_splits_long_instructions() -> None:
    text = 'Say "hi" & <smile>. ' * 50
    document = twiml("wss://h/twilio/stream", CallOptions("Ethan", text, "manual"))
    root = ElementTree.fromstring(document)  # noqa: S314 (our own output)
    stream = root.find("Connect/Stream")
    assert stream is not None
    assert stream.get("url") == "wss://h/twilio/stream"
    params = [(p.get("name"), p.get("value")) for p in stream.findall("Parameter")]
    assert params[0] == ("voice", "Ethan")
    assert params[-1] == ("mode", "manual")
    parts = [v or "" for n, v in params if (n or "").startswith("instructions_")]
    assert "".join(parts) == text
    assert all(len(p) <= 400 for p in parts)


def test_options_are_validated() -> None:
    assert options_from({"voice": "Ethan", "other": "x"}) == CallOptions("Ethan", None, None)
    assert options_from({"voice": "", "mode": "manual"}) == CallOptions(None, None, "manual")
    with pytest.raises(BadRequest, match="mode"):
        options_from({"mode": "loud"})
    with pytest.raises(BadRequest, match="too long"):
        options_from({"instructions": "x" * 4001})
