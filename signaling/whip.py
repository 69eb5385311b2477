"""WHIP (RFC 9725): a WebRTC session from one HTTP request, for gateways and media tools.

``POST /whip`` (``application/sdp`` offer) → ``201 Created`` with the SDP answer, the
session's ``Location`` and ``ETag``, and the ICE servers as ``Link: rel="ice-server"``
headers (also on ``OPTIONS /whip``). ``PATCH <Location>`` (``application/trickle-ice-sdpfrag``)
adds trickled candidates; an ICE restart gets ``422``. ``DELETE <Location>`` ends the
call. The resource id is the call id (16 random bytes). Query parameters ``voice``,
``instructions`` and ``mode`` are those of ``/offer``.

Direction: a ``sendonly`` offer (what WHIP clients send) is answered ``recvonly`` as the
RFC says: the model hears and sees the caller, who hears nothing back. Our extension: a
``sendrecv`` audio offer is answered ``sendrecv`` and carries the model's voice back, a
two-way voice call over WHIP. (aiortc derives both answers from the offer; the call
plays an unsent reply into nothing so its turn-taking stays the same.)

Errors are plain text: 400 bad SDP or sdpfrag, 401 without the access token or a valid
call link when one is required (429 past the rate limit), 404
unknown session, 405 wrong method, 412 ``If-Match`` mismatch, 413 too large, 415 wrong
``Content-Type``, 422 ICE restart, 502 realtime service trouble, 503 + ``Retry-After``
at capacity.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiortc import RTCIceCandidate
from multidict import CIMultiDict

from omni_rtc.bridge import Bridge
from omni_rtc.calls import CallOptions, CapacityError
from omni_rtc.ice import resolve_ice_servers
from omni_rtc.realtime.errors import AuthenticationFailed, RealtimeError
from omni_rtc.transports.webrtc import WebRtcCall

from .auth import Grant, admit_call, require_auth
from .server import PLAIN_TEXT_BY_DESIGN, REFUSED_HEADER
from .validation import MAX_INSTRUCTIONS_CHARS, MAX_VOICE_CHARS, MODES
from .whip_sdp import WhipError, link_header, parse_offer, parse_sdpfrag

log = logging.getLogger("omni_rtc.whip")

ENDPOINT = "/whip"
SDP = "application/sdp"
SDPFRAG = "application/trickle-ice-sdpfrag"
MAX_CANDIDATES = 64
"""Remote candidates one session may trickle (each makes the bridge send ICE checks)."""
ENDED_KEPT_S = 60.0
"""How long the resource of a call that ended without a DELETE is kept for that DELETE."""


@dataclass
class WhipSession:
    """What a WHIP resource needs beyond the call: ICE credentials, ETag, trickle state."""

    call: WebRtcCall
    etag: str
    ice_ufrag: str | None
    ice_pwd: str | None
    transport_mid: str | None
    """The m-line whose transport carries everything (first of the BUNDLE group)."""
    candidates: int = 0
    end_of_candidates: bool = False
    ended_at: float | None = None
    """When the call was first seen ended (it may end before the client's DELETE)."""
    patches: int = 0
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def id(self) -> str:
        return self.call.id


@dataclass
class Whip:
    bridge: Bridge
    retry_after_s: int
    sessions: dict[str, WhipSession] = field(default_factory=dict)

    # ---------------------------------------------------------------- routing

    async def endpoint(self, request: web.Request) -> web.Response:
        try:
            if request.method == "OPTIONS":
                return self.options(ENDPOINT_METHODS, {"Accept-Post": SDP})
            if request.method == "POST":
                return await self.create(request)
            raise WhipError(405, "use POST with an SDP offer", {"Allow": ENDPOINT_METHODS})
        except WhipError as exc:
            return text_response(exc.status, str(exc), exc.headers)

    async def resource(self, request: web.Request) -> web.Response:
        try:
            if request.method == "OPTIONS":
                return self.options(RESOURCE_METHODS, {"Accept-Patch": SDPFRAG})
            if request.method == "PATCH":
                return await self.trickle(request)
            if request.method == "DELETE":
                return await self.delete(request)
            raise WhipError(
                405, "use PATCH (trickle ICE) or DELETE (hang up)", {"Allow": RESOURCE_METHODS}
            )
        except WhipError as exc:
            return text_response(exc.status, str(exc), exc.headers)

    def options(self, allow: str, extra: dict[str, str]) -> web.Response:
        headers = CIMultiDict({"Allow": allow, **extra, "Cache-Control": "no-store"})
        self.add_links(headers)
        return web.Response(status=204, headers=headers)

    def add_links(self, headers: CIMultiDict[str]) -> None:
        for server in resolve_ice_servers(self.bridge.settings, user="omni-rtc-whip"):
            headers.add("Link", link_header(server))

    def check_auth(self, request: web.Request, *, new_call: bool = False) -> Grant:
        return check_access(request, new_call=new_call)

    def session(self, request: web.Request, *, live: bool = True) -> WhipSession:
        self.forget_ended()
        session = self.sessions.get(request.match_info["resource_id"])
        if session is None:
            raise WhipError(404, "no such WHIP session (it was deleted or never existed)")
        if live and session.call.closed.is_set():
            raise WhipError(404, "this WHIP session has ended: DELETE it, POST a new offer")
        return session

    # ---------------------------------------------------------------- POST /whip

    async def create(self, request: web.Request) -> web.Response:
        grant = self.check_auth(request, new_call=True)
        if request.content_type.lower() != SDP:
            raise WhipError(415, f"send the SDP offer as {SDP}", {"Accept-Post": SDP})
        sdp = await read_text(request, self.bridge.settings.max_body_bytes, "SDP offer")
        options = grant.bind(parse_options(request))
        offer = parse_offer(sdp)
        self.forget_ended()
        try:
            call, answer = await self.bridge.answer_offer(sdp, options, transport="whip")
        except ValueError as exc:  # unknown voice, an offer aiortc cannot answer
            raise WhipError(400, str(exc)) from None
        except CapacityError as exc:
            refused = {"Retry-After": str(self.retry_after_s), REFUSED_HEADER: exc.reason}
            raise WhipError(503, str(exc), refused) from None
        except AuthenticationFailed:
            raise WhipError(502, "the realtime service rejected the server's API key") from None
        except RealtimeError:
            raise WhipError(502, "the realtime service is unavailable; try again later") from None
        session = WhipSession(
            call=call,
            etag=f'"{secrets.token_urlsafe(12)}"',
            ice_ufrag=offer.ice_ufrag,
            ice_pwd=offer.ice_pwd,
            transport_mid=offer.transport_mid,
        )
        self.sessions[session.id] = session
        log.info(
            "call %s: WHIP session, audio %s (answered %s)",
            call.id,
            offer.audio_direction,
            "sendrecv" if offer.audio_direction == "sendrecv" else "recvonly",
        )
        headers = CIMultiDict(
            {
                "Content-Type": SDP,
                "Location": f"{ENDPOINT}/{session.id}",
                "ETag": session.etag,
                "Accept-Patch": SDPFRAG,
                "Cache-Control": "no-store",
            }
        )
        self.add_links(headers)
        return web.Response(status=201, body=answer.encode(), headers=headers)

    def forget_ended(self) -> None:
        """Drop sessions whose call ended on its own more than ``ENDED_KEPT_S`` ago.

        A call can end before its DELETE (clients often close the peer connection first);
        the resource stays until then so that DELETE still answers 200, not 404.
        """
        now = time.monotonic()
        for resource_id, session in list(self.sessions.items()):
            if session.call.closed.is_set():
                session.ended_at = session.ended_at or now
                if now - session.ended_at > ENDED_KEPT_S:
                    self.drop(resource_id)

    def drop(self, resource_id: str) -> None:
        session = self.sessions.pop(resource_id, None)
        if session is not None:
            for task in session.tasks:
                task.cancel()

    # ---------------------------------------------------------------- PATCH <resource>

    async def trickle(self, request: web.Request) -> web.Response:
        self.check_auth(request)
        session = self.session(request)
        if request.content_type.lower() != SDPFRAG:
            raise WhipError(415, f"send candidates as {SDPFRAG}", {"Accept-Patch": SDPFRAG})
        if_match = request.headers.get("If-Match")
        if if_match is not None and if_match.strip() == "*":
            raise WhipError(422, ICE_RESTART_REFUSED)
        if if_match is not None and session.etag not in [t.strip() for t in if_match.split(",")]:
            raise WhipError(412, "If-Match does not match this session's ETag")
        limit = self.bridge.settings.max_body_bytes
        fragment = parse_sdpfrag(await read_text(request, limit, "sdpfrag"))
        if (fragment.ice_ufrag is not None and fragment.ice_ufrag != session.ice_ufrag) or (
            fragment.ice_pwd is not None and fragment.ice_pwd != session.ice_pwd
        ):
            raise WhipError(422, ICE_RESTART_REFUSED)
        if session.candidates + len(fragment.candidates) > MAX_CANDIDATES:
            raise WhipError(400, f"too many ICE candidates (at most {MAX_CANDIDATES} a session)")
        session.patches += 1
        pc = session.call.pc
        for candidate in fragment.candidates:
            candidate.sdpMid = session.transport_mid
            candidate.sdpMLineIndex = 0
            session.candidates += 1
            if candidate.ip.endswith(".local"):  # mDNS: resolving may take seconds
                task = asyncio.create_task(_add_candidate(session, candidate))
                session.tasks.add(task)
                task.add_done_callback(session.tasks.discard)
            else:
                await _add_candidate(session, candidate)
        if fragment.end_of_candidates and not session.end_of_candidates:
            session.end_of_candidates = True
            with contextlib.suppress(Exception):  # the call may have ended meanwhile
                await pc.addIceCandidate(None)
        return web.Response(status=204)

    # ---------------------------------------------------------------- DELETE <resource>

    async def delete(self, request: web.Request) -> web.Response:
        self.check_auth(request)
        session = self.session(request, live=False)
        self.drop(session.id)
        await self.bridge.calls.close(session.id, "hangup")  # False: it had ended on its own
        return web.Response(status=200)

    async def shutdown(self, app: web.Application) -> None:
        for resource_id in list(self.sessions):
            self.drop(resource_id)


def check_access(request: web.Request, *, new_call: bool = False) -> Grant:
    """The app's access check (token or call link; the rate limit for a new call), its
    JSON refusal turned into WHIP's text one (also used by the front process)."""
    try:
        return admit_call(request) if new_call else require_auth(request)
    except web.HTTPException as exc:
        try:
            message = str(json.loads(exc.text or "{}")["error"])
        except (ValueError, KeyError):
            message = exc.reason
        keep = ("WWW-Authenticate", "Retry-After")
        raise WhipError(
            exc.status, message, {k: v for k, v in exc.headers.items() if k in keep}
        ) from None


ENDPOINT_METHODS = "OPTIONS, POST"
RESOURCE_METHODS = "OPTIONS, PATCH, DELETE"
ICE_RESTART_REFUSED = (
    "ICE restarts are not supported: DELETE this session and POST a new offer instead"
)
WHIP = web.AppKey("whip", Whip)


def add_whip_routes(
    app: web.Application,
    bridge: Bridge,
    *,
    retry_after_s: int = 15,
) -> Whip:
    """Serve WHIP on ``app`` at ``/whip``, behind the app's access check (signaling.auth)."""
    whip = Whip(bridge, retry_after_s)
    app[WHIP] = whip
    app.router.add_route("*", ENDPOINT, whip.endpoint)
    app.router.add_route("*", ENDPOINT + "/{resource_id}", whip.resource)
    app.on_shutdown.append(whip.shutdown)
    return whip


async def _add_candidate(session: WhipSession, candidate: RTCIceCandidate) -> None:
    try:
        await session.call.pc.addIceCandidate(candidate)
    except Exception as exc:  # a closed connection, or aioice refusing the address
        log.info("call %s: trickled candidate ignored: %r", session.id, exc)


# -------------------------------------------------------------------- parsing (pure)


def text_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """WHIP errors are plain text (RFC 9725 clients show them), not the API's JSON."""
    response = web.Response(status=status, text=message + "\n", headers=headers)
    response[PLAIN_TEXT_BY_DESIGN] = True
    return response


async def read_text(request: web.Request, limit: int, what: str) -> str:
    if request.content_length is not None and request.content_length > limit:
        raise WhipError(413, f"the {what} is too large (at most {limit} bytes)")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise WhipError(413, f"the {what} is too large (at most {limit} bytes)") from None
    if len(body) > limit:
        raise WhipError(413, f"the {what} is too large (at most {limit} bytes)")
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise WhipError(400, f"the {what} is not UTF-8 text") from None


def parse_options(request: web.Request) -> CallOptions:
    def one(key: str, limit: int) -> str | None:
        values = request.query.getall(key, [])
        if len(values) > 1:
            raise WhipError(400, f"give '{key}' at most once")
        if not values or values[0] == "":
            return None
        if len(values[0]) > limit:
            raise WhipError(400, f"'{key}' is too long (at most {limit} characters)")
        return values[0]

    mode = one("mode", 32)
    if mode is not None and mode not in MODES:
        raise WhipError(400, f"'mode' must be one of: {', '.join(MODES)}")
    return CallOptions(
        voice=one("voice", MAX_VOICE_CHARS),
        instructions=one("instructions", MAX_INSTRUCTIONS_CHARS),
        mode=mode,
    )
