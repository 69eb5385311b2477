"""A local realtime service that behaves like Qwen-Omni Realtime (DashScope protocol).

Used when no API key is configured (offline mode) and by the tests.  It validates what
clients send the way the real service does, detects speech from the audio's energy,
and replies the way the service does: audio deltas in bursts faster than real time,
interleaved transcript deltas, the full ``*.done`` sequence and token usage.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from types import TracebackType
from urllib.parse import parse_qs

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from ..realtime import codec
from ..realtime import events as ev
from ..realtime.profiles import DASHSCOPE
from .config import EmulatorConfig
from .record import SessionRecord
from .replies import new_id
from .session import EmulatedSession

log = logging.getLogger("omni_rtc.emulator")

PATHS = ("/api-ws/v1/realtime", "/v1/realtime")


class Emulator:
    """The emulator server; ``async with Emulator(...) as emu`` for tests (port 0 = free)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        avoid_port: int | None = None,
    ) -> None:
        self.config = config or EmulatorConfig()
        self.host = host
        self.port = port
        self.avoid_port = avoid_port
        """A port a free-port pick must not take (the HTTP port of the server that starts
        this emulator and binds its own port afterwards)."""
        self.sessions: deque[SessionRecord] = deque(maxlen=self.config.keep_sessions)
        """The most recent sessions, oldest first (bounded by ``keep_sessions``)."""
        self.sessions_started = 0
        self._server: Server | None = None

    @property
    def url(self) -> str:
        """Base URL for clients (they add ``?model=``)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{PATHS[0]}"

    async def start(self) -> None:
        held = self._hold(self.avoid_port) if self.port == 0 and self.avoid_port else None
        try:
            self._server = await serve(
                self._handle,
                self.host,
                self.port,
                process_request=self._check_request,
                max_size=2 * 1024 * 1024,
                ping_interval=20,
                logger=logging.getLogger("omni_rtc.emulator.wire"),
            )
        finally:
            if held is not None:
                held.close()
        sockname = next(iter(self._server.sockets)).getsockname()
        self.port = int(sockname[1])
        log.info("emulator listening on %s", self.url)

    def _hold(self, port: int) -> socket.socket | None:
        """Bind ``port`` while the system picks ours, so that it cannot pick that one
        (None if it is taken already: whoever wants it will say so)."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        held = socket.socket(family, socket.SOCK_STREAM)
        try:
            held.bind((self.host, port))
        except OSError:
            held.close()
            return None
        return held

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path, _, query = request.path.partition("?")
        if path not in PATHS:
            return _respond(connection, 404, "Not found: use /api-ws/v1/realtime?model=...")
        expected = f"Bearer {self.config.api_key}" if self.config.api_key else None
        given = request.headers.get("Authorization")
        if self.config.reject_auth or (expected is not None and given != expected):
            log.info("emulator: rejected a connection (bad or missing API key)")
            return _respond(connection, 401, "Invalid API-key provided.")
        if not parse_qs(query).get("model"):
            return _respond(connection, 400, "Missing query parameter: model")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        query = ws.request.path.partition("?")[2] if ws.request else ""
        model_name = parse_qs(query).get("model", [""])[0]
        peer = f"{ws.remote_address[0]}:{ws.remote_address[1]}" if ws.remote_address else "?"
        session_id = new_id("sess")
        record = SessionRecord(
            session_id=session_id,
            model=model_name,
            peer=peer,
            record_seconds=self.config.record_seconds,
            abort=ws.transport.abort,
        )
        self.sessions.append(record)
        self.sessions_started += 1
        faults = (
            self.config.fault_sessions is None
            or self.sessions_started <= self.config.fault_sessions
        )
        log.info("session %s: connected from %s, model %s", session_id, peer, model_name)
        try:
            try:
                model = DASHSCOPE.model(model_name)
            except ValueError:
                await ws.send(
                    codec.encode_event(
                        ev.ErrorEvent(
                            event_id=new_id("event"),
                            error={
                                "type": "invalid_request_error",
                                "code": "ModelNotFound",
                                "message": f"Model not found ({model_name})",
                                "param": "model",
                            },
                        )
                    )
                )
                await ws.close(1008, "model not found")
                return
            await EmulatedSession(ws, self.config, model, record, faults=faults).run()
        except ConnectionClosed:
            pass
        finally:
            record.close_code = ws.close_code
            record.closed.set()
            seconds = record.audio_seconds_total
            accepted = sum(1 for i in record.images if i.accepted)
            log.info(
                "session %s: closed (code %s) after %.1f s: %.1f s of audio in, %d images "
                "(%d rejected), %d responses",
                session_id,
                ws.close_code,
                time.monotonic() - record.started,
                seconds,
                accepted,
                len(record.images) - accepted,
                record.responses,
            )


def _respond(connection: ServerConnection, status: int, text: str) -> Response:
    return connection.respond(status, text + "\n")
