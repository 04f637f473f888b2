"""Optional API keys: ``Authorization: Bearer <key>`` on every route but health, docs and UI."""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Probes, metrics, the API docs and the web page's static files stay open: the page itself asks
# for the key and sends it with every API call.
OPEN_PATHS = frozenset({"/", "/health", "/healthz", "/livez", "/readyz", "/metrics", "/ui"})
OPEN_PREFIXES = ("/ui/", "/static_content/", "/assets/", "/docs.json", "/schema.json")


def is_open(path: str) -> bool:
    return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)


def bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


class ApiKeyMiddleware:
    """ASGI middleware; with no keys configured it passes everything through."""

    def __init__(self, app: ASGIApp, keys: Iterable[str] = ()) -> None:
        self.app = app
        self.keys = [k.encode() for k in keys if k]

    def allowed(self, token: str | None) -> bool:
        if token is None:
            return False
        candidate = token.encode()
        # Compare against every key so timing does not tell which one nearly matched.
        return any([hmac.compare_digest(candidate, key) for key in self.keys])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            not self.keys
            or scope["type"] != "http"
            or scope.get("method") == "OPTIONS"
            or is_open(scope["path"])
            or self.allowed(bearer_token(scope.get("headers", [])))
        ):
            await self.app(scope, receive, send)
            return
        body = json.dumps(
            {
                "error": {
                    "message": "Missing or invalid API key: send 'Authorization: Bearer <key>'.",
                    "type": "AuthenticationError",
                    "param": None,
                    "code": 401,
                }
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"www-authenticate", b"Bearer"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
