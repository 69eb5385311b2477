"""The HTTP server under the app: JSON errors for malformed requests, and time limits.

aiohttp answers requests its parser refuses (over-long lines, ``Content-Length: -5``,
bad chunking, TLS on the HTTP port) itself, before any middleware runs, with a plain
text body and an ERROR traceback in the log. :class:`EdgeRequestHandler` overrides its
``handle_error`` hook to answer ``{"error": ...}`` and log one line instead, and turns
any other plain-text error aiohttp makes outside the middleware (an unknown ``Expect``)
into JSON;
:func:`make_runner` plugs it in through a ``web.Server`` subclass (aiohttp has no
option for the handler class). ``keepalive_timeout`` doubles as the header-read limit:
aiohttp arms it when a connection opens, so a client that never completes its
request headers is closed after ``http_timeout`` seconds.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong

log = logging.getLogger("omni_rtc.http")

_KEPT_HEADERS = ("Allow", "Retry-After", "WWW-Authenticate")


def describe(exc: BaseException | None, message: str | None) -> str:
    """A short, single-line reason for a refused request (no echo of long client bytes)."""
    if isinstance(exc, LineTooLong):
        return f"a request line or header is longer than {exc.args[1]} bytes"
    text = message or (exc.message if isinstance(exc, HttpProcessingError) else "") or ""
    first = text.strip().splitlines()[0].rstrip(":").strip() if text.strip() else ""
    first = re.sub(r"[^\x20-\x7e]", "?", first)[:120]
    return first or "malformed HTTP request"


class EdgeRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with JSON errors and no tracebacks for client mistakes."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:  # our bug, not the client's: keep aiohttp's traceback
            self.log_exception("Error handling request from %s", request.remote, exc_info=exc)
            text = "internal server error"
        else:
            text = describe(exc, message)
            log.info("refused a malformed request from %s: %s", request.remote, text)
        if request.writer.output_size > 0:
            raise ConnectionError("response already started: cannot send the error")
        response = web.json_response({"error": text}, status=status)
        response.force_close()
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        """The last stop of every response: a plain-text error that aiohttp made before the
        app's middleware could (e.g. 417 for an unknown ``Expect``) leaves as JSON too.
        """
        if (
            resp.status >= 400
            and isinstance(resp, web.Response)
            and resp.content_type == "text/plain"
            and not resp.prepared
            and not resp.get(PLAIN_TEXT_BY_DESIGN)
        ):
            text = resp.text or ""
            if not text or text.startswith(f"{resp.status}:"):
                text = resp.reason
            json_resp = web.json_response(
                {"error": describe(None, text)},
                status=resp.status,
                headers={k: v for k, v in resp.headers.items() if k in _KEPT_HEADERS},
            )
            if not resp.keep_alive:
                json_resp.force_close()
            resp = json_resp
        return await super().finish_response(request, resp, start_time)

    def log_exception(self, *args: Any, **kw: Any) -> None:
        """A client's broken body (seen again when aiohttp drains it) is not our error."""
        exc = kw.get("exc_info")
        if isinstance(exc, (HttpProcessingError, web.RequestPayloadError)):
            log.info("dropped a connection from a client sending a broken request: %s", exc)
            return
        super().log_exception(*args, **kw)


PLAIN_TEXT_BY_DESIGN = web.ResponseKey("omni_rtc.plain_text_by_design", bool)
"""Key set on a response whose text/plain error is the protocol's own (WHIP's)."""


class EdgeServer(web.Server):
    def __call__(self) -> web.RequestHandler:
        return EdgeRequestHandler(self, loop=self._loop, **self._kwargs)


class EdgeRunner(web.AppRunner):
    """An ``AppRunner`` whose connections use :class:`EdgeRequestHandler`."""

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the app, gathers its handler options
        return EdgeServer(
            plain.request_handler,
            request_factory=plain.request_factory,
            handler_cancellation=plain.handler_cancellation,
            loop=plain._loop,
            **plain._kwargs,
        )


def make_runner(app: web.Application, *, http_timeout: float, **kwargs: Any) -> web.AppRunner:
    """The runner for ``omni-rtc serve`` (and the tests): JSON parser errors, time limits.

    Request bodies are not decompressed (the API takes none; a broken gzip body is refused
    as unsupported instead of failing inside aiohttp's parser).
    """
    return EdgeRunner(app, keepalive_timeout=http_timeout, auto_decompress=False, **kwargs)


REFUSED_HEADER = "X-Omni-Rtc-Refused"
"""On a 503 for a new call: why (``full``, ``overloaded``, ``draining``); the front moves
on to another worker when it says ``full`` or ``overloaded``."""
