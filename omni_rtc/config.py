"""One typed settings object for ``omni-rtc serve``, from CLI flags and environment
variables (the flags themselves are declared in :mod:`omni_rtc.options`)."""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .media import DEFAULT_CHUNK_MS
from .media.jpeg import JpegLimits
from .option_parsing import add_serve_arguments, check_env_defaults
from .option_values import (
    DEFAULT_RATE_LIMIT,
    MIN_TOKEN_CHARS,
    TURN_DETECTION_MODES,
    cidr,
    is_loopback,
    parse_rate,
    public_url_value,
    read_access_token,
    web_origin,
)
from .options import ENV_VARS, OPTIONS, options_markdown
from .realtime.profiles import ProviderProfile, get_profile
from .realtime.session import SessionConfig

if TYPE_CHECKING:
    from .sip.server import SipConfig

__all__ = [
    "DEFAULT_RATE_LIMIT",
    "ENV_VARS",
    "OPTIONS",
    "IceServer",
    "Settings",
    "add_serve_arguments",
    "options_markdown",
    "parse_ice_server",
]


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


def aiortc_has_relay_policy() -> bool:
    """aiortc 1.15 (the last for Python 3.10) has no ``iceTransportPolicy``; the one
    check for it (``ice.py`` only imports what exists)."""
    from aiortc import rtcconfiguration

    return hasattr(rtcconfiguration, "RTCIceTransportPolicy")


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
    max_loop_busy: float = 75.0
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
    chunk_ms: int = DEFAULT_CHUNK_MS
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
        if not 0 <= self.max_loop_busy <= 100:
            raise ValueError(
                f"--max-loop-busy must be within 0..100 % (0 = off), got {self.max_loop_busy}"
            )
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
                public_url_value(self.public_url)
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
        if self.ice_transport_policy == "relay" and not aiortc_has_relay_policy():
            raise ValueError(
                "--ice-transport-policy relay needs aiortc 1.16 or later (Python 3.11 or later)"
            )
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
        for network in self.sip_allow:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(
                    f"--sip-allow wants a CIDR like 192.0.2.0/24, not {network!r}"
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
                cidr(network)
            for origin in self.allowed_origins:
                web_origin(origin)
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
