"""What monitoring knows of a customer's activity: movements and their window aggregates.

Every query here is a range scan of one customer's rows on ``ix_aml_movements_customer_at``
(customer, at; on PostgreSQL covering what the aggregates read, migration 0014): the cost of
evaluating an event depends on the customer's activity in the window, never on the size of
the journal (issue 7 item 2).

The rules do not query one by one: each names the aggregates it needs as :class:`Measure`
objects (data, not SQL), and :meth:`Window.measure` answers all of them for one customer
side in a single query (an aggregate with a FILTER per measure over the longest window).
That query is built once per shape of the measures and reused, so PostgreSQL prepares it;
there the side's INSERT is part of the same statement, and the sides of a run with the same
shape are written and measured together by one statement, a run's statements sent in one
pipeline (:meth:`Window.record_and_measure_all`). Rows are read back only where an
aggregate cannot decide (``Dormant``; ``UnusualHours`` on SQLite, which has no time
zones); an alert's evidence is linked from :func:`evidence_query` inside the database.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, Literal, TypeVar

import msgspec
from sqlalchemy import (
    BindParameter,
    ColumnElement,
    Executable,
    Integer,
    Select,
    and_,
    bindparam,
    cast,
    extract,
    func,
    insert,
    literal_column,
    select,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.sql.base import ReadOnlyColumnCollection

from custodia.aml.models import AmlMovement
from custodia.core.models import table_of

#: A customer's own bank card on the other side (top-up, withdrawal): not a counterparty.
OWN_CARD = "own_card"
#: The most rows a rule reads back for one evaluation (an alert lists at most this many).
MAX_ROWS = 500

K = TypeVar("K")


class Movement(msgspec.Struct, frozen=True, gc=False):
    """One customer side of one posted transaction (``out``: the customer paid).

    Monitoring's value objects are frozen msgspec structs: a worker makes dozens per event
    (a side's measures, their totals), and a struct is built in C, ten times faster than
    a frozen dataclass, which sets each field through ``object.__setattr__``. Holding only
    scalars, they can be in no reference cycle, so the cyclic collector need not track them.
    """

    transaction_id: str
    customer_id: str
    direction: str
    type: str
    amount: int
    currency: str
    counterparty: str
    cross_border: bool
    channel: str
    at: datetime


class Subject(msgspec.Struct, frozen=True, gc=False):
    """What monitoring needs to know of a customer (K1, K2): no personal data."""

    customer_id: str
    kind: str  # individual | corporate
    risk_level: str
    screening_status: str
    nationality: str


class Totals(msgspec.Struct, frozen=True, gc=False):
    """How many movements, and for how much (minor units)."""

    count: int
    amount: int


_INSERT_MOVEMENT = insert(AmlMovement.__table__).inline()  # type: ignore[arg-type]


def record(session: Session, movement: Movement) -> None:
    """Write ``movement`` now; a second evaluation of the same side fails on the UNIQUE index.

    A plain INSERT, sent at once: the rules' aggregate read that follows must see it.
    """
    session.execute(_INSERT_MOVEMENT, _row(movement))


class Measure(msgspec.Struct, frozen=True, gc=False):
    """One aggregate a rule asks of a customer's movements in ``(since, until]``.

    ``kind`` is ``totals`` (count and exact sum), ``counterparties`` (how many distinct,
    own cards always aside) or ``latest`` (when the newest happened). The other fields
    narrow the movements counted; None (or the default) leaves that condition out:
    ``direction`` (None: both), ``cash`` (channel ``cash``, or any other channel),
    ``cross_border``, ``min_amount`` (≥), ``below_amount`` (<), ``multiple_of``,
    ``own_cards`` (False: movements to or from the customer's own card left out) and
    ``other_than`` (a transaction left out).

    The conditions are data, not SQL, so that the query answering a set of measures has
    the same text every time the same kinds of measures are asked: it is built once,
    prepared by PostgreSQL once, and run with new values (see :meth:`Window.measure`).

    A ``latest`` measure never widens the range the query reads: it is answered within the
    range the other measures need (and within its own window), so None only means "not
    there", and a rule that must know for sure looks further itself. A movement that long
    ago is rare, and reading months of a busy customer's rows for it would not be.
    """

    kind: Literal["totals", "counterparties", "latest"]
    since: datetime
    until: datetime
    direction: str | None = None
    cash: bool | None = None
    cross_border: bool | None = None
    min_amount: int | None = None
    below_amount: int | None = None
    multiple_of: int | None = None
    own_cards: bool = True
    other_than: str | None = None
    #: Only movements within an hour of this hour of the day in ``zone`` (IANA name).
    #: PostgreSQL only: elsewhere such a measure is left out of the figures.
    near_hour: int | None = None
    zone: str | None = None

    def __post_init__(self) -> None:
        # The query binds the hour and the zone together: one without the other would shift
        # every later value of the statement by one slot.
        if (self.near_hour is None) != (self.zone is None):
            raise ValueError("a measure near an hour names both the hour and the zone")


#: The conditions of a measure that take a value, in the order they are bound.
_VALUED = (
    "since", "until", "direction", "min_amount", "below_amount", "multiple_of", "other_than",
    "near_hour", "zone",
)  # fmt: skip
#: A measure's valued conditions as a tuple, in the order of ``_VALUED`` (one C call).
_valued = attrgetter(*_VALUED)


def _shape(m: Measure) -> tuple[Any, ...]:
    """Return what decides the SQL text of a measure (its values aside)."""
    return (m.kind, m.cash, m.cross_border, m.own_cards, *(v is None for v in _valued(m)))


def _conditions(
    m: Measure, c: ReadOnlyColumnCollection[str, Any], bind: Callable[[Any], Any]
) -> list[ColumnElement[bool]]:
    """Return the SQL conditions of ``m`` on columns ``c``; ``bind`` turns a value into SQL.

    The valued conditions call ``bind`` in the order of ``_VALUED``.
    """
    found: list[ColumnElement[bool]] = [c.at > bind(m.since), c.at <= bind(m.until)]
    if m.direction is not None:
        found.append(c.direction == bind(m.direction))
    if m.cash is not None:
        found.append(c.channel == "cash" if m.cash else c.channel != "cash")
    if m.cross_border is not None:
        found.append(c.cross_border.is_(m.cross_border))
    if m.min_amount is not None:
        found.append(c.amount >= bind(m.min_amount))
    if m.below_amount is not None:
        found.append(c.amount < bind(m.below_amount))
    if m.multiple_of is not None:
        found.append(c.amount % bind(m.multiple_of) == 0)
    if not m.own_cards or m.kind == "counterparties":
        found.append(c.counterparty != OWN_CARD)
    if m.other_than is not None:
        found.append(c.transaction_id != bind(m.other_than))
    if m.near_hour is not None and m.zone is not None:
        # (local hour - near_hour + 1) mod 24 ∈ {0, 1, 2}: the hour before, at, after.
        near, zone = bind(m.near_hour), bind(m.zone)
        local = cast(extract("hour", func.timezone(zone, c.at)), Integer)
        found.append(func.mod(local - near + 25, 24) < 3)
    return found


class Figures:
    """What one rule's measures came to, by the names the rule gave them."""

    def __init__(self, values: Mapping[str, Totals | int | datetime | None]) -> None:
        self._values = values

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def totals(self, name: str) -> Totals:
        """Return the count and sum of a ``totals`` measure."""
        value = self._values[name]
        assert isinstance(value, Totals)  # noqa: S101 - the rule named its own measure
        return value

    def count(self, name: str) -> int:
        """Return the figure of a ``counterparties`` measure."""
        value = self._values[name]
        assert isinstance(value, int)  # noqa: S101 - the rule named its own measure
        return value

    def latest(self, name: str) -> datetime | None:
        """Return the figure of a ``latest`` measure (None: none found, see ``Measure``)."""
        value = self._values[name]
        assert value is None or isinstance(value, datetime)  # noqa: S101
        return value


class Window:
    """Indexed queries over one customer's movements, for the rules."""

    def __init__(self, session: Session) -> None:
        self.session = session

    @staticmethod
    def _where(
        customer_id: str, direction: str | None, since: datetime, until: datetime
    ) -> list[ColumnElement[bool]]:
        clauses = [
            AmlMovement.customer_id == customer_id,
            AmlMovement.at > since,
            AmlMovement.at <= until,
        ]
        if direction is not None:
            clauses.append(AmlMovement.direction == direction)
        return clauses

    def measure(self, customer_id: str, measures: Mapping[K, Measure]) -> dict[K, Any]:
        """Return every measure of one customer from one query, keyed as asked.

        One range scan of the customer's rows on ``(customer_id, at)`` from the earliest
        ``since`` to the latest ``until``; each measure is an aggregate with its own FILTER,
        so sums stay exact however many rows the window holds (nothing is capped).
        """
        if self.session.get_bind().dialect.name != "postgresql":
            measures = {k: m for k, m in measures.items() if m.near_hour is None}
        if not measures:
            return {}
        return self._run(customer_id, measures)

    def record_and_measure(self, movement: Movement, measures: Mapping[K, Measure]) -> dict[K, Any]:
        """Write ``movement`` and return the measures of its customer, the movement included.

        On PostgreSQL one statement does both (:meth:`record_and_measure_all` of one side):
        one round trip per customer side. Elsewhere, :func:`record` then :meth:`measure`.
        """
        if self.session.get_bind().dialect.name != "postgresql":
            record(self.session, movement)
            return self.measure(movement.customer_id, measures)
        return self.record_and_measure_all([(movement, measures)])[0]

    def record_and_measure_all(
        self, sides: Sequence[tuple[Movement, Mapping[K, Measure]]]
    ) -> list[dict[K, Any]]:
        """Write each movement and return its customer's measures, the movement included.

        The customers of ``sides`` must be distinct (the monitoring pipeline splits a batch
        into such runs): then no side's figures depend on another side's movement, and the
        answers are those of one-by-one evaluation in any order. On PostgreSQL the sides
        whose measures have the same shape are written and measured by one statement (their
        values as arrays; each side's aggregates in a LATERAL subquery over its customer's
        rows and its own new row, see :func:`_set_statement`), and a run's statements go out
        in one pipeline: a dozen statements for a run of a hundred sides, not a hundred.
        """
        if len({movement.customer_id for movement, _ in sides}) != len(sides):
            raise ValueError("record_and_measure_all takes each customer once (one run)")
        if self.session.get_bind().dialect.name != "postgresql":
            return [self.record_and_measure(movement, measures) for movement, measures in sides]
        groups: dict[tuple[Any, ...], list[int]] = {}
        for n, (_, measures) in enumerate(sides):
            groups.setdefault(tuple(_shape(m) for m in measures.values()), []).append(n)
        planned: list[tuple[str, dict[str, Any]]] = []
        for shapes, members in groups.items():
            values = [_values(*sides[n]) for n in members]
            sql = _set_statement(shapes, list(sides[members[0]][1].values()), values[0])
            planned.append((sql, _set_params(values)))
        answers: list[dict[K, Any]] = [{} for _ in sides]
        results = pipelined(self.session.connection(), planned)
        for members, rows in zip(groups.values(), results, strict=True):
            for row in rows:
                n = members[row[0] - 1]  # WITH ORDINALITY counts from 1
                answers[n] = _read(row[1:], sides[n][1])
        return answers

    def _run(self, customer_id: str, measures: Mapping[K, Measure]) -> dict[K, Any]:
        """Answer ``measures`` with the (cached) measure query of their shape."""
        binder = _Binder()
        since, until = _range(measures)
        binder.add(customer_id, since, until)
        for m in measures.values():
            binder.add(*(value for value in _valued(m) if value is not None))
        key = (
            self.session.get_bind().dialect.name,
            tuple(_shape(m) for m in measures.values()),
            tuple(binder.names),
        )
        statement = _STATEMENTS.get(key)
        if statement is None:
            statement = _statement(list(measures.values()), binder.names)
            if len(_STATEMENTS) >= _MAX_STATEMENTS:
                _STATEMENTS.clear()
            _STATEMENTS[key] = statement
        # Core, not the ORM session: nothing here is an entity, and this runs per side.
        return _read(self.session.connection().execute(statement, binder.params).one(), measures)

    def previous(self, customer_id: str, before: datetime, transaction_id: str) -> datetime | None:
        """Return when the customer last moved money before ``before`` (another transaction)."""
        at: datetime | None = self.session.execute(
            select(func.max(AmlMovement.at)).where(
                AmlMovement.customer_id == customer_id,
                AmlMovement.at <= before,
                AmlMovement.transaction_id != transaction_id,
            )
        ).scalar_one()
        return at

    def instants(
        self, customer_id: str, since: datetime, until: datetime, transaction_id: str
    ) -> list[datetime]:
        """Return when each of the customer's other movements of the window happened.

        Every one of them (no cap): a rule that counts them must count them all.
        """
        return list(
            self.session.execute(
                select(AmlMovement.at).where(
                    *self._where(customer_id, None, since, until),
                    AmlMovement.transaction_id != transaction_id,
                )
            ).scalars()
        )


def evidence_query(customer_id: str, measure: Measure) -> Select[str]:
    """Return the query of the transactions ``measure`` counts: the oldest ``MAX_ROWS``."""
    return _evidence(measure, lambda value: value, customer_id)


def _evidence(measure: Measure, bind: Callable[[Any], Any], customer_id: Any) -> Select[str]:
    """Return :func:`evidence_query` with its values as ``bind`` makes them.

    ``bind`` is called with the customer first, then the measure's values in the order of
    ``_VALUED`` (the order of :func:`evidence_values`).
    """
    table = table_of(AmlMovement)
    return (
        select(table.c.transaction_id)
        .where(table.c.customer_id == bind(customer_id), *_conditions(measure, table.c, bind))
        .order_by(table.c.at, table.c.id)
        .limit(MAX_ROWS)
    )


def _instant(value: Any) -> datetime | None:
    """Return an aggregate's instant as an aware UTC datetime, whatever the driver gave."""
    if value is None or isinstance(value, datetime):
        return value if value is None or value.tzinfo else value.replace(tzinfo=UTC)
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


#: The columns the measures read (what a scan of the customer's rows returns).
_READ = ("transaction_id", "direction", "amount", "counterparty", "cross_border", "channel", "at")
#: The columns of a movement's row, in the order :func:`_row` gives them.
_ROW = (
    "transaction_id", "customer_id", "direction", "type", "amount", "currency", "counterparty",
    "cross_border", "channel", "at",
)  # fmt: skip


def _row(movement: Movement) -> dict[str, Any]:
    """Return the movement's row, keyed (and ordered) as ``_ROW``."""
    return {
        "transaction_id": movement.transaction_id,
        "customer_id": movement.customer_id,
        "direction": movement.direction,
        "type": movement.type,
        "amount": movement.amount,
        "currency": movement.currency,
        "counterparty": movement.counterparty,
        "cross_border": movement.cross_border,
        "channel": movement.channel,
        "at": movement.at,
    }


def _range(measures: Mapping[Any, Measure]) -> tuple[datetime, datetime]:
    """Return the range the query reads: every measure's window but ``latest`` ones'."""
    ranged = [m for m in measures.values() if m.kind != "latest"] or list(measures.values())
    return min(m.since for m in ranged), max(m.until for m in ranged)


class _Binder:
    """Names the values of a measure query: one parameter per distinct value, in order."""

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}
        self.names: list[str] = []
        self._known: dict[tuple[type, Any], str] = {}

    def add(self, *values: Any) -> None:
        for value in values:
            key = (type(value), value)
            name = self._known.get(key)
            if name is None:
                name = self._known[key] = f"p{len(self._known)}"
                self.params[name] = value
            self.names.append(name)


#: Measure queries built so far, by dialect, shapes and parameter pattern (reused as is).
_STATEMENTS: dict[tuple[Any, ...], Executable] = {}
_MAX_STATEMENTS = 2048


def _statement(measures: list[Measure], names: list[str]) -> Executable:
    """Build the query answering ``measures`` with the parameters named ``names``.

    ``names`` lists the parameter of each value in the order :meth:`Window._run` added them
    (customer, range, each measure's values).
    """
    slots = iter(names)

    def bind(_value: Any = None) -> BindParameter[Any]:
        return bindparam(next(slots))

    table = table_of(AmlMovement)
    customer, since, until = bind(), bind(), bind()
    scanned = select(*(table.c[name] for name in _READ)).where(
        table.c.customer_id == customer, table.c.at > since, table.c.at <= until
    )
    return _aggregates(scanned.subquery("m").c, measures, bind)


def _aggregates(
    c: ReadOnlyColumnCollection[str, Any], measures: list[Measure], bind: Callable[[Any], Any]
) -> Select[Any]:
    """Return the SELECT of every measure's aggregate over the rows with columns ``c``."""
    # Each measure's conditions once, as a flag per row; the aggregates filter on the flags
    # (shorter SQL: psycopg caches the parsing of statements under 4 KiB).
    flags = [and_(*_conditions(m, c, bind)).label(f"f{n}") for n, m in enumerate(measures)]
    flagged = select(c.amount, c.counterparty, c.at, *flags).subquery("f")
    f = flagged.c
    columns: list[ColumnElement[Any]] = []
    for n, m in enumerate(measures):
        flag = f[f"f{n}"]
        if m.kind == "totals":
            columns.append(func.count().filter(flag))
            columns.append(func.coalesce(func.sum(f.amount).filter(flag), 0))
        elif m.kind == "counterparties":
            columns.append(func.count(func.distinct(f.counterparty)).filter(flag))
        else:
            columns.append(func.max(f.at).filter(flag))
    return select(*columns)


def _values(movement: Movement, measures: Mapping[Any, Measure]) -> list[Any]:
    """Return a side's values in the order :func:`_set_statement` reads them (its slots).

    A side no rule asked anything of reads no range (its own instant twice).
    """
    since, until = _range(measures) if measures else (movement.at, movement.at)
    found = [movement.customer_id, since, until, *_row(movement).values()]
    for m in measures.values():
        found.extend(value for value in _valued(m) if value is not None)
    return found


#: PostgreSQL's type of each kind of value a measure query takes.
_TYPES = {str: "text", int: "bigint", bool: "boolean", datetime: "timestamptz"}


def json_param(values: Sequence[Sequence[Any]]) -> str:
    """Return rows of values as one JSON document (a set statement's one parameter).

    Encoded in C: psycopg's array dumpers adapt, quote and escape each element in Python,
    which cost ~0.13 ms per side (a run's twenty arrays of a hundred values), more than the
    statement itself. Instants go as RFC 3339 text with their offset.
    """
    return msgspec.json.encode(values).decode()


def _set_params(values: list[list[Any]]) -> dict[str, str]:
    """Return the set statement's one parameter: every side's values (:func:`_values`)."""
    return {"sides": json_param(values)}


def json_columns(sample: Sequence[Any]) -> str:
    """Return the SELECT list reading each JSON row ``e.x`` like ``sample`` as ``v0``, ``v1``….

    Each element cast to the PostgreSQL type of the sample's value (:data:`_TYPES`); the
    rows come from ``jsonb_array_elements(…) AS e(x)`` over a document of
    :func:`_set_params`' form.
    """
    try:
        return ", ".join(
            f"(e.x->>{j})::{_TYPES[type(value)]} AS v{j}" for j, value in enumerate(sample)
        )
    except KeyError as exc:
        raise TypeError(f"no column type for a measure value of {exc}") from None


def evidence_shape(measure: Measure) -> tuple[Any, ...]:
    """Return what decides the text of :func:`evidence_sql` for ``measure`` (values aside)."""
    return _shape(measure)


def evidence_values(customer_id: str, measure: Measure) -> list[Any]:
    """Return the values :func:`evidence_sql` reads from its slots, in order."""
    return [customer_id, *(value for value in _valued(measure) if value is not None)]


def evidence_sql(measure: Measure, slot: Callable[[], str]) -> str:
    """Return :func:`evidence_query` as PostgreSQL text, its values read from SQL slots.

    ``slot()`` names, in turn, the SQL expression holding each of
    :func:`evidence_values`' values (e.g. ``s.v2``): a set statement lateral-joins it to
    the rows of many alerts' evidence at once (:mod:`custodia.aml.alerts`). The text is
    the same for every measure of the same :func:`evidence_shape`.
    """

    def ref(_value: Any = None) -> ColumnElement[Any]:
        return literal_column(slot())

    query = _evidence(measure, ref, None)
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    return str(query.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


#: The set statements built so far, by the shapes of their measures.
_SET_STATEMENTS: dict[tuple[Any, ...], str] = {}


def _set_statement(shapes: tuple[Any, ...], measures: list[Measure], sample: list[Any]) -> str:
    """Return the PostgreSQL statement writing and measuring many sides of these ``shapes``.

    Its one parameter is every side's values as JSON (:func:`_set_params`): the elements
    of the array ``WITH ORDINALITY`` are the sides, one row each (``s``, value ``j`` as
    ``v{j}`` of its type); a CTE
    inserts every side's movement; each side's aggregates are a LATERAL subquery over its
    customer's rows in range plus its own new row, taken from its values (a statement does
    not see its own CTE's writes). Rows: the side's ordinal, then the aggregates in
    :func:`_read`'s order. Built once per shape, so prepared once.
    """
    found = _SET_STATEMENTS.get(shapes)
    if found is not None:
        return found
    slots = iter(range(len(sample)))

    def ref(_value: Any = None) -> ColumnElement[Any]:
        return literal_column(f"s.v{next(slots)}")

    customer, since, until = ref(), ref(), ref()
    inserted = [(name, ref()) for name in _ROW]
    movements = table_of(AmlMovement)
    scanned = select(*(movements.c[name] for name in _READ)).where(
        movements.c.customer_id == customer, movements.c.at > since, movements.c.at <= until
    )
    # The side's own row: its values, as the CTE inserts them (not a scan of the CTE).
    values = dict(inserted)
    own = select(*(values[name].label(name) for name in _READ))
    rows = union_all(scanned, own).subquery("m")
    dialect = postgresql.psycopg.dialect()  # type: ignore[no-untyped-call]
    lateral = (
        _aggregates(rows.c, measures, ref).compile(
            dialect=dialect, compile_kwargs={"literal_binds": True}
        )
        if measures
        else "SELECT"
    )
    # Only names and the compiled constants of the conditions: every value is a parameter.
    sql = (
        f"WITH s AS (SELECT {json_columns(sample)}, e.n "  # noqa: S608
        "FROM jsonb_array_elements(%(sides)s::jsonb) WITH ORDINALITY AS e(x, n)), "
        f"written AS (INSERT INTO aml_movements ({', '.join(name for name, _ in inserted)}) "
        f"SELECT {', '.join(str(value) for _, value in inserted)} FROM s) "
        f"SELECT s.n, a.* FROM s CROSS JOIN LATERAL ({lateral}) AS a"
    )
    if len(_SET_STATEMENTS) >= _MAX_STATEMENTS:
        _SET_STATEMENTS.clear()
    _SET_STATEMENTS[shapes] = sql
    return sql


def pipelined(
    connection: Connection, statements: list[tuple[str, dict[str, Any]]]
) -> list[list[Sequence[Any]]]:
    """Run ``statements`` in order in one psycopg pipeline; return each one's rows.

    The values go to the driver as they are: on PostgreSQL the measure queries' values
    (arrays of text, integers, booleans, aware datetimes) need none of SQLAlchemy's
    conversions. A database error comes back as SQLAlchemy's, so the caller's retry policy
    sees it as usual.
    """
    driver: Any = connection.connection.driver_connection
    try:
        with driver.pipeline():
            cursors = []
            for sql, params in statements:
                cursor = driver.cursor()
                cursor.execute(sql, params)
                cursors.append(cursor)
            rows = [cursor.fetchall() for cursor in cursors]
    except driver.Error as exc:
        raise DBAPIError.instance(
            "monitoring pipeline", None, exc, type(driver).Error, hide_parameters=True
        ) from exc
    return rows


def _read(row: Sequence[Any], measures: Mapping[K, Measure]) -> dict[K, Any]:
    """Return the figures of ``row`` (from :func:`_statement`) keyed as ``measures``."""
    values = iter(row)
    found: dict[K, Any] = {}
    for key, m in measures.items():
        if m.kind == "totals":
            found[key] = Totals(int(next(values)), int(next(values)))
        elif m.kind == "counterparties":
            found[key] = int(next(values))
        else:
            found[key] = _instant(next(values))
    return found
