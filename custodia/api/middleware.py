"""The outermost layer of every HTTP exchange: request id, canonical log line, metrics.

It wraps Litestar's exception-handling layer, so unknown routes (404) and rejected bodies
(413) get a request id and a log line like every other request. The id comes from the
client's ``X-Request-Id`` when that is a sane token, otherwise a fresh ``req_…``; it is
bound to the logging context for the duration of the request, echoed in the response and
put into every problem document.

A client that hangs up before its request body arrived is logged and counted as 499
``client_disconnected`` (nginx's convention), not as the 500 Litestar answers into the void:
nothing was done, and a server error would page someone for a client's timeout.
"""

from __future__ import annotations

import re
import time
from typing import Any

import msgspec
import structlog
from litestar import Litestar
from litestar.enums import ScopeType
from litestar.types import ASGIApp, Message, Receive, ReceiveMessage, Scope, Send

from custodia.core.ids import IdPrefix
from custodia.core.logging import get_logger

REQUEST_ID_HEADER = b"x-request-id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

_log = get_logger("custodia.http")


def _client_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == REQUEST_ID_HEADER:
            candidate = value.decode("latin-1")
            return candidate if _CLIENT_ID.match(candidate) else None
    return None


class RequestContextMiddleware:
    """ASGI wrapper that frames each HTTP request (see the module docstring)."""

    def __init__(self, inner: ASGIApp, *, app: Litestar) -> None:
        self.inner = inner
        self.litestar = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one connection; only HTTP requests are framed."""
        if scope["type"] != ScopeType.HTTP:
            await self.inner(scope, receive, send)
            return
        runtime = self.litestar.state.runtime
        request_id = _client_request_id(scope) or runtime.ids.new(IdPrefix.REQUEST)
        scope["state"]["request_id"] = request_id
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status = 500
        code: str | None = None
        disconnected = False

        async def receive_watching() -> ReceiveMessage:
            nonlocal disconnected
            message = await receive()
            if message["type"] == "http.disconnect":
                disconnected = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, code
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                headers.append((REQUEST_ID_HEADER, request_id.encode()))
                message["headers"] = headers
            elif status >= 400 and code is None and message["type"] == "http.response.body":
                code = _problem_code(message.get("body", b""))
            await send(message)

        try:
            await self.inner(scope, receive_watching, send_with_id)
        finally:
            if disconnected and status >= 500:
                status, code = 499, "client_disconnected"
            elapsed = time.perf_counter() - started
            route = scope.get("path_template") or "<unmatched>"
            method = scope["method"]
            runtime.metrics.http_requests.labels(method, route, str(status)).inc()
            runtime.metrics.http_latency.labels(method, route).observe(elapsed)
            actor: Any = scope["state"].get("actor")
            _log.info(
                "request",
                method=method,
                route=route,
                path=scope["path"],
                status=status,
                code=code,
                duration_ms=round(elapsed * 1000, 3),
                actor=str(actor) if actor is not None else None,
            )
            structlog.contextvars.reset_contextvars(**tokens)


def _problem_code(body: bytes) -> str:
    """Return the ``code`` of a problem document (for the request log line)."""
    try:
        problem = msgspec.json.decode(body, type=_Problem)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return "?"
    return problem.code


class _Problem(msgspec.Struct):
    code: str = "?"
