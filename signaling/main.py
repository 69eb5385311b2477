"""``omni-rtc serve``: run the web app (and the built-in emulator when offline)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl

from aiohttp import web

from omni_rtc import __version__
from omni_rtc.bridge import Bridge
from omni_rtc.config import DEFAULT_RATE_LIMIT, Settings
from omni_rtc.ice import restrict_host_addresses
from omni_rtc.log import setup_logging
from omni_rtc.sip.server import SipServer
from omni_rtc.transports.sip import start_sip

from .app import build_app
from .server import make_runner

log = logging.getLogger("omni_rtc")


def secrets_of(settings: Settings) -> list[str]:
    found = [settings.api_key or "", settings.turn_secret or "", settings.access_token or ""]
    found.append(settings.twilio_auth_token or "")
    found += [s.credential or "" for s in (*settings.ice_servers, *settings.bridge_ice_servers)]
    return [s for s in found if s]


def _ssl_context(settings: Settings) -> ssl.SSLContext | None:
    if settings.cert_file is None or settings.key_file is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.cert_file), str(settings.key_file))
    return context


def _telephony_line(settings: Settings) -> str:
    if settings.twilio_auth_token:
        where = f"{settings.public_url}/twilio/voice" if settings.public_url else "/twilio/voice"
        return f"Twilio voice webhook {where}, signatures checked"
    if settings.allow_unsigned_media_streams:
        return "/twilio/voice and the media streams are OPEN to anyone (no signature check)"
    return "only local requests until --twilio-auth-token is set (README: Phone numbers)"


def banner(settings: Settings, url: str, upstream: str) -> str:
    session = settings.session_config()
    mode = "push-to-talk" if session.manual else "hands-free (server VAD)"
    lines = [
        f"omni-rtc {__version__}: open {url} in a browser",
        f"  model {settings.model_name} ({settings.provider}), voice {session.voice}, {mode}",
    ]
    if settings.use_emulator:
        lines.append(
            "  upstream: the built-in EMULATOR (no API key set), replies "
            + ("echo your voice back" if settings.emulator_reply == "echo" else "with a tone")
            + f". Set {settings.profile.api_key_env} to talk to the real model."
        )
    else:
        lines.append(f"  upstream: {upstream}")
    if settings.auth_required:
        limit = (
            f"at most {settings.rate_limit or DEFAULT_RATE_LIMIT} calls per client"
            + ("" if settings.rate_limit else " (local clients: no limit)")
            if settings.call_rate
            else "no rate limit"
        )
        lines.append(
            f"  access: callers need the access token or a call link (omni-rtc token); {limit}"
        )
        if settings.weak_access_token:
            lines.append(
                "  WARNING: the access token is short: call links signed with it can be "
                "forged by guessing it; use 32 random characters (openssl rand -hex 32)."
            )
    elif settings.no_auth:
        lines.append("  access: OPEN (--no-auth): anyone who reaches this server can start calls")
    else:
        lines.append("  access: no token needed on loopback (set --access-token to require one)")
    if settings.worker_count > 1:
        lines.append(
            f"  workers: {settings.worker_count} processes, up to {settings.max_calls} calls each"
        )
    for listen in settings.sip_listen:
        allowed = ", ".join(settings.sip_allow) or "nobody without credentials"
        auth = " + digest auth" if settings.sip_user else ""
        lines.append(f"  SIP: {listen} (allowed: {allowed}{auth}), RTP {settings.rtp_ports}")
    if settings.ice_servers:
        lines.append("  ICE servers: " + ", ".join(s.urls for s in settings.ice_servers))
    else:
        lines.append("  ICE servers: none (fine on localhost/LAN; use --ice-server for NAT)")
    lines.append("  phone numbers: " + _telephony_line(settings))
    if not settings.tls and settings.host not in ("127.0.0.1", "localhost", "::1"):
        lines.append(
            "  WARNING: browsers allow the camera and microphone only over HTTPS (or on "
            "localhost): use --cert-file/--key-file or a TLS proxy."
        )
    return "\n".join(lines)


class Signals:
    """SIGINT/SIGTERM: the first asks for a drain, a second one to end calls now."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.hurry = asyncio.Event()

    def install(self, *signals: int) -> None:
        loop = asyncio.get_running_loop()
        for sig in signals or (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self.received)

    def received(self) -> None:
        (self.hurry if self.stop.is_set() else self.stop).set()


async def start_public_site(app: web.Application, settings: Settings) -> tuple[web.AppRunner, str]:
    """The HTTP(S) listener callers reach; returns the runner and the page's URL."""
    runner = make_runner(app, http_timeout=settings.http_timeout, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=_ssl_context(settings))
    await site.start()
    port = settings.port
    for address in runner.addresses:
        port = int(address[1])
        break
    scheme = "https" if settings.tls else "http"
    host = "localhost" if settings.host in ("127.0.0.1", "0.0.0.0", "::") else settings.host
    return runner, f"{scheme}://{host}:{port}/"


async def run_calls_until_signalled(
    bridge: Bridge, runner: web.AppRunner, sip: SipServer | None, signals: Signals
) -> None:
    """Serve until the first signal, drain (up to --drain-seconds, or a second signal),
    then end every call and release everything."""
    settings = bridge.settings
    try:
        await signals.stop.wait()
        if bridge.calls.active and settings.drain_seconds > 0:
            log.info(
                "draining: no new calls; %d running calls may go on for up to %.0f s "
                "(signal again to end them now)",
                bridge.calls.active,
                settings.drain_seconds,
            )
        await bridge.drain(settings.drain_seconds, signals.hurry)
    finally:
        log.info("shutting down: ending %d calls", bridge.calls.active)
        await runner.cleanup()
        await bridge.close()
        if sip is not None:
            await sip.stop()


async def serve(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    """One process, or a front process and worker processes (``--workers``)."""
    if settings.worker_count > 1:
        from .front import serve_front

        await serve_front(settings, ready=ready)
    else:
        await serve_single(settings, ready=ready)


async def serve_single(settings: Settings, *, ready: asyncio.Event | None = None) -> None:
    bridge = Bridge(settings)
    await bridge.start()
    sip_config = settings.sip_config()
    sip = await start_sip(bridge, sip_config) if sip_config is not None else None
    runner, url = await start_public_site(build_app(bridge), settings)
    signals = Signals()
    signals.install()  # before the banner: whoever reads it may stop us at once
    print(banner(settings, url, bridge.upstream_url), flush=True)
    if ready is not None:
        ready.set()
    await run_calls_until_signalled(bridge, runner, sip, signals)


def run(settings: Settings) -> int:
    setup_logging(settings.log_level, secrets=secrets_of(settings))
    restrict_host_addresses(settings.ice_host_addresses)
    try:
        asyncio.run(serve(settings))
    except OSError as exc:
        log.error("cannot start the server: %s", exc)
        return 1
    return 0
