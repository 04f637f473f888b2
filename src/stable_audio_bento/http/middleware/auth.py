"""Optional API keys: ``Authorization: Bearer <key>`` on every route but health, docs and UI.

The middleware also says who is calling (``caller_of(scope)``): jobs belong to the key that
made them (recorded as ``owner_of(key)``, a hash), other keys do not see them, and admin keys
see every job. Without keys the server is open and everyone sees everything.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...limits import MAX_PRIORITY
from ...settings import Settings
from ..envelope import ASGIApp, Receive, Scope, Send, send_error

# Probes, metrics, both API documents and the web page's static files stay open: what the API
# looks like is no secret (BentoML's /docs.json never needed a key), and the page itself asks
# for the key and sends it with every API call.
OPEN_PATHS = frozenset(
    {
        "/",
        "/health",
        "/healthz",
        "/livez",
        "/readyz",
        "/metrics",
        "/ui",
        "/v1/openapi.json",
        "/favicon.ico",
    }
)
OPEN_PREFIXES = ("/ui/", "/static_content/", "/assets/", "/docs.json", "/schema.json")


CALLER_SCOPE_KEY = "stable_audio.caller"


def owner_of(key: str) -> str:
    """The job owner recorded for an API key: a hash of it (the key itself is never stored).

    Keys are secrets chosen by the operator (long and random), so a plain SHA-256 is enough;
    the prefix keeps these hashes from matching any other use of the same key.
    """
    return hashlib.sha256(b"stable-audio-bento job owner\0" + key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the owner its jobs get, and whether it sees every job."""

    owner: str | None
    admin: bool

    @property
    def visible_owner(self) -> str | None:
        """The owner to filter job reads by; None: every job."""
        return None if self.admin else self.owner


OPEN_CALLER = Caller(owner=None, admin=True)
# No key on a server with keys (an open path): an owner no job has, so it sees none.
ANONYMOUS = Caller(owner="", admin=False)


def caller_of(scope: Mapping[str, Any]) -> Caller:
    """The caller the middleware recorded (an open server: everyone sees every job)."""
    caller = scope.get(CALLER_SCOPE_KEY)
    return caller if isinstance(caller, Caller) else OPEN_CALLER


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
    """ASGI middleware; with no keys configured it passes everything through.

    ``admin_keys`` are keys too; their callers see (and may cancel) every job.
    """

    def __init__(
        self, app: ASGIApp, keys: Iterable[str] = (), admin_keys: Iterable[str] = ()
    ) -> None:
        self.app = app
        self.admin_keys = [k.encode() for k in admin_keys if k]
        self.keys = [k.encode() for k in keys if k] + self.admin_keys

    def allowed(self, token: str | None) -> bool:
        return self.identify(token) is not None

    def identify(self, token: str | None) -> Caller | None:
        """The caller holding ``token``, or None if it is no key of ours."""
        if token is None:
            return None
        candidate = token.encode()
        # Compare against every key so timing does not tell which one nearly matched.
        matches = [hmac.compare_digest(candidate, key) for key in self.keys]
        admin = [hmac.compare_digest(candidate, key) for key in self.admin_keys]
        if not any(matches):
            return None
        return Caller(owner=owner_of(token), admin=any(admin))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self.keys or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        caller = self.identify(bearer_token(scope.get("headers", [])))
        if caller is not None:
            scope[CALLER_SCOPE_KEY] = caller
        if caller is not None or scope.get("method") == "OPTIONS" or is_open(scope["path"]):
            if caller is None:
                # An open path without a key: it may read nothing that belongs to a key.
                scope[CALLER_SCOPE_KEY] = ANONYMOUS
            await self.app(scope, receive, send)
            return
        message = "Missing or invalid API key: send 'Authorization: Bearer <key>'."
        await send_error(send, 401, message, headers=[(b"www-authenticate", b"Bearer")])


def priority_cap(settings: Settings, caller: Caller) -> int:
    """The highest priority ``caller`` may ask for (an open server: ``max_priority``)."""
    if caller.admin and caller.owner is not None:  # an admin key
        return MAX_PRIORITY
    for key, cap in settings.priority_caps.items():
        if caller.owner == owner_of(key):
            return cap
    return settings.max_priority
