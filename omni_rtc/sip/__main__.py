"""``python -m omni_rtc.sip``: the SIP endpoint with the demo echo handler (no model)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys

from omni_rtc.sip.config import add_sip_arguments, sip_config
from omni_rtc.sip.demo import EchoHandler
from omni_rtc.sip.server import SipServer


async def _run(args: argparse.Namespace) -> int:
    try:
        config = sip_config(args)
    except ValueError as exc:
        print(f"omni-rtc sip: {exc}", file=sys.stderr)
        return 2
    config.ring_s = args.ring
    handler = EchoHandler(mode=args.reply, delay_s=args.delay, max_calls=args.max_calls,
                          keep_audio=False)  # fmt: skip
    server = SipServer(config, handler)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni_rtc.sip", description=__doc__)
    add_sip_arguments(parser)
    parser.add_argument("--reply", choices=("echo", "tone", "silence"), default="echo")
    parser.add_argument("--delay", type=float, default=0.2, help="echo delay, seconds")
    parser.add_argument("--max-calls", type=int, default=100)
    parser.add_argument("--ring", type=float, default=0.0, help="ring this long before answering")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    return asyncio.run(_run(args))


if __name__ == "__main__":
    sys.exit(main())
