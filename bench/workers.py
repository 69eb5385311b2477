"""Capacity with worker processes: real-time SIP G.711 calls with --workers 1 and 2.

Run: ``python bench/workers.py [--calls 10,20,30,40,50,60] [--seconds 6]``.  Prints
figures, not a test.  ``omni-rtc serve --sip-listen`` runs with ``--workers 1`` pinned to
one core, then with ``--workers 2`` on two cores, against ``omni-rtc emulator --reply
live`` (every caller chunk comes straight back: the whole model path); the load client
of bench/sip.py dials N calls and streams 20 ms PCMU on each. A step is real time when
>= 97% of the echo packets arrive and their p99 gap stays under 40 ms. The capacity is
the largest real-time step. On a 2-core machine the load client and the emulator share
the cores with the workers, so the two-worker figure is a floor.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sip import HOST, SIP_PORT, free_port, load_step


async def capacity(workers: int, cpus: str, steps: list[int], seconds: float) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up = free_port()
    emulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omni_rtc", "emulator", "--port", str(up), "--reply", "live",
        "--log-level", "WARNING", env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    server = await asyncio.create_subprocess_exec(
        "taskset", "-c", cpus, sys.executable, "-m", "omni_rtc", "serve",
        "--workers", str(workers), "--port", str(free_port()),
        "--sip-listen", f"udp:{HOST}:{SIP_PORT}", "--sip-allow", f"{HOST}/32",
        "--rtp-ports", "45000-45999", "--upstream-url", f"ws://{HOST}:{up}/api-ws/v1/realtime",
        "--api-key", "bench", "--max-calls", "500", "--log-level", "WARNING",
        env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    best = 0
    try:
        await asyncio.sleep(4.0 + 2.0 * workers)
        print(f"--workers {workers} on CPUs {cpus}")
        print("calls  server CPU  echo received (worst call)  gap p99  real time")
        for n in steps:
            r = await load_step(n, seconds, server.pid, tree=True)
            ok = r["received"] >= 0.97 and r["gap_p99_ms"] < 40
            print(
                f"{n:5d}  {r['cpu_percent']:9.1f}%  {r['received'] * 100:25.1f}%  "
                f"{r['gap_p99_ms']:6.1f} ms  {'yes' if ok else 'NO'}",
                flush=True,
            )
            await asyncio.sleep(1.0)
            if not ok:
                break
            best = n
    finally:
        for process in (server, emulator):
            process.terminate()
            await asyncio.wait_for(process.wait(), 20)
    return best


async def main(steps: list[int], seconds: float) -> None:
    one = await capacity(1, "1", steps, seconds)
    two = await capacity(2, "0,1", steps, seconds)
    ratio = two / one if one else float("nan")
    print(f"capacity: {one} calls with one worker on one core, {two} with two on two: {ratio:.2f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="10,20,30,40,50,60,70")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    asyncio.run(main([int(x) for x in args.calls.split(",")], args.seconds))
