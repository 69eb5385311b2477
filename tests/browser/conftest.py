from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, async_playwright

from tests.netns import require_loopback_namespace

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(autouse=True)
def _browser_preconditions() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tests/run installs Debian's chromium")
    require_loopback_namespace()


@pytest.fixture
async def chromium(speech_wav: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="omni-rtc-chromium-"),
            executable_path=CHROMIUM,
            headless=False,
            args=[
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-audio-capture={speech_wav}",
                "--autoplay-policy=no-user-gesture-required",
                "--allow-loopback-in-peer-connection",
            ],
            viewport={"width": 1200, "height": 800},
        )
        try:
            yield context
        finally:
            await context.close()
