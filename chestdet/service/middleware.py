"""Two ASGI middlewares: a request body limit (413), and the page's security headers."""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

# The page loads nothing from elsewhere: scripts, styles and images come from this server (images also
# as data: and blob: URLs of the film and its heatmaps).
PAGE_POLICY = ("default-src 'self'; img-src 'self' data: blob:; script-src 'self'; style-src 'self'; "
               "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class BodyLimit:
    """413 for a body over `limit` bytes: at once when Content-Length says so, else as soon as the
    streamed body passes it (the endpoint reading it gets the 413 raised)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            response = JSONResponse({"detail": self._too_large()}, 413, {"Connection": "close"})
            return await response(scope, receive, send)
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, self._too_large(), {"Connection": "close"})
            return message

        await self.app(scope, limited, send)

    def _too_large(self) -> str:
        return f"the body is over the limit of {self.limit} bytes"


class PageHeaders:
    """Security headers on every response; the page and its assets also get a strict Content-Security-Policy
    (not /docs, whose Swagger UI comes from a CDN)."""

    def __init__(self, app: ASGIApp, page_paths: tuple[str, ...] = ("/", "/static/")) -> None:
        self.app, self.page_paths = app, page_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        is_page = path == "/" or any(path.startswith(prefix) for prefix in self.page_paths if prefix != "/")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(b"x-content-type-options", b"nosniff"), (b"referrer-policy", b"no-referrer")]
                if is_page:
                    headers += [(b"content-security-policy", PAGE_POLICY.encode()), (b"x-frame-options", b"DENY")]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
