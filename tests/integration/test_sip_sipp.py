"""sipp (Debian sip-tester) against the SIP endpoint: CANCEL, OPTIONS, re-INVITE hold and
resume, BYE from the bridge, authorisation, malformed requests, retransmitted INVITE,
RFC 2833 DTMF, and a short load run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from omni_rtc.sip.demo import EchoHandler
from omni_rtc.sip.register import RegisterTarget
from tests.helpers import wait_for
from tests.sip_support import CLIENT_IP, run_sipp, sip_server, sipp_messages

pytestmark = pytest.mark.netns


async def test_options_keepalive(tmp_path: Path) -> None:
    async with sip_server() as (server, tap):
        result = await run_sipp("options", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        assert len(tap.requests("OPTIONS")) == 1
        assert server.calls == {}


async def test_basic_call_over_tcp(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler) as (_server, tap):
        result = await run_sipp("basic", tmp_path, transport="t1")
        assert result.returncode == 0, result.output + result.errors
        assert all(peer.transport == "TCP" for _, peer in tap.messages)
        assert [r.ended for r in handler.finished] == ["remote BYE"]


async def test_cancel_while_ringing(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler, ring_s=2.0) as (server, _):
        result = await run_sipp("cancel", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        assert handler.started_total == 0
        assert server.calls == {}
        assert server.ports.in_use == 0


async def test_reinvite_hold_and_resume(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler) as (_server, _):
        task = asyncio.ensure_future(run_sipp("hold", tmp_path))
        await wait_for(lambda: bool(handler.active), timeout=10)
        call = next(iter(handler.active.values())).call
        await wait_for(lambda: call.on_hold, timeout=10)
        held_at = call.media.stats.packets_out
        await asyncio.sleep(0.3)
        assert call.on_hold
        assert call.media.stats.packets_out == held_at, "RTP sent while on hold"
        await wait_for(lambda: not call.on_hold, timeout=10)
        result = await task
        assert result.returncode == 0, result.output + result.errors
        assert [r.ended for r in handler.finished] == ["remote BYE"]


async def test_bye_from_the_bridge(tmp_path: Path) -> None:
    handler = EchoHandler(hangup_after_s=0.5)
    async with sip_server(handler) as (_server, _):
        result = await run_sipp("bye_from_server", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        await wait_for(lambda: bool(handler.finished))
        assert handler.finished[0].ended == "demo hangup"
        bye = [
            m for m in sipp_messages(tmp_path, "bye_from_server").split("\n\n") if "BYE sip:" in m
        ]
        assert bye, "sipp logged no BYE"


async def test_unknown_source_gets_digest_challenge(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler, allow=[], user="alice", password="s3cret-pw") as (_server, _):
        result = await run_sipp("auth", tmp_path, extra=("-au", "alice", "-ap", "s3cret-pw"))
        assert result.returncode == 0, result.output + result.errors
        assert handler.started_total == 1


async def test_wrong_password_is_forbidden(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler, allow=[], user="alice", password="s3cret-pw") as (_server, _):
        result = await run_sipp("bad_password", tmp_path, extra=("-au", "alice", "-ap", "nope"))
        assert result.returncode == 0, result.output + result.errors
        assert handler.started_total == 0


async def test_source_outside_allow_list_is_forbidden(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler, allow=["10.77.0.99/32"]) as (_server, _):
        result = await run_sipp("forbidden", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        assert handler.started_total == 0


async def test_malformed_requests_get_4xx_and_server_stays_healthy(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler) as (server, _):
        result = await run_sipp("malformed", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        assert handler.started_total == 0
        assert server.calls == {}


async def test_retransmitted_invite_makes_one_call(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler, ring_s=1.6) as (_server, tap):
        result = await run_sipp("retransmit", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        invites = tap.requests("INVITE")
        assert len(invites) >= 2, "sipp did not retransmit the INVITE"
        assert len({i for i in invites}) == 1, "retransmissions must be identical"
        assert handler.started_total == 1
        assert len(handler.finished) == 1


async def test_rfc2833_dtmf_reaches_the_handler(tmp_path: Path) -> None:
    handler = EchoHandler()
    async with sip_server(handler) as (_server, _):
        result = await run_sipp("dtmf", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        assert len(handler.finished) == 1
        digits = [d for d, _ in handler.finished[0].dtmf]
        assert digits == ["1", "#"]
        assert all(ms > 0 for _, ms in handler.finished[0].dtmf)


async def test_load_30_concurrent_g711_calls(tmp_path: Path) -> None:
    handler = EchoHandler(keep_audio=False)
    peak = 0

    async with sip_server(handler, tcp=False) as (server, _):
        task = asyncio.ensure_future(
            run_sipp("load_g711", tmp_path, calls=30, limit=30, rate=30, timeout_s=60)
        )
        while not task.done():
            peak = max(peak, len(server.calls))
            await asyncio.sleep(0.1)
        result = task.result()
        assert result.returncode == 0, result.output + result.errors
        assert handler.started_total == 30
        assert peak >= 25
        ended = [r.ended for r in handler.finished]
        assert ended == ["remote BYE"] * 30
        # every call got sipp's 236-packet PCMA pcap and was answered with paced RTP
        received = sorted(r.call.media.stats.packets_in for r in handler.finished)
        assert received[0] >= 225, received
        assert all(r.call.media.stats.packets_out >= 200 for r in handler.finished)
    assert CLIENT_IP


async def test_no_room_is_503_with_retry_after(tmp_path: Path) -> None:
    handler = EchoHandler(max_calls=0)
    async with sip_server(handler, retry_after=5) as (server, _):
        result = await run_sipp("busy", tmp_path)
        assert result.returncode == 0, result.output + result.errors
        assert server.ports.in_use == 0


async def test_registers_at_a_sipp_registrar_refreshes_and_unregisters(tmp_path: Path) -> None:
    target = RegisterTarget("1001", "s3cret", CLIENT_IP, 5090)
    async with sip_server(register=target, register_expires=2) as (server, tap):
        # the registrar starts after our first REGISTER left: retransmission reaches it
        registrar = asyncio.ensure_future(
            run_sipp("registrar", tmp_path, target=None, port=5090, timeout_s=20)
        )
        reg = server.registration
        assert reg is not None
        await wait_for(lambda: reg.state == "registered", timeout=10)
        first_cseq = reg.cseq
        await wait_for(lambda: reg.cseq > first_cseq and reg.state == "registered", timeout=5)
        assert reg.granted == 2
        assert [m for m, _ in tap.messages if m.startswith(b"SIP/2.0 401")]
    result = await registrar
    assert result.returncode == 0, result.output + result.errors
    assert reg.state == "stopped"
