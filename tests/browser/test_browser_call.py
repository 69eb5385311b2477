"""Real headless Chromium calls the bridge (fake mic = espeak-ng speech, fake camera)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
from playwright.async_api import BrowserContext, Page

from omni_rtc.emulator import EmulatorConfig
from omni_rtc.emulator.replies import resample_pcm16
from tests.conftest import run_bridge
from tests.helpers import wait_for
from tests.media import best_circular_correlation, envelope, load_pcm48

# Echo cancellation mutes the first seconds of the fake mic: the page turns processing off.
PAGE = "/?processing=0"


def record_figures(artifacts: Path, name: str, figures: dict) -> None:
    """Measured figures, kept next to the screenshots for the issue notes."""
    path = artifacts / "browser-figures.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2))


async def wait_js(page: Page, expression: str, timeout_s: float = 25.0) -> None:
    # a function, not a bare expression: the page's CSP forbids eval, as it should
    await page.wait_for_function(f"() => ({expression})", timeout=timeout_s * 1000, polling=100)


async def inbound_audio_energy(page: Page) -> float:
    return await page.evaluate(
        """async () => {
            const stats = await window.omni.pc.getStats();
            let energy = 0;
            stats.forEach((s) => {
                if (s.type === "inbound-rtp" && s.kind === "audio") {
                    energy = s.totalAudioEnergy || 0;
                }
            });
            return energy;
        }"""
    )


async def test_browser_call_speech_video_reply_and_transcripts(
    chromium: BrowserContext, speech_wav: Path, artifacts: Path
) -> None:
    async with run_bridge() as bridge:
        page = await chromium.new_page()
        await page.goto(bridge.url + PAGE)
        assert not await page.is_visible("#error")
        await page.click("#call")
        await wait_js(
            page, "document.querySelector('#connection').dataset.value === 'connected'", 15
        )
        assert await page.is_visible("#preview")
        assert not await page.is_visible("#no-camera")
        # a full turn: user transcript, assistant transcript streamed then final
        await wait_js(page, "document.querySelectorAll('#turns li.user').length >= 1")
        await wait_js(page, "document.querySelector('#turns li.assistant[data-final]') !== null")
        await wait_js(
            page, "window.omni.events.some(([, m]) => m.type === 'state' && m.value === 'speaking')"
        )
        await asyncio.sleep(1.5)  # let the echo play
        energy = await inbound_audio_energy(page)
        assert not await page.is_visible("#error"), await page.inner_text("#error-text")
        await page.screenshot(path=str(artifacts / "browser-call.png"), full_page=True)
        user_text = await page.inner_text("#turns li.user")
        assistant_text = await page.inner_text("#turns li.assistant")
        await wait_js(page, "document.querySelectorAll('#turns li.user').length >= 2", 20)
        await page.click("#hangup")
        await wait_js(page, "document.querySelector('#connection').dataset.value === 'idle'", 5)
        await asyncio.wait_for(bridge.emulator.sessions[0].closed.wait(), 5)
        assert bridge.manager.active == 0
        record = bridge.emulator.sessions[0]

    # the model side got the speech as 16 kHz pcm16 matching the reference
    reference = envelope(resample_pcm16(load_pcm48(speech_wav), 48_000, 16_000), 16_000)
    received = envelope(bytes(record.audio), 16_000)
    r = best_circular_correlation(reference, received)
    assert r >= 0.8, f"envelope correlation {r:.2f}"
    rng = np.random.default_rng(0)
    assert best_circular_correlation(rng.normal(size=len(reference)), received) < 0.5
    # camera frames: valid JPEG, <= 2 fps, none before audio
    assert record.images, "no camera frames reached the model"
    assert all(i.accepted for i in record.images), [i.error for i in record.images]
    assert record.images[0].at >= record.first_audio_at
    assert np.all(np.diff([i.at for i in record.images]) >= 0.45), [
        (i.at, i.accepted) for i in record.images
    ]
    assert all(i.width <= 1280 and i.height <= 720 for i in record.images)
    # the browser heard the reply and showed both sides
    record_figures(
        artifacts,
        "call",
        {"envelope_r": round(r, 3), "images": len(record.images), "inbound_audio_energy": energy},
    )
    assert energy > 0
    assert "You" in user_text
    assert "s of speech" in user_text
    assert "I heard" in assistant_text
    assert "image" in assistant_text


async def test_browser_barge_in_stops_reply_within_300_ms(
    chromium: BrowserContext, artifacts: Path
) -> None:
    emulator = EmulatorConfig(reply="tone", tone_seconds=8.0, reply_speed=4.0, reply_delay_s=0.05)
    async with run_bridge(emulator=emulator) as bridge:
        page = await chromium.new_page()
        await page.goto(bridge.url + PAGE)
        await page.click("#call")
        await wait_js(page, "window.omni.events.some(([, m]) => m.type === 'interrupted')", 30)
        await asyncio.sleep(1.0)
        figures = await page.evaluate(
            """() => {
                const t = window.omni.events.find(([, m]) => m.type === 'interrupted')[0];
                const levels = window.omni.remoteLevels;
                const loudBefore = levels.filter(([ts, v]) => ts < t && v > 0.02).length;
                // first moment after the barge-in from which the reply stays silent for 300 ms
                let quietFrom = null;
                for (const [ts, v] of levels) {
                    if (ts < t) continue;
                    if (v > 0.003) { quietFrom = null; continue; }
                    if (quietFrom === null) quietFrom = ts;
                    if (ts - quietFrom >= 300) break;
                }
                const interrupted = document.querySelectorAll('#turns li.interrupted').length;
                return { t, quietFrom, loudBefore, interrupted };
            }"""
        )
        await page.screenshot(path=str(artifacts / "browser-barge-in.png"))
        await page.click("#hangup")
    assert figures["loudBefore"] > 10, "the reply never played"
    assert figures["quietFrom"] is not None, "the reply kept playing"
    stop_ms = figures["quietFrom"] - figures["t"]
    record_figures(artifacts, "barge_in", {"reply_silent_after_ms": round(stop_ms, 1)})
    assert stop_ms <= 300, f"reply audio stopped {stop_ms:.0f} ms after the barge-in"
    assert figures["interrupted"] >= 1  # shown in the page


async def test_browser_push_to_talk_button(chromium: BrowserContext, artifacts: Path) -> None:
    async with run_bridge() as bridge:
        page = await chromium.new_page()
        await page.goto(bridge.url + PAGE)
        await page.check("input[name=mode][value=manual]")
        await page.click("#call")
        await wait_js(
            page, "window.omni.events.some(([, m]) => m.type === 'call' && m.mode === 'manual')", 15
        )
        await page.wait_for_selector("#ptt:not([hidden])")
        await asyncio.sleep(1.0)
        record = bridge.emulator.sessions[0]
        assert len(record.audio) == 0  # nothing is sent until the button is held
        box = await page.locator("#ptt").bounding_box()
        assert box is not None
        await page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        await page.mouse.down()
        await asyncio.sleep(3.0)
        await page.mouse.up()
        await wait_js(page, "document.querySelector('#turns li.assistant[data-final]') !== null")
        assistant_text = await page.inner_text("#turns li.assistant")
        pressed_s = len(record.audio) / 2 / 16_000
        assert await page.inner_text("#mode") == "push-to-talk"
        await page.screenshot(path=str(artifacts / "browser-push-to-talk.png"))
        await page.click("#hangup")
    assert 2.7 <= pressed_s <= 3.3, pressed_s
    assert record.client_events.count("input_audio_buffer.commit") == 1
    assert "I heard" in assistant_text


async def test_browser_shows_upstream_errors_in_the_banner(
    chromium: BrowserContext, artifacts: Path
) -> None:
    emulator = EmulatorConfig(max_image_bytes=2_000)
    async with run_bridge(["--jpeg-max-bytes", "60000"], emulator=emulator) as bridge:
        page = await chromium.new_page()
        await page.goto(bridge.url + PAGE)
        await page.click("#call")
        assert not await page.is_visible("#error")
        await page.wait_for_selector("#error", state="visible", timeout=20_000)
        text = await page.inner_text("#error-text")
        await page.screenshot(path=str(artifacts / "browser-error.png"))
        await page.click("#hangup")
    assert text.startswith("Model service: Image too large")


async def test_browser_call_relayed_through_coturn(
    chromium: BrowserContext, artifacts: Path
) -> None:
    from tests.coturn import run_coturn

    with run_coturn() as turn:
        argv = ["--ice-server", turn.url, "--turn-secret", turn.secret]
        async with run_bridge(argv) as bridge:
            page = await chromium.new_page()
            await page.goto(bridge.url + PAGE + "&relay=1")  # iceTransportPolicy: "relay"
            await page.click("#call")
            await wait_js(
                page, "document.querySelector('#connection').dataset.value === 'connected'", 20
            )
            await wait_js(
                page, "document.querySelector('#turns li.assistant[data-final]') !== null", 30
            )
            await asyncio.sleep(1.5)
            pair = await page.evaluate(
                """async () => {
                    const stats = await window.omni.pc.getStats();
                    const byId = new Map();
                    stats.forEach((s) => byId.set(s.id, s));
                    let transport = null;
                    stats.forEach((s) => { if (s.type === "transport") transport = s; });
                    const selected = byId.get(transport.selectedCandidatePairId);
                    return {
                        local: byId.get(selected.localCandidateId).candidateType,
                        remote: byId.get(selected.remoteCandidateId).candidateType,
                    };
                }"""
            )
            energy = await inbound_audio_energy(page)
            await page.click("#hangup")
            record = bridge.emulator.sessions[0]
    record_figures(artifacts, "turn_relay", {**pair, "inbound_audio_energy": energy})
    assert pair["local"] == "relay"
    assert len(record.audio) / 2 / 16_000 > 2.0  # browser -> model through TURN
    assert energy > 0  # model -> browser through TURN


async def test_browser_call_from_the_page_mounted_under_a_prefix(
    chromium: BrowserContext, artifacts: Path
) -> None:
    from tests.integration.test_embedding import host_app

    async with host_app() as (base, bridge, emu):
        page = await chromium.new_page()
        await page.goto(base + "/voice" + PAGE)  # redirected to /voice/, URLs relative
        assert page.url == base + "/voice/" + PAGE.lstrip("/")
        await page.click("#call")
        await wait_js(page, "document.querySelector('#turns li.assistant[data-final]') !== null")
        assert not await page.is_visible("#error")
        assert bridge.calls.active == 1
        await page.click("#hangup")
        await asyncio.wait_for(emu.sessions[0].closed.wait(), 5)
        # the upstream closes first; the call leaves the registry when its close finishes
        await wait_for(lambda: bridge.calls.active == 0, 5)
