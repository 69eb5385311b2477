"""Phone calls with ``omni-rtc serve --workers 2``: the front checks, a worker holds the call.

The media stream is relayed by the front to the least loaded worker over its private
socket; the signature is checked against the public URL, which only the front sees.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np
import pytest
from twilio.request_validator import RequestValidator

from tests.helpers import wait_for
from tests.integration.test_twilio import caller_ulaw
from tests.integration.test_workers import front, health, metric
from tests.media import envelope
from tests.twilio_peer import MediaStreamPeer

TOKEN = "0123456789abcdef0123456789abcdef"


async def test_streams_are_checked_by_the_front_and_held_by_workers(speech_wav: Path) -> None:
    async with front("--twilio-auth-token", TOKEN, "--max-calls", "1") as url:
        stream = url.replace("http://", "ws://") + "/twilio/stream"
        signed = {
            "X-Twilio-Signature": RequestValidator(TOKEN).compute_signature(
                url.replace("http://", "wss://") + "/twilio/stream", {}
            )
        }
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as unsigned:
                await http.ws_connect(stream)
            voice_url = url + "/twilio/voice?voice=Ethan"
            form = {"CallSid": "CA1"}
            sign = RequestValidator(TOKEN).compute_signature(voice_url, form)
            async with http.post(voice_url, data=form, headers={"X-Twilio-Signature": sign}) as r:
                twiml = r.status, await r.text()
        talker = MediaStreamPeer(stream, caller_ulaw(speech_wav), headers=signed, loop=False)
        second = MediaStreamPeer(stream, headers=signed, call_sid="CA2")
        try:
            await talker.connect()
            await second.connect()
            await asyncio.sleep(1.0)  # a health poll
            state = await health(url)
            async with aiohttp.ClientSession() as http:
                with pytest.raises(aiohttp.WSServerHandshakeError) as full:
                    await http.ws_connect(stream, headers=signed)
            await wait_for(lambda: len(talker.marks_echoed) >= 2, timeout=30)
            await second.send_dtmf("7")
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as http, http.get(url + "/metrics") as r:
                metrics = await r.text()
            await second.stop()
            await asyncio.wait_for(second.done.wait(), 5)
        finally:
            await talker.close()
            await second.close()
    assert unsigned.value.status == 403
    assert twiml[0] == 200
    assert 'name="voice" value="Ethan"' in twiml[1]
    assert [w["calls"] for w in state["workers"]] == [1, 1]  # one call in each worker
    assert full.value.status == 503  # both workers full (--max-calls 1 each)
    levels = envelope(talker.heard_pcm(), 8000)
    assert np.sum(levels > 40) * 0.02 > 0.5, "the reply was not heard through the relay"
    assert metric(metrics, 'omni_rtc_calls_total{transport="twilio"}') == 2
    assert metric(metrics, 'omni_rtc_dtmf_digits_total{transport="twilio"}') == 1
    assert second.close_code == 1000
