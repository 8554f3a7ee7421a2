"""``POST /v1/transfers`` served before Litestar's router, for the requests that need none of it.

A device-signed transfer is the service's hottest request, and its own work is one call of
the database. Litestar's per-request machinery around it (routing, the guard's lookup of
the route's rules, the handler's kwargs, the body's DTO, the response objects) is skipped
here: a worker's CPU per transfer went down by ~14 % (docs/architecture.md, "What bounds a
transfer").
This layer sits between Litestar's exception layer and its router and serves the common
case with the very functions the controller calls (``transfer_command`` and
``transfer_in_one_call`` of :mod:`custodia.api.accounts`):

- exactly ``POST /v1/transfers``, no query string, a valid ``Host``,
  ``Content-Type: application/json``;
- an API key the guard admitted before, whose role the route's entry admits
  (:func:`custodia.api.security.admitted_from_cache`: the transfer's own transaction checks
  the key again, as on the routed path), decided from the headers before the body is read,
  as the guard decides (REGULATION.md B4);
- a whole body within the size limit;
- a body that decodes strictly into :class:`~custodia.api.accounts.TransferIn`, a command
  that :func:`~custodia.api.accounts.transfer_command` accepts, and the one-call path.

Anything else goes to the router with the request's messages as they came, before any
work was done, so every refusal of a bad request keeps its one implementation. An
exception raised by the transfer itself propagates to Litestar's exception layer, which
renders it as for the routed request: the scope carries the route's handler and exception
handlers, as the router sets them. Our request middleware (request id, log line, metrics)
wraps both paths alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Litestar, Request
from litestar._asgi.utils import is_valid_host
from litestar.concurrency import sync_to_thread
from litestar.enums import ScopeType
from litestar.handlers import HTTPRouteHandler
from litestar.routes import HTTPRoute
from litestar.types import (
    ASGIApp,
    HTTPResponseBodyEvent,
    HTTPResponseStartEvent,
    Receive,
    ReceiveMessage,
    Scope,
    Send,
)
from litestar.utils.scope.state import ScopeState

from custodia.accounts import fastpath
from custodia.api.accounts import TransferIn, transfer_command, transfer_in_one_call
from custodia.api.runtime import Runtime
from custodia.api.security import admitted_from_cache

PATH = "/v1/transfers"
_JSON = re.compile(rb"^application/json\s*(;\s*charset=utf-8\s*)?$", re.IGNORECASE)


class TransferRoute:
    """The layer described in the module docstring, around Litestar's router."""

    def __init__(self, router: ASGIApp, app: Litestar) -> None:
        self.router = router
        self.app = app
        route = next(r for r in app.routes if isinstance(r, HTTPRoute) and r.path == PATH)
        self.handler: HTTPRouteHandler = route.route_handler_map["POST"][0]
        self.operation = str(self.handler.operation_id)
        self.exception_handlers = self.handler.resolve_exception_handlers()
        limit = app.request_max_body_size
        self.max_body = limit if isinstance(limit, int) else None
        #: Transfers this layer served (the others went to the router).
        self.served = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the common case; hand everything else to the router untouched."""
        if not _is_transfer(scope):
            await self.router(scope, receive, send)
            return
        runtime: Runtime = self.app.state.runtime
        headers = dict(reversed(list(scope["headers"])))  # a repeated header: its first
        host = headers.get(b"host")
        # Admitted before the body is read, as the guard admits (B4): headers only.
        principal = (
            admitted_from_cache(runtime, self.operation, _text(headers.get(b"authorization")))
            if (host is None or is_valid_host(host))
            and _JSON.match(headers.get(b"content-type", b""))
            else None
        )
        if principal is None:
            await self.router(scope, receive, send)
            return
        messages, body = await self._read(receive)
        replay = _replaying(messages, receive)
        prepared = self._prepared(scope, replay, body, runtime)
        if prepared is None:
            await self.router(scope, replay, send)
            return
        request, data, cmd, auth = prepared
        state = scope["state"]
        state["principal"] = principal
        state["actor"] = principal.actor
        scope["route_handler"] = self.handler
        scope["path_template"] = PATH
        ScopeState.from_scope(scope).exception_handlers = self.exception_handlers
        self.served += 1
        response = await sync_to_thread(transfer_in_one_call, request, runtime, data, cmd, auth)
        status, body = response.status_code, response.content
        assert status is not None  # noqa: S101 - the route always sets it
        # What Litestar's response object would send (the tests compare the two).
        start: HTTPResponseStartEvent = {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", str(response.media_type).encode()),
                (b"content-length", str(len(body)).encode()),
                *((k.lower().encode(), v.encode()) for k, v in response.headers.items()),
            ],
        }
        end: HTTPResponseBodyEvent = {
            "type": "http.response.body",
            "body": body,
            "more_body": False,
        }
        await send(start)
        await send(end)

    async def _read(self, receive: Receive) -> tuple[list[ReceiveMessage], bytes | None]:
        """Read the request's messages; the body, or None if it is not whole and in bounds."""
        messages: list[ReceiveMessage] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages, None
            size += len(message["body"])
            if self.max_body is not None and size > self.max_body:
                return messages, None
            if not message.get("more_body", False):
                return messages, b"".join(
                    m["body"] for m in messages if m["type"] == "http.request"
                )

    def _prepared(
        self, scope: Scope, receive: Receive, body: bytes | None, runtime: Runtime
    ) -> tuple[Request[Any, Any, Any], TransferIn, Any, Any] | None:
        """Return the request, body, command and authorisation; None for the router's path."""
        if body is None:
            return None
        try:
            data = msgspec.json.decode(body, type=TransferIn, strict=True)
            request: Request[Any, Any, Any] = Request(scope, receive)
            cmd, auth = transfer_command(request, data)
        except Exception:  # noqa: BLE001 - the router refuses it, with its one implementation
            return None
        if not fastpath.eligible(auth, runtime.money.limits):
            return None
        return request, data, cmd, auth


def _is_transfer(scope: Scope) -> bool:
    """Return whether the scope is exactly ``POST /v1/transfers`` (no query, no root path)."""
    return (
        scope["type"] == ScopeType.HTTP
        and scope["method"] == "POST"
        and scope["path"] == PATH
        and not scope.get("query_string")
        and not scope.get("root_path")
    )


def _text(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


def _replaying(messages: list[ReceiveMessage], receive: Receive) -> Callable[[], Any]:
    """Return a ``receive`` that gives ``messages`` again, then what ``receive`` gives."""
    pending = list(messages)

    async def receive_again() -> ReceiveMessage:
        if pending:
            return pending.pop(0)
        return await receive()

    return receive_again


def install(app: Litestar) -> TransferRoute:
    """Put the layer between Litestar's exception layer and its router; return it."""
    exceptions: Any = app.asgi_handler  # Litestar's exception layer around its router
    route = TransferRoute(exceptions.app, app)
    exceptions.app = route
    return route
