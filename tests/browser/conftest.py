from __future__ import annotations

import os
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import BrowserContext, async_playwright

CHROMIUM = "/usr/bin/chromium"


def loopback_only_namespace() -> bool:
    """True inside a network namespace whose only interface is ``lo``."""
    return [name for _, name in socket.if_nameindex()] == ["lo"]


@pytest.fixture(autouse=True)
def _browser_preconditions() -> None:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: tests/run installs Debian's chromium")
    if not loopback_only_namespace() and os.environ.get("OMNI_RTC_BROWSER_ON_HOST_NETWORK") != "1":
        pytest.fail(
            "browser tests must run in a loopback-only network namespace: use tests/run, or "
            "unshare -rn sh -c 'ip link set lo up && pytest tests/browser'"
        )


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
