"""HTTP side of idempotency keys: read the header, fingerprint the request, replay.

Controllers call :func:`respond_idempotently` with the decoded body and the work to do; the
store's semantics are described in ``custodia.core.idempotency``. A replayed response is
byte-for-byte the original and carries ``Idempotent-Replayed: true``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar import Request, Response
from sqlalchemy.orm import Session

from custodia.api.problems import render_refusal
from custodia.api.runtime import Runtime
from custodia.core.idempotency import (
    IdempotentRequest,
    StoredResponse,
    canonical_body,
    check_key,
    fingerprint,
    run_idempotent,
)

IDEMPOTENCY_HEADER = "idempotency-key"
REPLAYED_HEADER = "idempotent-replayed"


def idempotent_request(
    request: Request[Any, Any, Any], body: msgspec.Struct | None, *, scope: str, required: bool
) -> IdempotentRequest | None:
    """Return the request's key and fingerprint, or None when no key was sent."""
    key = check_key(request.headers.get(IDEMPOTENCY_HEADER), required=required)
    if key is None:
        return None
    return IdempotentRequest(
        scope=scope,
        key=key,
        fingerprint=fingerprint(request.method, request.url.path, canonical_body(body)),
    )


def replay_if_done(runtime: Runtime, idem: IdempotentRequest | None) -> Response[bytes] | None:
    """Return the stored response if this key's request already finished (else None)."""
    if idem is None:
        return None
    stored = runtime.db.run(
        lambda s: runtime.idempotency.peek(s, idem, runtime.clock.now()), read_only=True
    )
    if stored is None:
        return None
    return Response(
        stored.body,
        status_code=stored.status,
        media_type=stored.content_type,
        headers={REPLAYED_HEADER: "true"},
    )


def respond_idempotently(
    request: Request[Any, Any, Any],
    runtime: Runtime,
    body: msgspec.Struct | None,
    *,
    scope: str,
    required: bool,
    status_code: int,
    work: Callable[[Session], msgspec.Struct],
) -> Response[bytes]:
    """Run ``work`` at most once per (``scope``, Idempotency-Key) and answer with its result."""
    idem = idempotent_request(request, body, scope=scope, required=required)
    if idem is None:
        result = runtime.db.run(work)
        return Response(
            msgspec.json.encode(result), status_code=status_code, media_type="application/json"
        )

    def rendered(session: Session) -> StoredResponse:
        return StoredResponse(status_code, msgspec.json.encode(work(session)), "application/json")

    stored, replayed = run_idempotent(
        runtime.db,
        runtime.idempotency,
        idem,
        rendered,
        now=runtime.clock.now(),
        render_refusal=render_refusal,
    )
    headers = {REPLAYED_HEADER: "true"} if replayed else {}
    return Response(
        stored.body, status_code=stored.status, media_type=stored.content_type, headers=headers
    )
