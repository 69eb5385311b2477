"""WHIP (RFC 9725) with an aiortc client: sessions, trickle, direction, Link headers, errors."""

from __future__ import annotations

import asyncio
import re
import time

import pytest
from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.rtcconfiguration import RTCIceTransportPolicy

from omni_rtc.emulator import EmulatorConfig
from omni_rtc.emulator.replies import resample_pcm16
from signaling.whip import WHIP
from tests.conftest import Bridge, run_bridge
from tests.coturn import run_coturn
from tests.helpers import assert_at_most_fps, sine_pcm, wait_for
from tests.media import best_circular_correlation, envelope, load_pcm48
from tests.netns import require_loopback_namespace
from tests.peer import LoopingPcmTrack, PatternVideoTrack
from tests.whip_peer import SDP, SDPFRAG, WhipPeer, ice_credentials, request, split_candidates


def audio_direction(answer: str) -> str:
    """The direction attribute of the answer's audio m-section."""
    section = answer.split("m=audio", 1)[1].split("\nm=", 1)[0]
    return re.search(r"^a=(sendrecv|sendonly|recvonly|inactive)\r?$", section, re.M)[1]


def trickle_fragment(offer: str, candidates: list[str], end: bool = True) -> str:
    ufrag, pwd = ice_credentials(offer)
    lines = [f"a=ice-ufrag:{ufrag}", f"a=ice-pwd:{pwd}", "m=audio 9 UDP/TLS/RTP/SAVPF 0", "a=mid:0"]
    lines += candidates + (["a=end-of-candidates"] if end else [])
    return "\r\n".join(lines) + "\r\n"


def remote_candidates(bridge: Bridge) -> list[tuple[str, int, str]]:
    pc = bridge.manager.list()[0].pc
    transport = pc.getTransceivers()[0].receiver.transport.transport
    return [(c.ip, c.port, c.type) for c in transport.getRemoteCandidates()]


async def test_sendonly_publisher_with_trickle_reaches_the_model(speech_wav) -> None:
    speech = load_pcm48(speech_wav)
    loop_s = len(speech) / 2 / 48_000
    async with run_bridge() as bridge:
        peer = WhipPeer(
            bridge.url + "/whip",
            LoopingPcmTrack(speech),
            PatternVideoTrack(640, 480, fps=10),
        )
        try:
            offer = await peer.offer()
            bare, candidates = split_candidates(offer)
            assert candidates
            reply = await peer.publish(bare, "?voice=Ethan&mode=server_vad")
            assert reply.status == 201, reply.text
            assert reply.headers["Content-Type"] == SDP
            assert re.fullmatch(r"/whip/[A-Za-z0-9_-]{22}", reply.headers["Location"])
            assert re.fullmatch(r'"[A-Za-z0-9_-]+"', reply.headers["ETag"])
            assert reply.headers["Accept-Patch"] == SDPFRAG
            assert reply.links == []  # no ICE servers configured
            assert audio_direction(reply.text) == "recvonly"  # RFC 9725: the endpoint receives
            call = bridge.manager.list()[0]
            assert call.conversation.session.voice == "Ethan"
            # trickle: the offer had no candidates, the bridge gets them by PATCH
            patched = await peer.patch(trickle_fragment(offer, candidates))
            assert patched.status == 204, patched.text
            session = bridge.app[WHIP].sessions[call.id]
            assert (session.candidates, session.end_of_candidates) == (len(candidates), True)
            trickled = {(c.split()[4], int(c.split()[5])) for c in candidates}
            assert trickled <= {(ip, port) for ip, port, _ in remote_candidates(bridge)}
            await peer.wait_connected()
            record = bridge.emulator.sessions[0]
            # the reply is played into nothing (nobody hears it) and the turn completes
            await wait_for(lambda: call.reply_track.stats.reply_frames > 25, timeout=20)
            await wait_for(
                lambda: call.conversation.state == "listening" and record.responses >= 1, 20
            )
            await wait_for(lambda: len(record.audio) / 32_000 > loop_s * 1.3, timeout=20)
            assert call.reply_track.queued_ms < 100  # nothing piles up for a caller who can't hear
            # hang up
            hangup = await peer.delete()
            assert hangup.status == 200
            assert bridge.manager.active == 0
            await asyncio.wait_for(record.closed.wait(), 5)
            again = await peer.delete()
            assert (again.status, again.text) == (
                404,
                "no such WHIP session (it was deleted or never existed)\n",
            )
            assert (await peer.patch(trickle_fragment(offer, candidates))).status == 404
        finally:
            await peer.close()

    reference = envelope(resample_pcm16(speech, 48_000, 16_000), 16_000)
    received = envelope(bytes(record.audio), 16_000)
    r = best_circular_correlation(reference, received)
    assert r >= 0.8, f"envelope correlation {r:.2f}"
    assert best_circular_correlation(reference[::-1], received) < r - 0.2
    assert record.images, "no camera frames reached the model"
    assert all(i.accepted for i in record.images), [i.error for i in record.images]
    assert_at_most_fps([i.at for i in record.images], 2.0)
    assert (record.images[0].width, record.images[0].height) == (640, 480)


async def test_sendrecv_offer_gets_the_models_voice_back(speech_wav) -> None:
    """Our extension: a two-way voice call over WHIP (candidates in the offer, no trickle)."""
    async with run_bridge() as bridge:
        peer = WhipPeer(
            bridge.url + "/whip",
            LoopingPcmTrack(load_pcm48(speech_wav)),
            audio_direction="sendrecv",
        )
        try:
            reply = await peer.publish(await peer.offer(), "?mode=server_vad")
            assert reply.status == 201, reply.text
            assert audio_direction(reply.text) == "sendrecv"
            await peer.wait_connected()
            await wait_for(lambda: sum(1 for _, db in peer.levels if db > -50) > 25, 25)
            assert (await peer.delete()).status == 200
        finally:
            await peer.close()
    assert bridge.manager.active == 0


async def test_options_links_carry_minted_turn_credentials_that_work(speech_wav) -> None:
    """A client that configures itself from the Link headers connects through TURN only."""
    require_loopback_namespace()
    with run_coturn() as turn:
        argv = ["--ice-server", turn.url, "--turn-secret", turn.secret]
        async with run_bridge(argv) as bridge:
            options = await request("OPTIONS", bridge.url + "/whip")
            assert options.status == 204
            assert options.headers["Accept-Post"] == SDP
            assert set(options.headers["Allow"].split(", ")) == {"OPTIONS", "POST"}
            (link,) = options.links
            match = re.fullmatch(
                r'<(?P<url>[^>]+)>; rel="ice-server"; username="(?P<user>[^"]+)"; '
                r'credential="(?P<password>[^"]+)"; credential-type="password"',
                link,
            )
            assert match, link
            assert match["url"] == turn.url
            expiry, user = match["user"].split(":")
            assert user == "omni-rtc-whip"
            assert 3000 < int(expiry) - time.time() <= 3600
            relay_only = RTCConfiguration(
                iceServers=[RTCIceServer(match["url"], match["user"], match["password"])],
                iceTransportPolicy=RTCIceTransportPolicy.RELAY,
            )
            peer = WhipPeer(
                bridge.url + "/whip",
                LoopingPcmTrack(load_pcm48(speech_wav)),
                pc=RTCPeerConnection(relay_only),
            )
            try:
                reply = await peer.publish(await peer.offer())
                assert reply.status == 201, reply.text
                assert len(reply.links) == 1
                assert reply.links[0].startswith(f'<{turn.url}>; rel="ice-server"; username=')
                await peer.wait_connected(15)
                await wait_for(lambda: len(bridge.emulator.sessions[0].audio) > 32_000, 10)
                assert (await peer.delete()).status == 200
            finally:
                await peer.close()


# ------------------------------------------------------------------------------- errors


async def offer_sdp(kind: str = "audio", direction: str = "sendonly") -> str:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver(kind, direction=direction)
    await pc.setLocalDescription(await pc.createOffer())
    sdp = str(pc.localDescription.sdp)
    await pc.close()
    return sdp


async def post(bridge: Bridge, body: str | bytes, content_type: str = SDP, query: str = ""):
    reply = await request("POST", f"{bridge.url}/whip{query}", body, {"Content-Type": content_type})
    assert reply.headers["Content-Type"].startswith("text/plain"), reply.text
    assert "Traceback" not in reply.text
    return reply


def strip_lines(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


@pytest.mark.parametrize(
    ("make_body", "content_type", "query", "status", "message"),
    [
        (None, "application/json", "", 415, "send the SDP offer as application/sdp"),
        (None, "text/plain", "", 415, "application/sdp"),
        (lambda sdp: "hello", SDP, "", 400, "not an SDP offer (it must start with v=0)"),
        (lambda sdp: "v=0\r\nm=audio x\r\n", SDP, "", 400, "could not be parsed"),
        (lambda sdp: b"v=0\xff\xfe", SDP, "", 400, "not UTF-8"),
        (lambda sdp: strip_lines(sdp, "a=fingerprint"), SDP, "", 400, "no DTLS fingerprint"),
        (lambda sdp: strip_lines(sdp, "a=ice-"), SDP, "", 400, "no ICE credentials"),
        (lambda sdp: sdp, SDP, "?mode=walkie-talkie", 400, "'mode' must be one of"),
        (lambda sdp: sdp, SDP, "?voice=a&voice=b", 400, "give 'voice' at most once"),
        (lambda sdp: sdp, SDP, "?instructions=" + "x" * 4001, 400, "'instructions' is too long"),
        (lambda sdp: sdp, SDP, "?voice=Nobody", 400, "unknown voice 'Nobody'"),
    ],
)
async def test_bad_posts_are_4xx_text(make_body, content_type, query, status, message) -> None:
    sdp = await offer_sdp()
    async with run_bridge() as bridge:
        reply = await post(bridge, make_body(sdp) if make_body else sdp, content_type, query)
        assert bridge.manager.active == 0
        opened = len(bridge.emulator.sessions)
    assert reply.status == status, reply.text
    assert message in reply.text
    if status == 415:
        assert reply.headers["Accept-Post"] == SDP
    if "voice=Nobody" not in query:
        assert opened == 0  # refused before any upstream session was opened


async def test_offers_the_model_cannot_hear_are_400() -> None:
    async with run_bridge() as bridge:
        video_only = await post(bridge, await offer_sdp("video"))
        receive_only = await post(bridge, await offer_sdp("audio", "recvonly"))
    assert (video_only.status, receive_only.status) == (400, 400)
    assert "no audio" in video_only.text
    assert "recvonly or inactive" in receive_only.text


async def test_too_large_is_413() -> None:
    async with run_bridge(["--max-body-bytes", "20000"]) as bridge:
        reply = await post(bridge, "v=0\r\n" + "a=x\r\n" * 5000)
    assert reply.status == 413
    assert "too large (at most 20000 bytes)" in reply.text


async def test_full_server_is_503_with_retry_after() -> None:
    async with run_bridge(["--max-calls", "1"]) as bridge:
        first = WhipPeer(bridge.url + "/whip", LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            assert (await first.publish(await first.offer())).status == 201
            reply = await post(bridge, await offer_sdp())
        finally:
            await first.close()
    assert reply.status == 503
    assert reply.headers["Retry-After"] == "15"
    assert "limit of 1 calls" in reply.text


async def test_upstream_refusal_is_502() -> None:
    emulator = EmulatorConfig(api_key="sk-the-right-key-000")
    async with run_bridge(["--api-key", "sk-a-wrong-key-123456"], emulator=emulator) as bridge:
        reply = await post(bridge, await offer_sdp())
    assert reply.status == 502
    assert "rejected the server's API key" in reply.text
    assert "sk-a-wrong" not in reply.text


async def test_unknown_resources_and_methods() -> None:
    async with run_bridge() as bridge:
        base = bridge.url + "/whip"
        frag = {"Content-Type": SDPFRAG}
        patch = await request("PATCH", base + "/nope", "a=end-of-candidates\r\n", frag)
        delete = await request("DELETE", base + "/nope")
        get = await request("GET", base)
        put = await request("PUT", base + "/nope")
        options = await request("OPTIONS", base + "/nope")
    assert (patch.status, delete.status) == (404, 404)
    assert "no such WHIP session" in patch.text
    assert (get.status, get.headers["Allow"]) == (405, "OPTIONS, POST")
    assert (put.status, put.headers["Allow"]) == (405, "OPTIONS, PATCH, DELETE")
    assert options.status == 204
    assert options.headers["Accept-Patch"] == SDPFRAG
    for reply in (patch, delete, get, put):
        assert reply.headers["Content-Type"].startswith("text/plain")


async def test_a_call_that_ended_first_is_still_deleted_with_200(monkeypatch) -> None:
    """Clients often close the peer connection before their DELETE (whip-whep does)."""
    async with run_bridge() as bridge:
        peers = [
            WhipPeer(bridge.url + "/whip", LoopingPcmTrack(sine_pcm(1.0, 48_000))) for _ in range(2)
        ]
        try:
            for peer in peers:
                assert (await peer.publish(await peer.offer())).status == 201
                await peer.wait_connected()
                await peer.pc.close()  # DTLS close_notify: the bridge ends the call
            await wait_for(lambda: bridge.manager.active == 0, timeout=5)
            patch = await peers[0].patch("a=end-of-candidates\r\n")
            deleted = await peers[0].delete()
            again = await peers[0].delete()
            # the resource of an ended call is kept ENDED_KEPT_S for its DELETE, then dropped
            monkeypatch.setattr("signaling.whip.ENDED_KEPT_S", 0.0)
            await asyncio.sleep(0.01)
            expired = await peers[1].delete()
        finally:
            for peer in peers:
                await peer.close()
    assert (patch.status, deleted.status, again.status, expired.status) == (404, 200, 404, 404)
    assert "has ended" in patch.text
    assert bridge.app[WHIP].sessions == {}


async def test_resource_of_an_offer_call_is_not_a_whip_session() -> None:
    from tests.peer import TestPeer

    async with run_bridge() as bridge:
        peer = TestPeer(bridge.url, LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            await peer.call()
            reply = await request("DELETE", f"{bridge.url}/whip/{peer.call_id}")
            assert reply.status == 404
            assert bridge.manager.active == 1
        finally:
            await peer.close()


async def test_patch_errors() -> None:
    async with run_bridge() as bridge:
        peer = WhipPeer(bridge.url + "/whip", LoopingPcmTrack(sine_pcm(1.0, 48_000)))
        try:
            offer = await peer.offer()
            bare, candidates = split_candidates(offer)
            assert (await peer.publish(bare)).status == 201
            good = trickle_fragment(offer, candidates[:1], end=False)
            wrong_type = await peer.patch(good, {"Content-Type": "application/sdp"})
            stale = await peer.patch(good, {"If-Match": '"not-this-one"'})
            restart_any = await peer.patch(good, {"If-Match": "*"})
            new_ufrag = good.replace("a=ice-ufrag:", "a=ice-ufrag:new", 1)
            restart = await peer.patch(new_ufrag, {"If-Match": "*"})
            changed_ufrag = await peer.patch(new_ufrag)
            garbage = await peer.patch("hello\r\n")
            short = await peer.patch("a=candidate:1 1 udp 2130706431 10.0.0.1\r\n")
            bad_ip = await peer.patch("a=candidate:1 1 udp 2130706431 evil.example 9 typ host\r\n")
            bad_port = await peer.patch("a=candidate:1 1 udp 1 10.0.0.1 70000 typ host\r\n")
            bad_type = await peer.patch("a=candidate:1 1 udp 1 10.0.0.1 9 typ magic\r\n")
            binary = await peer.patch(b"\xff\xfe\xfd")
            too_many = await peer.patch(
                "".join(
                    f"a=candidate:{i} 1 udp 1 10.0.0.1 {1000 + i} typ host\r\n" for i in range(65)
                )
            )
            ok = await peer.patch(good)
            no_etag = await peer.patch(good, {"If-Match": ""})
            assert bridge.app[WHIP].sessions[peer.resource.rsplit("/", 1)[1]].candidates == 1
        finally:
            await peer.close()
    assert wrong_type.status == 415
    assert wrong_type.headers["Accept-Patch"] == SDPFRAG
    assert stale.status == 412
    assert restart_any.status == restart.status == changed_ufrag.status == 422
    assert "ICE restarts are not supported" in restart.text
    assert garbage.status == 400
    assert "line 1 is not an SDP line" in garbage.text
    assert (short.status, bad_ip.status, bad_port.status, bad_type.status) == (400,) * 4
    assert "malformed candidate" in short.text
    assert "IP address or an mDNS" in bad_ip.text
    assert "port must be a number from 0 to 65535" in bad_port.text
    assert "candidate type must be one of" in bad_type.text
    assert (binary.status, too_many.status) == (400, 400)
    assert "too many ICE candidates" in too_many.text
    assert ok.status == 204
    assert no_etag.status == 412
    for reply in (wrong_type, stale, restart, garbage, short, too_many):
        assert reply.headers["Content-Type"].startswith("text/plain")


async def test_the_access_token_and_call_links_guard_whip() -> None:
    from signaling.tokens import mint

    token = "whip-access-token-0123456789abcdef"
    async with run_bridge(["--access-token", token, "--rate-limit", "0"]) as bridge:
        sdp = await offer_sdp()
        refused = await post(bridge, sdp)
        wrong = await request(
            "POST", bridge.url + "/whip", sdp, {"Content-Type": SDP, "Authorization": "Bearer no"}
        )
        link = mint(token, 60, voice="Ethan")
        allowed = await request(
            "POST",
            bridge.url + "/whip?voice=Cherry",
            sdp,
            {"Content-Type": SDP, "Authorization": f"Bearer {link}"},
        )
        call = bridge.manager.list()[0]
        voice = call.conversation.session.voice
        location = allowed.headers["Location"]
        delete_refused = await request("DELETE", bridge.url + location)
        delete_allowed = await request(
            "DELETE", bridge.url + location, headers={"Authorization": f"Bearer {token}"}
        )
    assert refused.status == 401
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert refused.headers["Content-Type"].startswith("text/plain")
    assert "access token" in refused.text
    assert wrong.status == 401
    assert allowed.status == 201
    assert voice == "Ethan"  # the call link binds the voice, whatever the query says
    assert delete_refused.status == 401
    assert delete_allowed.status == 200
