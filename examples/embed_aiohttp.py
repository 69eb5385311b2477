"""Your aiohttp application, with the omni-rtc bridge mounted under /voice/.

    python examples/embed_aiohttp.py              # open http://localhost:8000/voice/
    python examples/embed_aiohttp.py --self-test  # one call against itself, then exit

The bridge brings its page, /voice/offer, /voice/calls/{id}, /voice/config,
/voice/healthz and /voice/metrics; your routes stay yours.  Offline (no
DASHSCOPE_API_KEY) it talks to the built-in emulator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

import aiohttp
import numpy as np
from _tone import ToneBurstTrack
from aiohttp import web
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from omni_rtc import Bridge


async def hello(request: web.Request) -> web.Response:
    return web.Response(text="My application. Talk to the model at /voice/\n")


def build(bridge: Bridge) -> web.Application:
    app = web.Application()
    app.router.add_get("/", hello)
    bridge.mount(app, "/voice/")
    return app


async def self_test(base: str) -> int:
    """Call /voice/offer like a browser would; pass when the model's reply is heard."""
    pc = RTCPeerConnection()
    channel = pc.createDataChannel("events")
    messages: list[str] = []
    channel.on("message", messages.append)
    pc.addTrack(ToneBurstTrack())
    loudest = 0.0

    async def listen(track: MediaStreamTrack) -> None:
        nonlocal loudest
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                samples = frame.to_ndarray().astype(np.float64) / 32768  # type: ignore[union-attr]
                loudest = max(loudest, float(np.sqrt(np.mean(samples**2))))

    listeners: list[asyncio.Task[None]] = []
    pc.on("track", lambda track: listeners.append(asyncio.create_task(listen(track))))
    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        async with http.post(f"{base}/voice/offer", json=offer) as response:
            answer = await response.json()
            if response.status != 200:
                print(f"offer refused: {answer}", file=sys.stderr)
                return 1
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        for _ in range(300):  # up to 30 s for the assistant's final transcript
            if any('"role": "assistant"' in m and '"final": true' in m for m in messages):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # hear some of the reply
        async with http.delete(f"{base}/voice/calls/{answer['call_id']}") as response:
            hung_up = response.status
        async with http.get(f"{base}/") as response:
            mine = await response.text()
    await pc.close()
    for task in listeners:
        task.cancel()
    print(*messages, sep="\n")
    print(f"reply level {20 * np.log10(loudest + 1e-9):.1f} dBFS, hang-up HTTP {hung_up}")
    ok = loudest > 0.01 and hung_up == 204 and mine.startswith("My application")
    return 0 if ok else 1


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--self-test", action="store_true", help="make one call, then exit")
    args = parser.parse_args()
    # The self-test calls itself over loopback, which ICE skips unless told to use it.
    bridge = Bridge(ice_host_addresses=("127.0.0.1",)) if args.self_test else Bridge()
    runner = web.AppRunner(build(bridge))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0 if args.self_test else args.port)
    await site.start()
    port = runner.addresses[0][1]
    try:
        if args.self_test:
            return await self_test(f"http://127.0.0.1:{port}")
        print(
            f"http://localhost:{port}/ (your app) and http://localhost:{port}/voice/ (the bridge)"
        )
        await asyncio.Event().wait()
        return 0
    finally:
        await runner.cleanup()


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
