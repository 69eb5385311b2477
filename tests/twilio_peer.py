"""The far end of a telephony media stream, played as Twilio documents it (and the Telnyx
and Plivo dialects): what the tests call the bridge with.

- Sends ``connected``, ``start`` (streamSid, callSid, mediaFormat audio/x-mulaw 8000 1,
  customParameters), then one ``media`` frame of 20 ms μ-law every 20 ms in real time,
  encoded with PyAV's own ``pcm_mulaw`` codec (not the bridge's tables).
- Buffers what it receives like Twilio: media appended; a mark waits behind the audio sent
  before it and is echoed once that audio has been played (at once if nothing is
  buffered); ``clear`` empties the buffer and echoes the pending marks (Plivo instead
  answers ``clearedAudio`` and drops them). The buffer plays out in real time, 20 ms per
  tick, on the same clock that sends the caller's frames.
- Everything received is stamped with the media clock (``frame``: frames sent so far),
  so tests measure in media time, never in CPU time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np

FRAME_S = 0.02
FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law


def mulaw_encode(pcm8k: bytes) -> bytes:
    """pcm16 8 kHz -> μ-law with FFmpeg's encoder."""
    codec = av.CodecContext.create("pcm_mulaw", "w")
    codec.sample_rate, codec.format, codec.layout = 8000, "s16", "mono"
    samples = np.frombuffer(pcm8k, dtype="<i2").reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
    frame.sample_rate = 8000
    return b"".join(bytes(p) for p in codec.encode(frame))


def mulaw_decode(data: bytes) -> bytes:
    """μ-law -> pcm16 8 kHz with FFmpeg's decoder."""
    if not data:
        return b""
    codec = av.CodecContext.create("pcm_mulaw", "r")
    codec.sample_rate, codec.layout = 8000, "mono"
    return b"".join(f.to_ndarray().astype("<i2").tobytes() for f in codec.decode(av.Packet(data)))


@dataclass
class Received:
    frame: int
    """Frames the peer had sent when this arrived (its media clock)."""
    message: dict[str, Any]


@dataclass
class MediaStreamPeer:
    url: str
    caller_ulaw: bytes = b""
    """The caller's voice as μ-law 8 kHz; empty = silence."""
    loop: bool = True
    """Say it again and again (else once, then silence)."""
    dialect: str = "twilio"
    headers: dict[str, str] = field(default_factory=dict)
    parameters: dict[str, str] = field(default_factory=dict)
    stream_sid: str = "MZ00000000000000000000000000000001"
    call_sid: str = "CA00000000000000000000000000000001"
    muted: bool = False
    echo_marks: bool = True

    def __post_init__(self) -> None:
        self.received: list[Received] = []
        self.frame = 0
        self.heard = bytearray()
        """μ-law actually played to the caller, 160 bytes per tick (0xFF when idle)."""
        self.clears: list[int] = []
        self.marks_echoed: list[tuple[int, str]] = []
        self.closed_at: int | None = None
        self.close_code: int | None = None
        self._buffer = bytearray()
        self._received_bytes = 0
        self._played_bytes = 0
        self._pending_marks: list[tuple[int, str]] = []
        self._sequence = 0
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._sends: set[asyncio.Future[None]] = set()
        self.done = asyncio.Event()

    # ---------------------------------------------------------------- connecting

    async def open(self) -> None:
        """Open the socket only (for tests that send their own frames)."""
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url, headers=self.headers, autoping=True)
        self._tasks.append(asyncio.create_task(self._receive()))

    async def connect(self) -> None:
        """Open the socket, send connected + start, then talk and listen in real time."""
        await self.open()
        if self.dialect != "plivo":
            await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(self.start_message())
        self._tasks.append(asyncio.create_task(self._tick()))

    def start_message(self) -> dict[str, Any]:
        if self.dialect == "telnyx":
            return {
                "event": "start",
                "sequence_number": "1",
                "start": {
                    "call_control_id": "v3:" + self.call_sid,
                    "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                    "custom_parameters": self.parameters,
                },
                "stream_id": self.stream_sid,
            }
        if self.dialect == "plivo":
            return {
                "event": "start",
                "sequenceNumber": 1,
                "start": {
                    "callId": self.call_sid,
                    "streamId": self.stream_sid,
                    "accountId": "MA0000000000",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": "",
            }
        return {
            "event": "start",
            "sequenceNumber": "1",
            "start": {
                "accountSid": "AC00000000000000000000000000000001",
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": self.parameters,
            },
            "streamSid": self.stream_sid,
        }

    def _envelope(self, event: str, body: dict[str, Any]) -> dict[str, Any]:
        self._sequence += 1
        if self.dialect == "telnyx":
            return {
                "event": event,
                "sequence_number": str(self._sequence),
                **body,
                "stream_id": self.stream_sid,
            }
        if self.dialect == "plivo":
            return {
                "event": event,
                "sequenceNumber": self._sequence,
                "streamId": self.stream_sid,
                **body,
            }
        return {
            "event": event,
            "sequenceNumber": str(self._sequence),
            **body,
            "streamSid": self.stream_sid,
        }

    async def send(self, message: dict[str, Any]) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def send_dtmf(self, digit: str) -> None:
        await self.send(
            self._envelope("dtmf", {"dtmf": {"track": "inbound_track", "digit": digit}})
        )

    async def stop(self) -> None:
        stop = {"accountSid": "AC00000000000000000000000000000001", "callSid": self.call_sid}
        await self.send(self._envelope("stop", {"stop": stop}))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._ws is not None:
            await self._ws.close()
        if self._session is not None:
            await self._session.close()

    # ---------------------------------------------------------------- the two directions

    async def _tick(self) -> None:
        start = time.monotonic()
        source = self.caller_ulaw
        while True:
            due = start + self.frame * FRAME_S
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            if not self.loop and self.frame * FRAME_BYTES >= len(source):
                source = b""
            if source and not self.muted:
                offset = self.frame * FRAME_BYTES % len(source)
                chunk = (source + source)[offset : offset + FRAME_BYTES]
            else:
                chunk = b"\xff" * FRAME_BYTES
            media = {
                "track": "inbound",
                "chunk": str(self.frame + 1),
                "timestamp": str(self.frame * 20),
                "payload": base64.b64encode(chunk).decode(),
            }
            try:
                await self.send(self._envelope("media", {"media": media}))
            except (ConnectionError, RuntimeError):
                return
            self.frame += 1
            self._play()

    def _play(self) -> None:
        chunk = bytes(self._buffer[:FRAME_BYTES])
        del self._buffer[:FRAME_BYTES]
        self._played_bytes += len(chunk)
        self.heard += chunk + b"\xff" * (FRAME_BYTES - len(chunk))
        self._echo_played_marks()

    def _echo_played_marks(self) -> None:
        while self._pending_marks and self._pending_marks[0][0] <= self._played_bytes:
            _, name = self._pending_marks.pop(0)
            self._echo(name)

    def _echo(self, name: str) -> None:
        if not self.echo_marks:
            return
        self.marks_echoed.append((self.frame, name))
        if self.dialect == "plivo":
            message = {"event": "playedStream", "streamId": self.stream_sid, "name": name}
        else:
            message = self._envelope("mark", {"mark": {"name": name}})
        self._later(message)

    def _later(self, message: dict[str, Any]) -> None:
        """Send from a synchronous callback (in order: tasks start in creation order)."""
        task = asyncio.ensure_future(self.send(message))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    async def _receive(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            message = json.loads(msg.data)
            self.received.append(Received(self.frame, message))
            self._apply(message)
        self.closed_at = self.frame
        self.close_code = self._ws.close_code
        self.done.set()

    def _apply(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event in ("media", "playAudio"):
            if self.dialect == "twilio":
                assert message["streamSid"] == self.stream_sid, message
            payload = base64.b64decode(message["media"]["payload"])
            self._buffer += payload
            self._received_bytes += len(payload)
        elif event in ("mark", "checkpoint"):
            name = message["mark"]["name"] if event == "mark" else message["name"]
            self._pending_marks.append((self._received_bytes, name))
            self._echo_played_marks()
        elif event in ("clear", "clearAudio"):
            self.clears.append(self.frame)
            self._played_bytes = self._received_bytes
            self._buffer.clear()
            if self.dialect == "plivo":
                self._pending_marks.clear()
                self._later({"event": "clearedAudio", "streamId": self.stream_sid})
            else:
                self._echo_played_marks()

    # ---------------------------------------------------------------- what happened

    def of(self, event: str) -> list[Received]:
        return [r for r in self.received if r.message.get("event") == event]

    def heard_pcm(self) -> bytes:
        """What the caller heard, pcm16 8 kHz, one 20 ms frame per tick."""
        return mulaw_decode(bytes(self.heard))

    def buffered_frames(self) -> int:
        return len(self._buffer) // FRAME_BYTES
