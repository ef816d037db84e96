"""ASGI middleware for the vLLM server: the API key on every route but /health.

vLLM's own `--api-key` guards only /v1 (and a few other prefixes): /invocations, /tokenize,
/metrics, /docs and the rest answer anyone. `em-persona serve` loads this class with vLLM's
`--middleware em_persona.serving.auth.RequireApiKey`; it reads the key from VLLM_API_KEY in the
server's environment (never from its command line, which every local user can read) and
refuses to start without one.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

KEY_ENV = "VLLM_API_KEY"
OPEN_PATHS = frozenset({"/health"})  # what the launcher polls before it knows the server is up

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_UNAUTHORIZED = json.dumps({"error": "Unauthorized: send Authorization: Bearer <key>"}).encode()


class RequireApiKey:
    """Answer 401 to any HTTP request (and close any websocket) without `Authorization: Bearer <key>`,
    except on /health; lifespan events pass through."""

    def __init__(self, app: ASGIApp, key: str | None = None) -> None:
        key = key if key is not None else os.environ.get(KEY_ENV, "")
        if not key:
            raise RuntimeError(f"{KEY_ENV} is empty: the API-key middleware refuses to serve without a key")
        self.app = app
        self._digest = hashlib.sha256(key.encode()).digest()

    def authorized(self, scope: Scope) -> bool:
        """True when the request carries the key as a Bearer token."""
        for name, value in scope.get("headers") or []:
            if name.lower() == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                if scheme.lower() == "bearer":
                    return hmac.compare_digest(hashlib.sha256(token.strip().encode()).digest(), self._digest)
                return False
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        if path in OPEN_PATHS or self.authorized(scope):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"www-authenticate", b"Bearer"),
                    (b"content-length", str(len(_UNAUTHORIZED)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": _UNAUTHORIZED})
