"""The tamper-evident audit trail (REGULATION.md B2, B4; API.md "Audit trail").

Writing
    Every state-changing command calls :func:`record` inside its own unit of work, so an
    event exists exactly when the change it describes committed. Recording is one insert
    into ``audit_inbox``: it takes no lock and needs no key, so business transactions never
    wait for one another because of the trail.

Sealing
    The sealer (:func:`seal_pending`, run by the worker about every second) takes committed
    inbox events in id order, gives each the next ``seq`` (1, 2, 3 … without gaps) and
    ``hash = HMAC-SHA256(audit key, previous hash ‖ canonical bytes)``, writes the sealed
    event to ``audit_events`` and removes it from the inbox, in one transaction. Chain order
    is the order of sealing, so an event whose transaction commits late is simply sealed in
    a later batch: no in-flight transaction can ever slip in front of a sealed event. Only
    sealers lock the chain head (one row), and the key stays in the service.

Append-only
    Triggers refuse UPDATE and DELETE of sealed events, UPDATE of inbox rows, and DELETE of
    an inbox row whose sealed copy does not exist. Someone who bypasses them (a superuser, a
    copy of the SQLite file) still cannot rewrite sealed history unnoticed without the audit
    key, and not even with it once a signed checkpoint exists. Inbox events are exposed to
    such a person for the second before they are sealed.

Verifying
    :func:`verify` recomputes every seal from the previous *stored* hash and names the
    first bad event with its class: ``modified`` (an event changed, or a hash), ``missing``
    (a seq gone), ``reordered`` (an event sits at another's place), ``truncated`` (fewer
    events than a checkpoint recorded), ``head_mismatch`` (the chain at the checkpoint's
    size ends in another hash) or ``bad_checkpoint``. It also reports how many events are
    still waiting in the inbox. :func:`make_checkpoint` signs the chain's size and head with
    Ed25519, to be kept outside the database.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import BigInteger, delete, func, insert, null, select, union_all, update
from sqlalchemy.orm import Session

from custodia.core.actors import Context
from custodia.core.db import defer
from custodia.core.keys import KeyFile, KeyPurpose
from custodia.core.logging import redact_value
from custodia.core.models import AuditChainHead, AuditEvent, AuditInbox

GENESIS = bytes(32)
CHECKPOINT_FORMAT = 1


class AuditAction(StrEnum):
    """Every action tag the trail knows, as ``source:subject:action`` (warehouse style)."""

    STAFF_CREATED = "access:staff:created"
    STAFF_LOGIN = "access:staff:login"
    STAFF_LOGIN_FAILED = "access:staff:login_failed"
    STAFF_LOCKED = "access:staff:locked"
    STAFF_LOGOUT = "access:staff:logout"
    STAFF_PASSWORD_CHANGED = "access:staff:password_changed"  # noqa: S105 - an action tag
    CLIENT_CREATED = "access:client:created"
    CLIENT_REVOKED = "access:client:revoked"
    KEYS_ROTATED = "core:keys:rotated"
    KEYS_REENCRYPTED = "core:keys:reencrypted"
    KEYS_REINDEXED = "core:keys:reindexed"
    CUSTOMER_REGISTERED = "kyc:customer:registered"
    CUSTOMER_UPDATED = "kyc:customer:updated"
    CUSTOMER_VERIFICATION = "kyc:customer:verification"
    CUSTOMER_ACTIVATED = "kyc:customer:activated"
    CUSTOMER_RESTRICTED = "kyc:customer:restricted"
    CUSTOMER_RISK_RATED = "kyc:customer:risk_rated"
    CUSTOMER_SCREENED = "kyc:customer:screened"
    CUSTOMER_PII_REVEALED = "kyc:customer:pii_revealed"
    CUSTOMER_DOCUMENT_EXPIRING = "kyc:customer:document_expiring"
    CUSTOMER_REVERIFICATION_DUE = "kyc:customer:reverification_due"
    WATCHLIST_UPLOADED = "kyc:watchlist:uploaded"
    CUSTOMER_CREDENTIAL_SET = "kyc:credential:set"
    CUSTOMER_CREDENTIAL_REVOKED = "kyc:credential:revoked"
    CUSTOMER_AUTH_FAILED = "kyc:credential:verification_failed"
    AGREEMENT_DRAFTED = "agreements:agreement:drafted"
    AGREEMENT_DRAFT_UPDATED = "agreements:agreement:draft_updated"
    AGREEMENT_PUBLISHED = "agreements:agreement:published"
    AGREEMENT_NOTICE_SENT = "agreements:agreement:notice_sent"
    CONSENT_ACCEPTED = "agreements:consent:accepted"
    CONSENT_DECLINED = "agreements:consent:declined"
    RISK_WARNING_SHOWN = "agreements:risk_warning:shown"
    ACCOUNT_OPENED = "accounts:account:opened"
    ACCOUNT_FROZEN = "accounts:account:frozen"
    ACCOUNT_UNFROZEN = "accounts:account:unfrozen"
    ACCOUNT_SETTLEMENT_DELAYED = "accounts:account:settlement_delayed"
    ACCOUNT_SETTLEMENT_RELEASED = "accounts:account:settlement_released"
    ACCOUNT_CLOSING = "accounts:account:closing"
    ACCOUNT_CLOSED = "accounts:account:closed"
    BANK_CARD_BOUND = "accounts:bank_card:bound"
    PAYMENT_LIMIT_AGREED = "accounts:payment_limit:agreed"
    MERCHANT_CREATED = "accounts:merchant:created"
    TOP_UP = "accounts:transaction:top_up"
    WITHDRAWAL = "accounts:transaction:withdrawal"
    TRANSFER = "accounts:transaction:transfer"
    PAYMENT = "accounts:transaction:payment"
    REFUND = "accounts:transaction:refund"
    PAYOUT_COMPLETED = "accounts:transaction:payout_completed"
    PAYOUT_FAILED = "accounts:transaction:payout_failed"
    AML_RULE_CHANGED = "aml:rule:changed"
    AML_ALERT_RAISED = "aml:alert:raised"
    AML_ALERT_UPDATED = "aml:alert:updated"
    AML_ALERT_ASSIGNED = "aml:alert:assigned"
    AML_ALERT_NOTED = "aml:alert:noted"
    AML_ALERT_DECIDED = "aml:alert:decided"
    AML_ACTION_TAKEN = "aml:action:taken"
    AML_REPORT_FILED = "aml:report:filed"


_INSERT_INBOX = insert(AuditInbox.__table__).inline()  # type: ignore[arg-type]


def canonical_details(details: Mapping[str, Any] | None) -> str:
    """Return ``details`` as sorted-key JSON, with any personal data that slipped in masked."""
    return msgspec.json.encode(redact_value(dict(details or {})), order="sorted").decode()


def record(
    session: Session,
    ctx: Context,
    action: AuditAction,
    *,
    target: str | None = None,
    customer_id: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Record ``action`` by ``ctx.actor`` on ``target`` in the caller's transaction.

    ``customer_id`` names the customer the operation concerns, for the customer's timeline.
    """
    # A plain table INSERT, sent with the commit (see custodia.core.db.defer): every command
    # runs this, and nothing reads the event back in the transaction that wrote it.
    defer(
        session,
        _INSERT_INBOX,
        {
            "at": ctx.now,
            "actor_kind": ctx.actor.kind.value,
            "actor_id": ctx.actor.id,
            "action": action.value,
            "target": target,
            "customer_id": customer_id,
            "request_id": ctx.request_id,
            "details": canonical_details(details),
        },
    )


# ------------------------------------------------------------------------------- hashing


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_EPOCH_NAIVE = _EPOCH.replace(tzinfo=None)
_MICROSECOND = timedelta(microseconds=1)


def _micros(at: datetime | str | int) -> int:
    """Return microseconds since the epoch, whichever form the driver returned the instant in.

    PostgreSQL gives an aware datetime, SQLite (read raw) the stored UTC text; integer
    arithmetic keeps every microsecond exact.
    """
    if isinstance(at, int):
        return at  # PostgreSQL's verification query returns the microseconds already
    if isinstance(at, str):
        at = datetime.fromisoformat(at)
    if at.tzinfo is None:
        return (at - _EPOCH_NAIVE) // _MICROSECOND
    return (at - _EPOCH) // _MICROSECOND  # aware: any offset, same instant


_CANONICAL = msgspec.json.Encoder()


def canonical_bytes(  # noqa: PLR0917 - called with a database row spread in, per event
    seq: int,
    event_id: int,
    at: datetime | str | int,
    actor_kind: str,
    actor_id: str,
    action: str,
    target: str | None,
    customer_id: str | None,
    request_id: str | None,
    details: str,
) -> bytes:
    """Return the unambiguous bytes a seal covers: seq, event id and every event field.

    A JSON array in a fixed order (the instant as integer microseconds since the epoch):
    JSON's quoting keeps field boundaries unambiguous, and ``null`` differs from ``""``.
    """
    return _CANONICAL.encode(
        (
            seq,
            event_id,
            _micros(at),
            actor_kind,
            actor_id,
            action,
            target,
            customer_id,
            request_id,
            details,
        )
    )


class _KeyedHmac:
    """HMAC-SHA256 under one key, with the padded key states hashed once (RFC 2104).

    Equal to ``hmac.new(key, previous + canonical, sha256).digest()``, but per message it
    only copies two prepared SHA-256 states: verification hashes every event of the trail.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes) -> None:
        block = hashlib.sha256().block_size
        padded = (hashlib.sha256(key).digest() if len(key) > block else key).ljust(block, b"\0")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))

    def chain(self, previous: bytes, canonical: bytes) -> bytes:
        """Return HMAC(key, previous ‖ canonical)."""
        inner = self._inner.copy()
        inner.update(previous)
        inner.update(canonical)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


def _mac(key: bytes, previous: bytes, canonical: bytes) -> bytes:
    return hmac.new(key, previous + canonical, hashlib.sha256).digest()


_INBOX_COLUMNS = (
    AuditInbox.id,
    AuditInbox.at,
    AuditInbox.actor_kind,
    AuditInbox.actor_id,
    AuditInbox.action,
    AuditInbox.target,
    AuditInbox.customer_id,
    AuditInbox.request_id,
    AuditInbox.details,
)
_FIELDS = (
    "event_id",
    "at",
    "actor_kind",
    "actor_id",
    "action",
    "target",
    "customer_id",
    "request_id",
    "details",
)


# ------------------------------------------------------------------------------- sealing

#: A sealed event's columns, in the order :func:`seal_pending` builds its rows.
_SEALED = ("seq", *_FIELDS, "key_id", "hash", "sealed_at")
_INSERT_SEALED = insert(AuditEvent.__table__).inline()  # type: ignore[arg-type]
#: PostgreSQL: insert a batch of sealed events (JSON rows as ``_SEALED``) and take them out
#: of the inbox, in one statement.
_SEAL_PG = (
    "WITH s AS (SELECT (e->>0)::bigint AS seq, (e->>1)::bigint AS event_id, "
    "(e->>2)::timestamptz AS at, e->>3 AS actor_kind, e->>4 AS actor_id, e->>5 AS action, "
    "e->>6 AS target, e->>7 AS customer_id, e->>8 AS request_id, e->>9 AS details, "
    "e->>10 AS key_id, decode(e->>11, 'hex') AS hash, (e->>12)::timestamptz AS sealed_at "
    "FROM jsonb_array_elements(%(rows)s::jsonb) AS e), "
    "gone AS (DELETE FROM audit_inbox WHERE id IN (SELECT event_id FROM s)) "
    "INSERT INTO audit_events (seq, event_id, at, actor_kind, actor_id, action, target, "
    "customer_id, request_id, details, key_id, hash, sealed_at) SELECT * FROM s"
)


def seal_pending(session: Session, keys: KeyFile, now: datetime, *, limit: int = 2000) -> int:
    """Seal up to ``limit`` committed inbox events in id order; return how many."""
    head = session.execute(
        select(AuditChainHead).where(AuditChainHead.id == 1).with_for_update()
    ).scalar_one()
    rows = session.execute(select(*_INBOX_COLUMNS).order_by(AuditInbox.id).limit(limit)).all()
    if not rows:
        return 0
    key_id = keys.primary_id(KeyPurpose.AUDIT)
    keyed = _KeyedHmac(keys.secret(KeyPurpose.AUDIT, key_id))
    seq, previous = head.seq, head.hash
    sealed: list[tuple[Any, ...]] = []
    for row in rows:
        seq += 1
        previous = keyed.chain(previous, canonical_bytes(seq, *row))
        sealed.append((seq, *row, key_id, previous, now))
    if session.get_bind().dialect.name == "postgresql":
        # One statement moves the whole batch: its rows as one JSON document (the hash as
        # hex), not an INSERT per event and a DELETE listing every id as a parameter.
        rows_json = msgspec.json.encode([(*r[:-2], r[-2].hex(), r[-1]) for r in sealed])
        session.connection().exec_driver_sql(_SEAL_PG, {"rows": rows_json.decode()})
    else:
        session.connection().execute(
            _INSERT_SEALED, [dict(zip(_SEALED, r, strict=True)) for r in sealed]
        )
        session.connection().execute(
            delete(AuditInbox).where(AuditInbox.id.in_([row[0] for row in rows]))
        )
    session.execute(
        update(AuditChainHead)
        .where(AuditChainHead.id == 1)
        .values(seq=seq, hash=previous)
        .execution_options(synchronize_session=False)
    )
    return len(rows)


@dataclass(frozen=True, slots=True)
class PendingState:
    """How far sealing lags behind writing."""

    pending: int
    oldest_pending_age_s: float


def pending_state(session: Session, now: datetime) -> PendingState:
    """Return how many events wait in the inbox and the age of the oldest."""
    count, oldest = session.execute(select(func.count(), func.min(AuditInbox.at))).one()
    age = (now - oldest).total_seconds() if oldest is not None else 0.0
    return PendingState(int(count), max(age, 0.0))


# ------------------------------------------------------------------------------- checkpoints


class Checkpoint(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """The chain's size and head at one time, signed with the service's Ed25519 key."""

    format: int = CHECKPOINT_FORMAT
    size: int
    head: str  # hex of the hash of seal ``size`` (64 zeros for an empty chain)
    created_at: datetime
    key_id: str
    public_key: str  # base64, for reference; verification uses the service's own ring
    signature: str = ""

    def signed_bytes(self) -> bytes:
        """Return what the signature covers (every field but the signature, sorted)."""
        unsigned = msgspec.structs.replace(self, signature="")
        return msgspec.json.encode(unsigned, order="sorted")


def _signing_key(keys: KeyFile, key_id: str | None = None) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(keys.secret(KeyPurpose.SIGNING, key_id))


def make_checkpoint(session: Session, keys: KeyFile, now: datetime) -> Checkpoint:
    """Return a signed checkpoint of the chain as sealed now."""
    head = session.execute(select(AuditChainHead).where(AuditChainHead.id == 1)).scalar_one()
    key_id = keys.primary_id(KeyPurpose.SIGNING)
    private = _signing_key(keys, key_id)
    public = private.public_key().public_bytes_raw()
    unsigned = Checkpoint(
        size=head.seq,
        head=head.hash.hex(),
        created_at=now,
        key_id=key_id,
        public_key=base64.b64encode(public).decode(),
    )
    signature = private.sign(unsigned.signed_bytes())
    return msgspec.structs.replace(unsigned, signature=base64.b64encode(signature).decode())


def checkpoint_signature_valid(checkpoint: Checkpoint, keys: KeyFile) -> bool:
    """Return whether ``checkpoint`` was signed by a signing key of this service."""
    if checkpoint.key_id not in keys.rings[KeyPurpose.SIGNING].keys:
        return False
    public = _signing_key(keys, checkpoint.key_id).public_key()
    try:
        public.verify(base64.b64decode(checkpoint.signature), checkpoint.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


# ------------------------------------------------------------------------------- verifying


class Failure(StrEnum):
    """Why verification failed, for the first bad event."""

    MODIFIED = "modified"
    MISSING = "missing"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    HEAD_MISMATCH = "head_mismatch"
    BAD_CHECKPOINT = "bad_checkpoint"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of recomputing the chain (API.md ``GET /v1/audit/verify``)."""

    ok: bool
    events_checked: int
    first_bad_seq: int | None
    failure: Failure | None
    head: str
    sealed: int
    pending: int
    detail: str = ""
    checkpoint_size: int | None = None


@dataclass
class _Walk:
    checked: int = 0
    last_seq: int = 0
    last_hash: bytes = GENESIS
    failure: Failure | None = None
    bad_seq: int | None = None
    detail: str = ""
    hashes_at: dict[int, bytes] = field(default_factory=dict)


_SealRow = tuple[Any, ...]


_SEAL_ROWS_SQL = (
    "SELECT seq, key_id, hash, event_id, {at}, actor_kind, actor_id, action, target, "
    "customer_id, request_id, details FROM audit_events "
    "WHERE seq > {after} ORDER BY seq LIMIT {limit}"
)
#: PostgreSQL computes the microseconds exactly (numeric), sparing a datetime per row.
_AT_MICROS_PG = "(EXTRACT(EPOCH FROM at) * 1000000)::bigint"


def _seal_rows(session: Session, batch: int) -> Generator[_SealRow]:
    """Yield every sealed event in seq order, straight from the driver.

    Verification reads the whole trail, so it skips SQLAlchemy's per-row processing and
    pages by seq (keyset) with plain client-side cursors: ``batch`` rows in memory at a
    time. On SQLite the instant arrives as the stored UTC text, which :func:`_micros` reads.
    """
    raw: Any = session.connection().connection.driver_connection
    postgres = session.get_bind().dialect.name == "postgresql"
    cursor = raw.cursor(binary=True) if postgres else raw.cursor()
    placeholder = "%s" if postgres else "?"
    sql = _SEAL_ROWS_SQL.format(
        at=_AT_MICROS_PG if postgres else "at", after=placeholder, limit=int(batch)
    )
    if postgres:
        # Each page is a range of the primary key: keep the planner on that index even
        # before statistics exist (a sort of the whole table per page costs 3x here).
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("SET LOCAL enable_sort = off")
    else:
        # SQLite stores whatever it is given: text that is not UTF-8 must not stop the
        # verifier, it must fail its hash. Restored for the pooled connection afterwards.
        text_factory = raw.text_factory
        raw.text_factory = _lenient_text

    def page(after: int) -> list[_SealRow]:
        cursor.execute(sql, (after,))
        rows: list[_SealRow] = cursor.fetchall()
        return rows

    # The next page is fetched in a thread while this one is hashed: the driver waits for
    # the server without the GIL, so the database's share of the time is hidden.
    prefetch = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit-verify")
    pending = prefetch.submit(page, 0)
    try:
        while rows := pending.result():
            pending = prefetch.submit(page, rows[-1][0])
            yield from rows
    finally:
        prefetch.shutdown(wait=True)
        cursor.close()
        if not postgres:
            raw.text_factory = text_factory


def _lenient_text(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def _as_bytes(value: object) -> bytes:
    """Return a stored hash as bytes, whatever a tampered SQLite row holds instead."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    return str(value).encode("utf-8", "replace")


def _find_misplaced(
    session: Session,
    *,
    keys: Mapping[str, bytes],
    seq: int,
    key_id: str,
    own_event_id: int,
    previous: bytes,
    stored: bytes,
) -> int | None:
    """Return the seq of the later seal whose event belongs at ``seq``, if any."""
    key = keys.get(key_id)
    if key is None:
        return None
    with closing(_seal_rows(session, 5000)) as rows:
        for row in rows:
            other_seq, event = row[0], row[3:]
            if other_seq <= seq:
                continue
            # The event may have moved with its id (seal pointers swapped) or without it
            # (contents swapped between rows): try it both ways.
            for event_id in {event[0], own_event_id}:
                canonical = canonical_bytes(seq, event_id, *event[1:])
                if hmac.compare_digest(_mac(key, previous, canonical), stored):
                    return int(other_seq)
    return None


def _walk(session: Session, keys: Mapping[str, bytes], wanted: Iterable[int]) -> _Walk:
    with closing(_seal_rows(session, 20_000)) as rows:
        return _walk_rows(session, keys, rows, set(wanted))


def _walk_rows(
    session: Session, keys: Mapping[str, bytes], rows: Iterator[_SealRow], wanted_set: set[int]
) -> _Walk:
    walk = _Walk()
    keyed = {kid: _KeyedHmac(key) for kid, key in keys.items()}
    last_seq, last_hash, checked = 0, GENESIS, 0
    encode = _CANONICAL.encode
    for row in rows:
        seq, key_id, stored, event = row[0], row[1], row[2], row[3:]
        if type(stored) is not bytes:
            stored = _as_bytes(stored)
        if seq != last_seq + 1:
            walk.failure, walk.bad_seq = Failure.MISSING, last_seq + 1
            walk.detail = f"event {last_seq + 1} is missing (the chain jumps to {seq})"
            break
        base = keyed.get(key_id)
        if base is None:
            walk.failure, walk.bad_seq = Failure.MODIFIED, seq
            walk.detail = f"seal {seq} is under unknown audit key {key_id!r}"
            break
        # canonical_bytes, inlined: this loop runs once per event of the whole trail.
        canonical = encode(
            (
                seq,
                event[0],
                _micros(event[1]),
                event[2],
                event[3],
                event[4],
                event[5],
                event[6],
                event[7],
                event[8],
            )
        )
        if not hmac.compare_digest(base.chain(last_hash, canonical), stored):
            later = _find_misplaced(
                session,
                keys=keys,
                seq=seq,
                key_id=key_id,
                own_event_id=event[0],
                previous=last_hash,
                stored=stored,
            )
            walk.bad_seq = seq
            if later is not None:
                walk.failure = Failure.REORDERED
                walk.detail = f"the event sealed at {seq} is now at {later}"
            else:
                walk.failure = Failure.MODIFIED
                walk.detail = f"the event or seal at {seq} was changed"
            break
        checked += 1
        last_seq, last_hash = seq, stored
        if seq in wanted_set:
            walk.hashes_at[seq] = stored
    walk.checked, walk.last_seq, walk.last_hash = checked, last_seq, last_hash
    return walk


def verify(
    session: Session, keys: KeyFile, *, checkpoint: Checkpoint | None = None
) -> VerifyReport:
    """Recompute every seal (and compare with ``checkpoint``); see the module docstring."""
    audit_keys = {
        kid: keys.secret(KeyPurpose.AUDIT, kid) for kid in keys.rings[KeyPurpose.AUDIT].keys
    }
    pending = session.execute(select(func.count()).select_from(AuditInbox)).scalar_one()

    def report(walk: _Walk, failure: Failure | None, bad: int | None, detail: str) -> VerifyReport:
        return VerifyReport(
            ok=failure is None,
            events_checked=walk.checked,
            first_bad_seq=bad,
            failure=failure,
            head=walk.last_hash.hex(),
            sealed=walk.last_seq,
            pending=int(pending),
            detail=detail,
            checkpoint_size=checkpoint.size if checkpoint else None,
        )

    if checkpoint is not None and not checkpoint_signature_valid(checkpoint, keys):
        return report(
            _Walk(), Failure.BAD_CHECKPOINT, None, "the checkpoint's signature is invalid"
        )
    walk = _walk(session, audit_keys, [checkpoint.size] if checkpoint else [])
    if walk.failure is not None:
        return report(walk, walk.failure, walk.bad_seq, walk.detail)
    if checkpoint is not None:
        if walk.last_seq < checkpoint.size:
            return report(
                walk,
                Failure.TRUNCATED,
                walk.last_seq + 1,
                f"the checkpoint recorded {checkpoint.size} seals; only {walk.last_seq} remain",
            )
        at_size = walk.hashes_at.get(checkpoint.size, GENESIS if checkpoint.size == 0 else b"")
        if at_size.hex() != checkpoint.head:
            return report(
                walk,
                Failure.HEAD_MISMATCH,
                checkpoint.size,
                f"the chain at {checkpoint.size} does not end in the checkpoint's head",
            )
    return report(walk, None, None, "")


# ------------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class EventView:
    """An event as the audit API shows it (``seq`` is None until sealed)."""

    id: int
    seq: int | None
    at: datetime
    actor_kind: str
    actor_id: str
    action: str
    target: str | None
    customer_id: str | None
    request_id: str | None
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class EventFilter:
    """The filters of ``GET /v1/audit/events``."""

    actor: str | None = None
    target: str | None = None
    customer_id: str | None = None
    action: str | None = None
    start: datetime | None = None
    end: datetime | None = None


def list_events(
    session: Session,
    filters: EventFilter,
    *,
    before_id: int | None,
    after_id: int | None,
    limit: int,
    newest_first: bool,
) -> Sequence[EventView]:
    """Return up to ``limit`` events (sealed and waiting) matching ``filters`` past a cursor."""

    def part(table: type[AuditEvent] | type[AuditInbox], event_id: Any, seq: Any) -> Any:
        query = select(
            seq.label("seq"),
            event_id.label("id"),
            table.at,
            table.actor_kind,
            table.actor_id,
            table.action,
            table.target,
            table.customer_id,
            table.request_id,
            table.details,
        )
        if filters.actor is not None:
            query = query.where(table.actor_id == filters.actor)
        if filters.target is not None:
            query = query.where(table.target == filters.target)
        if filters.customer_id is not None:
            query = query.where(table.customer_id == filters.customer_id)
        if filters.action is not None:
            query = query.where(table.action == filters.action)
        if filters.start is not None:
            query = query.where(table.at >= filters.start)
        if filters.end is not None:
            query = query.where(table.at < filters.end)
        if before_id is not None:
            query = query.where(event_id < before_id)
        if after_id is not None:
            query = query.where(event_id > after_id)
        return query

    both = union_all(
        part(AuditEvent, AuditEvent.event_id, AuditEvent.seq),
        part(AuditInbox, AuditInbox.id, null().cast(BigInteger)),
    ).subquery()
    order = both.c.id.desc() if newest_first else both.c.id.asc()
    rows = session.execute(select(both).order_by(order).limit(limit)).all()
    return [
        EventView(
            id=row.id,
            seq=row.seq,
            at=row.at,
            actor_kind=row.actor_kind,
            actor_id=row.actor_id,
            action=row.action,
            target=row.target,
            customer_id=row.customer_id,
            request_id=row.request_id,
            details=msgspec.json.decode(row.details),
        )
        for row in rows
    ]
