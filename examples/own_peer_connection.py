"""Bring your own peer connection: a program that already speaks WebRTC hands it over.

A gateway (an SFU leg, a softphone, a WebRTC-to-PBX box) creates and negotiates its own
aiortc ``RTCPeerConnection``; :meth:`Bridge.attach_peer_connection` connects it to the
model: the caller's audio (and camera) go up, the model's voice comes back on the same
audio transceiver.  Here the "caller" is a second peer connection in the same process
that says a tone burst and measures what it hears.

    python examples/own_peer_connection.py     # offline on the built-in emulator

Exits 0 when the caller heard the model's reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import numpy as np
from _tone import ToneBurstTrack
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from omni_rtc import Bridge, StateChanged, Transcript


async def main() -> int:
    # ICE over loopback (aioice skips 127.0.0.1 unless told): both peers live here.
    async with Bridge(ice_host_addresses=("127.0.0.1",)) as bridge:
        caller = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        caller.addTrack(ToneBurstTrack())
        heard: list[float] = []

        async def listen(track: MediaStreamTrack) -> None:
            with contextlib.suppress(MediaStreamError):
                while True:
                    frame = await track.recv()
                    x = frame.to_ndarray().astype(np.float64) / 32768  # type: ignore[union-attr]
                    heard.append(float(np.sqrt(np.mean(x**2))))

        listeners: list[asyncio.Task[None]] = []
        caller.on("track", lambda track: listeners.append(asyncio.create_task(listen(track))))

        # --- the gateway's side: its own peer connection, its own negotiation ---
        gateway = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        call = await bridge.attach_peer_connection(gateway)  # before the answer is made
        events = call.conversation.events()
        await caller.setLocalDescription(await caller.createOffer())
        await gateway.setRemoteDescription(caller.localDescription)
        await gateway.setLocalDescription(await gateway.createAnswer())
        await caller.setRemoteDescription(gateway.localDescription)

        async def follow() -> None:
            spoke = False
            async for event in events:
                if isinstance(event, Transcript) and event.final:
                    print(f"{event.role}: {event.text}")
                if isinstance(event, StateChanged):
                    print(f"  [{event.value}]")
                    spoke = spoke or event.value == "speaking"
                    if spoke and event.value == "listening":
                        return  # the reply was played out

        await asyncio.wait_for(follow(), 30)
        await call.close()
        await caller.close()
        for task in listeners:
            task.cancel()
    loud = sum(1 for level in heard if level > 0.01) * 0.02
    print(f"the caller heard {loud:.2f} s of reply audio")
    return 0 if loud > 0.5 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
