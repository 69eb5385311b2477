"""Access control and cost limits at the edge: tokens, call links, rate limit, CORS,
TURN credentials, time limits on slow clients, and refusing to serve the world unprotected.
"""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import pytest

from signaling.tokens import mint
from tests.conftest import run_bridge
from tests.helpers import sine_pcm
from tests.integration.test_cli_servers import clean_env, free_port, read_until, start, stop
from tests.integration.test_signaling import offer_sdp
from tests.peer import LoopingPcmTrack, OfferRejected, TestPeer
from tests.rawhttp import raw_request, request

TOKEN = "edge-access-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def post_offer(
    url: str, body: object, headers: dict[str, str] | None = None
) -> tuple[int, dict, dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + "/offer", json=body, headers=headers or {}) as r,
    ):
        assert r.content_type == "application/json"
        return r.status, await r.json(), dict(r.headers)


def peer(url: str, headers: dict[str, str] | None = None) -> TestPeer:
    return TestPeer(url, LoopingPcmTrack(sine_pcm(1.0, 48_000)), headers=headers)


async def test_offer_and_hangup_need_the_access_token() -> None:
    async with run_bridge(["--access-token", TOKEN]) as bridge:
        offer = {"type": "offer", "sdp": await offer_sdp()}
        status, body, headers = await post_offer(bridge.url, offer)
        assert status == 401
        assert body == {"error": "this server needs an access token or a call link"}
        assert headers["WWW-Authenticate"] == 'Bearer realm="omni-rtc"'
        status, body, headers = await post_offer(
            bridge.url, offer, {"Authorization": "Bearer not-the-token"}
        )
        assert status == 401
        assert "invalid_token" in headers["WWW-Authenticate"]
        assert not bridge.emulator.sessions  # nothing opened for a stranger

        async with aiohttp.ClientSession() as http:
            async with http.delete(bridge.url + "/calls/someid") as r:
                assert (r.status, r.headers["WWW-Authenticate"][:6]) == (401, "Bearer")
                assert "error" in await r.json()
            async with http.delete(bridge.url + "/calls/someid", headers=BEARER) as r:
                assert r.status == 404

        caller = peer(bridge.url, BEARER)
        stranger = peer(bridge.url)
        try:
            await caller.call()
            await caller.wait_connected()
            with pytest.raises(OfferRejected) as info:
                await stranger.call()
            stranger.headers = {"Authorization": "Bearer x"}
            assert await stranger.hangup() == 401
            caller_id = caller.call_id
            stranger.call_id = caller_id
            assert await stranger.hangup() == 401  # cannot end someone else's call
            assert bridge.manager.active == 1
            assert await caller.hangup() == 204
        finally:
            await caller.close()
            await stranger.close()
    assert info.value.status == 401


async def test_call_links_bind_voice_and_mode_and_expire() -> None:
    async with run_bridge(["--access-token", TOKEN]) as bridge:
        link = mint(TOKEN, 600, voice="Ethan", mode="manual")
        caller = peer(bridge.url, {"Authorization": f"Bearer {link}"})
        try:
            await caller.call(voice="Chelsie", mode="server_vad")  # the link wins
            await caller.wait_connected()
            _, started = await caller.wait_message(lambda m: m.get("type") == "call")
        finally:
            await caller.close()
        assert (started["voice"], started["mode"]) == ("Ethan", "manual")

        offer = {"type": "offer", "sdp": await offer_sdp()}
        expired = mint(TOKEN, 60, now=time.time() - 3600)
        status, body, _ = await post_offer(
            bridge.url, offer, {"Authorization": f"Bearer {expired}"}
        )
        assert (status, body["error"]) == (401, "this call link has expired")
        tampered = link[:-4] + ("AAAA" if not link.endswith("AAAA") else "BBBB")
        foreign = mint("some-other-servers-token-0123", 600)
        for bad in (tampered, foreign, link + "x"):
            status, body, _ = await post_offer(
                bridge.url, offer, {"Authorization": f"Bearer {bad}"}
            )
            assert (status, body["error"]) == (401, "not a valid access token or call link")
        assert len(bridge.emulator.sessions) == 1  # only the valid link's call


async def get_config(url: str, headers: dict[str, str] | None = None) -> dict:
    async with aiohttp.ClientSession() as http, http.get(url + "/config", headers=headers) as r:
        assert r.status == 200
        return await r.json()


async def test_config_mints_turn_credentials_only_for_authorised_requests() -> None:
    ice = [
        "--ice-server",
        "stun:stun.example.org",
        "--ice-server",
        "turn:turn.example.org:3478",
        "--turn-secret",
        "0123456789abcdef0123",
    ]
    async with run_bridge([*ice, "--access-token", TOKEN]) as bridge:
        public = await get_config(bridge.url)
        wrong = await get_config(bridge.url, {"Authorization": "Bearer nope"})
        authorised = await get_config(bridge.url, BEARER)
        link = mint(TOKEN, 600, voice="Ethan", mode="manual", instructions="Be brief.")
        bound = await get_config(bridge.url, {"Authorization": f"Bearer {link}"})
    async with run_bridge(ice) as open_bridge:
        loopback = await get_config(open_bridge.url)

    assert public["ice_servers"] == [{"urls": "stun:stun.example.org"}]
    assert wrong["ice_servers"] == public["ice_servers"]
    assert (public["auth_required"], public["authorized"]) == (True, False)
    assert public["voices"]
    assert public["default_voice"] == "Chelsie"
    turn = authorised["ice_servers"][1]
    assert turn["urls"] == "turn:turn.example.org:3478"
    assert turn["username"].endswith(":omni-rtc-browser")
    assert turn["credential"]
    assert authorised["authorized"]
    assert bound["ice_servers"][1]["username"]
    assert (bound["default_voice"], bound["default_mode"], bound["instructions"]) == (
        "Ethan",
        "manual",
        "Be brief.",
    )
    assert loopback["ice_servers"][1]["credential"]  # no token configured: as before
    assert (loopback["auth_required"], loopback["authorized"]) == (False, True)


async def test_rate_limit_is_per_client_with_retry_after() -> None:
    bad = {"type": "offer", "sdp": "v=0"}
    async with run_bridge(["--rate-limit", "2/min"]) as bridge:
        statuses = [(await post_offer(bridge.url, bad))[0] for _ in range(2)]
        status, body, headers = await post_offer(bridge.url, bad)
        async with aiohttp.ClientSession() as http, http.get(bridge.url + "/healthz") as r:
            health = r.status
    assert statuses == [400, 400]  # refused attempts count too
    assert status == 429
    assert body == {"error": "too many calls from your address: try again later"}
    assert 1 <= int(headers["Retry-After"]) <= 30
    assert health == 200

    async with run_bridge(["--rate-limit", "1/min", "--trusted-proxy", "127.0.0.1"]) as bridge:
        a = {"X-Forwarded-For": "198.51.100.1"}
        b = {"X-Forwarded-For": "203.0.113.7, 198.51.100.2"}
        behind_proxy = [
            (await post_offer(bridge.url, bad, h))[0] for h in (a, a, b, {"X-Forwarded-For": "x"})
        ]
    assert behind_proxy == [400, 429, 400, 400]

    async with run_bridge(["--rate-limit", "1/min"]) as bridge:  # no trusted proxy: header ignored
        spoofed = [
            (await post_offer(bridge.url, bad, {"X-Forwarded-For": f"198.51.100.{i}"}))[0]
            for i in range(2)
        ]
    assert spoofed == [400, 429]


async def test_the_default_limit_spares_local_clients_but_not_remote_ones() -> None:
    """Benchmarks and tests on the machine itself are not strangers; a proxied stranger is."""
    bad = {"type": "offer", "sdp": "v=0"}
    async with run_bridge() as bridge:
        local = [(await post_offer(bridge.url, bad))[0] for _ in range(25)]
    assert set(local) == {400}
    async with run_bridge(["--trusted-proxy", "127.0.0.1"]) as bridge:
        remote = [
            (await post_offer(bridge.url, bad, {"X-Forwarded-For": "198.51.100.9"}))[0]
            for _ in range(21)
        ]
    assert remote == [400] * 20 + [429]  # the default 20/min, per remote client


async def options(url: str, path: str, origin: str, method: str) -> tuple[int, dict, str]:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    async with (
        aiohttp.ClientSession() as http,
        http.options(url + path, headers=headers) as r,
    ):
        return r.status, dict(r.headers), await r.text()


async def test_cors_preflight_for_allowed_origins_only() -> None:
    app_origin = "https://app.example.org"
    async with run_bridge(["--allowed-origin", app_origin]) as bridge:
        ok = await options(bridge.url, "/offer", app_origin, "POST")
        delete = await options(bridge.url, "/calls/abc", app_origin, "DELETE")
        evil = await options(bridge.url, "/offer", "https://evil.example", "POST")
        wrong_method = await options(bridge.url, "/offer", app_origin, "PUT")
        unknown_path = await options(bridge.url, "/nope", app_origin, "POST")
        async with aiohttp.ClientSession() as http:
            async with http.post(
                bridge.url + "/offer", json={}, headers={"Origin": app_origin}
            ) as r:
                actual = (r.status, dict(r.headers))
            async with http.post(
                bridge.url + "/offer", json={}, headers={"Origin": "https://evil.example"}
            ) as r:
                actual_evil = (r.status, dict(r.headers))
    async with run_bridge() as plain:
        unconfigured = await options(plain.url, "/offer", app_origin, "POST")

    status, headers, _ = ok
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == app_origin
    assert headers["Access-Control-Allow-Methods"] == "POST"
    assert {h.strip() for h in headers["Access-Control-Allow-Headers"].split(",")} >= {
        "Authorization",
        "Content-Type",
    }
    assert "Origin" in headers["Vary"]
    assert delete[0] == 204
    assert delete[1]["Access-Control-Allow-Methods"] == "DELETE"
    for refused in (evil, wrong_method, unconfigured):
        assert refused[0] in (403, 405)
        assert not any(h.startswith("Access-Control-") for h in refused[1])
        assert "error" in json.loads(refused[2])
    assert evil[0] == 403
    assert unknown_path[0] == 404
    assert actual[0] == 400
    assert actual[1]["Access-Control-Allow-Origin"] == app_origin
    assert "Retry-After" in actual[1]["Access-Control-Expose-Headers"]
    assert "Access-Control-Allow-Origin" not in actual_evil[1]
    assert "Origin" in actual_evil[1]["Vary"]


async def test_half_open_connections_are_closed_after_the_http_timeout() -> None:
    async with run_bridge(["--http-timeout", "1"]) as bridge:
        port = port_of(bridge.url)
        silent = await asyncio.open_connection("127.0.0.1", port)
        partial = await asyncio.open_connection("127.0.0.1", port)
        partial[1].write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        await partial[1].drain()
        closed = await asyncio.wait_for(
            asyncio.gather(silent[0].read(), partial[0].read()), timeout=15
        )  # aiohttp's default would keep them for an hour
        for _, writer in (silent, partial):
            writer.close()
        slow_body = await raw_request(
            port,
            request(
                "POST",
                "/offer",
                b'{"type": ',
                {"Content-Type": "application/json", "Content-Length": "500"},
            ),
            timeout=15,
        )
        async with aiohttp.ClientSession() as http, http.get(bridge.url + "/healthz") as r:
            health = r.status
    assert closed == [b"", b""]
    assert slow_body.status == 408
    assert slow_body.json() == {"error": "the request body did not arrive in time"}
    assert health == 200


# ---------------------------------------------------------------- the real command


async def test_serve_refuses_a_public_host_without_a_token_and_says_why() -> None:
    process = await start("serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert process.stdout is not None
    output = (await asyncio.wait_for(process.stdout.read(), 30)).decode()
    assert await process.wait() == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("omni-rtc serve: error: refusing to listen on 0.0.0.0")
    assert "--access-token" in lines[0]
    assert "--no-auth" in lines[0]


async def test_serve_on_a_public_host_with_no_auth_says_it_is_open() -> None:
    port = free_port()
    process = await start("serve", "--host", "0.0.0.0", "--port", str(port), "--no-auth")
    try:
        banner = await read_until(process, "access:")
        await read_until(process, "ICE servers")
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz") as r,
        ):
            assert r.status == 200
    finally:
        await stop(process)
    assert "OPEN (--no-auth)" in banner


async def test_serve_with_a_token_from_env_file_checks_callers_and_answers_json(
    tmp_path,
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    env = clean_env()
    env.update({"OMNI_RTC_HOST": "0.0.0.0", "OMNI_RTC_ACCESS_TOKEN_FILE": str(token_file)})
    port = free_port()
    process = await start("serve", "--port", str(port), "--ice-host-address", "127.0.0.1", env=env)
    try:
        banner = await read_until(process, "ICE servers")
        offer = {"type": "offer", "sdp": await offer_sdp()}
        url = f"http://127.0.0.1:{port}"
        status, body, _ = await post_offer(url, offer)
        assert (status, body["error"]) == (401, "this server needs an access token or a call link")
        negative = await raw_request(
            port,
            b"POST /offer HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
        )
        caller = peer(url, BEARER)
        try:
            await caller.call()
            await caller.wait_connected()
        finally:
            await caller.close()
    finally:
        await stop(process)
    assert "the access token or a call link" in banner
    assert TOKEN not in banner
    assert negative.status == 400
    assert negative.headers["content-type"].startswith("application/json")
    assert negative.json() == {"error": "Invalid character in Content-Length"}
