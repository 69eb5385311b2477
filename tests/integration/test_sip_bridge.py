"""baresip calls the model through the bridge (the SIP transport on the conversation core):
once per codec, the caller's speech reaches the emulator as 16 kHz pcm16 and the echoed
reply is heard in baresip's recording; a BYE from either side ends everything."""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from omni_rtc import Bridge
from omni_rtc.emulator import Emulator, EmulatorConfig
from omni_rtc.transports.sip import SipGateway
from tests.baresip import CODECS, call_with_baresip, delayed_correlation, pcm_envelope, speech_at
from tests.helpers import decode_wav_mono, wait_for
from tests.media import envelope
from tests.sip_support import sip_server

pytestmark = pytest.mark.netns


@contextlib.asynccontextmanager
async def bridge_with_sip(**options: object) -> AsyncIterator[tuple[Bridge, Emulator]]:
    async with (
        Emulator(EmulatorConfig(reply_delay_s=0.05)) as emulator,
        Bridge(upstream_url=emulator.url, **options) as bridge,
        sip_server(SipGateway(bridge)) as (server, _),
    ):
        yield bridge, emulator
        await wait_for(lambda: not server.calls, 10)


def say_once(speech_wav: Path, rate: int, channels: int, directory: Path) -> Path:
    """The speech then silence: baresip loops its microphone file, and a caller who
    talks again at once would barge in on the reply."""
    out = directory / f"say-once-{rate}x{channels}.wav"
    cmd = ["sox", str(speech_wav), "-r", str(rate), "-c", str(channels), str(out), "pad", "0", "10"]
    subprocess.run(cmd, check=True)
    return out


@pytest.mark.parametrize("codec", list(CODECS))
async def test_baresip_talks_to_the_model(codec: str, tmp_path: Path, speech_wav: Path) -> None:
    _, rate = CODECS[codec]
    microphone = say_once(speech_wav, rate, 2 if codec == "opus" else 1, tmp_path)
    async with bridge_with_sip() as (bridge, emulator):
        run = await call_with_baresip(tmp_path, microphone, codec, seconds=12)
        assert "Call established" in run.log, run.log[-2000:]
        await wait_for(lambda: bridge.calls.active == 0, 10)  # baresip's BYE ended it
        record = emulator.sessions[0]
        await asyncio.wait_for(record.closed.wait(), 5)
        metrics = bridge.metrics.render().decode()

    # the caller's speech reached the model as 16 kHz pcm16, recognisably the same
    spoken, spoken_rate = decode_wav_mono(speech_wav.read_bytes())
    reference = pcm_envelope(spoken[:: spoken_rate // 16_000], 16_000)
    received = envelope(bytes(record.audio), 16_000)
    r_up = delayed_correlation(reference, received, 150)
    assert r_up >= 0.8, f"{codec}: speech at the model r={r_up:.3f}"
    # the model's reply (the emulator echoes the utterance) is in baresip's recording
    assert run.heard is not None
    assert run.sent is not None
    heard, heard_rate = run.heard
    loud = np.abs(heard.astype(np.float64)) > 1000
    assert loud.sum() / heard_rate > 1.0, f"{codec}: reply barely heard"
    sent, sent_rate = run.sent
    r_down = delayed_correlation(
        pcm_envelope(sent, sent_rate)[:150], pcm_envelope(heard, heard_rate), 300
    )
    assert r_down >= 0.8, f"{codec}: reply heard by baresip r={r_down:.3f}"
    assert record.responses >= 1
    assert re.search(r'^omni_rtc_calls_total\{transport="sip"\} 1\.0$', metrics, re.M)
    assert re.search(
        r'^omni_rtc_calls_ended_total\{reason="peer_closed",transport="sip"\} 1\.0$', metrics, re.M
    )
    print(f"{codec}: speech at the model r={r_up:.3f}, reply heard r={r_down:.3f}")


async def test_the_bridge_hangs_up_when_the_call_reaches_its_limit(
    tmp_path: Path, speech_wav: Path
) -> None:
    microphone = speech_at(speech_wav, 8000, tmp_path)
    async with bridge_with_sip(max_call_seconds=3) as (bridge, emulator):
        run = await call_with_baresip(tmp_path, microphone, "PCMU", seconds=8)
        assert "Call established" in run.log, run.log[-2000:]
        await wait_for(lambda: bridge.calls.active == 0, 10)
        metrics = bridge.metrics.render().decode()
        await asyncio.wait_for(emulator.sessions[0].closed.wait(), 5)
    assert "terminated" in run.log or "closed" in run.log, run.log[-1500:]
    assert re.search(
        r'^omni_rtc_calls_ended_total\{reason="max_duration",transport="sip"\} 1\.0$',
        metrics,
        re.M,
    )
