"""Every flag of ``omni-rtc serve``, declared once: flag, env var, type, default, help.

argparse (:mod:`omni_rtc.option_parsing`), ``--help``, the list of known environment
variables and the README's configuration table all come from :data:`OPTIONS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .media import DEFAULT_CHUNK_MS
from .option_values import (
    DEFAULT_RATE_LIMIT,
    LOG_LEVELS,
    TURN_DETECTION_MODES,
    cidr,
    integer,
    non_negative_number,
    number,
    on_off,
    positive_int,
    positive_number,
    public_url_value,
    rate_value,
    web_origin,
)
from .realtime.profiles import PROFILES


@dataclass(frozen=True)
class Option:
    flag: str
    env: str | None
    help: str
    default: Any = None
    type: Callable[[str], Any] = str
    choices: Sequence[str] | None = None
    repeatable: bool = False
    secret: bool = False
    switch: bool = False
    """A flag without a value (``--no-auth``); its env var takes 1/0, true/false."""

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


# Value parsers raise ArgumentTypeError: argparse then prints "argument --flag: MESSAGE"
# instead of the parser's function name.


OPTIONS: tuple[Option, ...] = (
    Option("--host", "OMNI_RTC_HOST", "address to listen on", "127.0.0.1"),
    Option("--port", "OMNI_RTC_PORT", "port to listen on", 8080, integer),
    Option(
        "--provider",
        "OMNI_RTC_PROVIDER",
        "realtime provider profile",
        "dashscope",
        choices=tuple(PROFILES),
    ),
    Option(
        "--region",
        "OMNI_RTC_REGION",
        "provider region when no --upstream-url is given (dashscope: beijing, singapore)",
    ),
    Option(
        "--upstream-url",
        "OMNI_RTC_UPSTREAM_URL",
        "realtime WebSocket URL without ?model= (default: the provider's; with no API key "
        "and no URL the built-in emulator is used)",
    ),
    Option(
        "--api-key",
        "DASHSCOPE_API_KEY",
        "API key for the realtime service (openai provider: env OPENAI_API_KEY)",
        secret=True,
    ),
    Option("--model", "OMNI_RTC_MODEL", "model name (default: the provider's default model)"),
    Option("--voice", "OMNI_RTC_VOICE", "default voice (default: the model's first voice)"),
    Option("--instructions", "OMNI_RTC_INSTRUCTIONS", "default system instructions"),
    Option(
        "--turn-detection",
        "OMNI_RTC_TURN_DETECTION",
        "default mode: server_vad (hands-free) or manual (push-to-talk)",
        "server_vad",
        choices=TURN_DETECTION_MODES,
    ),
    Option(
        "--vad-threshold",
        "OMNI_RTC_VAD_THRESHOLD",
        "server VAD threshold (dashscope -1..1, lower = more sensitive)",
        0.5,
        number,
    ),
    Option(
        "--vad-silence-ms",
        "OMNI_RTC_VAD_SILENCE_MS",
        "silence that ends a turn in server VAD mode, 200..6000 ms",
        800,
        integer,
    ),
    Option(
        "--video-fps",
        "OMNI_RTC_VIDEO_FPS",
        "camera frames sent to the model per second, 0.5..2 (0 = no video)",
        2.0,
        number,
    ),
    Option(
        "--max-calls",
        "OMNI_RTC_MAX_CALLS",
        "concurrent calls each worker process accepts (an A/V call with a 30 fps camera "
        "costs 4-9% of a core among many, 9-18% alone, a G.711 SIP call ~1%: README "
        "Benchmarks); /healthz shows the sum",
        6,
        positive_int,
    ),
    Option(
        "--max-loop-busy",
        "OMNI_RTC_MAX_LOOP_BUSY",
        "refuse new calls (503) when a worker's event loop would be busier than this, in % "
        "of its core over the last 2 s with the calls just started counted at the average "
        "cost (or while it runs over 10 ms late), so that a call too many does not make "
        "the calls already there miss real time; at 80% (or this limit if higher) or 10 ms "
        "late, VP8 cameras that send a key frame at least every 2 s are decoded without the "
        "loop filter (every image, a little less sharp) until it has been under 3/4 of that "
        "for 10 s; still at 90% (or this limit if higher) or 10 ms late 2 s later (at once "
        "from 97% or 20 ms late), also at key frames only (fewer images, the audio keeps "
        "real time), then only those of as many calls as keep it 5 points under that, until "
        "there is room again; 0 = never",
        75.0,
        non_negative_number,
    ),
    Option(
        "--workers",
        "OMNI_RTC_WORKERS",
        "worker processes that hold the calls, behind one front process that owns HTTP "
        "(default: the number of CPUs this process may use; 1 = a single process)",
        None,
        positive_int,
    ),
    Option(
        "--ice-server",
        "OMNI_RTC_ICE_SERVERS",
        "STUN/TURN server, repeatable: stun:HOST[:PORT] or turn:[USER:PASSWORD@]HOST[:PORT]"
        "[?transport=udp|tcp] (env: comma-separated; default none, never Google's STUN)",
        repeatable=True,
        secret=True,
    ),
    Option(
        "--bridge-ice-server",
        "OMNI_RTC_BRIDGE_ICE_SERVERS",
        "STUN/TURN server for the bridge's own side, repeatable (default: the --ice-server "
        "list; in docker-compose the bridge reaches coturn by its service name)",
        repeatable=True,
        secret=True,
    ),
    Option(
        "--turn-secret",
        "OMNI_RTC_TURN_SECRET",
        "shared secret (coturn static-auth-secret) to mint short-lived TURN credentials "
        "for turn: servers given without USER:PASSWORD",
        secret=True,
    ),
    Option(
        "--turn-ttl",
        "OMNI_RTC_TURN_TTL",
        "lifetime of minted TURN credentials, seconds",
        3600,
        positive_int,
    ),
    Option(
        "--ice-transport-policy",
        "OMNI_RTC_ICE_TRANSPORT_POLICY",
        "the bridge's own ICE policy: all, or relay (media only through TURN)",
        "all",
        choices=("all", "relay"),
    ),
    Option(
        "--ice-host-address",
        "OMNI_RTC_ICE_HOST_ADDRESSES",
        "restrict the bridge's host ICE candidates to these local addresses, repeatable "
        "(env: comma-separated; tests use 127.0.0.1)",
        repeatable=True,
    ),
    Option("--cert-file", "OMNI_RTC_CERT_FILE", "TLS certificate (PEM) to serve HTTPS"),
    Option("--key-file", "OMNI_RTC_KEY_FILE", "TLS private key (PEM) for --cert-file"),
    Option(
        "--public-url",
        "OMNI_RTC_PUBLIC_URL",
        "this server's public URL as phone providers reach it, https://HOST[:PORT][/PREFIX]: "
        "the TwiML stream URL (wss://) and signature checks use it (default: each request's "
        "Host header)",
        type=public_url_value,
    ),
    Option(
        "--twilio-auth-token",
        "OMNI_RTC_TWILIO_AUTH_TOKEN",
        "Twilio auth token (or SignalWire signing key): /twilio/voice and /twilio/stream then "
        "require a valid X-Twilio-Signature, else 403",
        secret=True,
    ),
    Option(
        "--allow-unsigned-media-streams",
        "OMNI_RTC_ALLOW_UNSIGNED_MEDIA_STREAMS",
        "serve /twilio/voice and the media-stream WebSockets without a verified signature to "
        "anyone who reaches them (default: only requests made directly on loopback, unless "
        "--twilio-auth-token is set); env: 1 or 0",
        False,
        on_off,
        switch=True,
    ),
    Option(
        "--chunk-ms",
        "OMNI_RTC_CHUNK_MS",
        "caller audio chunk sent upstream, 10..100 ms (20: the model hears each word up to 20 ms "
        "sooner, for more CPU per call)",
        DEFAULT_CHUNK_MS,
        integer,
    ),
    Option(
        "--idle-audio",
        "OMNI_RTC_IDLE_AUDIO",
        "what the reply track sends between replies: silence, or nothing (saves encode CPU)",
        "silence",
        choices=("silence", "nothing"),
    ),
    Option(
        "--jpeg-max-bytes",
        "OMNI_RTC_JPEG_MAX_BYTES",
        "byte budget per camera JPEG (hard ceiling 500000)",
        180_000,
        integer,
    ),
    Option(
        "--jpeg-max-size",
        "OMNI_RTC_JPEG_MAX_SIZE",
        "largest camera JPEG, WIDTHxHEIGHT (at most 1920x1080)",
        "1280x720",
    ),
    Option(
        "--connect-timeout",
        "OMNI_RTC_CONNECT_TIMEOUT",
        "seconds to open the realtime session",
        10.0,
        positive_number,
    ),
    Option(
        "--peer-timeout",
        "OMNI_RTC_PEER_TIMEOUT",
        "seconds a new call may take to connect its media before it is dropped (its slot "
        "and model session are released)",
        10.0,
        positive_number,
    ),
    Option(
        "--max-call-seconds",
        "OMNI_RTC_MAX_CALL_SECONDS",
        "longest call, seconds (0 = no limit; renewed model sessions don't extend it)",
        3600.0,
        non_negative_number,
    ),
    Option(
        "--idle-seconds",
        "OMNI_RTC_IDLE_SECONDS",
        "end a call when neither side has spoken for this long, seconds (0 = never)",
        300.0,
        non_negative_number,
    ),
    Option(
        "--reconnect-seconds",
        "OMNI_RTC_RECONNECT_SECONDS",
        "how long a call keeps trying to reach the model service again after losing it",
        20.0,
        positive_number,
    ),
    Option(
        "--drain-seconds",
        "OMNI_RTC_DRAIN_SECONDS",
        "on SIGTERM, refuse new calls and let running ones go on this long before ending them",
        30.0,
        positive_number,
    ),
    Option(
        "--max-body-bytes",
        "OMNI_RTC_MAX_BODY_BYTES",
        "largest accepted HTTP request body",
        128 * 1024,
        positive_int,
    ),
    Option(
        "--access-token",
        "OMNI_RTC_ACCESS_TOKEN",
        "secret that callers send as 'Authorization: Bearer TOKEN' to start and end calls "
        "(printable ASCII; use 32 random characters); also the key of call links made by "
        "'omni-rtc token'",
        secret=True,
    ),
    Option(
        "--access-token-file",
        "OMNI_RTC_ACCESS_TOKEN_FILE",
        "read --access-token from this file (e.g. a Docker secret)",
    ),
    Option(
        "--no-auth",
        "OMNI_RTC_NO_AUTH",
        "serve a non-loopback --host without an access token (anyone who reaches it can "
        "start calls on your API key); env: 1 or 0",
        False,
        on_off,
        switch=True,
    ),
    Option(
        "--rate-limit",
        "OMNI_RTC_RATE_LIMIT",
        "calls each client address may start, e.g. 20/min, 5/s, 100/hour (0 = no limit); "
        f"default {DEFAULT_RATE_LIMIT} for other machines and none for local (loopback) "
        "clients such as tests and benchmarks; a value given here applies to everyone",
        None,
        rate_value,
    ),
    Option(
        "--trusted-proxy",
        "OMNI_RTC_TRUSTED_PROXIES",
        "reverse proxy address or network whose X-Forwarded-For names the client, "
        "repeatable (env: comma-separated; default none: the peer address counts)",
        repeatable=True,
        type=cidr,
    ),
    Option(
        "--allowed-origin",
        "OMNI_RTC_ALLOWED_ORIGINS",
        "another origin whose pages may call this server's API (CORS), e.g. "
        "https://app.example.org, repeatable (env: comma-separated; * = any)",
        repeatable=True,
        type=web_origin,
    ),
    Option(
        "--http-timeout",
        "OMNI_RTC_HTTP_TIMEOUT",
        "seconds a client may take to send a request's headers, or its body, before the "
        "connection is closed (also the idle keep-alive time)",
        10.0,
        positive_number,
    ),
    Option(
        "--sip-listen",
        "OMNI_RTC_SIP_LISTEN",
        "answer SIP calls here, repeatable: udp:HOST:PORT or tcp:HOST:PORT (env: "
        "comma-separated; default: no SIP)",
        repeatable=True,
    ),
    Option(
        "--sip-allow",
        "OMNI_RTC_SIP_ALLOW",
        "SIP sources (CIDR) that may call without credentials, repeatable",
        repeatable=True,
    ),
    Option("--sip-user", "OMNI_RTC_SIP_USER", "digest user required from every other SIP source"),
    Option(
        "--sip-password", "OMNI_RTC_SIP_PASSWORD", "digest password for --sip-user", secret=True
    ),
    Option("--rtp-ports", "OMNI_RTC_RTP_PORTS", "UDP ports for SIP media, LOW-HIGH", "40000-40999"),
    Option(
        "--sip-public-address",
        "OMNI_RTC_SIP_PUBLIC_ADDRESS",
        "address written in SIP Contact and SDP (behind NAT)",
    ),
    Option(
        "--sip-register",
        "OMNI_RTC_SIP_REGISTER",
        "register at a PBX or trunk as sip:USER:PASSWORD@REGISTRAR[:PORT] and keep it alive",
        secret=True,
    ),
    Option(
        "--emulator-reply",
        "OMNI_RTC_EMULATOR_REPLY",
        "built-in emulator's reply: echo (your words back) or tone",
        "echo",
        choices=("echo", "tone"),
    ),
    Option(
        "--log-level",
        "OMNI_RTC_LOG_LEVEL",
        "how much to log, in upper or lower case",
        "INFO",
        str.upper,
        choices=LOG_LEVELS,
    ),
)

ENV_VARS: frozenset[str] = frozenset(
    {o.env for o in OPTIONS if o.env} | {p.api_key_env for p in PROFILES.values()}
)
"""Every environment variable the CLI reads."""


def options_markdown() -> str:
    """The README's configuration table, generated so it cannot drift from :data:`OPTIONS`."""
    rows = [
        "| flag | environment variable | default | what it does |",
        "|---|---|---|---|",
    ]
    for option in OPTIONS:
        if option.repeatable:
            default = "none"
        elif option.default is None or option.secret:
            default = ""
        else:
            default = f"`{option.default}`"
        text = option.help + (f" ({', '.join(option.choices)})" if option.choices else "")
        env = f"`{option.env}`" if option.env else ""
        rows.append(f"| `{option.flag}` | {env} | {default} | {text.replace('|', chr(92) + '|')} |")
    return "\n".join(rows)
