"""Bring your own audio pipe: a wav file in, the model's reply written to a wav file out.

This is what a telephony stack written in Python embeds: 8 kHz pcm16 in, 8 kHz pcm16
out, events alongside.  Offline (no DASHSCOPE_API_KEY) it talks to the built-in
emulator, which says back what it heard.

    python examples/pcm_pipe.py question.wav reply.wav
    python examples/pcm_pipe.py --tone reply.wav       # no input file: a tone burst

Exits 0 when a reply was received and written.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import wave
from pathlib import Path

import av
import numpy as np

from omni_rtc import Bridge, Ended, StateChanged, Transcript

RATE = 8000
CHUNK = RATE // 50 * 2  # 20 ms of pcm16


def read_audio(path: Path) -> bytes:
    """Any audio file PyAV reads -> 8 kHz mono pcm16."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=RATE)
    out = bytearray()
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            for converted in resampler.resample(frame):
                out += bytes(converted.planes[0])[: converted.samples * 2]
    for converted in resampler.resample(None):
        out += bytes(converted.planes[0])[: converted.samples * 2]
    return bytes(out)


def tone_burst() -> bytes:
    t = np.arange(int(1.2 * RATE)) / RATE
    tone = (0.3 * np.sin(2 * np.pi * 300 * t) * 32767).astype("<i2").tobytes()
    return bytes(RATE) + tone  # 0.5 s of silence first


async def talk(bridge: Bridge, question: bytes, reply_path: Path) -> int:
    pipe = await bridge.open_pipe(input_rate=RATE, output_rate=RATE)
    reply = bytearray()
    spoke = asyncio.Event()

    async def read_reply() -> None:
        async for chunk in pipe.reply_audio():
            reply.extend(chunk)

    async def read_events() -> None:
        async for event in pipe.events():
            if isinstance(event, Transcript) and event.final:
                print(f"{event.role}: {event.text}", flush=True)
            elif isinstance(event, StateChanged):
                print(f"  [{event.value}]", flush=True)
                if event.value == "speaking":
                    spoke.set()
                elif event.value == "listening" and spoke.is_set():
                    return  # the reply has been played out
            elif isinstance(event, Ended):
                return

    async def speak() -> None:
        # Real time, as a phone line would deliver it; then silence so the turn ends.
        audio = question + bytes(int(1.5 * RATE) * 2)
        start = time.monotonic()
        for i, offset in enumerate(range(0, len(audio), CHUNK)):
            pipe.push(audio[offset : offset + CHUNK])
            await asyncio.sleep(max(0.0, start + (i + 1) * 0.02 - time.monotonic()))
        while not pipe.closed.is_set():  # keep the line open (silence) while it answers
            pipe.push(bytes(CHUNK))
            await asyncio.sleep(0.02)

    async with pipe:
        reader = asyncio.create_task(read_reply())
        speaker = asyncio.create_task(speak())
        try:
            await asyncio.wait_for(read_events(), timeout=60)
        except TimeoutError:
            print("no reply within 60 s", file=sys.stderr)
            return 1
        finally:
            speaker.cancel()
    await reader
    with wave.open(str(reply_path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes(bytes(reply))
    seconds = len(reply) / 2 / RATE
    print(f"wrote {seconds:.2f} s of reply audio at {RATE} Hz to {reply_path}")
    return 0 if seconds > 0 else 1


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", type=Path, help="what the caller says (any audio)")
    parser.add_argument("output", type=Path, help="where to write the reply (8 kHz wav)")
    parser.add_argument("--tone", action="store_true", help="say a tone burst instead of a file")
    args = parser.parse_args()
    if args.input is None and not args.tone:
        parser.error("give an input file or --tone")
    question = tone_burst() if args.tone else read_audio(args.input)
    async with Bridge() as bridge:  # offline: the built-in emulator
        return await talk(bridge, question, args.output)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
