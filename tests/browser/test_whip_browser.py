"""Real Chromium publishes with an npm WHIP library nobody here wrote: whip-whep.

whip-whep (the WHIPClient by RFC 9725's author) is installed by ``tests/run`` with
``npm ci --prefix tests/browser/whip`` from the pinned ``package-lock.json`` (outside
the test's network namespace, which cannot reach the registry). The test copies its
``whip.js`` (a plain ES module) next to a small harness page and serves them from the
bridge's own origin, so no CORS is involved.
"""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from playwright.async_api import BrowserContext, Page

from omni_rtc.emulator.replies import resample_pcm16
from signaling.whip import WHIP
from tests.conftest import run_bridge
from tests.helpers import assert_at_most_fps, wait_for
from tests.media import best_circular_correlation, envelope, load_pcm48

HARNESS = Path(__file__).resolve().parent / "whip"
LIBRARY = HARNESS / "node_modules" / "whip-whep" / "whip.js"

pytestmark = pytest.mark.browser


@pytest.fixture
def served(tmp_path: Path) -> Path:
    if not LIBRARY.is_file():
        pytest.fail(f"{LIBRARY} is missing: run `npm ci --prefix {HARNESS}` (tests/run does)")
    for source in (HARNESS / "page.html", HARNESS / "page.js", LIBRARY):
        shutil.copy(source, tmp_path / source.name)
    return tmp_path


async def inbound_audio_energy(page: Page) -> float:
    return await page.evaluate(
        """async () => {
            let energy = 0;
            (await window.whipTest.pc.getStats()).forEach((s) => {
                if (s.type === "inbound-rtp" && s.kind === "audio") {
                    energy = s.totalAudioEnergy || 0;
                }
            });
            return energy;
        }"""
    )


@pytest.mark.parametrize("direction", ["sendonly", "sendrecv"])
async def test_whip_whep_in_chromium(
    chromium: BrowserContext, speech_wav: Path, served: Path, artifacts: Path, direction: str
) -> None:
    speech = load_pcm48(speech_wav)
    loop_s = len(speech) / 2 / 48_000
    async with run_bridge(static={"/whip-test/": served}) as bridge:
        page = await chromium.new_page()
        deletes: list[int] = []
        page.on("response", lambda r: r.request.method == "DELETE" and deletes.append(r.status))
        query = "%3Fmode%3Dserver_vad%26voice%3DSerena"  # ?mode=server_vad&voice=Serena
        await page.goto(f"{bridge.url}/whip-test/page.html?direction={direction}&query={query}")
        await page.wait_for_function(
            "() => window.whipTest.published || window.whipTest.error", timeout=15_000
        )
        assert await page.evaluate("() => window.whipTest.error") is None
        await page.wait_for_function(
            "() => window.whipTest.connection === 'connected'", timeout=15_000
        )
        call = bridge.manager.list()[0]
        session = bridge.app[WHIP].sessions[call.id]
        record = bridge.emulator.sessions[0]
        # the library trickles its candidates with PATCH (its offer carries none)
        await wait_for(lambda: session.end_of_candidates and session.candidates >= 1, 10)
        await wait_for(lambda: record.audio_seconds_total > loop_s * 1.3, timeout=25)
        await wait_for(lambda: record.responses >= 1 and len(record.images) >= 3, timeout=15)
        if direction == "sendrecv":
            await wait_for(lambda: call.reply_track.stats.reply_frames > 25, timeout=10)
            await asyncio.sleep(1.0)  # let the reply play in the browser
        energy = await inbound_audio_energy(page)
        voice = call.conversation.session.voice
        await page.evaluate("() => window.whipTest.whip.stop()")  # closes the pc, DELETEs
        await wait_for(lambda: bridge.manager.active == 0, timeout=5)
        await asyncio.wait_for(record.closed.wait(), 5)
        await wait_for(lambda: bool(deletes), timeout=5)
        assert bridge.app[WHIP].sessions == {}

    assert voice == "Serena"
    # stop() closes the peer connection first (the call ends), then DELETEs: still 200
    assert call.ended_reason in ("peer_closed", "hangup")
    assert deletes == [200]
    if direction == "sendrecv":
        assert energy > 0  # the model's voice came back: our two-way extension
    else:
        assert energy == 0  # RFC 9725: answered recvonly, nothing sent to the publisher
    reference = envelope(resample_pcm16(speech, 48_000, 16_000), 16_000)
    received = envelope(bytes(record.audio), 16_000)
    r = best_circular_correlation(reference, received)
    figures_path = artifacts / "whip-browser-figures.json"
    figures = json.loads(figures_path.read_text()) if figures_path.exists() else {}
    figures[direction] = {
        "envelope_r": round(r, 3),
        "images": len(record.images),
        "inbound_audio_energy": energy,
        "trickled_candidates": session.candidates,
    }
    figures_path.write_text(json.dumps(figures, indent=2))
    assert r >= 0.8, f"envelope correlation {r:.2f}"
    rng = np.random.default_rng(0)
    assert best_circular_correlation(rng.normal(size=len(reference)), received) < 0.5
    assert all(i.accepted for i in record.images), [i.error for i in record.images]
    assert_at_most_fps([i.at for i in record.images], 2.0)
