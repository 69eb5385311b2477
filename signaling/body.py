"""Reading request bodies at the edge: bounded in size and time, UTF-8 only.

A route that takes a JSON body (``/offer``) calls :func:`read_json`; one that takes text
such as SDP (``/whip``) calls :func:`read_text` then
:func:`~signaling.validation.check_sdp_offer`. A refused body raises
:class:`~signaling.validation.BadRequest`, which the app answers as JSON.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from .validation import (
    BadRequest,
    UnsupportedMediaType,
    check_json_content_type,
    decode_utf8,
    parse_json,
)

BODY_TIMEOUT = web.AppKey("body_timeout", float)


class RequestTimeout(BadRequest):
    status = 408


async def read_body(request: web.Request) -> bytes:
    """The raw body within the app's size limit (413) and read timeout (408)."""
    encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
    if encoding != "identity":
        raise UnsupportedMediaType("compressed request bodies are not accepted")
    try:
        return await asyncio.wait_for(request.read(), request.app[BODY_TIMEOUT])
    except asyncio.TimeoutError:  # aiohttp then closes the connection (unread body)
        raise RequestTimeout("the request body did not arrive in time") from None
    except web.RequestPayloadError:
        raise BadRequest("the request body could not be read (bad chunked encoding?)") from None


async def read_text(request: web.Request, content_type: str) -> str:
    """A UTF-8 text body of exactly this type (e.g. ``application/sdp`` for WHIP), else 415."""
    if request.content_type != content_type:
        raise UnsupportedMediaType(f"send the request body as {content_type}")
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"{content_type} bodies must be UTF-8")
    return decode_utf8(await read_body(request))


async def read_json(request: web.Request) -> Any:
    """The body as JSON: ``application/json`` in UTF-8, bounded depth and numbers."""
    check_json_content_type(request.content_type, request.charset)
    return parse_json(decode_utf8(await read_body(request)))
