"""The voice webhook's TwiML, request signatures, and who may reach the telephony routes.

Good requests are signed with the ``twilio`` package's own ``RequestValidator``.
"""

from __future__ import annotations

from urllib.parse import urlencode
from xml.etree import ElementTree

import aiohttp
import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from omni_rtc import Bridge as OmniBridge
from omni_rtc.emulator import Emulator, EmulatorConfig
from signaling.tokens import mint
from tests.conftest import run_bridge
from tests.helpers import wait_for
from tests.integration.test_twilio import only_call, ws_url
from tests.twilio_peer import MediaStreamPeer

TOKEN = "12345678901234567890123456789012"
FORM = {"CallSid": "CA0001", "AccountSid": "AC0001", "From": "+15550100", "To": "+15550199"}


def stream_of(twiml: str) -> tuple[str, dict[str, str]]:
    root = ElementTree.fromstring(twiml)  # noqa: S314 (our own server's answer)
    assert root.tag == "Response"
    (connect,) = list(root)
    assert connect.tag == "Connect"
    (stream,) = list(connect)
    assert stream.tag == "Stream"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    return stream.get("url", ""), parameters  # type: ignore[return-value]


async def post_voice(
    base: str, query: str = "", headers: dict[str, str] | None = None, form: dict | None = None
) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{base}/twilio/voice{query}", data=form or FORM, headers=headers) as r,
    ):
        return r.status, r.headers.get("Content-Type", ""), await r.text()


def signed(url: str, form: dict[str, str] | None = None) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(url, form or {})}


async def test_twiml_connects_the_call_to_the_stream_with_parameters() -> None:
    instructions = "Answer briefly, in a friendly way. " * 30  # > Twilio's 500-character limit
    query = "?" + urlencode({"voice": "Ethan", "mode": "server_vad", "instructions": instructions})
    async with run_bridge() as bridge:
        status, content_type, body = await post_voice(bridge.url, query)
        url, parameters = stream_of(body)
        # the stream started with those parameters gets them back, long text included
        peer = MediaStreamPeer(ws_url(bridge), parameters=parameters)
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            session = only_call(bridge).conversation.session
        finally:
            await peer.close()
        bad_voice = await post_voice(bridge.url, "?voice=Nobody")
        bad_mode = await post_voice(bridge.url, "?mode=loud")
        twice = await post_voice(bridge.url, "?voice=Ethan&voice=Chelsie")
    assert status == 200
    assert content_type.startswith("text/xml")
    assert body.startswith('<?xml version="1.0" encoding="UTF-8"?><Response>')
    assert url == bridge.url.replace("http://", "wss://") + "/twilio/stream"
    assert parameters["voice"] == "Ethan"
    assert parameters["mode"] == "server_vad"
    assert "instructions" not in parameters
    assert all(len(k) + len(v) < 500 for k, v in parameters.items())
    assert session.voice == "Ethan"
    assert session.instructions == instructions
    assert bad_voice[0] == 400
    assert "unknown voice" in bad_voice[2]
    assert bad_mode[0] == 400
    assert twice[0] == 400


async def test_public_url_and_a_local_proxy_name_the_stream_host() -> None:
    async with run_bridge(["--public-url", "https://voice.example.org/phone/"]) as bridge:
        _, _, body = await post_voice(bridge.url)
        public, _ = stream_of(body)
    async with run_bridge() as bridge:
        _, _, body = await post_voice(bridge.url, headers={"X-Forwarded-Host": "calls.example.net"})
        local_proxy, _ = stream_of(body)
    # an unsigned request that a proxy relayed from elsewhere gets in only when allowed
    async with run_bridge(["--allow-unsigned-media-streams"]) as bridge:
        _, _, body = await post_voice(
            bridge.url,
            headers={"X-Forwarded-Host": "calls.example.net", "X-Forwarded-For": "203.0.113.9"},
        )
        proxied, _ = stream_of(body)
    assert public == "wss://voice.example.org/phone/twilio/stream"
    assert local_proxy == "wss://calls.example.net/twilio/stream"
    assert proxied == "wss://calls.example.net/twilio/stream"


async def test_the_twiml_follows_a_mount_prefix() -> None:
    async with Emulator(EmulatorConfig()) as emulator:
        bridge = OmniBridge(upstream_url=emulator.url)
        app = web.Application()
        bridge.mount(app, "/voice/", page=False)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{runner.addresses[0][1]}/voice"
        try:
            status, _, body = await post_voice(base)
        finally:
            await runner.cleanup()
    assert status == 200
    assert stream_of(body)[0] == base.replace("http://", "wss://") + "/twilio/stream"


async def test_signatures_are_checked_with_the_auth_token() -> None:
    query = "?voice=Ethan"
    async with run_bridge(["--twilio-auth-token", TOKEN]) as bridge:
        url = bridge.url + "/twilio/voice" + query
        unsigned = await post_voice(bridge.url, query)
        wrong = await post_voice(bridge.url, query, {"X-Twilio-Signature": "bm90IHRoaXM="})
        tampered = await post_voice(bridge.url, query, signed(url, FORM), {**FORM, "From": "x"})
        good = await post_voice(bridge.url, query, signed(url, FORM))
        https = url.replace("http://", "https://")  # signed as Twilio saw it, behind TLS
        behind_tls = await post_voice(bridge.url, query, signed(https, FORM))
        other_token = {
            "X-Twilio-Signature": RequestValidator("x" * 32).compute_signature(url, FORM)
        }
        wrong_token = await post_voice(bridge.url, query, other_token)
        odd_host = await post_voice(bridge.url, query, {"Host": "h:abc", **signed(url, FORM)})
        async with (  # a webhook configured for GET: parameters in the URL, none in a body
            aiohttp.ClientSession() as session,
            session.get(url + "&CallSid=CA1", headers=signed(url + "&CallSid=CA1")) as r,
        ):
            by_get = r.status, await r.text()
    assert [unsigned[0], wrong[0], tampered[0], wrong_token[0], odd_host[0]] == [403] * 5
    assert "X-Twilio-Signature" in unsigned[2]
    assert good[0] == 200
    assert stream_of(good[2])[1] == {"voice": "Ethan"}
    assert behind_tls[0] == 200
    assert by_get[0] == 200
    assert stream_of(by_get[1])[1] == {"voice": "Ethan"}


async def test_the_stream_upgrade_is_signed_too() -> None:
    async with run_bridge(["--twilio-auth-token", TOKEN]) as bridge:
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(ws_url(bridge))
            with pytest.raises(aiohttp.WSServerHandshakeError) as wrong:
                await session.ws_connect(ws_url(bridge), headers={"X-Twilio-Signature": "AAAA"})
        # the URL the TwiML named, as Twilio signs it (wss://, no parameters)
        _, _, body = await post_voice(
            bridge.url, headers=signed(bridge.url + "/twilio/voice", FORM)
        )
        stream_url, _ = stream_of(body)
        peer = MediaStreamPeer(ws_url(bridge), headers=signed(stream_url))
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
        finally:
            await peer.close()
    assert refused.value.status == 403
    assert wrong.value.status == 403


@pytest.mark.parametrize(
    ("argv", "headers", "expected"),
    [
        ([], {}, 200),  # a local test: no proxy, no token
        ([], {"X-Forwarded-For": "203.0.113.9"}, 403),  # a tunnel or proxy: not local
        ([], {"Forwarded": "for=203.0.113.9"}, 403),
        (["--allow-unsigned-media-streams"], {"X-Forwarded-For": "203.0.113.9"}, 200),
    ],
    ids=["local", "proxied", "forwarded", "allowed-unsigned"],
)
async def test_without_a_token_only_local_requests_get_in(argv, headers, expected) -> None:  # type: ignore[no-untyped-def]
    async with run_bridge(argv) as bridge:
        voice = await post_voice(bridge.url, headers=headers)
        async with aiohttp.ClientSession() as session:
            try:
                ws = await session.ws_connect(ws_url(bridge, "telnyx"), headers=headers)
                stream = 101
                await ws.close()
            except aiohttp.WSServerHandshakeError as exc:
                stream = exc.status
            async with session.get(bridge.url + "/twilio/stream", headers=headers) as r:
                plain = r.status
    assert voice[0] == expected
    if expected == 403:
        assert "--twilio-auth-token" in voice[2]
    assert stream == (101 if expected == 200 else 403)
    assert plain == (400 if expected == 200 else 403)  # not a WebSocket upgrade


async def test_telnyx_and_plivo_need_an_explicit_opt_in_when_a_twilio_token_is_set() -> None:
    headers = {"X-Forwarded-For": "203.0.113.9"}
    async with (
        run_bridge(["--twilio-auth-token", TOKEN]) as bridge,
        aiohttp.ClientSession() as session,
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(bridge, "plivo"), headers=headers)
    async with run_bridge(
        ["--twilio-auth-token", TOKEN, "--allow-unsigned-media-streams"]
    ) as bridge:
        peer = MediaStreamPeer(ws_url(bridge, "plivo"), dialect="plivo", headers=headers)
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
        finally:
            await peer.close()
        unsigned_twilio = await post_voice(bridge.url, headers=headers)
    assert refused.value.status == 403
    assert unsigned_twilio[0] == 403  # the token still guards Twilio's own routes


async def test_a_telnyx_or_plivo_stream_may_carry_the_access_token() -> None:
    access = "an-access-token-of-32-characters"
    far = {"X-Forwarded-For": "203.0.113.9"}  # from elsewhere: not a local test
    async with run_bridge(["--access-token", access]) as bridge:
        base = ws_url(bridge, "plivo")
        async with aiohttp.ClientSession() as session:
            for query in ("", "?token=wrong"):
                with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                    await session.ws_connect(base + query, headers=far)
                assert refused.value.status == 403
        link = mint(access, 600, voice="Serena")  # a call link fixes the voice
        peer = MediaStreamPeer(f"{base}?token={link}&voice=Ethan", dialect="plivo", headers=far)
        try:
            await peer.connect()
            await wait_for(lambda: bridge.manager.active == 1, timeout=10)
            voice = only_call(bridge).conversation.session.voice
        finally:
            await peer.close()
    assert voice == "Serena"
