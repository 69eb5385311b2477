"""The page and call links: ?token= reaches the server, and a refused link is explained."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from urllib.parse import quote

import pytest
from playwright.async_api import BrowserContext

from signaling.tokens import mint
from tests.browser.test_browser_call import wait_js
from tests.conftest import run_bridge
from tests.helpers import wait_for

TOKEN = "browser-access-token-0123456789"


def deletes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Status codes of DELETE /calls/... from the access log."""
    return [
        m.group(1)
        for r in caplog.records
        if r.name == "aiohttp.access"
        and (m := re.search(r'"DELETE /calls/\S+ [^"]*" (\d+)', r.getMessage()))
    ]


async def test_page_sends_its_call_link_and_explains_a_refused_one(
    chromium: BrowserContext, artifacts: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    async with run_bridge(["--access-token", TOKEN]) as bridge:
        link = mint(TOKEN, 600, voice="Ethan", mode="manual")
        page = await chromium.new_page()
        await page.goto(f"{bridge.url}/?processing=0&token={quote(link)}")
        await wait_js(page, "window.omni.config !== null", 10)
        config = await page.evaluate("window.omni.config")
        await page.click("#call")
        await wait_js(
            page, "document.querySelector('#connection').dataset.value === 'connected'", 15
        )
        await wait_js(page, "window.omni.events.some(([, m]) => m.type === 'call')", 10)
        started = await page.evaluate("window.omni.events.find(([, m]) => m.type === 'call')[1]")
        await page.click("#hangup")
        await wait_js(page, "document.querySelector('#connection').dataset.value === 'idle'", 5)
        await wait_for(lambda: bool(deletes(caplog)), 5)

        refused = await chromium.new_page()
        await refused.goto(f"{bridge.url}/?processing=0&token=not-a-valid-link")
        await wait_js(refused, "window.omni.config !== null", 10)
        await wait_js(refused, "!document.querySelector('#error').hidden", 5)
        before_call = await refused.inner_text("#error-text")  # said at once, not after Call
        await refused.click("#call")
        await wait_js(refused, "!document.querySelector('#error').hidden", 15)
        refused_text = await refused.inner_text("#error-text")
        await refused.screenshot(path=str(artifacts / "browser-refused-link.png"))

        bare = await chromium.new_page()
        await bare.goto(f"{bridge.url}/?processing=0")
        await wait_js(bare, "window.omni.config !== null", 10)
        await bare.click("#call")
        await wait_js(bare, "!document.querySelector('#error').hidden", 15)
        bare_text = await bare.inner_text("#error-text")
        calls = len(bridge.emulator.sessions)

    assert (config["authorized"], config["default_voice"], config["default_mode"]) == (
        True,
        "Ethan",
        "manual",
    )
    assert (started["voice"], started["mode"]) == ("Ethan", "manual")
    # the page's DELETE carried the link (404 if the closed peer connection won the race)
    assert deletes(caplog)[0] in ("204", "404")
    assert refused_text == "This call link is invalid or has expired."
    assert before_call == refused_text
    assert bare_text == "This server needs a call link: open the link you were given."
    assert calls == 1
