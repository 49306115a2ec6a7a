"""What every request to the lab passes through (a pure ASGI middleware, so event streams stay
streams):

- **writes from this origin only**: a request other than GET/HEAD/OPTIONS is refused (403) when
  its ``Origin`` is another origin (or ``null``) or its ``Sec-Fetch-Site`` is ``cross-site`` or
  ``same-site``; requests without those headers (curl, scripts) pass. Another page open in the same
  browser cannot queue jobs or upload files.
- **a token when asked** (``idlsec serve --token``, required beyond loopback): every request
  carries it as the ``X-Idlsec-Token`` header or the ``idlsec_token`` cookie, else 401; opening
  ``/?token=...`` once sets the cookie (HttpOnly, SameSite=Strict) and redirects to ``/``.
- **bodies of known size**: a write without Content-Length is refused (411), one beyond its limit
  (the upload limit for /api/uploads, 1 MiB elsewhere) before it is read (413).
- **headers on every response**: a Content-Security-Policy that allows this origin's scripts and
  styles only (no inline script, no framing, no plugins), ``X-Content-Type-Options: nosniff``,
  ``Referrer-Policy: same-origin``; a response may set a stricter CSP of its own."""

from __future__ import annotations

import hmac
import json
from http.cookies import SimpleCookie
from urllib.parse import parse_qs

from . import schemas

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
TOKEN_HEADER = "x-idlsec-token"
TOKEN_COOKIE = "idlsec_token"
UPLOAD_PATH = "/api/uploads"
MULTIPART_SLACK = 64 * 1024  # multipart boundaries and part headers around the file


class Guard:
    def __init__(self, app, *, token: str | None = None):
        self.app = app
        self.token = token

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method = scope["method"].upper()

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                raw = list(message.get("headers", []))
                have = {k.lower() for k, _ in raw}
                for k, v in ((b"content-security-policy", CSP), (b"x-content-type-options", "nosniff"),
                             (b"referrer-policy", "same-origin"), (b"x-frame-options", "DENY")):
                    if k not in have:
                        raw.append((k, v.encode("latin-1")))
                message = {**message, "headers": raw}
            await send(message)

        refusal = self._refusal(scope, headers, method)
        if refusal is not None:
            code, detail, extra = refusal
            body = json.dumps({"detail": detail}).encode()
            await send_with_headers({"type": "http.response.start", "status": code, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                *extra]})
            await send_with_headers({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope, headers: dict, method: str):
        """(status, message, extra headers) for a refused request, else None."""
        if self.token is not None:
            given = headers.get(TOKEN_HEADER)
            if given is None and "cookie" in headers:
                cookie = SimpleCookie()
                try:
                    cookie.load(headers["cookie"])
                except Exception:  # noqa: BLE001 - a malformed cookie header is no token
                    cookie = SimpleCookie()
                given = cookie[TOKEN_COOKIE].value if TOKEN_COOKIE in cookie else None
            query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
            if given is None and method == "GET" and scope["path"] == "/" and "token" in query:
                if self._matches(query["token"][0]):
                    cookie = (f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict").encode()
                    return 303, "token accepted", [(b"location", b"/"), (b"set-cookie", cookie)]
            if not self._matches(given):
                return 401, ("this lab needs its token: the X-Idlsec-Token header, or open "
                             "/?token=TOKEN once in the browser"), []
        if method in SAFE_METHODS:
            return None
        site = headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return 403, f"cross-origin write refused (Sec-Fetch-Site: {site})", []
        origin = headers.get("origin")
        if origin is not None:
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
            if origin.rstrip("/").lower() != own.lower():
                return 403, f"cross-origin write refused (Origin: {origin[:100]})", []
        length = headers.get("content-length")
        if length is None:
            if "transfer-encoding" in headers:
                return 411, "send the request body with a Content-Length", []
            return None
        limit = (schemas.MAX_UPLOAD_BYTES + MULTIPART_SLACK if scope["path"] == UPLOAD_PATH
                 else schemas.MAX_BODY_BYTES)
        if not length.isdigit() or int(length) > limit:
            return 413, f"the request body is larger than {limit} bytes", []
        return None

    def _matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())
