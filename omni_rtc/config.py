"""One typed settings object for ``omni-rtc serve``, from CLI flags and environment variables.

Every option is declared once in :data:`OPTIONS` (flag, env var, type, default, help);
argparse, ``--help`` and the list of known env vars all come from that table.
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .media.jpeg import JpegLimits
from .realtime.profiles import PROFILES, ProviderProfile, get_profile
from .realtime.session import SessionConfig

if TYPE_CHECKING:
    from .sip.server import SipConfig

TURN_DETECTION_MODES = ("server_vad", "manual")
MIN_TOKEN_CHARS = 16


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


def integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def positive_int(text: str) -> int:
    value = integer(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}")
    return value


def positive_number(text: str) -> float:
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_number(text: str) -> float:
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _switch(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise argparse.ArgumentTypeError(f"must be 1 or 0 (true or false), got {text!r}")


def _public_url(text: str) -> str:
    parts = urlsplit(text.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise argparse.ArgumentTypeError(
            f"must look like https://HOST[:PORT][/PREFIX], got {text!r}"
        )
    return text.strip().rstrip("/")


_RATE = re.compile(r"(\d+)\s*/\s*(s|sec|second|m|min|minute|h|hour)s?")
_RATE_PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}


DEFAULT_RATE_LIMIT = "20/min"


def parse_rate(text: str) -> tuple[int, float] | None:
    """``"10/min"`` -> (10, 60.0); ``"0"`` -> None (no limit)."""
    text = text.strip().lower()
    if text in ("0", "off"):
        return None
    match = _RATE.fullmatch(text)
    if not match or int(match[1]) <= 0:
        raise argparse.ArgumentTypeError(
            f"must look like 20/min (per s, min or hour) or 0 for no limit, got {text!r}"
        )
    return int(match[1]), _RATE_PERIODS[match[2][0]]


def _rate(text: str) -> str:
    parse_rate(text)
    return text.strip()


def _cidr(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be an IP address or network such as 10.0.0.0/8, got {text!r}"
        ) from None


_ORIGIN = re.compile(r"https?://(?:\[[0-9a-f:.]+\]|[a-z0-9.-]+)(?::\d{1,5})?")


def _origin(text: str) -> str:
    origin = text.strip().rstrip("/").lower()
    if origin != "*" and not _ORIGIN.fullmatch(origin):
        raise argparse.ArgumentTypeError(
            f"must be an origin such as https://app.example.org (scheme, host and optional "
            f"port, no path) or *, got {text!r}"
        )
    return origin


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost: no)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_access_token(path: str) -> str:
    """The token in a file (e.g. a Docker secret), without surrounding whitespace."""
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read --access-token-file {path}: {exc}") from None
    if not token:
        raise ValueError(f"--access-token-file {path} is empty")
    return token


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
        "concurrent calls each worker process accepts (6 A/V calls use ~85% of a core: "
        "bench/calls.py); /healthz shows the sum",
        6,
        positive_int,
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
        type=_public_url,
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
        _switch,
        switch=True,
    ),
    Option(
        "--chunk-ms",
        "OMNI_RTC_CHUNK_MS",
        "caller audio chunk sent upstream, 10..100 ms",
        20,
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
        _switch,
        switch=True,
    ),
    Option(
        "--rate-limit",
        "OMNI_RTC_RATE_LIMIT",
        "calls each client address may start, e.g. 20/min, 5/s, 100/hour (0 = no limit); "
        f"default {DEFAULT_RATE_LIMIT} for other machines and none for local (loopback) "
        "clients such as tests and benchmarks; a value given here applies to everyone",
        None,
        _rate,
    ),
    Option(
        "--trusted-proxy",
        "OMNI_RTC_TRUSTED_PROXIES",
        "reverse proxy address or network whose X-Forwarded-For names the client, "
        "repeatable (env: comma-separated; default none: the peer address counts)",
        repeatable=True,
        type=_cidr,
    ),
    Option(
        "--allowed-origin",
        "OMNI_RTC_ALLOWED_ORIGINS",
        "another origin whose pages may call this server's API (CORS), e.g. "
        "https://app.example.org, repeatable (env: comma-separated; * = any)",
        repeatable=True,
        type=_origin,
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
        "DEBUG, INFO, WARNING or ERROR",
        "INFO",
        choices=("DEBUG", "INFO", "WARNING", "ERROR"),
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


@dataclass(frozen=True)
class InvalidEnv:
    """The default of a flag whose environment variable is invalid.

    Reported only when the flag is not given on the command line, so a bad variable for
    ``serve`` does not break ``omni-rtc emulator`` or ``--help``.
    """

    message: str


def _env_default(option: Option, environ: Mapping[str, str]) -> Any:
    raw = environ.get(option.env) if option.env else None
    if raw is None or raw == "":
        return [] if option.repeatable else option.default
    shown = "(hidden)" if option.secret else repr(raw)
    try:
        if option.repeatable:
            return [option.type(part.strip()) for part in raw.split(",") if part.strip()]
        value = option.type(raw)
    except (ValueError, argparse.ArgumentTypeError) as exc:
        return InvalidEnv(f"environment variable {option.env}={shown} is invalid: {exc}")
    if option.choices and value not in option.choices:
        return InvalidEnv(
            f"environment variable {option.env}={shown} is invalid: choose from "
            + ", ".join(option.choices)
        )
    return value


class _Repeatable(argparse.Action):
    """A repeatable flag whose command-line values replace the environment's (flags win)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        current = getattr(namespace, self.dest, None)
        items = [] if current is self.default or not isinstance(current, list) else current
        setattr(namespace, self.dest, [*items, values])


def add_serve_arguments(
    parser: argparse.ArgumentParser,
    environ: Mapping[str, str] | None = None,
    options: Sequence[Option] = OPTIONS,
) -> None:
    environ = os.environ if environ is None else environ
    for option in options:
        default = _env_default(option, environ)
        hidden = option.secret or option.switch or isinstance(default, InvalidEnv)
        shown = "" if hidden or default in (None, []) else f" (default: {default})"
        env = f" [env {option.env}]" if option.env else ""
        help_text = (option.help + shown + env).replace("%", "%%")  # argparse formats help
        if option.switch:
            parser.add_argument(
                option.flag, dest=option.dest, action="store_true", default=default, help=help_text
            )
            continue
        parser.add_argument(
            option.flag,
            dest=option.dest,
            type=option.type,
            choices=option.choices,
            default=default,
            action=_Repeatable if option.repeatable else "store",
            help=help_text,
        )


def check_env_defaults(args: argparse.Namespace) -> None:
    """Raise ``ValueError`` for an invalid environment variable whose flag was not given."""
    for value in vars(args).values():
        if isinstance(value, InvalidEnv):
            raise ValueError(value.message)


@dataclass(frozen=True)
class IceServer:
    urls: str
    username: str | None = None
    credential: str | None = None

    @property
    def is_turn(self) -> bool:
        return self.urls.startswith(("turn:", "turns:"))

    def to_json(self) -> dict[str, str]:
        """The shape of a browser ``RTCIceServer``."""
        out = {"urls": self.urls}
        if self.username is not None:
            out["username"] = self.username
        if self.credential is not None:
            out["credential"] = self.credential
        return out


_ICE_URL = re.compile(
    r"^(?P<scheme>stuns?|turns?):(?:(?P<user>[^:@/?]+):(?P<password>[^@/?]*)@)?"
    r"(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)(?::(?P<port>\d{1,5}))?"
    r"(?:\?transport=(?P<transport>udp|tcp))?$"
)


def parse_ice_server(text: str) -> IceServer:
    """``turn:USER:PASSWORD@HOST:PORT?transport=udp`` -> url + credentials (kept apart)."""
    match = _ICE_URL.match(text.strip())
    if not match:
        raise ValueError(
            f"invalid ICE server {text.split('@')[-1]!r}: expected stun:HOST[:PORT] or "
            "turn:[USER:PASSWORD@]HOST[:PORT][?transport=udp|tcp]"
        )
    scheme = match["scheme"]
    if scheme.startswith("stun") and (match["user"] or match["transport"]):
        raise ValueError("stun: servers take no credentials or transport")
    url = f"{scheme}:{match['host']}"
    if match["port"]:
        url += f":{match['port']}"
    if match["transport"]:
        url += f"?transport={match['transport']}"
    return IceServer(url, match["user"], match["password"])


def _parse_size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"(\d+)[xX×](\d+)", text.strip())
    if not match:
        raise ValueError(f"--jpeg-max-size must look like 1280x720, got {text!r}")
    return int(match[1]), int(match[2])


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    provider: str = "dashscope"
    region: str | None = None
    upstream_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None
    voice: str | None = None
    instructions: str | None = None
    turn_detection: str = "server_vad"
    vad_threshold: float = 0.5
    vad_silence_ms: int = 800
    video_fps: float = 2.0
    max_calls: int = 6
    workers: int | None = None
    """None: one per CPU this process may use (see :attr:`worker_count`)."""
    ice_servers: tuple[IceServer, ...] = field(default=(), repr=False)
    bridge_ice_servers: tuple[IceServer, ...] = field(default=(), repr=False)
    turn_secret: str | None = field(default=None, repr=False)
    turn_ttl: int = 3600
    ice_transport_policy: str = "all"
    ice_host_addresses: tuple[str, ...] = ()
    cert_file: Path | None = None
    key_file: Path | None = None
    public_url: str | None = None
    twilio_auth_token: str | None = field(default=None, repr=False)
    allow_unsigned_media_streams: bool = False
    chunk_ms: int = 20
    idle_audio: str = "silence"
    jpeg_limits: JpegLimits = field(default_factory=JpegLimits)
    connect_timeout: float = 10.0
    peer_timeout: float = 10.0
    max_call_seconds: float = 3600.0
    idle_seconds: float = 300.0
    reconnect_seconds: float = 20.0
    drain_seconds: float = 30.0
    upstream_ping_seconds: float = 2.0
    """Keepalive ping interval (and pong timeout) on the model session: a silent network
    partition is noticed within about twice this."""
    max_body_bytes: int = 128 * 1024
    sip_listen: tuple[str, ...] = ()
    sip_allow: tuple[str, ...] = ()
    sip_user: str | None = None
    sip_password: str | None = field(default=None, repr=False)
    rtp_ports: str = "40000-40999"
    sip_public_address: str | None = None
    sip_register: str | None = field(default=None, repr=False)
    access_token: str | None = field(default=None, repr=False)
    no_auth: bool = False
    rate_limit: str | None = None
    """None: DEFAULT_RATE_LIMIT for remote clients, none for loopback ones."""
    trusted_proxies: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    http_timeout: float = 10.0
    emulator_reply: str = "echo"
    log_level: str = "INFO"

    def __post_init__(self) -> None:
        profile = self.profile  # raises for an unknown provider
        model = profile.model(self.model)
        if self.voice:
            model.check_voice(self.voice)
        if self.turn_detection not in TURN_DETECTION_MODES:
            raise ValueError(f"--turn-detection must be one of {', '.join(TURN_DETECTION_MODES)}")
        self.session_config()  # validates VAD ranges
        if self.video_fps != 0 and not 0.5 <= self.video_fps <= 2:
            raise ValueError(f"--video-fps must be 0 (off) or within 0.5..2, got {self.video_fps}")
        if not 10 <= self.chunk_ms <= 100:
            raise ValueError(f"--chunk-ms must be within 10..100, got {self.chunk_ms}")
        if not 0 < self.port < 65536 and self.port != 0:
            raise ValueError(f"--port must be within 1..65535, got {self.port}")
        if self.region and self.region not in profile.regions:
            raise ValueError(
                f"unknown region {self.region!r} for {profile.name}; choose one of: "
                + ", ".join(profile.regions)
            )
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("--cert-file and --key-file go together")
        if self.public_url is not None:
            try:
                _public_url(self.public_url)
            except argparse.ArgumentTypeError as exc:
                raise ValueError(f"--public-url {exc}") from None
        for path in (self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file not found: {path}")
        for address in self.ice_host_addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(
                    f"--ice-host-address must be an IP address, got {address!r}"
                ) from None
        if self.ice_transport_policy == "relay" and not any(
            s.is_turn for s in self.own_ice_servers
        ):
            raise ValueError("--ice-transport-policy relay needs a turn: server for the bridge")
        if self.turn_secret is not None and len(self.turn_secret) < 16:
            raise ValueError("--turn-secret must be at least 16 characters (use a random string)")
        for server in (*self.ice_servers, *self.bridge_ice_servers):
            if server.is_turn and server.username is None and not self.turn_secret:
                raise ValueError(
                    f"{server.urls} has no credentials: give turn:USER:PASSWORD@HOST "
                    "or --turn-secret"
                )
        if min(self.connect_timeout, self.peer_timeout, self.reconnect_seconds) <= 0:
            raise ValueError("timeouts must be positive")
        if self.http_timeout <= 0:
            raise ValueError("timeouts must be positive")
        self._check_access()
        self.sip_config()  # refuses an open SIP port, bad addresses, a bad port range
        for name in ("max_call_seconds", "idle_seconds", "drain_seconds"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be 0 or more")

    def sip_config(self) -> SipConfig | None:
        """The SIP endpoint's settings, or None without ``--sip-listen`` (ValueError if bad)."""
        if not self.sip_listen:
            return None
        from .sip.auth import OPEN_PORT_WARNING
        from .sip.ports import parse_port_range
        from .sip.register import RegisterTarget
        from .sip.server import SipConfig
        from .sip.transport import ListenAddress

        if not self.sip_allow and not (self.sip_user and self.sip_password):
            raise ValueError(OPEN_PORT_WARNING)
        for cidr in self.sip_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(
                    f"--sip-allow wants a CIDR like 192.0.2.0/24, not {cidr!r}"
                ) from None
        return SipConfig(
            listen=[ListenAddress.parse(text) for text in self.sip_listen],
            allow=list(self.sip_allow),
            user=self.sip_user,
            password=self.sip_password,
            rtp_ports=parse_port_range(self.rtp_ports),
            public_address=self.sip_public_address,
            register=RegisterTarget.parse(self.sip_register) if self.sip_register else None,
            idle_audio=self.idle_audio,
        )

    def _check_access(self) -> None:
        """Who may start calls: checked here so a server is never open by accident."""
        token = self.access_token
        if token is not None:
            if self.no_auth:
                raise ValueError("--no-auth and --access-token contradict each other: give one")
            if not re.fullmatch(r"[\x21-\x7e]+", token):
                raise ValueError(
                    "--access-token must be printable ASCII without spaces (it is sent in "
                    "an HTTP header)"
                )
        elif not self.no_auth and not is_loopback(self.host):
            raise ValueError(
                f"refusing to listen on {self.host} without an access token, because anyone "
                "who reaches it could start calls on your API key: set --access-token (env "
                "OMNI_RTC_ACCESS_TOKEN), or --no-auth (env OMNI_RTC_NO_AUTH=1) if something "
                "in front of it checks callers"
            )
        try:
            parse_rate(self.rate_limit or DEFAULT_RATE_LIMIT)
            for network in self.trusted_proxies:
                _cidr(network)
            for origin in self.allowed_origins:
                _origin(origin)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None

    @property
    def weak_access_token(self) -> bool:
        """Short enough to guess offline from one call link (the server warns, and runs)."""
        return self.access_token is not None and len(self.access_token) < MIN_TOKEN_CHARS

    @property
    def auth_required(self) -> bool:
        """Callers must present the access token or a call link signed with it."""
        return self.access_token is not None

    @property
    def call_rate(self) -> tuple[int, float] | None:
        """(calls, per seconds) each client may start, or None for no limit."""
        return parse_rate(self.rate_limit or DEFAULT_RATE_LIMIT)

    @property
    def worker_count(self) -> int:
        """How many processes hold calls: ``--workers``, else the CPUs we may run on."""
        if self.workers is not None:
            return self.workers
        try:
            return max(1, len(os.sched_getaffinity(0)))
        except AttributeError:  # not Linux
            return max(1, os.cpu_count() or 1)

    @property
    def own_ice_servers(self) -> tuple[IceServer, ...]:
        """The servers the bridge's own peer connections use."""
        return self.bridge_ice_servers or self.ice_servers

    @property
    def profile(self) -> ProviderProfile:
        return get_profile(self.provider)

    @property
    def use_emulator(self) -> bool:
        """No key and no URL: run the built-in emulator so the first run works offline."""
        return not self.api_key and not self.upstream_url

    @property
    def manual_default(self) -> bool:
        return self.turn_detection == "manual"

    @property
    def model_name(self) -> str:
        return self.profile.model(self.model).name

    @property
    def tls(self) -> bool:
        return self.cert_file is not None

    def base_url(self) -> str | None:
        """The provider URL to use, or None when the emulator supplies it at start-up."""
        if self.upstream_url:
            return self.upstream_url
        if self.use_emulator:
            return None
        return self.profile.regions[self.region] if self.region else self.profile.default_url

    def session_config(
        self,
        *,
        voice: str | None = None,
        instructions: str | None = None,
        manual: bool | None = None,
    ) -> SessionConfig:
        """The session for one call; per-call choices override the defaults (ValueError if bad)."""
        return self.profile.session_config(
            model=self.model,
            voice=voice or self.voice,
            instructions=instructions if instructions is not None else self.instructions,
            manual=self.manual_default if manual is None else manual,
            vad_threshold=self.vad_threshold,
            vad_silence_ms=self.vad_silence_ms,
        )

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, environ: Mapping[str, str] | None = None
    ) -> Settings:
        environ = os.environ if environ is None else environ
        check_env_defaults(args)
        values = {o.dest: getattr(args, o.dest) for o in OPTIONS}
        provider = get_profile(values["provider"])
        api_key = values.pop("api_key")
        if provider.api_key_env != "DASHSCOPE_API_KEY" and api_key == environ.get(
            "DASHSCOPE_API_KEY"
        ):
            api_key = environ.get(provider.api_key_env)  # the env default belongs to DashScope
        max_w, max_h = _parse_size(values.pop("jpeg_max_size"))
        jpeg_limits = JpegLimits(
            max_width=max_w, max_height=max_h, max_bytes=values.pop("jpeg_max_bytes")
        )
        ice_servers = tuple(parse_ice_server(s) for s in values.pop("ice_server") or [])
        bridge_ice = tuple(parse_ice_server(s) for s in values.pop("bridge_ice_server") or [])
        host_addresses = tuple(values.pop("ice_host_address") or [])
        sip_listen = tuple(values.pop("sip_listen") or [])
        sip_allow = tuple(values.pop("sip_allow") or [])
        cert, key = values.pop("cert_file"), values.pop("key_file")
        access_token = values.pop("access_token") or None
        token_file = values.pop("access_token_file")
        if token_file:
            if access_token:
                raise ValueError("give --access-token or --access-token-file, not both")
            access_token = read_access_token(token_file)
        trusted_proxies = tuple(values.pop("trusted_proxy") or ())
        allowed_origins = tuple(values.pop("allowed_origin") or ())
        return cls(
            **values,
            access_token=access_token,
            trusted_proxies=trusted_proxies,
            allowed_origins=allowed_origins,
            api_key=api_key or None,
            jpeg_limits=jpeg_limits,
            ice_servers=ice_servers,
            bridge_ice_servers=bridge_ice,
            ice_host_addresses=host_addresses,
            sip_listen=sip_listen,
            sip_allow=sip_allow,
            cert_file=Path(cert) if cert else None,
            key_file=Path(key) if key else None,
        )

    @classmethod
    def from_argv(cls, argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
        """Parse ``serve`` flags (for tests and embedding)."""
        parser = argparse.ArgumentParser(prog="omni-rtc serve")
        add_serve_arguments(parser, environ)
        return cls.from_args(parser.parse_args(list(argv)), environ)
