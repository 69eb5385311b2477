"""Edge validation as pure functions: bounded JSON, content types, SDP line checks."""

import pytest
from aiohttp import web

from signaling.validation import (
    BadRequest,
    UnsupportedMediaType,
    check_json_content_type,
    check_sdp_offer,
    decode_utf8,
    parse_json,
)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[" * 40_000 + "]" * 40_000, "nested too deeply"),
        ('{"a":' * 40_000 + "1" + "}" * 40_000, "nested too deeply"),
        ("9" * 5000, "number too long"),
        ('{"n": -' + "1" * 33 + "}", "number too long"),
        ('{"n": 1.' + "5" * 40 + "}", "number too long"),
        ("NaN", "NaN is not JSON"),
        ('{"x": -Infinity}', "-Infinity is not JSON"),
        ('{"instructions": "\\ud800"}', "'instructions' contains an invalid Unicode escape"),
        ('{"\\udfff": 1}', "a key contains an invalid Unicode escape"),
        ('{"list": ["ok", "\\ud83d"]}', "'list' contains"),
        ("{not json", "not valid JSON"),
        ("", "not valid JSON"),
        ("\ufeff{}", "not valid JSON"),
    ],
)
def test_bad_json_is_a_bad_request(text: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        parse_json(text)
    assert info.value.status == 400


def test_good_json_within_the_limits_parses() -> None:
    text = '{"a": [' * 15 + '"[{not brackets}]", 12, 1.5e3, "\\ud83d\\ude00"' + "]}" * 15
    assert parse_json(text)["a"][0]["a"][0]
    assert parse_json('{"n": ' + "9" * 32 + "}") == {"n": int("9" * 32)}


def test_body_encoding_and_content_type() -> None:
    check_json_content_type("application/json", None)
    check_json_content_type("application/json", "UTF-8")
    check_json_content_type("application/json", "utf8")
    for content_type, charset in (
        ("text/plain", None),
        ("application/octet-stream", None),
        ("application/json", "bogus"),
        ("application/json", "latin-1"),
        ("application/json", "utf-16"),
    ):
        with pytest.raises(UnsupportedMediaType) as info:
            check_json_content_type(content_type, charset)
        assert info.value.status == 415
    with pytest.raises(BadRequest, match="UTF-8"):
        decode_utf8(b'{"a": "\xff"}')


AUDIO = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\n"
    "m=audio 9 UDP/TLS/RTP/SAVPF 96\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\na=sendrecv\r\n"
    "a=rtpmap:96 opus/48000/2\r\na=ice-ufrag:abcd\r\na=ice-pwd:0123456789abcdefghijkl\r\n"
    "a=fingerprint:sha-256 " + ":".join(["AB"] * 32) + "\r\na=setup:actpass\r\n"
)


def test_a_minimal_offer_passes() -> None:
    assert [m.kind for m in check_sdp_offer(AUDIO, 10_000).media] == ["audio"]


@pytest.mark.parametrize(
    ("sdp", "message"),
    [
        (AUDIO.replace("a=mid:0", "a=mid:0\x00"), "line 8 contains a control character"),
        (AUDIO.replace("a=mid:0", "a=mid:"), "a=mid must be"),
        (AUDIO.replace("a=mid:0", "a=mid:a b"), "a=mid must be"),
        (AUDIO.replace("a=mid:0", "a=mid:" + "x" * 33), "a=mid must be"),
        (AUDIO.replace("BUNDLE 0", "BUNDLE 0 1"), "a=group names a media section"),
        (AUDIO + AUDIO[AUDIO.index("m=") :], "same a=mid"),
        (AUDIO + "garbage\r\n", "not of the form x=value"),
        (AUDIO.replace("sha-256", "md5"), "no hash aiortc checks"),
        (AUDIO.replace("a=sendrecv", "a=recvonly"), "receive-only"),
        (AUDIO.replace("m=audio", "m=video"), "no audio"),
        (AUDIO.replace("\ud800", "") + "a=x:\ud800\r\n", "lone surrogate"),
        ("hello", "must start with v=0"),
    ],
)
def test_bad_sdp_offers(sdp: str, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        check_sdp_offer(sdp, 10_000)


def test_too_many_media_sections() -> None:
    section = AUDIO[AUDIO.index("m=") :].replace("a=mid:0", "a=mid:{}")
    sdp = AUDIO.replace("a=group:BUNDLE 0\r\n", "") + "".join(
        section.format(i) for i in range(1, 9)
    )
    with pytest.raises(BadRequest, match="9 media sections"):
        check_sdp_offer(sdp, 100_000)
    with pytest.raises(BadRequest, match="too large"):
        check_sdp_offer(AUDIO, 100)


async def test_read_text_for_sdp_bodies() -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from signaling.app import errors_as_json
    from signaling.body import BODY_TIMEOUT, read_text

    async def whip(request: web.Request) -> web.Response:
        return web.Response(text=await read_text(request, "application/sdp"))

    app = web.Application(middlewares=[errors_as_json])
    app[BODY_TIMEOUT] = 5.0
    app.router.add_post("/whip", whip)
    async with TestClient(TestServer(app)) as client:
        results = []
        for content_type, body in (
            ("application/sdp", AUDIO.encode()),
            ("application/sdp; charset=utf-8", b"v=0"),
            ("application/json", b"v=0"),
            ("application/sdp; charset=latin-1", b"v=0"),
            ("application/sdp", b"v=0\xff"),
        ):
            response = await client.post("/whip", data=body, headers={"Content-Type": content_type})
            results.append((response.status, await response.text()))
    assert results[0] == (200, AUDIO)
    assert results[1] == (200, "v=0")
    assert [status for status, _ in results[2:]] == [415, 415, 400]
    assert all(text.startswith('{"error"') for _, text in results[2:])
