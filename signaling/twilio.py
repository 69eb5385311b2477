"""Phone numbers: Twilio's voice webhook (TwiML) and the media-stream WebSockets.

``GET|POST /twilio/voice`` (the number's voice webhook) answers TwiML that connects the
call to ``wss://HOST/twilio/stream``, carrying ``voice``, ``instructions`` and ``mode``
from the webhook's query string as ``<Parameter>``s (Twilio allows no query string in a
stream URL). ``/twilio/stream``, ``/telnyx/stream`` and ``/plivo/stream`` are the
WebSockets, one dialect each (:mod:`omni_rtc.transports.media_stream_dialects`).

Who may use them (a call spends the operator's model key): with ``--twilio-auth-token``
Twilio's requests must carry a valid ``X-Twilio-Signature`` (HMAC-SHA1 over the URL and
the sorted POST parameters; the WebSocket upgrade is signed too), else 403. Without a
token they answer only requests made directly on the loopback interface (a local test,
not through a proxy or tunnel), unless ``--allow-unsigned-media-streams`` says otherwise.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit, urlunsplit
from xml.etree import ElementTree

from aiohttp import web

from omni_rtc.bridge import Bridge
from omni_rtc.calls import CallOptions, CapacityError
from omni_rtc.config import Settings
from omni_rtc.transports.media_stream_dialects import DIALECTS, MAX_FRAME_BYTES, Dialect
from omni_rtc.transports.twilio import MediaStreamCall

from .auth import FULL_ACCESS, GATEKEEPER, Grant
from .body import read_body
from .tokens import InvalidToken
from .validation import MAX_INSTRUCTIONS_CHARS, MAX_VOICE_CHARS, MODES, BadRequest, decode_utf8

log = logging.getLogger("omni_rtc.telephony")

VOICE_PATH = "/twilio/voice"
SIGNATURE_HEADERS = ("X-Twilio-Signature", "X-SignalWire-Signature")
PROXY_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-IP")
"""A request carrying one of these came through a proxy or tunnel: it is not local."""
PARAMETER_CHARS = 400
"""Twilio keeps a <Parameter>'s name and value under 500 characters: longer
instructions travel as instructions_1, instructions_2, ... (joined again on start)."""
OPTION_KEYS = ("voice", "instructions", "mode")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# -------------------------------------------------------------------- pure parts


def twilio_signature(token: str, url: str, params: Iterable[tuple[str, str]] = ()) -> str:
    """Twilio's request signature: base64 HMAC-SHA1 of the URL + sorted name/value pairs."""
    data = url + "".join(name + value for name, value in sorted(set(params)))
    digest = hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def url_variants(url: str) -> list[str]:
    """The URL under each scheme Twilio may have signed, with and without its port."""
    parts = urlsplit(url)
    host, _, port = parts.netloc.rpartition(":")
    if not host or not port.isdigit() or (host.count(":") and not host.endswith("]")):
        host, port = parts.netloc, ""  # no port (or a bare IPv6 address)
    out: list[str] = []
    for scheme in ("https", "http", "wss", "ws"):
        default = "443" if scheme in ("https", "wss") else "80"
        for netloc in (f"{host}:{port}" if port else host, host, f"{host}:{default}"):
            candidate = urlunsplit((scheme, netloc, parts.path, parts.query, ""))
            if candidate not in out:
                out.append(candidate)
    return out


def options_from(values: Mapping[str, str]) -> CallOptions:
    """voice / instructions / mode from a query string or custom parameters."""

    def one(key: str, limit: int) -> str | None:
        value = values.get(key)
        if value is None or value == "":
            return None
        if len(value) > limit:
            raise BadRequest(f"'{key}' is too long (at most {limit} characters)")
        return value

    mode = one("mode", 32)
    if mode is not None and mode not in MODES:
        raise BadRequest(f"'mode' must be one of: {', '.join(MODES)}")
    return CallOptions(
        voice=one("voice", MAX_VOICE_CHARS),
        instructions=one("instructions", MAX_INSTRUCTIONS_CHARS),
        mode=mode,
    )


def twiml(stream_url: str, options: CallOptions) -> str:
    """``<Response><Connect><Stream url=...>`` with the call options as ``<Parameter>``s."""
    response = ElementTree.Element("Response")
    connect = ElementTree.SubElement(response, "Connect")
    stream = ElementTree.SubElement(connect, "Stream", url=stream_url)
    parameters: list[tuple[str, str]] = []
    if options.voice:
        parameters.append(("voice", options.voice))
    text = options.instructions or ""
    if len(text) > PARAMETER_CHARS:
        for i in range(0, len(text), PARAMETER_CHARS):
            parameters.append(
                (f"instructions_{i // PARAMETER_CHARS + 1}", text[i : i + PARAMETER_CHARS])
            )
    elif text:
        parameters.append(("instructions", text))
    if options.mode:
        parameters.append(("mode", options.mode))
    for name, value in parameters:
        ElementTree.SubElement(stream, "Parameter", name=name, value=value)
    body = ElementTree.tostring(response, encoding="unicode")
    return '<?xml version="1.0" encoding="UTF-8"?>' + body


# -------------------------------------------------------------------- requests


def _peer(request: web.Request) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address((request.remote or "").split("%")[0])
    except ValueError:
        return None


def is_direct_local(request: web.Request) -> bool:
    """Made on this machine, not relayed by a proxy or tunnel (ngrok, Caddy add headers)."""
    peer = _peer(request)
    return (
        peer is not None
        and peer.is_loopback
        and not any(h in request.headers for h in PROXY_HEADERS)
    )


def public_host(request: web.Request) -> str:
    """The Host the caller's provider used; a proxy on loopback or a --trusted-proxy
    may say it in X-Forwarded-Host instead."""
    peer = _peer(request)
    forwarded = request.headers.get("X-Forwarded-Host", "").split(",")[0].strip()
    gatekeeper = request.app.get(GATEKEEPER)
    trusted = gatekeeper.trusted_proxies if gatekeeper is not None else ()
    if forwarded and peer is not None and (peer.is_loopback or any(peer in n for n in trusted)):
        return forwarded
    return request.host


def stream_url(request: web.Request, public_url: str | None) -> str:
    """``wss://HOST/.../twilio/stream`` next to the webhook (a mount prefix kept)."""
    prefix = request.path[: len(request.path) - len(VOICE_PATH)]
    base = public_url or f"https://{public_host(request)}"
    scheme, rest = base.split("://", 1)
    return f"{'ws' if scheme == 'http' else 'wss'}://{rest.rstrip('/')}{prefix}/twilio/stream"


def check_access(
    request: web.Request,
    settings: Settings,
    *,
    signed: bool,
    params: Iterable[tuple[str, str]] = (),
) -> str | None:
    """None when the request may go on; otherwise why it gets 403."""
    token = settings.twilio_auth_token
    if token and signed:
        signature = next(
            (request.headers[h] for h in SIGNATURE_HEADERS if h in request.headers), ""
        )
        if not signature:
            return "missing X-Twilio-Signature"
        pairs = list(params)
        bases = [settings.public_url] if settings.public_url else []
        bases.append(f"https://{public_host(request)}")
        for base in bases:
            for url in url_variants(base.rstrip("/") + request.raw_path):
                if hmac.compare_digest(twilio_signature(token, url, pairs), signature):
                    return None
        return "X-Twilio-Signature does not match (check --twilio-auth-token and --public-url)"
    if settings.allow_unsigned_media_streams or is_direct_local(request):
        return None
    if token:
        return (
            "this provider's requests are unsigned: give the stream URL ?token=ACCESS_TOKEN, "
            "or allow them with --allow-unsigned-media-streams"
        )
    return (
        "telephony endpoints answer only local requests until --twilio-auth-token (or "
        "--allow-unsigned-media-streams) is set"
    )


def stream_grant(request: web.Request) -> Grant | str | None:
    """A Telnyx or Plivo stream URL may carry the access token (or a call link) as
    ``?token=``: those services cannot sign their requests the way Twilio does.
    The grant when it is valid, why not when it is not, None when none was given."""
    gatekeeper = request.app.get(GATEKEEPER)
    given = request.query.get("token") or request.headers.get("Authorization", "")
    if not given or gatekeeper is None or not gatekeeper.enabled:
        return None
    try:
        return gatekeeper.check(given if " " in given else f"Bearer {given}")
    except InvalidToken as exc:
        return f"the stream's access token is not valid: {exc}"


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


def refuse(request: web.Request, reason: str) -> web.Response:
    log.info("refused %s %s from %s: %s", request.method, request.path, request.remote, reason)
    return _error(403, reason)


def check_options(settings: Settings, options: CallOptions) -> None:
    """``ValueError`` for an unknown voice or a bad mode (what a call would refuse)."""
    settings.session_config(
        voice=options.voice,
        instructions=options.instructions,
        manual=None if options.mode is None else options.mode == "manual",
    )


async def voice_webhook(request: web.Request, settings: Settings) -> web.Response:
    """``/twilio/voice``: TwiML that connects the call to its media stream."""
    params: list[tuple[str, str]] = []
    if request.method == "POST":  # Twilio posts a form; bounded in size and time
        try:
            body = decode_utf8(await read_body(request))
        except BadRequest as exc:
            return _error(exc.status, str(exc))
        if request.content_type == "application/x-www-form-urlencoded":
            params = parse_qsl(body, keep_blank_values=True)
    denied = check_access(request, settings, signed=True, params=params)
    if denied:
        return refuse(request, denied)
    try:
        if any(len(request.query.getall(key, [])) > 1 for key in OPTION_KEYS):
            raise BadRequest("give each of voice, instructions, mode at most once")
        options = options_from(request.query)
        check_options(settings, options)
    except ValueError as exc:
        return _error(400, str(exc))
    url = stream_url(request, settings.public_url)
    call_sid = dict(params).get("CallSid") or request.query.get("CallSid", "?")
    log.info("twilio call %s: voice webhook answered, stream %s", call_sid[:64], url)
    return web.Response(text=twiml(url, options), content_type="text/xml")


def admit_stream(
    request: web.Request, settings: Settings, dialect: Dialect
) -> tuple[Grant, web.Response | None]:
    """Who may open this media stream: (grant, None), or (_, the refusal)."""
    grant = stream_grant(request) if dialect.name != "twilio" else None
    if isinstance(grant, str):
        return FULL_ACCESS, refuse(request, grant)
    if grant is None:
        denied = check_access(request, settings, signed=dialect.name == "twilio")
        if denied:
            return FULL_ACCESS, refuse(request, denied)
    if not web.WebSocketResponse().can_prepare(request).ok:
        message = "this is a WebSocket endpoint (Connection: Upgrade, Upgrade: websocket)"
        return FULL_ACCESS, _error(400, message)
    return grant or FULL_ACCESS, None


@dataclass
class Telephony:
    """The routes in a process that holds the calls (no ``--workers``, or a worker)."""

    bridge: Bridge
    retry_after_s: int

    async def voice(self, request: web.Request) -> web.Response:
        return await voice_webhook(request, self.bridge.settings)

    def stream_handler(self, dialect: Dialect) -> Handler:
        async def stream(request: web.Request) -> web.StreamResponse:
            return await self.stream(request, dialect)

        return stream

    async def stream(self, request: web.Request, dialect: Dialect) -> web.StreamResponse:
        bridge = self.bridge
        grant, refused = admit_stream(request, bridge.settings, dialect)
        if refused is not None:
            return refused
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES)
        query = {k: request.query[k] for k in OPTION_KEYS if k in request.query}
        call = MediaStreamCall(
            bridge,
            ws,
            dialect,
            lambda parameters: grant.bind(options_from({**query, **parameters})),
            peer_timeout=bridge.settings.peer_timeout,
            peer=request.headers.get("X-Forwarded-For", request.remote or "?")[:64],
        )
        try:
            with bridge.calls.reserve(dialect.name):
                await ws.prepare(request)
                started = await call.start()
        except CapacityError as exc:  # logged and counted by the registry
            return _error(503, str(exc), {"Retry-After": str(self.retry_after_s)})
        if started:
            await call.run()
        return ws


def add_twilio_routes(app: web.Application, bridge: Bridge, *, retry_after_s: int = 15) -> None:
    """``/twilio/voice`` and the ``/{twilio,telnyx,plivo}/stream`` WebSockets on ``app``."""
    telephony = Telephony(bridge, retry_after_s)
    app.router.add_route("GET", VOICE_PATH, telephony.voice)
    app.router.add_route("POST", VOICE_PATH, telephony.voice)
    for dialect in DIALECTS.values():
        app.router.add_get(f"/{dialect.name}/stream", telephony.stream_handler(dialect))
