"""Two servers side by side under the same host load: which one costs less CPU per call?

Run (from the project root, after ``../shared/peer-bench/setup.sh``)::

    python bench/paired.py --ns 1,4 --a "old=COMMAND" --b "new=COMMAND"

each COMMAND as peer-bench's ``--target`` takes it (``{port}``, ``{upstream}``, an absolute
path), e.g. ``$PWD/.venv/bin/omni-rtc serve --host 127.0.0.1 --port {port} --upstream-url
{upstream} --api-key bench --ice-host-address 127.0.0.1`` with and without a flag, or
the same for an older checkout (``PYTHONPATH=/path/to/it``), or one of peer-bench's own
servers by name alone (``--a aiortc-echo``).

On this shared 2-vCPU machine one peer-bench run's CPU figure drifts by 10-15% with the
host's load, more than most single changes save.  So this runs two peer-bench runs at
once, each in its own network namespace, with the targets in opposite orders (A then B,
and B then A): in each time slot one A server and one B server run on the same pinned
core under the same load.  It prints each slot's pair and the B/A ratio of CPU per call;
repeat with ``--rounds`` to see the spread (pairs still differ by a few percent).  At
most ~40% of a core per server: two servers share one core.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import string
import subprocess
import time
from collections import defaultdict
from pathlib import Path

import stopping

KIT = Path(__file__).resolve().parent.parent.parent / "shared" / "peer-bench"
RUNNER = KIT / "peers" / "run_peer_bench.sh"
OUT = KIT / "peers" / "out"


def _fields(command: str) -> set[str]:
    return {field for _, field, _, _ in string.Formatter().parse(command) if field}


BUILT_IN = ("aiortc-echo", "pipecat")
"""peer-bench's own servers: named alone, without a command."""


def target(spec: str) -> tuple[str, str]:
    if spec in BUILT_IN:
        return spec, ""
    name, sep, command = spec.partition("=")
    if not sep or not name.isidentifier() or not {"port", "upstream"} <= _fields(command):
        raise argparse.ArgumentTypeError(
            f"NAME=COMMAND with {{port}} and {{upstream}} in it, or one of {', '.join(BUILT_IN)}"
        )
    return name, command


def start(order: list[tuple[str, str]], ns: str, media: str) -> tuple[subprocess.Popen[str], Path]:
    """One peer-bench run of ``order``; returns it and the directory it writes to."""
    before = set(OUT.glob("bench-*")) if OUT.exists() else set()
    args = [str(RUNNER), "--targets", ",".join(n for n, _ in order), "--ns", ns]
    args += ["--media", media, "--skip-latency"]
    for name, command in order:
        if command:
            args += ["--target", f"{name}={command}"]
    process = subprocess.Popen(
        args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, for stop_run
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        fresh = set(OUT.glob("bench-*")) - before if OUT.exists() else set()
        if fresh:
            return process, max(fresh)
        time.sleep(0.1)
    stop_run(process)
    raise SystemExit("peer-bench did not start (run ../shared/peer-bench/setup.sh once)")


def stop_run(run: subprocess.Popen[str]) -> None:
    """End a peer-bench run that is still going (this script was stopped) with all it
    started: neither signal stops a peer-bench run cleanly (SIGTERM orphans the servers it
    measures, SIGINT only ends the current measurement), so the run's whole process group
    gets SIGTERM, and SIGKILL if anything in it is left after 10 s."""
    if run.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(run.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        run.poll()  # reaped: a zombie would still count as the group's member
        try:
            os.killpg(run.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(run.pid, signal.SIGKILL)
    run.wait()


def cpu_per_call(directory: Path) -> dict[tuple[str, int], float]:
    """``(target, N) -> server CPU % per call`` from a finished run's results."""
    path = directory / "results.jsonl"
    if not path.exists():
        raise SystemExit(f"peer-bench left no results in {directory} (see its bench.log)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {
        (str(row["target"]), int(row["n"])): float(row["server_cpu_pct_per_call"])
        for row in rows
        if row.get("kind") == "load"
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--a", type=target, required=True, help="NAME=COMMAND or aiortc-echo (the baseline)"
    )
    parser.add_argument("--b", type=target, required=True, help="NAME=COMMAND")
    parser.add_argument("--ns", default="1,4", help="calls per run, e.g. 1,4")
    parser.add_argument("--media", default="av", choices=("av", "audio"))
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args(argv)
    if not RUNNER.exists():
        parser.error(f"{RUNNER} not found: peer-bench lives in ../shared beside the project")
    if args.a[0] == args.b[0]:
        parser.error("--a and --b need different names")
    ratios: dict[int, list[float]] = defaultdict(list)
    (a_name, _), (b_name, _) = args.a, args.b
    for round_ in range(1, args.rounds + 1):
        runs: list[subprocess.Popen[str]] = []
        try:
            first, first_dir = start([args.a, args.b], args.ns, args.media)
            runs.append(first)
            time.sleep(1.5)  # peer-bench names its output directory by the second
            second, second_dir = start([args.b, args.a], args.ns, args.media)
            runs.append(second)
            failed = first.wait() or second.wait()
        finally:
            for run in runs:
                stop_run(run)
        if failed:
            print(f"a peer-bench run failed: see bench.log in {first_dir} / {second_dir}")
            return 1
        ab, ba = cpu_per_call(first_dir), cpu_per_call(second_dir)
        for n in sorted({n for _, n in ab}):
            # slot 1: the first run's A beside the second run's B; slot 2 the other way
            for slot, (a, b) in enumerate(
                (
                    (ab.get((a_name, n)), ba.get((b_name, n))),
                    (ba.get((a_name, n)), ab.get((b_name, n))),
                ),
                start=1,
            ):
                if a is None or b is None or a <= 0:
                    continue
                ratios[n].append(b / a)
                print(
                    f"round {round_} N={n} slot {slot}: {a_name} {a:.2f}%  {b_name} {b:.2f}% "
                    f"per call  {b_name}/{a_name} {b / a:.3f}"
                )
    for n, values in sorted(ratios.items()):
        spread = f" (min {min(values):.3f}, max {max(values):.3f})" if len(values) > 1 else ""
        print(
            f"N={n}: {b_name}/{a_name} mean {statistics.mean(values):.3f} "
            f"over {len(values)} pairs{spread}"
        )
    return 0


if __name__ == "__main__":
    stopping.exit_on_sigterm()
    raise SystemExit(main())
