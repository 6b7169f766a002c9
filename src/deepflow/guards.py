"""What a served request passes before it reaches a route: the body size limit and the API key.

Both are ASGI middlewares, so they act before FastAPI reads or parses anything: a body over the
limit is a 413 once the limit is passed, and a request without the right key is a 401 whose
body is never looked at.

API keys (docs/serving.md, *API keys*): ``deepflow serve`` reads the key from ``DEEPFLOW_API_KEY``
or from a file (``--api-key-file``), never from its command line, which every user of the machine
can see. With a key, every route but the probes (``/healthz``, ``/readyz``) needs
``Authorization: Bearer <key>`` or ``X-API-Key: <key>``, compared in constant time, and the
OpenAPI spec declares both schemes. Without a key the server binds only a loopback address, unless
``--insecure-no-auth`` says that another layer (a proxy, a private network) authenticates.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

API_KEY_ENV = "DEEPFLOW_API_KEY"
MIN_KEY_CHARS = 16
OPEN_PATHS = frozenset({"/healthz", "/readyz"})  # probes: an orchestrator checks them without a secret
SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": f"the server's API key (${API_KEY_ENV})"},
    "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key",
               "description": f"the server's API key (${API_KEY_ENV})"},
}
GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class ExposureError(ValueError):
    """``deepflow serve`` refuses to start: the message says why and what to do."""


async def send_json(send: Callable, status: int, payload: dict, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    """A whole JSON response, sent from a middleware (``payload`` is the middleware's own text)."""
    data = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": data})


# --- body size limit -------------------------------------------------------------------------


class BodyLimit:
    """ASGI middleware: 413 for request bodies over the limit of their path, before parsing."""

    def __init__(self, app: Any, limit_for: Callable[[str], int]) -> None:
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await send_json(send, 400, {"detail": "invalid Content-Length"})
                return
            if int(declared) > limit:
                await send_json(send, 413, {"detail": f"request body over the {limit}-byte limit"})
                return
        chunks, size = [], 0
        while True:  # buffer (at most `limit` bytes) so a body without Content-Length is bounded too
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await send_json(send, 413, {"detail": f"request body over the {limit}-byte limit"})
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, sent = b"".join(chunks), False

        async def replay() -> dict[str, Any]:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


# --- API keys ----------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback address (127.0.0.0/8, ::1); a host name or 0.0.0.0 is not."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def api_key(path: Path | None = None, env: Mapping[str, str] = os.environ) -> str | None:
    """The configured key: the contents of ``path`` if given, else ``$DEEPFLOW_API_KEY``; None when
    neither is set. A key that cannot be read or is too weak is an :class:`ExposureError`."""
    if path is not None:
        where = f"--api-key-file {path}"
        try:
            key = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ExposureError(f"{where}: cannot read it ({type(exc).__name__}: {exc})") from None
        if not key:
            raise ExposureError(f"{where}: the file is empty; write the key in it (e.g. {GENERATE})")
    else:
        where, key = f"${API_KEY_ENV}", env.get(API_KEY_ENV, "").strip()
        if not key:
            return None
    if len(key) < MIN_KEY_CHARS or not (key.isascii() and key.isprintable()) or " " in key:
        raise ExposureError(f"{where}: an API key must be one word of at least {MIN_KEY_CHARS} printable ASCII "
                            f"characters (this one has {len(key)}); generate one with {GENERATE}")
    return key


def check_exposure(host: str, key: str | None, insecure: bool) -> str | None:
    """Refuse (:class:`ExposureError`) to serve a non-loopback ``host`` without a key, unless
    ``insecure``; then the warning to log is returned."""
    if key or is_loopback(host):
        return None
    if insecure:
        return (f"serving on {host} WITHOUT authentication (--insecure-no-auth): anyone who can reach this port "
                "can call every route")
    raise ExposureError(
        f"refusing to serve on {host} without an API key: anyone who can reach it could call the models. "
        f"Set {API_KEY_ENV} (or --api-key-file PATH) to a key of at least {MIN_KEY_CHARS} characters "
        f"(e.g. {GENERATE}), or bind 127.0.0.1, or pass --insecure-no-auth if something in front of the "
        "server authenticates")


def presented(headers: list[tuple[bytes, bytes]]) -> list[bytes]:
    """The keys a request carries: ``X-API-Key`` and an ``Authorization: Bearer`` token."""
    found = []
    for name, value in headers:
        if name == b"x-api-key":
            found.append(value.strip())
        elif name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer":
                found.append(token.strip())
    return found


class ApiKey:
    """ASGI middleware: 401 unless the request carries ``key`` (:func:`presented`); ``open_paths`` are exempt."""

    def __init__(self, app: Any, key: str, open_paths: frozenset[str] = OPEN_PATHS) -> None:
        self.app, self.key, self.open_paths = app, key.encode(), open_paths

    async def __call__(self, scope: dict[str, Any], receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["path"] in self.open_paths:
            await self.app(scope, receive, send)
            return
        keys = presented(scope.get("headers") or [])
        # compare_digest takes as long whatever the bytes: the answer's timing tells nothing of the key
        if any([hmac.compare_digest(k, self.key) for k in keys]):
            await self.app(scope, receive, send)
            return
        why = ("wrong API key" if keys else "missing API key") + \
            ": send 'Authorization: Bearer <key>' or 'X-API-Key: <key>' (docs/serving.md, API keys)"
        await send_json(send, 401, {"detail": why}, [(b"www-authenticate", b"Bearer")])


def declare_security(app: Any, open_paths: frozenset[str] = OPEN_PATHS) -> None:
    """Declare the two key schemes in ``app``'s OpenAPI spec, required by every operation but ``open_paths``."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        spec = build()  # FastAPI caches the spec; the changes below are the same every call
        spec.setdefault("components", {})["securitySchemes"] = SCHEMES
        for path, operations in spec.get("paths", {}).items():
            if path in open_paths:
                continue
            for operation in operations.values():
                operation["security"] = [{"bearer": []}, {"apiKey": []}]
                operation.setdefault("responses", {})["401"] = {"description": "missing or wrong API key"}
        return spec

    app.openapi = openapi
