"""Real headless Firefox (Debian's firefox-esr, driven over WebDriver BiDi) calls the page.

Firefox's fake devices: the microphone is a 1 kHz tone, the camera a generated picture.
Firefox gathers ICE candidates only on the interface of the default route and never on
loopback, so the call runs over the veth pair (kit0/kit1) of the test's own namespace,
with a default route through it for the length of the test; nothing leaves the namespace.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.browser.test_browser_call import record_figures
from tests.conftest import run_bridge
from tests.sip_support import SERVER_IP, ensure_veth, remove_veth

FIREFOX = Path("/usr/bin/firefox-esr")
DRIVER = Path(__file__).resolve().parent / "firefox" / "call.mjs"
HOLD_SECONDS = 2.5


@pytest.fixture
def veth_with_default_route() -> Iterator[None]:
    if not FIREFOX.exists():
        pytest.fail(f"{FIREFOX} is missing: tests/run installs Debian's firefox-esr")
    if not (DRIVER.parent / "node_modules" / "puppeteer-core").is_dir():
        pytest.fail("puppeteer-core is missing: tests/run runs npm ci in tests/browser/firefox")
    created = ensure_veth()
    try:
        route = ["ip", "route", "add", "default", "via", SERVER_IP, "dev", "kit1"]
        added = subprocess.run(route, capture_output=True, text=True, check=False)
        if added.returncode != 0:
            pytest.fail(f"cannot add the default route over kit1: {added.stderr.strip()}")
        yield
    finally:
        subprocess.run(["ip", "route", "del", "default"], capture_output=True, check=False)
        if created:
            remove_veth()


def peak_frequency(pcm16: bytes, rate: int) -> float:
    samples = np.frombuffer(pcm16, "<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


async def test_firefox_push_to_talk_call(veth_with_default_route: None, artifacts: Path) -> None:
    node = shutil.which("node")
    assert node, "node is missing (tests/run installs npm and node)"
    async with run_bridge(["--ice-host-address", SERVER_IP]) as bridge:
        process = await asyncio.create_subprocess_exec(
            node, str(DRIVER), bridge.url, str(artifacts), str(HOLD_SECONDS),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # node and its Firefox: one group to kill on timeout
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(process.communicate(), 120)
        except TimeoutError:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        assert process.returncode == 0, err.decode()[-2000:]
        result = json.loads(out.decode().strip().splitlines()[-1])
        assert "error" not in result, (result["error"], result.get("console"), result.get("page"))
        await asyncio.wait_for(bridge.emulator.sessions[0].closed.wait(), 5)
        assert bridge.manager.active == 0
        record = bridge.emulator.sessions[0]

    assert "Firefox/" in result["userAgent"]
    assert result["mode"] == "push-to-talk"
    assert not result["errorShown"]
    assert result["endedIdle"]
    # the tone held for HOLD_SECONDS reached the model as 16 kHz pcm16, in one turn
    held_s = len(record.audio) / 2 / 16_000
    assert HOLD_SECONDS - 0.3 <= held_s <= HOLD_SECONDS + 0.3, held_s
    assert record.client_events.count("input_audio_buffer.commit") == 1
    tone_hz = peak_frequency(bytes(record.audio), 16_000)
    assert abs(tone_hz - 1000) < 10, tone_hz
    # the camera: valid JPEGs, <= 2 per second, none before the audio
    assert record.images, "no camera frames reached the model"
    assert all(i.accepted for i in record.images), [i.error for i in record.images]
    assert record.images[0].at >= record.first_audio_at
    assert np.all(np.diff([i.at for i in record.images]) >= 0.45)
    # Firefox decoded the reply (the echoed tone): silence before the turn, sound during it
    before, during = result["heardBefore"], result["heardDuring"]
    assert during["packets"] - before["packets"] > 50, (before, during)  # still connected
    assert before["energy"] < 1e-4, before
    assert during["energy"] - before["energy"] > 1e-3, (before, during)
    assert during["level"] > 0.02, during
    assert "2.5 s of speech" in result["userText"]
    assert "I heard" in result["assistantText"]
    assert "image" in result["assistantText"]
    record_figures(
        artifacts,
        "firefox",
        {
            "user_agent": result["userAgent"],
            "held_s": round(held_s, 2),
            "tone_hz": round(tone_hz, 1),
            "images": len(record.images),
            "reply_audio_level": round(during["level"], 3),
        },
    )
