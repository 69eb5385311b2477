"""The ``omni-rtc`` command: ``serve`` (the bridge) and ``emulator`` (a local realtime service)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
from collections.abc import Sequence

from . import __version__
from .log import setup_logging
from .option_values import LOG_LEVELS, integer, number, positive_number

Subparsers = argparse._SubParsersAction  # argparse's type for add_subparsers()


def _emulator_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "emulator",
        help="run the offline emulator of the Qwen-Omni Realtime service",
        description="A local WebSocket server that speaks the DashScope realtime protocol: "
        "clients connect to ws://HOST:PORT/api-ws/v1/realtime?model=MODEL.",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    p.add_argument(
        "--port", type=integer, default=8765, help="port to listen on (default %(default)s)"
    )
    p.add_argument(
        "--api-key",
        default=os.environ.get("OMNI_RTC_EMULATOR_API_KEY"),
        help="require this Bearer key (env OMNI_RTC_EMULATOR_API_KEY; default: accept any)",
    )
    p.add_argument(
        "--reply",
        choices=("echo", "tone", "live"),
        default="echo",
        help="echo the user's utterance back, answer with a tone, or return every chunk at "
        "once (live: a latency probe)",
    )
    p.add_argument(
        "--tone-seconds", type=positive_number, default=3.0, help="length of tone replies"
    )
    p.add_argument(
        "--reply-speed",
        type=positive_number,
        default=4.0,
        help="send reply audio this many times faster than real time (default 4)",
    )
    p.add_argument(
        "--reply-delay",
        type=number,
        default=0.2,
        help="seconds of 'thinking' before the first reply audio (default 0.2)",
    )
    p.add_argument(
        "--idle-timeout",
        type=positive_number,
        default=300.0,
        help="close a session after this many seconds without a response (default 300)",
    )
    p.add_argument(
        "--max-session",
        type=positive_number,
        default=7200.0,
        help="close a session after this many seconds (default 7200 = 120 min)",
    )
    p.add_argument(
        "--drop-after",
        type=positive_number,
        default=None,
        help="fault: abort each connection after this many seconds",
    )
    p.add_argument(
        "--drop-mid-reply",
        action="store_true",
        help="fault: abort the connection halfway through the first reply",
    )
    p.add_argument(
        "--partition-after",
        type=float,
        default=None,
        help="fault: after this many seconds each connection goes silent without closing",
    )
    p.add_argument(
        "--fault-sessions",
        type=int,
        default=None,
        help="inject the faults into the first N sessions only (default: every session)",
    )
    p.add_argument("--reject-auth", action="store_true", help="fault: refuse every key with 401")
    p.add_argument(
        "--log-level",
        default="INFO",
        type=str.upper,
        choices=LOG_LEVELS,
        help="how much to log, in upper or lower case (default INFO)",
    )


def _run_emulator(args: argparse.Namespace) -> int:
    from .emulator import Emulator, EmulatorConfig

    setup_logging(args.log_level, secrets=[args.api_key] if args.api_key else [])
    config = EmulatorConfig(
        api_key=args.api_key,
        reject_auth=args.reject_auth,
        reply=args.reply,
        tone_seconds=args.tone_seconds,
        reply_speed=args.reply_speed,
        reply_delay_s=args.reply_delay,
        idle_timeout_s=args.idle_timeout,
        max_session_s=args.max_session,
        drop_after_s=args.drop_after,
        drop_mid_reply=args.drop_mid_reply,
        partition_after_s=args.partition_after,
        fault_sessions=args.fault_sessions,
    )
    emulator = Emulator(config, host=args.host, port=args.port)
    print(f"omni-rtc emulator on {emulator.url}?model=qwen-omni-turbo-realtime", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(emulator.serve_forever())
    return 0


def _healthcheck_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "healthcheck",
        help="exit 0 when the local server can take calls (for Docker HEALTHCHECK)",
        description="GET /healthz of the server configured by the same environment "
        "variables (OMNI_RTC_PORT, OMNI_RTC_CERT_FILE); exit 0 if it can take calls.",
    )
    p.add_argument("--url", help="health URL (default: from OMNI_RTC_PORT / OMNI_RTC_CERT_FILE)")
    p.add_argument("--timeout", type=positive_number, default=3.0)


def _run_healthcheck(args: argparse.Namespace) -> int:
    import json
    import ssl
    import urllib.error
    import urllib.request

    url = args.url
    if url is None:
        scheme = "https" if os.environ.get("OMNI_RTC_CERT_FILE") else "http"
        url = f"{scheme}://127.0.0.1:{os.environ.get('OMNI_RTC_PORT') or 8080}/healthz"
    # The certificate names a public host, not 127.0.0.1: this probe checks liveness only.
    context = ssl._create_unverified_context() if url.startswith("https") else None  # noqa: S323
    try:
        with urllib.request.urlopen(url, timeout=args.timeout, context=context) as response:  # noqa: S310
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        print(f"unhealthy: HTTP {exc.code}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"unhealthy: {exc}", file=sys.stderr)
        return 1
    print(f"{body.get('status')}: {body.get('calls')}/{body.get('max_calls')} calls")
    return 0


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration(text: str) -> float:
    """``90``, ``90s``, ``10m``, ``2h`` or ``7d`` -> seconds."""
    value = text.strip().lower()
    scale = _DURATION_UNITS.get(value[-1:], 0)
    try:
        seconds = float(value[:-1] if scale else value) * (scale or 1)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(
            f"must be a duration such as 90s, 10m, 2h or 7d, got {text!r}"
        )
    return seconds


def _token_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    from .option_parsing import add_serve_arguments
    from .option_values import TURN_DETECTION_MODES
    from .options import OPTIONS

    p = sub.add_parser(
        "token",
        help="print a signed, expiring call link token for the page (?token=...)",
        description="Print a call link token: HMAC-signed with the server's access token, "
        "valid until it expires, with no database. Give it to a caller as "
        "https://HOST/?token=TOKEN (or use --url). A voice, instructions or mode given "
        "here bind the calls the link starts.",
    )
    p.add_argument(
        "--ttl", type=duration, default=3600.0, help="lifetime: 90s, 10m, 2h, 7d (default 1h)"
    )
    p.add_argument("--voice", help="the voice of calls from this link")
    p.add_argument("--instructions", help="the system instructions of calls from this link")
    p.add_argument("--mode", choices=TURN_DETECTION_MODES, help="server_vad (hands-free) or manual")
    p.add_argument("--url", help="print the whole link: this page URL with ?token=...")
    access = [o for o in OPTIONS if o.flag in ("--access-token", "--access-token-file")]
    add_serve_arguments(p, options=access)
    p.set_defaults(command_parser=p)


def _run_token(args: argparse.Namespace) -> int:
    import datetime

    from signaling.tokens import mint

    from .config import Settings
    from .option_parsing import check_env_defaults
    from .option_values import MIN_TOKEN_CHARS, read_access_token

    parser: argparse.ArgumentParser = args.command_parser
    try:
        check_env_defaults(args)
        secret = args.access_token
        if args.access_token_file:
            if secret:
                raise ValueError("give --access-token or --access-token-file, not both")
            secret = read_access_token(args.access_token_file)
        if not secret:
            raise ValueError(
                "no access token: give the server's --access-token or --access-token-file "
                "(or set OMNI_RTC_ACCESS_TOKEN)"
            )
        Settings(  # the server's rules for the token, and a voice its model has
            provider=os.environ.get("OMNI_RTC_PROVIDER") or "dashscope",
            model=os.environ.get("OMNI_RTC_MODEL") or None,
            voice=args.voice,
            access_token=secret,
        )
        token = mint(
            secret, args.ttl, voice=args.voice, instructions=args.instructions, mode=args.mode
        )
    except ValueError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    if len(secret) < MIN_TOKEN_CHARS:
        print(
            "warning: the access token is short: links signed with it can be forged by "
            "guessing it; use 32 random characters (openssl rand -hex 32)",
            file=sys.stderr,
        )
    expires = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=args.ttl)
    print(f"valid until {expires:%Y-%m-%d %H:%M:%S} UTC", file=sys.stderr)
    if args.url:
        print(f"{args.url}{'&' if '?' in args.url else '?'}token={token}")
    else:
        print(token)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="omni-rtc",
        description="Talk to Qwen-Omni Realtime (and other OpenAI-Realtime-style models) "
        "from a browser over WebRTC.",
    )
    parser.add_argument("--version", action="version", version=f"omni-rtc {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    from .option_parsing import add_serve_arguments

    serve = sub.add_parser(
        "serve",
        help="run the bridge: web page, signaling and calls",
        description="Run the omni-rtc bridge. With no API key and no --upstream-url it starts "
        "the built-in emulator, so the first run works offline. Every flag also reads the "
        "environment variable shown.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_serve_arguments(serve)
    serve.set_defaults(command_parser=serve)
    _emulator_parser(sub)
    _healthcheck_parser(sub)
    _token_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "emulator":
        return _run_emulator(args)
    if args.command == "healthcheck":
        return _run_healthcheck(args)
    if args.command == "token":
        return _run_token(args)
    from .config import Settings

    serve: argparse.ArgumentParser = args.command_parser
    try:
        settings = Settings.from_args(args)
    except ValueError as exc:  # one line naming the subcommand; usage would hide the reason
        serve.exit(2, f"{serve.prog}: error: {exc}\n")
    from signaling.main import run

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
