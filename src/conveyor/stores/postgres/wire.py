"""A worker's transaction sent through libpq itself: its statements in one pipeline, one
round trip, without psycopg's cursors.

Why: a worker of one slot sends one transaction per job (its completion and its next claim).
psycopg's pipeline costs more client CPU than the work it sends: each statement goes through a
cursor (query conversion, a dumper per parameter, the prepare bookkeeping) and the pipeline's
generators, several hundred microseconds a job on this path, where the worker's machine is
CPU-bound when it runs several such workers. Here each statement is prepared once per
connection under a name of ours, its parameters are encoded as text (the server infers their
types from the statement, as for psycopg's ``unknown`` strings), and the rows are loaded by
psycopg's own :class:`~psycopg.adapt.Transformer`, so every value decodes exactly as it does
through a cursor (the store's loaders included).

What it takes: statements whose parameters are all of the few types :func:`encode` knows
(``None``: the caller then sends the transaction through psycopg, as before). What it leaves
behind: an idle connection, as psycopg would (the pipeline's implicit transaction committed or,
after an error, rolled back at its sync); or, if it stopped half-way (a dropped link, an
interrupt), a closed connection, which the pool then drops.
"""

from __future__ import annotations

import functools
import re
import select
import struct
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import psycopg
from psycopg import errors, pq
from psycopg.adapt import Transformer
from psycopg.types.json import Jsonb

from conveyor.stores.postgres.common import Conn, Row
from conveyor.stores.postgres.rows import TextArray

_OK = (pq.ExecStatus.TUPLES_OK, pq.ExecStatus.COMMAND_OK)
#: How many statements a connection keeps prepared under our names (a worker has a handful
#: of shapes); past that, a new one is sent through psycopg instead.
KEPT = 32
_PLACEHOLDER = re.compile(r"%\((\w+)\)s|%%|%")
#: Element types of the arrays :func:`encode` writes in binary, by Python type (bool first:
#: a bool is an int).
_ELEMENTS: tuple[tuple[type, int], ...] = ((bool, 16), (int, 20), (float, 701), (str, 25),
                                           (Jsonb, 3802))
_int4 = struct.Struct("!i").pack
_int8 = struct.Struct("!q").pack
_float8 = struct.Struct("!d").pack


@functools.lru_cache(maxsize=256)
def positional(statement: str) -> tuple[bytes, tuple[str, ...]] | None:
    """``statement`` with its ``%(name)s`` placeholders numbered (``$1``...) as PostgreSQL
    wants them, and the names in that order; None if it holds a ``%`` of another kind."""
    names: list[str] = []
    bad = False

    def number(match: re.Match[str]) -> str:
        nonlocal bad
        name = match.group(1)
        if name is None:
            bad = bad or match.group(0) == "%"
            return "%"
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    text = _PLACEHOLDER.sub(number, statement)
    return None if bad else (text.encode("utf-8"), tuple(names))


def _element(value: Any, kind: type) -> bytes:
    if kind is bool:
        return b"\x01" if value else b"\x00"
    if kind is int:
        return _int8(value)
    if kind is float:
        return _float8(value)
    if kind is str:
        return str(value).encode("utf-8")
    text: str = value.dumps(value.obj)
    return b"\x01" + text.encode("utf-8")  # jsonb: version 1, then the text


def _array(values: list[Any]) -> bytes | None:
    """A one-dimensional array in PostgreSQL's binary format, or None if its elements are not
    all of one known type (NULLs aside) or there are none to tell the type by."""
    kinds = {type(value) for value in values} - {type(None)}
    if len(kinds) != 1:
        return None
    kind = next(iter(kinds))
    oid = next((oid for known, oid in _ELEMENTS if kind is known), None)
    if oid is None or (kind is int and not all(
            value is None or -2**63 <= value < 2**63 for value in values)):
        return None
    if kind is Jsonb and not all(value is None or value.dumps for value in values):
        return None
    nulls = len(values) != sum(value is not None for value in values)
    parts = [struct.pack("!iiIii", 1, int(nulls), oid, len(values), 1)]
    for value in values:
        if value is None:
            parts.append(_int4(-1))
        else:
            item = _element(value, kind)
            parts.append(_int4(len(item)) + item)
    return b"".join(parts)


def encode(value: Any) -> tuple[bytes | None, int] | None:
    """A parameter as the bytes sent and their format (0 text, 1 binary), or None for a type
    this module leaves to psycopg. Text, typed by the server from where the parameter stands
    (``$3::text[]``, ``result = $5``), as psycopg sends a ``str``."""
    kind = type(value)
    if value is None:
        return None, 0
    if kind is str:
        return value.encode("utf-8"), 0
    if kind is bool:
        return (b"t" if value else b"f"), 0
    if kind is int:
        return str(value).encode("ascii"), 0
    if kind is float:
        return repr(value).encode("ascii"), 0  # nan and inf read back as the same float8
    if kind is Jsonb:
        return (value.dumps(value.obj).encode("utf-8"), 0) if value.dumps else None
    if kind is TextArray:
        return value.data, 1
    if kind is list:
        data = _array(value)
        return None if data is None else (data, 1)
    if kind is datetime and value.tzinfo is not None:
        return value.isoformat().encode("ascii"), 0
    return None


class _Prepared:
    """One statement prepared on one connection: its name there, and its rows' column names
    (kept from one result to the next, as :class:`~.rows.KnownColumns` does)."""

    __slots__ = ("last", "name", "names", "params", "text", "width")

    def __init__(self, name: bytes, text: bytes, params: tuple[str, ...]) -> None:
        self.name = name
        self.text = text
        self.params = params
        self.names: list[str] = []
        self.width = -1
        self.last = b""

    def columns(self, result: pq.abc.PGresult, encoding: str) -> list[str]:
        width = result.nfields
        last = result.fname(width - 1) or b"" if width else b""
        if width != self.width or last != self.last:
            self.names = [(result.fname(i) or b"").decode(encoding) for i in range(width)]
            self.width, self.last = width, last
        return self.names


class _State:
    """What a connection keeps for this module: its prepared statements and a Transformer."""

    __slots__ = ("count", "poller", "prepared", "transformer")

    def __init__(self, conn: Conn) -> None:
        self.prepared: dict[str, _Prepared] = {}
        self.count = 0  # names are never used twice on a connection
        self.transformer = Transformer.from_context(conn)
        self.poller: tuple[int, Any] | None = None

    def poll_for(self, fd: int) -> Any:
        """The poll object watching the connection's socket ``fd`` for input, made and
        registered once (again if the socket changed), not at every wait of every statement
        or at every checkout; None where ``select`` has no ``poll``."""
        if self.poller is None or self.poller[0] != fd:
            if not hasattr(select, "poll"):  # pragma: no cover - Windows
                return None
            poller = select.poll()
            poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
            self.poller = (fd, poller)
        return self.poller[1]

    def wait(self, pgconn: pq.abc.PGconn) -> None:
        """:func:`_wait` for reading, on the connection's kept poll object."""
        poller = self.poll_for(pgconn.socket)
        if poller is None:  # pragma: no cover - Windows
            _wait(pgconn)
            return
        poller.poll()


def _state(conn: Conn) -> _State:
    state: _State | None = getattr(conn, "_conveyor_wire", None)
    if state is None:
        state = _State(conn)
        setattr(conn, "_conveyor_wire", state)  # noqa: B010 - not a psycopg attribute
    return state


def input_check(conn: Conn) -> Callable[[], object]:
    """A call telling (true), without waiting, whether the server sent something to ``conn``
    since it last read (a FATAL, or EOF, on a connection nobody is using), on the poll object
    this module keeps for the connection's socket."""
    fd = conn.fileno()
    poller = _state(conn).poll_for(fd)
    if poller is None:  # pragma: no cover - Windows
        return lambda: select.select([fd], [], [], 0)[0]
    return functools.partial(poller.poll, 0)


#: One statement of a pipeline: its text, its prepared form, whether to prepare it first, and
#: its parameters' bytes and formats.
_Call = tuple[str, _Prepared, bool, list[bytes | None], list[int]]


def _calls(state: _State, statements: Sequence[tuple[str, Mapping[str, Any]]]
           ) -> list[_Call] | None:
    calls: list[_Call] = []
    made: dict[str, _Prepared] = {}  # prepared by this pipeline (a statement sent twice)
    for statement, params in statements:
        prepared = state.prepared.get(statement) or made.get(statement)
        new = prepared is None
        if prepared is None:
            converted = positional(statement)
            if converted is None or len(state.prepared) + len(made) >= KEPT:
                return None
            state.count += 1
            prepared = made[statement] = _Prepared(f"conveyor_{state.count}".encode("ascii"),
                                                   *converted)
        sent = _encoded(prepared, params)
        if sent is None:
            return None
        calls.append((statement, prepared, new, *sent))
    return calls


def _encoded(prepared: _Prepared, params: Mapping[str, Any]
             ) -> tuple[list[bytes | None], list[int]] | None:
    """A statement's parameter values and formats, each as :func:`encode` sends it; None if
    one is of a kind left to psycopg."""
    values: list[bytes | None] = []
    formats: list[int] = []
    for param in prepared.params:
        encoded = encode(params[param])
        if encoded is None:
            return None
        values.append(encoded[0])
        formats.append(encoded[1])
    return values, formats


def run(conn: Conn, statements: Sequence[tuple[str, Mapping[str, Any]]], *,
        retried: bool = False, tuples: bool = False) -> list[list[Any]] | None:
    """Run ``statements`` in one pipeline (one implicit transaction, one round trip) and
    return each one's rows (binary results, loaded as a cursor would); None, having sent
    nothing, if a statement or a parameter is of a kind this module leaves to psycopg, the
    connection keeps too many statements already, or its client encoding is not UTF-8.

    A statement that fails rolls the transaction back and raises psycopg's error for it
    (:class:`psycopg.errors.QueryCanceled`, ...); the connection stays usable. Statements
    the server no longer holds (deallocated by psycopg, see below) are prepared again.
    ``retried``: this is that second run. ``tuples``: rows as tuples, not dicts."""
    if conn.pgconn.parameter_status(b"client_encoding") != b"UTF8":
        return None  # parameters are sent, and names read, as UTF-8
    state = _state(conn)
    calls = _calls(state, statements)
    if calls is None:
        return None
    try:
        results = _exchange(conn.pgconn, calls)
    except BaseException:
        conn.close()  # stopped half-way: the pool drops it rather than guess its state
        raise
    encoding = "utf-8"
    failed = None
    for (statement, prepared, _, _, _), (made, done) in zip(calls, results, strict=True):
        if made is not None and made.status == pq.ExecStatus.COMMAND_OK:
            state.prepared[statement] = prepared  # made, even if a later statement failed
        for result in (made, done):
            if failed is None and result is not None and result.status not in _OK and \
                    result.status != pq.ExecStatus.PIPELINE_ABORTED:
                failed = result
    if failed is not None:
        error = errors.error_from_result(failed, encoding=encoding)
        if isinstance(error, errors.InvalidSqlStatementName) and not retried:
            # our statements were deallocated behind our back: psycopg sends DEALLOCATE ALL
            # after a rollback (or a DROP) on a connection holding its own prepared ones. The
            # pipeline failed at its first such statement and rolled back whole, so nothing
            # was written: prepare them all again and run it once more
            state.prepared.clear()
            return run(conn, statements, retried=True, tuples=tuples)
        raise error
    tx = state.transformer
    rows: list[list[Any]] = []
    for (_, prepared, _, _, _), (_, result) in zip(calls, results, strict=True):
        if result.status != pq.ExecStatus.TUPLES_OK or not result.nfields:
            rows.append([])
            continue
        tx.set_pgresult(result)
        rows.append(tx.load_rows(0, result.ntuples, tuple) if tuples else tx.load_rows(
            0, result.ntuples, functools.partial(_row, prepared.columns(result, encoding))))
    return rows


def _aware(value: datetime) -> bytes:
    if value.tzinfo is None:
        raise KeyError(value)  # naive: not sent as text here (see encode)
    return value.isoformat().encode("ascii")


#: How :func:`one` writes a parameter of each type as text, the way :func:`encode` does (and
#: :func:`.statements.one_job_text`); a type not here (an array, a TextArray, Jsonb) sends the
#: statement through :func:`encode`.
TEXT: dict[type, Any] = {
    str: str.encode, int: lambda value: str(value).encode("ascii"),
    float: lambda value: repr(value).encode("ascii"),
    bool: lambda value: b"t" if value else b"f", datetime: _aware,
}


def one(conn: Conn, statement: str, params: Mapping[str, Any]) -> list[tuple[Any, ...]] | None:
    """Run one statement on its own (its own implicit transaction, as psycopg's ``execute`` in
    autocommit) and return its rows as tuples (binary results, loaded as a cursor would); None,
    having sent nothing, where :func:`run` would leave it to psycopg.

    Why apart from :func:`run`: one ``enqueue()`` is one statement, and its client CPU was
    mostly psycopg's cursor around it. A statement this connection holds prepared already goes
    out as one Bind/Execute/Sync, outside pipeline mode, its parameters as text when they all
    can be (no formats to send); the first run on a connection (and a run after the server
    forgot it) goes through :func:`run`, which prepares it. Errors are raised as psycopg's, as
    :func:`run` raises them; the connection stays usable after a failed statement and is
    closed if the exchange stopped half-way."""
    pgconn = conn.pgconn
    state = _state(conn)
    prepared = state.prepared.get(statement)
    if prepared is None or pgconn.parameter_status(b"client_encoding") != b"UTF8":
        found = run(conn, [(statement, params)], tuples=True)
        return None if found is None else found[0]
    formats: list[int] | None = None
    try:
        values: list[bytes | None] = [text(value)
                                      for value in map(params.__getitem__, prepared.params)]
    except KeyError:  # a parameter not sent as text: each one as encode() sends it
        sent = _encoded(prepared, params)
        if sent is None:
            return None
        values, formats = sent
    rows = _execute(conn, state, prepared, values, formats)
    if rows is None:  # deallocated behind our back (see run): nothing ran; prepare it again
        found = run(conn, [(statement, params)], retried=True, tuples=True)
        return None if found is None else found[0]
    return rows


def one_text(conn: Conn, statement: str, values: list[bytes | None]
             ) -> list[tuple[Any, ...]] | None:
    """:func:`one` for a caller that encoded the parameters itself: as text, the way
    :func:`one` writes each type (:func:`text`), in the order of the statement's placeholders
    (``positional(statement)[1]``). None, having sent nothing, where :func:`one` would prepare
    the statement first (not prepared on this connection yet, or the server forgot it) or
    leave it to psycopg: the caller then sends it through :func:`one` with its parameters.

    Why: the commonest ``enqueue()`` builds its 19 parameters straight into this list, not
    into a dict that :func:`one` then reads back and encodes one by one."""
    pgconn = conn.pgconn
    state = _state(conn)
    prepared = state.prepared.get(statement)
    if prepared is None or pgconn.parameter_status(b"client_encoding") != b"UTF8":
        return None
    return _execute(conn, state, prepared, values, None)


def text(value: Any) -> bytes | None:
    """A parameter as :func:`one` sends it as text; KeyError for a type it does not."""
    return None if value is None else TEXT[type(value)](value)


def _execute(conn: Conn, state: _State, prepared: _Prepared, values: list[bytes | None],
             formats: list[int] | None) -> list[tuple[Any, ...]] | None:
    """Run the prepared statement (:func:`_send_one`) and return its rows as tuples; None,
    with the connection's prepared statements forgotten, if the server no longer holds it
    (deallocated behind our back, see :func:`run`: nothing ran). Any other error is raised
    as psycopg's."""
    result = _send_one(conn, state, prepared, values, formats)
    if result.status not in _OK:
        error = errors.error_from_result(result, encoding="utf-8")
        if isinstance(error, errors.InvalidSqlStatementName):
            state.prepared.clear()
            return None
        raise error
    return _tuples(state, result)


def _send_one(conn: Conn, state: _State, prepared: _Prepared, values: list[bytes | None],
              formats: list[int] | None) -> pq.abc.PGresult:
    """Bind/Execute/Sync the prepared statement, outside pipeline mode; its result. The
    connection is closed if the exchange stops half-way (the pool then drops it)."""
    pgconn = conn.pgconn
    try:
        pgconn.send_query_prepared(prepared.name, values, formats, pq.Format.BINARY)
        while pgconn.flush():
            if _wait(pgconn, write=True):
                pgconn.consume_input()
        result = _result(pgconn, state)
        if result is None:
            raise psycopg.OperationalError("no result for a statement sent")
        while _result(pgconn, state) is not None:  # libpq's end of the statement's results
            pass
    except BaseException:
        conn.close()  # stopped half-way: the pool drops it rather than guess its state
        raise
    return result


def _tuples(state: _State, result: pq.abc.PGresult) -> list[tuple[Any, ...]]:
    """A successful result's rows as tuples, loaded as a cursor would."""
    if result.status != pq.ExecStatus.TUPLES_OK or not result.nfields:
        return []
    tx = state.transformer
    tx.set_pgresult(result)
    return tx.load_rows(0, result.ntuples, tuple)


def _row(names: list[str], values: Sequence[Any]) -> Row:
    return dict(zip(names, values))  # noqa: B905 - the width was checked in columns()


def _exchange(pgconn: pq.abc.PGconn, calls: list[_Call]
              ) -> list[tuple[pq.abc.PGresult | None, pq.abc.PGresult]]:
    """Send the calls (each prepared first when new) and a sync; read a result for each
    message sent, then the sync's."""
    pgconn.enter_pipeline_mode()
    for _, prepared, new, values, formats in calls:
        if new:
            pgconn.send_prepare(prepared.name, prepared.text, None)
        pgconn.send_query_prepared(prepared.name, values, formats, pq.Format.BINARY)
    pgconn.pipeline_sync()
    while pgconn.flush():  # the rest of what was sent, as the socket takes it
        if _wait(pgconn, write=True):
            pgconn.consume_input()  # the server may wait for us to read before it reads
    results = []
    for _, _, new, _, _ in calls:
        made = _next(pgconn) if new else None
        results.append((made, _next(pgconn)))
    sync = _next(pgconn)
    if sync.status != pq.ExecStatus.PIPELINE_SYNC:
        raise psycopg.OperationalError(f"unexpected result in a pipeline: {sync.status!r}")
    pgconn.exit_pipeline_mode()
    return results


def _result(pgconn: pq.abc.PGconn, state: _State) -> pq.abc.PGresult | None:
    """The statement's next result, outside pipeline mode (None: no more)."""
    while pgconn.is_busy():
        state.wait(pgconn)
        pgconn.consume_input()
    return pgconn.get_result()


def _next(pgconn: pq.abc.PGconn) -> pq.abc.PGresult:
    """The pipeline's next result (the empty ones between statements' results skipped)."""
    while True:
        while pgconn.is_busy():
            _wait(pgconn)
            pgconn.consume_input()
        result = pgconn.get_result()
        if result is not None:
            return result


def _wait(pgconn: pq.abc.PGconn, write: bool = False) -> bool:
    """Block until the connection's socket can be read (or, ``write``, written); whether it
    can be read. Bounded by the session's TCP timeouts (see :mod:`.config`), as psycopg's own
    waits are."""
    fd = pgconn.socket
    if not hasattr(select, "poll"):  # pragma: no cover - Windows
        readable, _, _ = select.select([fd], [fd] if write else [], [])
        return bool(readable)
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP
                    | (select.POLLOUT if write else 0))
    return any(event & ~select.POLLOUT for _, event in poller.poll())
