"""CORS for pages on other origins (``--allowed-origin``); same-origin pages need none of it.

Preflights (``OPTIONS`` with ``Access-Control-Request-Method``) for an allowed origin are
answered with the route's own methods and the two headers the API reads (Authorization,
Content-Type); other origins get a 403 and no ``Access-Control-*`` header at all. No
credentials mode: callers authenticate with a Bearer token, never with cookies.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

ALLOWED_HEADERS = "Authorization, Content-Type"
EXPOSED_HEADERS = "Retry-After, Location, ETag"
MAX_AGE_S = 600

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Cors:
    def __init__(self, origins: Iterable[str]) -> None:
        self.origins = frozenset(o.rstrip("/").lower() for o in origins)
        self.any = "*" in self.origins

    def allows(self, origin: str) -> bool:
        return bool(self.origins) and (self.any or origin.rstrip("/").lower() in self.origins)

    def _allow_origin(self, origin: str) -> str:
        return "*" if self.any else origin

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Answer preflights before the router's 405 for OPTIONS does."""
        origin = request.headers.get("Origin")
        method = request.headers.get("Access-Control-Request-Method")
        if request.method != "OPTIONS" or not origin or not method or not self.origins:
            return await handler(request)
        not_allowed = request.match_info.http_exception
        if not isinstance(not_allowed, web.HTTPMethodNotAllowed):
            return await handler(request)  # 404, or a route with its own OPTIONS handler
        if not self.allows(origin):
            return _error(403, f"pages on {origin} may not call this server")
        methods = sorted(not_allowed.allowed_methods)
        if method.upper() not in methods:
            return _error(405, f"{method} is not allowed here", {"Allow": ", ".join(methods)})
        return web.Response(
            status=204,
            headers={
                "Access-Control-Allow-Origin": self._allow_origin(origin),
                "Access-Control-Allow-Methods": ", ".join(methods),
                "Access-Control-Allow-Headers": ALLOWED_HEADERS,
                "Access-Control-Max-Age": str(MAX_AGE_S),
            },
        )

    async def on_response_prepare(self, request: web.Request, response: web.StreamResponse) -> None:
        """Every answer says it varies by Origin; allowed origins may read it."""
        if not self.origins:
            return
        vary = response.headers.get("Vary")
        if vary is None:
            response.headers["Vary"] = "Origin"
        elif "origin" not in vary.lower():
            response.headers["Vary"] = vary + ", Origin"
        origin = request.headers.get("Origin")
        if origin and self.allows(origin) and request.method != "OPTIONS":
            response.headers["Access-Control-Allow-Origin"] = self._allow_origin(origin)
            response.headers["Access-Control-Expose-Headers"] = EXPOSED_HEADERS


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps({"error": message}),
        content_type="application/json",
        headers=headers,
    )
