"""Bad input at the HTTP edge: a matrix of malformed requests, bodies and SDP offers.

Each row must get its 4xx with a JSON ``{"error": ...}`` body, leave no traceback (and no
ERROR) in the log, and leave the server healthy; after the matrix the same server still
takes a good call, and no bad input opened a (paid) upstream session. Rows for the data
channel and for media belong here too, as they come.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
import pytest_asyncio
from aiortc import RTCConfiguration, RTCPeerConnection

from signaling.tokens import mint
from tests.conftest import Bridge, run_bridge
from tests.helpers import sine_pcm
from tests.peer import LoopingPcmTrack, TestPeer
from tests.rawhttp import raw_request, request

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOKEN = "matrix-access-token-0123456789"
AUTH = f"Bearer {TOKEN}"
APP_ORIGIN = "https://app.example.org"
MAX_BODY = 131_072


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def server() -> AsyncIterator[Bridge]:
    argv = [
        "--access-token",
        TOKEN,
        "--rate-limit",
        "0",
        "--allowed-origin",
        APP_ORIGIN,
        "--http-timeout",
        "2",
        "--max-body-bytes",
        str(MAX_BODY),
    ]
    async with run_bridge(argv) as bridge:
        yield bridge


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def sdp() -> str:
    """A browser-like offer: audio, video and a data channel (mids 0, 1, 2)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("audio")
    pc.addTransceiver("video")
    pc.createDataChannel("events")
    await pc.setLocalDescription(await pc.createOffer())
    offer = pc.localDescription.sdp
    await pc.close()
    return str(offer)


# ---------------------------------------------------------------- request builders

Build = Callable[[str], bytes]


def raw(data: bytes) -> Build:
    return lambda _sdp: data


def post(
    body: bytes | Callable[[str], bytes],
    *,
    content_type: str | None = "application/json",
    authorization: str | None = AUTH,
    headers: dict[str, str] | None = None,
) -> Build:
    def build(sdp: str) -> bytes:
        h = dict(headers or {})
        if content_type is not None:
            h["Content-Type"] = content_type
        if authorization is not None:
            h["Authorization"] = authorization
        return request("POST", "/offer", body(sdp) if callable(body) else body, h)

    return build


def offer(**fields: Any) -> Build:
    """A JSON offer (``sdp=...`` may be a function of the good SDP)."""

    def build(sdp: str) -> bytes:
        body = {"type": "offer", "sdp": sdp}
        for key, value in fields.items():
            body[key] = value(sdp) if callable(value) else value
        return json.dumps(body).encode()

    return post(build)


def sdp_with(change: Callable[[str], str]) -> Build:
    return offer(sdp=change)


def call_route(
    method: str, path: str, authorization: str | None = AUTH, headers: dict[str, str] | None = None
) -> Build:
    h = dict(headers or {})
    if authorization is not None:
        h["Authorization"] = authorization
    return raw(request(method, path, None, h))


def preflight(origin: str, method: str) -> Build:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    return call_route("OPTIONS", "/offer", None, headers)


HEAD = b"Host: 127.0.0.1\r\nConnection: close\r\n"


def raw_get(*header_lines: bytes, line: bytes = b"GET /healthz HTTP/1.1") -> Build:
    return raw(line + b"\r\n" + HEAD + b"".join(h + b"\r\n" for h in header_lines) + b"\r\n")


def raw_post(*header_lines: bytes, body: bytes = b"") -> Build:
    return raw(raw_get(*header_lines, line=b"POST /offer HTTP/1.1")("") + body)


def remove_lines(prefix: str) -> Callable[[str], str]:
    return lambda s: "".join(
        line for line in s.splitlines(keepends=True) if not line.startswith(prefix)
    )


def extra_sections(count: int) -> Callable[[str], str]:
    def change(s: str) -> str:
        audio = s[s.index("m=audio") : s.index("m=video")]
        return s + "".join(audio.replace("a=mid:0", f"a=mid:x{i}") for i in range(count))

    return change


TAMPERED = mint(TOKEN, 600)[:-4] + "AAAA"
EXPIRED = mint(TOKEN, 60, now=time.time() - 3600)


@dataclass(frozen=True)
class Row:
    id: str
    build: Build
    status: int
    error: str | None = None
    """A part of the error message (None: any message)."""


ROWS = [
    # ------------------------------------------------ refused by aiohttp's HTTP parser
    Row(
        "request-line-too-long", raw_get(line=b"GET /" + b"a" * 9000 + b" HTTP/1.1"), 400, "longer"
    ),
    Row("header-too-long", raw_get(b"X-Big: " + b"b" * 9000), 400, "longer than"),
    Row("too-many-headers", raw_get(*(b"X-%d: v" % i for i in range(200))), 400),
    Row("content-length-negative", raw_post(b"Content-Length: -5"), 400, "Content-Length"),
    Row("content-length-not-a-number", raw_post(b"Content-Length: five"), 400, "Content-Length"),
    Row("content-length-twice", raw_post(b"Content-Length: 2", b"Content-Length: 3"), 400),
    Row(
        "content-length-and-chunked",
        raw_post(b"Content-Length: 5", b"Transfer-Encoding: chunked", body=b"0\r\n\r\n"),
        400,
    ),
    Row(
        "bad-chunk-size",
        raw_post(b"Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"),
        400,
    ),
    Row("transfer-encoding-gzip", raw_post(b"Transfer-Encoding: gzip"), 400),
    Row("bad-method", raw_get(line=b"G(T /healthz HTTP/1.1"), 400),
    Row("tls-on-the-http-port", raw(b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03\r\n\r\n"), 400),
    Row("http-version-9", raw_get(line=b"GET /healthz HTTP/9.9"), 400),
    Row("bare-lf-line-endings", raw(b"GET /healthz HTTP/1.1\nHost: x\nConnection: close\n\n"), 400),
    Row("nul-in-a-header", raw_get(b"X-A: a\x00b"), 400),
    Row("space-in-a-header-name", raw_get(b"Bad Header: x"), 400),
    Row("obsolete-header-folding", raw_get(b"X-A: a", b"  folded"), 400),
    Row("url-without-slash", raw_get(line=b"GET healthz HTTP/1.1"), 400),
    Row("non-ascii-url", raw_get(line=b"GET /\xff\xfe HTTP/1.1"), 400),
    Row("unknown-expect", post(b"{}", headers={"Expect": "bogus"}), 417, "Unknown Expect"),
    # ------------------------------------------------ routes and methods
    Row("unknown-path", call_route("GET", "/nope"), 404),
    Row("get-offer", call_route("GET", "/offer"), 405),
    Row("put-offer", call_route("PUT", "/offer"), 405),
    Row("patch-a-call", call_route("PATCH", "/calls/abc"), 405),
    Row("delete-unknown-call", call_route("DELETE", "/calls/abc"), 404, "no such call"),
    Row("delete-very-long-id", call_route("DELETE", "/calls/" + "a" * 5000), 404, "no such call"),
    Row("delete-nul-id", call_route("DELETE", "/calls/%00"), 404, "no such call"),
    Row(
        "preflight-from-another-origin",
        preflight("https://evil.example", "POST"),
        403,
        "may not call",
    ),
    Row("preflight-for-a-wrong-method", preflight(APP_ORIGIN, "PUT"), 405),
    # ------------------------------------------------ access
    Row("no-authorization", post(b"{}", authorization=None), 401, "needs an access token"),
    Row("basic-authorization", post(b"{}", authorization=f"Basic {TOKEN}"), 401, "Bearer"),
    Row(
        "wrong-token",
        post(b"{}", authorization="Bearer wrong-token-0123456789"),
        401,
        "not a valid",
    ),
    Row("non-ascii-token", post(b"{}", authorization="Bearer t\u00e9st"), 401, "not a valid"),
    Row("tampered-call-link", post(b"{}", authorization=f"Bearer {TAMPERED}"), 401, "not a valid"),
    Row("expired-call-link", post(b"{}", authorization=f"Bearer {EXPIRED}"), 401, "expired"),
    Row("delete-without-token", call_route("DELETE", "/calls/abc", None), 401),
    # ------------------------------------------------ bodies
    Row("no-content-type", post(b"{}", content_type=None), 415, "application/json"),
    Row("text-plain", post(b"{}", content_type="text/plain"), 415, "application/json"),
    Row("form-urlencoded", post(b"sdp=1", content_type="application/x-www-form-urlencoded"), 415),
    Row("charset-bogus", post(b"{}", content_type="application/json; charset=bogus"), 415, "UTF-8"),
    Row(
        "charset-latin-1",
        post(b"{}", content_type="application/json; charset=latin-1"),
        415,
        "UTF-8",
    ),
    Row(
        "gzip-body",
        post(b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}),
        415,
        "compressed",
    ),
    Row("body-too-large", post(b'{"sdp": "' + b"x" * (MAX_BODY + 10) + b'"}'), 413, "too large"),
    Row(
        "body-shorter-than-content-length",
        post(b'{"type": ', headers={"Content-Length": "400"}),
        408,
        "did not arrive in time",
    ),
    Row("empty-body", post(b""), 400, "not valid JSON"),
    Row("not-json", post(b"{not json"), 400, "not valid JSON"),
    Row("invalid-utf-8", post(b'{"type": "\xff"}'), 400, "UTF-8"),
    Row("utf-8-bom", post(b'\xef\xbb\xbf{"type": "offer"}'), 400, "not valid JSON"),
    Row("utf-16-body", post('{"type": "offer"}'.encode("utf-16")), 400, "UTF-8"),
    Row("40000-deep-arrays", post(b"[" * 40_000 + b"]" * 40_000), 400, "nested too deeply"),
    Row(
        "25000-deep-objects",
        post(b'{"":' * 25_000 + b"1" + b"}" * 25_000),
        400,
        "nested too deeply",
    ),
    Row("5000-digit-integer", post(b'{"type": ' + b"9" * 5000 + b"}"), 400, "number too long"),
    Row("nan", post(b'{"type": NaN}'), 400, "NaN"),
    Row("infinity", post(b'{"type": -Infinity}'), 400, "Infinity"),
    Row("array-body", post(b"[1, 2]"), 400, "JSON object"),
    Row("string-body", post(b'"offer"'), 400, "JSON object"),
    Row("null-body", post(b"null"), 400, "JSON object"),
    Row("type-answer", offer(type="answer"), 400, "'type' must be"),
    Row("type-missing", post(lambda s: json.dumps({"sdp": s}).encode()), 400, "'type' must be"),
    Row("sdp-a-number", offer(sdp=42), 400, "'sdp' must be a non-empty string"),
    Row("sdp-empty", offer(sdp=""), 400, "'sdp' must be a non-empty string"),
    # ------------------------------------------------ per-call options
    Row(
        "lone-surrogate-in-instructions",
        offer(instructions="hi \ud800"),
        400,
        "'instructions' contains an invalid Unicode",
    ),
    Row("lone-surrogate-in-voice", offer(voice="\udfff"), 400, "'voice' contains"),
    Row(
        "lone-surrogate-in-sdp",
        sdp_with(lambda s: s.replace("s=-", "s=\ud83d")),
        400,
        "'sdp' contains",
    ),
    Row("lone-surrogate-in-a-key", offer(**{"\ud800": 1}), 400, "a key contains"),
    Row("nul-in-instructions", offer(instructions="be\x00brief"), 400, "control characters"),
    Row("instructions-too-long", offer(instructions="x" * 5000), 400, "too long"),
    Row("voice-a-number", offer(voice=5), 400, "'voice' must be a string"),
    Row("unknown-voice", offer(voice="Nobody"), 400, "unknown voice"),
    Row("bad-mode", offer(mode="walkie-talkie"), 400, "'mode' must be one of"),
    Row("mode-a-list", offer(mode=["manual"]), 400, "'mode' must be one of"),
    # ------------------------------------------------ SDP
    Row("sdp-not-v0", sdp_with(lambda s: "hello"), 400, "must start with v=0"),
    Row("sdp-garbage-line", sdp_with(lambda s: s + "garbage\r\n"), 400, "x=value"),
    Row(
        "nul-in-mid",
        sdp_with(lambda s: s.replace("a=mid:0", "a=mid:0\x00")),
        400,
        "control character",
    ),
    Row(
        "control-characters-in-mid",
        sdp_with(lambda s: s.replace("a=mid:0", "a=mid:\x01\x02")),
        400,
        "control character",
    ),
    Row("empty-mid", sdp_with(lambda s: s.replace("a=mid:0\r", "a=mid:\r")), 400, "a=mid"),
    Row("space-in-mid", sdp_with(lambda s: s.replace("a=mid:0", "a=mid:a b")), 400, "a=mid"),
    Row(
        "very-long-mid",
        sdp_with(lambda s: s.replace("a=mid:0", "a=mid:" + "m" * 200)),
        400,
        "a=mid",
    ),
    Row("duplicate-mid", sdp_with(lambda s: s.replace("a=mid:1", "a=mid:0")), 400, "same a=mid"),
    Row(
        "bundle-names-an-unknown-mid",
        sdp_with(lambda s: s.replace("BUNDLE 0 1 2", "BUNDLE 0 1 2 7")),
        400,
        "a=group",
    ),
    Row("40-media-sections", sdp_with(extra_sections(40)), 400, "media sections"),
    Row("no-audio", sdp_with(lambda s: s.replace("m=audio", "m=video")), 400, "no audio"),
    Row(
        "receive-only-audio",
        sdp_with(lambda s: s.replace("a=sendrecv", "a=recvonly", 1)),
        400,
        "receive-only",
    ),
    Row("inactive-audio", sdp_with(lambda s: s.replace("a=sendrecv", "a=inactive", 1)), 400),
    Row("no-fingerprint", sdp_with(remove_lines("a=fingerprint")), 400, "no DTLS fingerprint"),
    Row(
        "md5-fingerprint",
        sdp_with(lambda s: re.sub("a=fingerprint:sha-[0-9]+ ", "a=fingerprint:md5 ", s)),
        400,
        "no hash",
    ),
    Row("no-ice-credentials", sdp_with(remove_lines("a=ice-ufrag")), 400, "ICE username fragment"),
    Row(
        "bad-rtpmap",
        sdp_with(lambda s: s.replace("a=rtpmap:96 ", "a=rtpmap:abc ")),
        400,
        "could not be parsed",
    ),
    Row(
        "bad-port",
        sdp_with(lambda s: s.replace("m=audio ", "m=audio x")),
        400,
        "could not be parsed",
    ),
    Row(
        "bad-candidate",
        sdp_with(lambda s: s.replace("a=candidate:", "a=candidate:garbage\r\na=x:", 1)),
        400,
        "could not be parsed",
    ),
    Row(
        "bad-setup",
        sdp_with(lambda s: s.replace("a=setup:actpass", "a=setup:bogus")),
        400,
        "could not be parsed",
    ),
    Row(
        "bad-sctp-port",
        sdp_with(lambda s: s.replace("a=sctp-port:5000", "a=sctp-port:zz")),
        400,
        "could not be parsed",
    ),
]


async def test_the_matrix_is_large_enough() -> None:
    assert len(ROWS) >= 40
    assert len({row.id for row in ROWS}) == len(ROWS)


def port_of(bridge: Bridge) -> int:
    return int(bridge.url.rsplit(":", 1)[1])


@pytest.mark.parametrize("row", ROWS, ids=[row.id for row in ROWS])
async def test_bad_input_gets_a_json_4xx_and_leaves_no_traceback(
    row: Row, server: Bridge, sdp: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    response = await raw_request(port_of(server), row.build(sdp), timeout=20)
    health = await raw_request(port_of(server), request("GET", "/healthz"))

    assert response.status == row.status, response.body
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert body["error"]
    if row.error is not None:
        assert row.error in body["error"]
    assert "Traceback" not in body["error"]
    assert "NoneType" not in body["error"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert "Traceback" not in caplog.text
    assert health.status == 200
    assert health.json()["status"] == "ok"


async def test_the_server_still_takes_a_good_call_after_the_matrix(
    server: Bridge, caplog: pytest.LogCaptureFixture
) -> None:
    peer = TestPeer(
        server.url,
        LoopingPcmTrack(sine_pcm(1.0, 48_000)),
        headers={"Authorization": AUTH},
    )
    try:
        await peer.call()
        await peer.wait_connected()
        await peer.wait_message(lambda m: m.get("type") == "call")
        assert await peer.hangup() == 204
    finally:
        await peer.close()
    assert server.manager.active == 0
    assert len(server.emulator.sessions) == 1  # no bad input opened an upstream session
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
