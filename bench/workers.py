"""Capacity with worker processes: real-time SIP G.711 calls with --workers 1 and 2.

Run: ``python bench/workers.py [--calls 10,20,30,40,50,60] [--seconds 6] [--rounds N]``.  Prints
figures, not a test.  ``omni-rtc serve --sip-listen`` runs with ``--workers 1`` pinned to
one core, then with ``--workers 2`` on two cores, against ``omni-rtc emulator --reply
live`` (every caller chunk comes straight back: the whole model path); the load client
of bench/sip.py dials N calls and streams 20 ms PCMU on each. A step is real time when
>= 97% of the packets carrying the echoed tone arrive and their p99 gap stays under
40 ms. The capacity is the largest real-time step. On a 2-core machine the load client
and the emulator share the cores with the workers, so the two-worker figure is a floor.

``--quota 0.4`` measures the scaling where the load generator would otherwise starve the
workers (a 2-core machine): the server's process tree runs in a CPU cgroup (v1 ``cpu``
or v2 ``cpu.max``; needs root) limited to 0.4 of a core per worker, unpinned, so one
worker gets 0.4 core, two get 0.8, and the load client and the emulator keep the rest.
A quota's 100 ms periods make one capacity step noisy; ``--rounds N`` measures one and two
workers N times, alternating, and prints each round's ratio and their median.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from statistics import median

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stopping
from sip import HOST, SIP_PORT, free_port, load_step, stop_processes


@contextlib.contextmanager
def cpu_quota(cores: float) -> Iterator[Path]:
    """A CPU cgroup limited to ``cores`` per 100 ms period (shorter periods throttle the
    burst that 20 ms ticks of N packets make, long before the average use nears the
    quota); yields its ``cgroup.procs``."""
    period = 100_000
    quota = max(1000, int(cores * period))
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()  # the unified hierarchy
    group = Path("/sys/fs/cgroup" if v2 else "/sys/fs/cgroup/cpu") / f"omni-bench-{os.getpid()}"
    group.mkdir()
    try:
        if v2:
            (group / "cpu.max").write_text(f"{quota} {period}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(period))
            (group / "cpu.cfs_quota_us").write_text(str(quota))
        yield group / "cgroup.procs"
    finally:
        # a straggler (multiprocessing's resource tracker) may outlive the server briefly
        for _ in range(50):
            with contextlib.suppress(OSError):
                if not (group / "cgroup.procs").read_text().split():
                    break
            time.sleep(0.1)
        try:
            group.rmdir()
        except OSError as exc:
            print(f"warning: cgroup {group} left behind: {exc}", file=sys.stderr)


async def capacity(
    workers: int, cpus: str, steps: list[int], seconds: float, quota: float | None = None
) -> int:
    with contextlib.ExitStack() as stack:
        procs = stack.enter_context(cpu_quota(quota * workers)) if quota else None
        return await _capacity(workers, cpus, steps, seconds, procs, quota)


async def _capacity(
    workers: int,
    cpus: str,
    steps: list[int],
    seconds: float,
    procs: Path | None,
    quota: float | None,
) -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    up = free_port()
    emulator = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "omni_rtc", "emulator", "--port", str(up), "--reply", "live",
        "--log-level", "WARNING", env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    # in the cgroup before the server starts: its workers inherit it
    join = ["sh", "-c", 'echo $$ > "$0" && exec "$@"', str(procs)] if procs else []
    server = await asyncio.create_subprocess_exec(
        *join, "taskset", "-c", cpus, sys.executable, "-m", "omni_rtc", "serve",
        "--workers", str(workers), "--port", str(free_port()),
        "--sip-listen", f"udp:{HOST}:{SIP_PORT}", "--sip-allow", f"{HOST}/32",
        "--rtp-ports", "45000-45999", "--upstream-url", f"ws://{HOST}:{up}/api-ws/v1/realtime",
        "--api-key", "bench", "--max-calls", "500", "--log-level", "WARNING",
        env=env, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    best = 0
    try:
        await asyncio.sleep(4.0 + 2.0 * workers)
        where = f"{quota * workers:.1f} core (cgroup quota)" if quota else f"CPUs {cpus}"
        print(f"--workers {workers} on {where}")
        print("calls  server CPU  echo received (worst call)  gap p99  real time")
        for n in steps:
            r = await load_step(n, seconds, server.pid)
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
        await stop_processes(server, emulator)
    return best


async def main(steps: list[int], seconds: float, quota: float | None, rounds: int) -> None:
    ratios: list[float] = []
    for round_no in range(1, rounds + 1):
        if quota:
            one = await capacity(1, "0,1", steps, seconds, quota)
            two = await capacity(2, "0,1", steps, seconds, quota)
            what = f"{quota:.1f} of a core per worker"
        else:
            one = await capacity(1, "1", steps, seconds)
            two = await capacity(2, "0,1", steps, seconds)
            what = "one core per worker"
        ratio = two / one if one else float("nan")
        ratios.append(ratio)
        print(
            f"round {round_no}: capacity ({what}): {one} calls with one worker, "
            f"{two} with two: {ratio:.2f}x",
            flush=True,
        )
    if rounds > 1:
        listed = ", ".join(f"{r:.2f}x" for r in ratios)
        print(
            f"two workers against one over {rounds} rounds: median {median(ratios):.2f}x ({listed})"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", default="10,20,30,40,50,60,70")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--quota", type=float, default=None, help="cores per worker (cgroup)")
    parser.add_argument("--rounds", type=int, default=1, help="measure both this many times")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    steps = [int(x) for x in args.calls.split(",")]
    stopping.run(main(steps, args.seconds, args.quota, args.rounds))
