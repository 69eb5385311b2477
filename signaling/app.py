"""The aiohttp application: the page, signaling, call control, health and metrics."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from omni_rtc import __version__
from omni_rtc.bridge import Bridge
from omni_rtc.calls import CallManager, CallOptions, CapacityError
from omni_rtc.config import Settings
from omni_rtc.ice import resolve_ice_servers
from omni_rtc.metrics import Metrics
from omni_rtc.realtime.errors import (
    AuthenticationFailed,
    HandshakeTimeout,
    RealtimeError,
    SessionRejected,
    SessionTimeout,
    UpstreamClosed,
    UpstreamUnreachable,
)

from .auth import GATEKEEPER, Gatekeeper, admit_call, optional_auth, require_auth
from .body import BODY_TIMEOUT, read_json
from .cors import Cors
from .server import REFUSED_HEADER
from .twilio import add_twilio_routes
from .validation import MODES, BadRequest, parse_offer
from .whip import add_whip_routes

log = logging.getLogger("omni_rtc.http")

BRIDGE = web.AppKey("bridge", Bridge)
SETTINGS = web.AppKey("settings", Settings)
MANAGER = web.AppKey("manager", CallManager)
METRICS = web.AppKey("metrics", Metrics)
WEB_DIR = web.AppKey("web_dir", Path)

RETRY_AFTER_S = 15
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self' blob:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "form-action 'none'"
)


def find_web_dir() -> Path:
    """``signaling/web`` in an installed wheel, ``<checkout>/web`` in a source tree."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "web", here.parent / "web"):
        if (candidate / "index.html").is_file():
            return candidate
    raise FileNotFoundError("web client not found (expected web/index.html)")


def json_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error is ``{"error": "..."}``; nothing internal (tracebacks, keys) leaks."""
    try:
        return await handler(request)
    except BadRequest as exc:  # raised by validation anywhere below a route
        return json_error(exc.status, str(exc))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text or exc.reason
        if exc.content_type == "application/json":
            raise
        if exc.status == 413:
            message = "request body too large"
        elif message.startswith(f"{exc.status}:"):
            message = exc.reason
        return json_error(
            exc.status,
            message,
            {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")},
        )
    except Exception:
        log.exception("unhandled error in %s %s", request.method, request.path)
        return json_error(500, "internal server error")


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("Cross-Origin-Opener-Policy", "same-origin")
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cache-Control", "no-cache")
        response.headers.setdefault(
            "Permissions-Policy", "camera=(self), microphone=(self), geolocation=()"
        )


async def index(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(request.app[WEB_DIR] / "index.html")


async def get_config(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    model = settings.profile.model(settings.model)
    grant = optional_auth(request)
    authorised = grant is not None
    session = settings.session_config()
    if grant is not None and grant.claims is not None:  # show what the call link fixes
        with contextlib.suppress(ValueError):  # a bad voice in a link is refused at /offer
            bound = grant.bind(CallOptions())
            session = settings.session_config(
                voice=bound.voice,
                instructions=bound.instructions,
                manual=None if bound.mode is None else bound.mode == "manual",
            )
    ice_servers = resolve_ice_servers(settings, user="omni-rtc-browser")
    if not authorised:  # TURN relays cost bandwidth: credentials only for callers
        ice_servers = [s for s in ice_servers if not s.is_turn and s.credential is None]
    return web.json_response(
        {
            "version": __version__,
            "provider": settings.provider,
            "model": model.name,
            "emulator": settings.use_emulator,
            "voices": list(model.voices),
            "default_voice": session.voice,
            "modes": list(MODES),
            "default_mode": "manual" if session.manual else "server_vad",
            "instructions": session.instructions or "",
            "video": {
                "enabled": settings.video_fps > 0,
                "fps": settings.video_fps,
                "max_width": settings.jpeg_limits.max_width,
                "max_height": settings.jpeg_limits.max_height,
            },
            "ice_servers": [s.to_json() for s in ice_servers],
            "ice_transport_policy": "all",
            "auth_required": request.app[GATEKEEPER].enabled,
            "authorized": authorised,
        },
        headers={"Cache-Control": "no-store"},
    )


def upstream_failure(exc: RealtimeError) -> str:
    """What a caller may know: the kind of failure, not the internal URL or OS error."""
    if isinstance(exc, UpstreamUnreachable):
        return "the realtime service is unreachable"
    if isinstance(exc, (HandshakeTimeout, SessionTimeout)):
        return "the realtime service did not answer in time"
    if isinstance(exc, SessionRejected):
        return "the realtime service refused the session settings"
    if isinstance(exc, UpstreamClosed):
        return "the realtime service closed the session"
    return "the realtime service is unavailable"


async def post_offer(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    grant = admit_call(request)  # 429, 401: before the body is even read
    sdp, options = parse_offer(await read_json(request), settings.max_body_bytes)
    try:
        call, answer = await request.app[BRIDGE].answer_offer(sdp, grant.bind(options))
    except ValueError as exc:  # unknown voice, unusable SDP, bad per-call option
        return json_error(400, str(exc))
    except CapacityError as exc:
        return json_error(
            503, str(exc), {"Retry-After": str(RETRY_AFTER_S), REFUSED_HEADER: exc.reason}
        )
    except AuthenticationFailed:
        return json_error(502, "the realtime service rejected the server's API key")
    except RealtimeError as exc:
        reason = upstream_failure(exc)
        log.warning("refused a call: %s (%s)", reason, exc)
        return json_error(502, reason)
    return web.json_response({"sdp": answer, "type": "answer", "call_id": call.id})


async def delete_call(request: web.Request) -> web.Response:
    require_auth(request)
    call_id = request.match_info["call_id"]
    if not await request.app[MANAGER].close(call_id, "hangup"):
        return json_error(404, "no such call")
    return web.Response(status=204)


async def healthz(request: web.Request) -> web.Response:
    manager = request.app[MANAGER]
    if not manager.accepting:
        status = "draining"
    elif manager.full:
        status = "full"
    elif manager.overloaded:
        status = "overloaded"
    else:
        status = "ok"
    return web.json_response(
        {"status": status, "calls": manager.active, "max_calls": manager.max_calls},
        status=200 if status == "ok" else 503,
        headers={"Cache-Control": "no-store"},
    )


async def metrics(request: web.Request) -> web.Response:
    return web.Response(
        body=request.app[METRICS].render(), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )


def edge_application(
    settings: Settings, *, page: bool = True, web_dir: Path | None = None
) -> web.Application:
    """What every public application of ours has: JSON errors, CORS, the access check,
    security headers, bounded bodies, the page and ``/config``."""
    cors = Cors(settings.allowed_origins)
    app = web.Application(
        client_max_size=settings.max_body_bytes, middlewares=[errors_as_json, cors.middleware]
    )
    app[SETTINGS] = settings
    app[GATEKEEPER] = Gatekeeper.from_settings(settings)
    app[BODY_TIMEOUT] = settings.http_timeout
    app.on_response_prepare.append(security_headers)
    app.on_response_prepare.append(cors.on_response_prepare)
    if page:
        app[WEB_DIR] = web_dir or find_web_dir()
        app.router.add_get("/", index)
        app.router.add_static("/static/", app[WEB_DIR], append_version=False)
    app.router.add_get("/config", get_config)
    return app


def build_app(bridge: Bridge, *, page: bool = True, web_dir: Path | None = None) -> web.Application:
    """The bridge's HTTP side; mountable under a prefix (every URL the page uses is relative).

    The bridge starts and closes with the application.
    """
    app = edge_application(bridge.settings, page=page, web_dir=web_dir)
    app[BRIDGE] = bridge
    app[METRICS] = bridge.metrics
    app[MANAGER] = bridge.calls
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.router.add_post("/offer", post_offer)
    app.router.add_delete("/calls/{call_id}", delete_call)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    add_whip_routes(app, bridge, retry_after_s=RETRY_AFTER_S)
    add_twilio_routes(app, bridge, retry_after_s=RETRY_AFTER_S)
    return app


async def _startup(app: web.Application) -> None:
    await app[BRIDGE].start()


async def _shutdown(app: web.Application) -> None:
    await app[BRIDGE].close()


def create_app(
    settings: Settings,
    upstream_url: str | None = None,
    *,
    metrics_registry: Metrics | None = None,
    web_dir: Path | None = None,
) -> web.Application:
    """The standalone server's application (``upstream_url`` overrides the settings')."""
    bridge = Bridge(settings, upstream_url=upstream_url, metrics=metrics_registry)
    return build_app(bridge, web_dir=web_dir)
