"""The page tells the truth when a call ends, whatever ended it (real Chromium)."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

from playwright.async_api import BrowserContext, Page

from omni_rtc.emulator import EmulatorConfig
from tests.browser.test_browser_call import PAGE, record_figures, wait_js
from tests.conftest import run_bridge
from tests.integration.test_cli_servers import free_port, read_until, start

CONNECTED = "document.querySelector('#connection').dataset.value === 'connected'"
ERROR_SHOWN = "!document.querySelector('#error').hidden"


async def error_text(page: Page) -> str:
    return await page.inner_text("#error-text")


async def call_and_wait_connected(page: Page, url: str) -> None:
    await page.goto(url + PAGE)
    await page.click("#call")
    await wait_js(page, CONNECTED, 15)


async def test_server_killed_is_reported_within_two_seconds(
    chromium: BrowserContext, artifacts: Path
) -> None:
    port = free_port()
    process = await start(
        "serve", "--port", str(port), "--ice-host-address", "127.0.0.1", new_session=True
    )
    try:
        await read_until(process, "ICE servers")
        page = await chromium.new_page()
        await call_and_wait_connected(page, f"http://127.0.0.1:{port}")
        await asyncio.sleep(1.0)
        os.killpg(process.pid, signal.SIGKILL)  # a crash, every process: no goodbye at all
        killed = time.monotonic()
        await wait_js(page, ERROR_SHOWN, 10)
        noticed = time.monotonic() - killed
        text = await error_text(page)
        await page.screenshot(path=str(artifacts / "browser-server-killed.png"))
        idle = await page.evaluate("document.querySelector('#connection').dataset.value")
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    record_figures(artifacts, "server_killed", {"noticed_after_s": round(noticed, 2)})
    assert "Lost contact with the server" in text
    assert "TURN" not in text  # not the misleading network advice
    assert noticed < 2.0, noticed
    assert idle == "idle"  # the page hung up its side


async def test_server_shutdown_is_reported(chromium: BrowserContext) -> None:
    port = free_port()
    process = await start(
        "serve", "--port", str(port), "--ice-host-address", "127.0.0.1", "--drain-seconds", "1"
    )
    try:
        await read_until(process, "ICE servers")
        page = await chromium.new_page()
        await call_and_wait_connected(page, f"http://127.0.0.1:{port}")
        process.send_signal(signal.SIGTERM)
        await wait_js(
            page, "document.querySelector('#notice').textContent.includes('shutting down')", 5
        )
        await wait_js(page, ERROR_SHOWN, 10)
        text = await error_text(page)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert text == "The server shut down, so the call ended."


async def test_server_unreachable_when_calling(chromium: BrowserContext) -> None:
    port = free_port()
    process = await start("serve", "--port", str(port), "--ice-host-address", "127.0.0.1")
    await read_until(process, "ICE servers")
    page = await chromium.new_page()
    await page.goto(f"http://127.0.0.1:{port}{PAGE}")
    await wait_js(page, "window.omni.config !== null")
    process.send_signal(signal.SIGKILL)
    await process.wait()
    await page.click("#call")
    await wait_js(page, ERROR_SHOWN, 10)
    text = await error_text(page)
    assert text.startswith("Cannot reach the omni-rtc server")


async def test_limits_and_reconnects_are_explained(chromium: BrowserContext) -> None:
    emulator = EmulatorConfig(reply_delay_s=0.05, drop_after_s=1.5, fault_sessions=1)
    async with run_bridge(["--max-call-seconds", "6"], emulator=emulator) as bridge:
        page = await chromium.new_page()
        await call_and_wait_connected(page, bridge.url)
        await wait_js(page, "document.querySelector('#notice').textContent.includes('Reconnected')")
        await wait_js(page, ERROR_SHOWN, 15)
        text = await error_text(page)
    assert text == "The call reached its time limit."


async def test_idle_limit_is_explained(chromium: BrowserContext) -> None:
    async with run_bridge(["--idle-seconds", "2"]) as bridge:
        page = await chromium.new_page()
        await page.goto(bridge.url + "/?processing=0")
        await page.check("input[name=mode][value=manual]")  # push-to-talk: silence
        await page.click("#call")
        await wait_js(page, ERROR_SHOWN, 15)
        text = await error_text(page)
    assert text == "The call ended because nobody spoke for a while."


async def test_mode_is_visible_and_calls_are_divided(
    chromium: BrowserContext, artifacts: Path
) -> None:
    async with run_bridge() as bridge:
        page = await chromium.new_page()
        await page.goto(bridge.url + PAGE)
        await page.check("input[name=mode][value=manual]")
        for _ in range(2):
            await page.click("#call")
            await wait_js(page, CONNECTED, 15)
            await wait_js(page, "window.omni.events.some(([, m]) => m.type === 'call')")
            chip = await page.inner_text("#mode")
            checked = await page.evaluate(
                """() => {
                    const label = document.querySelector('input[name=mode]:checked').parentElement;
                    const style = getComputedStyle(label);
                    return {weight: style.fontWeight, opacity: getComputedStyle(
                        document.querySelector('#options')).opacity,
                        scheme: getComputedStyle(document.documentElement).colorScheme};
                }"""
            )
            await page.screenshot(path=str(artifacts / "browser-mode-during-call.png"))
            await page.click("#hangup")
            await wait_js(page, "document.querySelector('#connection').dataset.value === 'idle'")
            # something in the transcript, so the second call gets a divider
            await page.evaluate(
                "document.querySelector('#turns').appendChild(document.createElement('li'))"
            )
        dividers = await page.locator("#turns li.divider").count()
    assert chip == "push-to-talk"
    assert int(checked["weight"]) >= 600
    assert float(checked["opacity"]) >= 0.85
    assert checked["scheme"] == "dark"
    assert dividers == 1
