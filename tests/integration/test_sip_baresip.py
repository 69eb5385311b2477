"""baresip dials the SIP endpoint once per codec with espeak speech as its microphone;
the demo handler echoes it back through the ReplyTrack. The speech must reach the
handler intact and the echo must be heard in baresip's recording."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from omni_rtc.sip.demo import EchoHandler
from tests.baresip import CODECS, call_with_baresip, delayed_correlation, pcm_envelope, speech_at
from tests.helpers import decode_wav_mono, wait_for
from tests.sip_support import sip_server

pytestmark = pytest.mark.netns


@pytest.mark.parametrize("codec", list(CODECS))
async def test_baresip_call_echo_per_codec(codec: str, tmp_path: Path, speech_wav: Path) -> None:
    _, rate = CODECS[codec]
    wav = speech_at(speech_wav, rate, tmp_path)
    microphone = speech_at(speech_wav, rate, tmp_path, channels=2 if codec == "opus" else 1)
    handler = EchoHandler(delay_s=0.2)
    async with sip_server(handler) as (server, _):
        run = await call_with_baresip(tmp_path, microphone, codec)
        assert "Call established" in run.log, run.log[-2000:]
        await wait_for(lambda: bool(handler.finished), timeout=10)
        record = handler.finished[0]
        assert record.ended == "remote BYE"
        assert record.call.codec.name == codec
        assert record.rate == rate
        # 1. the caller's speech reached the handler, decoded at the codec's rate
        reference, ref_rate = decode_wav_mono(wav.read_bytes())
        assert ref_rate == rate
        received = pcm_envelope(np.frombuffer(bytes(record.audio), dtype="<i2"), rate)
        r_in = delayed_correlation(pcm_envelope(reference, rate), received, 100)
        assert r_in >= 0.8, f"{codec}: caller speech at the handler r={r_in:.3f}"
        # 2. baresip heard its own speech back (echo through ReplyTrack, encode, RTP)
        assert run.sent is not None
        assert run.heard is not None
        sent, sent_rate = run.sent
        heard, heard_rate = run.heard
        r_out = delayed_correlation(
            pcm_envelope(sent, sent_rate), pcm_envelope(heard, heard_rate), 100
        )
        assert r_out >= 0.8, f"{codec}: echo heard by baresip r={r_out:.3f}"
        print(f"{codec}: speech at the handler r={r_in:.3f}, echo heard r={r_out:.3f}")
    assert server.leftovers() == []


async def test_bridge_hangs_up_a_baresip_call(tmp_path: Path, speech_wav: Path) -> None:
    wav = speech_at(speech_wav, 8000, tmp_path)
    handler = EchoHandler(hangup_after_s=1.0)
    async with sip_server(handler) as (server, tap):
        run = await call_with_baresip(tmp_path, wav, "PCMU")
        assert "Call established" in run.log, run.log[-2000:]
        await wait_for(lambda: bool(handler.finished), timeout=10)
        assert handler.finished[0].ended == "demo hangup"
        assert "terminated" in run.log
        # baresip answered our BYE: a 200 with CSeq BYE reached the server
        responses = [m for m, _ in tap.messages if m.startswith(b"SIP/2.0 200")]
        assert any(b" BYE\r\n" in m for m in responses)
    assert server.leftovers() == []
