"""HTTP methods answered as RFC 9110 asks, for every path (a pure ASGI middleware):

- a method a path does not take: 405 with an ``Allow`` header listing all the methods of every
  route on that path (Starlette lists those of the first route only, and the app mounted at ``/``
  answers 405 without one);
- ``OPTIONS``: 204 with that ``Allow`` header;
- ``HEAD`` where ``GET`` is taken: the GET's status and headers without its body (an event
  stream is ended once its headers are sent);
- a path under ``/api/`` that no route takes: 404 whatever the method.

The single-page app's files (the mount at ``/``) take GET and HEAD."""

from __future__ import annotations

import json

import anyio
from starlette.routing import Match, Mount

STATIC_METHODS = ("GET", "HEAD", "OPTIONS")


def allow_header(methods) -> str:
    methods = set(methods) | {"OPTIONS"}
    if "GET" in methods:
        methods.add("HEAD")
    return ", ".join(sorted(methods))


class Methods:
    def __init__(self, asgi, *, app):
        self.asgi = asgi  # the next ASGI app in the stack
        self.app = app    # the FastAPI app, whose routes are read at each request

    def allowed(self, scope) -> set[str] | None:
        """The methods of the routes on ``scope``'s path; None when only the mount at / takes it."""
        found: set[str] = set()
        for route in self.app.router.routes:
            if isinstance(route, Mount):
                continue
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                found |= set(getattr(route, "methods", None) or ())
        return found or None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.asgi(scope, receive, send)
        method = scope["method"].upper()
        methods = self.allowed(scope)
        if methods is None:
            if scope["path"].startswith("/api/") or scope["path"] == "/api":
                return await _reply(send, 404, {"detail": f"no API endpoint at {scope['path']}"})
            if not any(isinstance(r, Mount) and r.path == "" for r in self.app.router.routes):
                return await self.asgi(scope, receive, send)  # no app mounted: the router's 404
            methods = set(STATIC_METHODS)
        allow = allow_header(methods)
        if method == "OPTIONS":
            return await _reply(send, 204, None, allow)
        if method == "HEAD" and "GET" in methods and "HEAD" not in methods:
            return await _head(self.asgi, scope, receive, send)
        if method not in methods and not (method == "HEAD" and "GET" in methods):
            return await _reply(send, 405, {"detail": f"{method} is not allowed here; allowed: {allow}"}, allow)
        return await self.asgi(scope, receive, send)


async def _reply(send, status: int, body: dict | None, allow: str | None = None) -> None:
    data = json.dumps(body).encode() if body is not None else b""
    headers = [(b"content-length", str(len(data)).encode())]
    if body is not None:
        headers.append((b"content-type", b"application/json"))
    if allow is not None:
        headers.append((b"allow", allow.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _head(asgi, scope, receive, send) -> None:
    """Run the GET; send its start and an empty body; tell the app the client left once sent."""
    started = anyio.Event()
    first = True

    async def head_receive():
        nonlocal first
        if first:
            first = False
            return await receive()
        await started.wait()
        return {"type": "http.disconnect"}

    async def head_send(message):
        if message["type"] == "http.response.start":
            await send(message)
            await send({"type": "http.response.body", "body": b""})
            started.set()
        # bodies are dropped

    await asgi({**scope, "method": "GET"}, head_receive, head_send)
