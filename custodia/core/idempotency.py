"""Idempotency keys: a retried request never executes twice (API.md "Conventions").

A key is scoped by its caller (two merchants may use the same key) and bound to a
*fingerprint* of the request: method, path and the body in canonical JSON form, so that
whitespace or key order do not matter but any change of content does.

The key is claimed **in the same transaction as the work it protects**: the claim is the
first write of the unit of work, the stored response the last. Either both commit or
neither does, so a crash can never leave a key that claims work which did not happen.

- Same key, same request, completed → the stored response is replayed (same status, same
  body).
- Same key, different request → :class:`IdempotencyKeyReused` (422).
- Same key while the first request is still running → on PostgreSQL the second request
  waits at most ``idempotency_lock_wait_ms`` on the first one's uncommitted claim, then
  either replays its committed response or answers :class:`IdempotencyKeyInFlight` (409);
  on SQLite writers are serialized, so the second simply replays the first's response.
- A refusal (a :class:`DomainError` that is not ``transient``) is stored too and replayed,
  as payment APIs do: a retry must not turn a refused payment into a successful one
  because the balance changed in between.

Records expire after ``idempotency_ttl_hours`` (default 24); the worker deletes expired
records, after which the key may be used again.

Stored responses may hold personal data (a consent receipt's IP, a transaction's payer and
payee): with a vault, the body is stored encrypted, bound to its scope and key (K5).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

import msgspec
from sqlalchemy import bindparam, delete, select, text, tuple_, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from custodia.core.db import defer, sqlstate_of, upsert_insert
from custodia.core.errors import (
    DomainError,
    IdempotencyKeyInFlight,
    IdempotencyKeyInvalid,
    IdempotencyKeyMissing,
    IdempotencyKeyReused,
)
from custodia.core.models import IdempotencyRecord, table_of
from custodia.core.vault import Vault

if TYPE_CHECKING:
    from custodia.core.db import Database

MAX_KEY_LENGTH = 255
_KEY_RE = re.compile(rf"^[\x21-\x7e][\x20-\x7e]{{0,{MAX_KEY_LENGTH - 1}}}$")
_LOCK_NOT_AVAILABLE = "55P03"


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """The response a request produced, as it is replayed."""

    status: int
    body: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """Who asked, under which key, for what (the fingerprint)."""

    scope: str
    key: str
    fingerprint: str


def check_key(key: str | None, *, required: bool) -> str | None:
    """Return the key if well-formed; raise when it is malformed or missing but required."""
    if key is None:
        if required:
            raise IdempotencyKeyMissing
        return None
    if not _KEY_RE.match(key):
        raise IdempotencyKeyInvalid(MAX_KEY_LENGTH)
    return key


def canonical_body(body: object) -> bytes:
    """Return ``body`` (a decoded request body) as sorted-key JSON: equal requests, equal bytes."""
    return msgspec.json.encode(body, order="sorted")


def fingerprint(method: str, path: str, canonical: bytes) -> str:
    """Return the SHA-256 over method, path and the canonical body, each length-prefixed."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


class IdempotencyStore:
    """Claims keys, stores responses and forgets expired records."""

    def __init__(self, *, ttl: timedelta, lock_wait_ms: int, vault: Vault | None = None) -> None:
        self.ttl = ttl
        self.lock_wait_ms = lock_wait_ms
        self._vault = vault

    def sealed(self, request: IdempotentRequest, body: bytes) -> bytes:
        """Return a response body as it is stored (encrypted, bound to scope and key)."""
        if self._vault is None:
            return body
        return self._vault.encrypt(
            body.decode("utf-8"), table=_TABLE, column="response_body", row_id=_row_id(request)
        )

    def _opened(self, request: IdempotentRequest, stored: bytes) -> bytes:
        if self._vault is None:
            return stored
        return self._vault.decrypt(
            stored, table=_TABLE, column="response_body", row_id=_row_id(request)
        ).encode("utf-8")

    def claim(
        self, session: Session, request: IdempotentRequest, now: datetime
    ) -> StoredResponse | None:
        """Claim the key for this transaction (None) or return the response to replay.

        Raises IdempotencyKeyReused for another request under the key and
        IdempotencyKeyInFlight when the key's first request has not finished.
        """
        if self._insert(session, request, now, state="in_flight", response=None):
            return None
        record = session.get(
            IdempotencyRecord, (request.scope, request.key), populate_existing=True
        )
        if record is None:  # deleted by the purge between our insert and our read
            return self.claim(session, request, now)
        if record.expires_at <= now:
            return self._take_over_expired(session, request, now)
        return self._replay(record, request)

    def peek(
        self, session: Session, request: IdempotentRequest, now: datetime
    ) -> StoredResponse | None:
        """Return the stored response of a finished request under the key, claiming nothing.

        For operations that talk to the outside world before their transaction (a
        verification channel): a retry of a finished request must not ask again.
        """
        record = session.get(IdempotencyRecord, (request.scope, request.key))
        if record is None or record.expires_at <= now:
            return None
        return self._replay(record, request)

    def complete(
        self, session: Session, request: IdempotentRequest, response: StoredResponse
    ) -> None:
        """Store the response of the request that claimed the key in this transaction.

        Nothing reads it back before the commit: it is sent with it (``defer``).
        """
        defer(
            session,
            _COMPLETE,
            {
                "b_scope": request.scope,
                "b_key": request.key,
                "b_status": response.status,
                "b_body": self.sealed(request, response.body),
                "b_content_type": response.content_type,
            },
        )

    def stored(
        self, request: IdempotentRequest, status: int, body: bytes, content_type: str | None
    ) -> StoredResponse:
        """Return a completed record's response as it is replayed (opened from the vault)."""
        return StoredResponse(
            status=status,
            body=self._opened(request, body),
            content_type=content_type or "application/json",
        )

    def record_refusal(
        self, session: Session, request: IdempotentRequest, response: StoredResponse, now: datetime
    ) -> StoredResponse:
        """Store a refusal under the key; return what was stored first if another won."""
        if self._insert(session, request, now, state="completed", response=response):
            return response
        record = session.get(
            IdempotencyRecord, (request.scope, request.key), populate_existing=True
        )
        if record is None or record.expires_at <= now:
            return response
        stored = self._replay(record, request)
        return stored if stored is not None else response

    def purge_expired(self, session: Session, now: datetime, *, batch: int = 1000) -> int:
        """Delete up to ``batch`` expired records; return how many went."""
        expired = (
            select(IdempotencyRecord.scope, IdempotencyRecord.key)
            .where(IdempotencyRecord.expires_at <= now)
            .limit(batch)
        )
        result = session.execute(
            delete(IdempotencyRecord)
            .where(tuple_(IdempotencyRecord.scope, IdempotencyRecord.key).in_(expired))
            .execution_options(synchronize_session=False)
        )
        return int(getattr(result, "rowcount", 0) or 0)

    def _insert(
        self,
        session: Session,
        request: IdempotentRequest,
        now: datetime,
        *,
        state: str,
        response: StoredResponse | None,
    ) -> bool:
        values = {
            "scope": request.scope,
            "key": request.key,
            "fingerprint": request.fingerprint,
            "state": state,
            "response_status": response.status if response else None,
            "response_body": self.sealed(request, response.body) if response else None,
            "response_content_type": response.content_type if response else None,
            "created_at": now,
            "expires_at": now + self.ttl,
        }
        is_pg = session.get_bind().dialect.name == "postgresql"
        dialect_insert = upsert_insert(session)
        statement = (
            dialect_insert(IdempotencyRecord)
            .values(**values)
            .on_conflict_do_nothing(index_elements=["scope", "key"])
            .returning(IdempotencyRecord.key)
        )
        if not is_pg:
            return session.execute(statement).first() is not None
        # Wait only briefly for a concurrent request holding the same key (see module doc).
        session.execute(text(f"SET LOCAL lock_timeout = '{int(self.lock_wait_ms)}ms'"))
        try:
            inserted = session.execute(statement).first() is not None
        except DBAPIError as exc:
            if sqlstate_of(exc) == _LOCK_NOT_AVAILABLE:
                raise IdempotencyKeyInFlight from None
            raise
        session.execute(text("SET LOCAL lock_timeout = DEFAULT"))
        return inserted

    def _take_over_expired(
        self, session: Session, request: IdempotentRequest, now: datetime
    ) -> StoredResponse | None:
        taken = session.execute(
            update(IdempotencyRecord)
            .where(
                IdempotencyRecord.scope == request.scope,
                IdempotencyRecord.key == request.key,
                IdempotencyRecord.expires_at <= now,
            )
            .values(
                fingerprint=request.fingerprint,
                state="in_flight",
                response_status=None,
                response_body=None,
                response_content_type=None,
                created_at=now,
                expires_at=now + self.ttl,
            )
            .execution_options(synchronize_session=False)
        )
        if int(getattr(taken, "rowcount", 0) or 0) == 1:
            return None
        return self.claim(session, request, now)

    def _replay(
        self, record: IdempotencyRecord, request: IdempotentRequest
    ) -> StoredResponse | None:
        if record.fingerprint != request.fingerprint:
            raise IdempotencyKeyReused
        if record.state != "completed":
            raise IdempotencyKeyInFlight
        assert record.response_status is not None  # noqa: S101 - guaranteed by a CHECK
        assert record.response_body is not None  # noqa: S101 - guaranteed by a CHECK
        return self.stored(
            request, record.response_status, record.response_body, record.response_content_type
        )


_TABLE = "idempotency_keys"
_RECORDS = table_of(IdempotencyRecord)
_COMPLETE = (
    update(_RECORDS)
    .where(_RECORDS.c.scope == bindparam("b_scope"), _RECORDS.c.key == bindparam("b_key"))
    .values(
        state="completed",
        response_status=bindparam("b_status"),
        response_body=bindparam("b_body"),
        response_content_type=bindparam("b_content_type"),
    )
)


def _row_id(request: IdempotentRequest) -> str:
    """Bind a stored response to its scope and key (a blob moved to another row won't open)."""
    return f"{request.scope}\x1f{request.key}"


def run_idempotent(
    db: Database,
    store: IdempotencyStore,
    request: IdempotentRequest,
    work: Callable[[Session], StoredResponse],
    *,
    now: datetime,
    render_refusal: Callable[[DomainError], StoredResponse],
) -> tuple[StoredResponse, bool]:
    """Run ``work`` at most once per key; return its response and whether it was replayed.

    ``work`` runs inside the unit of work that claims the key; a non-transient DomainError
    it raises is rendered by ``render_refusal``, stored under the key and returned.
    """

    def attempt(session: Session) -> tuple[StoredResponse, bool]:
        replay = store.claim(session, request, now)
        if replay is not None:
            return replay, True
        response = work(session)
        store.complete(session, request, response)
        return response, False

    return run_claiming(
        db, store, request, lambda: db.run(attempt), now=now, render_refusal=render_refusal
    )


def run_claiming(
    db: Database,
    store: IdempotencyStore,
    request: IdempotentRequest,
    claim_and_work: Callable[[], tuple[StoredResponse, bool]],
    *,
    now: datetime,
    render_refusal: Callable[[DomainError], StoredResponse],
) -> tuple[StoredResponse, bool]:
    """Run ``claim_and_work`` (it claims the key itself); store a refusal as run_idempotent.

    ``claim_and_work`` returns the response and whether it is a replay. For work whose key
    is claimed by the database's own code (``custodia.accounts.fastpath``).
    """
    try:
        return claim_and_work()
    except DomainError as exc:
        if exc.transient:
            raise
        refusal = render_refusal(exc)
        stored = db.run(lambda session: store.record_refusal(session, request, refusal, now))
        return stored, stored is not refusal
