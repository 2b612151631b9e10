"""The state file: :class:`SqliteStore`, and the records a durable store exchanges.

Theory of operation
-------------------
The half of the store (see :mod:`workstate.server._store`, whose theory of operation covers
both halves: when the server commits, what, the tables, what start-up refuses) that only a
server with a state file (``serve --state``, ``MockServer(state=...)``) runs: the SQLite store,
the JSON its rows hold, and the records it exchanges with the :class:`StateKeeper
<workstate.server._store.StateKeeper>` (a :class:`Snapshot` loaded, a :class:`Saved`
environment rebuilt, a :class:`Batch` committed).  A store in memory makes or takes none of
them, so this module, its three attrs classes and ``sqlite3`` are loaded when a file is opened
(or a snapshot is asked for), not when a server starts in memory: they were ~1.5 ms of
``serve``'s cold start.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import attrs

from workstate._environment_state import EnvironmentChanges, EnvironmentState, ItemState
from workstate._errors import InvalidInputError
from workstate._profile import Profile
from workstate._records import WorkData
from workstate._table import State
from workstate._time import format_time, parse_time
from workstate._work import Work, WorkBody
from workstate.server._store import StateFileError, _dumps

if TYPE_CHECKING:
    import sqlite3

__all__ = [
    "APPLICATION_ID",
    "SCHEMA_VERSION",
    "Batch",
    "Saved",
    "Snapshot",
    "SqliteStore",
    "item_from_json",
    "item_to_json",
]

SCHEMA_VERSION = 1
"""The version of the state file's tables; a file of another version is refused."""
APPLICATION_ID = 0x57534D53  # "WSMS": workstate mock server
"""The ``PRAGMA application_id`` that marks a SQLite file as a workstate state file."""

_SYNCHRONOUS = ("normal", "full")
_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE environments (id TEXT PRIMARY KEY, state TEXT NOT NULL);
CREATE TABLE items (
    environment_id TEXT NOT NULL,
    work_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (environment_id, work_id)
) WITHOUT ROWID;
CREATE TABLE records (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (kind, key)
) WITHOUT ROWID;
"""
_TIMES = (
    "acknowledged_at",
    "started_at",
    "latest_heartbeat_at",
    "stop_requested_at",
    "stopped_at",
    "lease_expires_at",
    "delivered_at",
)


# ------------------------------------------------------------------------------ records as JSON
def _time(value: _dt.datetime | None) -> str | None:
    return None if value is None else format_time(value)


def item_to_json(item: ItemState) -> dict[str, Any]:
    """An item with every private field, as the state file stores it."""
    work = item.work
    body = work.body
    out: dict[str, Any] = {
        "id": body.id,
        "data": {"type": body.data.type, "id": body.data.id},
        "created_at": format_time(body.created_at),
        "metadata": dict(body.metadata),
        "secret": body.secret,
        "state": work.state.value,
        "last_heartbeat": work.last_heartbeat,
        "ttl_seconds": work.ttl_seconds,
        "delivered_to": work.delivered_to,
        "attempt": work.attempt,
        "version": work.version,
        "touched_at": format_time(work.touched_at),
        "window_until": _time(item.window_until),
    }
    for key in _TIMES:
        out[key] = _time(getattr(work, key))
    return out


def _field(record: Mapping[str, Any], key: str, kinds: tuple[type, ...], nullable: bool) -> Any:
    if key not in record:
        raise InvalidInputError(f"the record has no {key!r}", key=key, expected=key)
    value = record[key]
    if value is None and nullable:
        return None
    if type(value) not in kinds:
        names = " or ".join(k.__name__ for k in kinds) + (" or null" if nullable else "")
        raise InvalidInputError(
            f"{key} must be {names}, got {value!r}", key=key, expected=names, got=value
        )
    return value


def _stamp(record: Mapping[str, Any], key: str, nullable: bool = True) -> _dt.datetime | None:
    text = _field(record, key, (str,), nullable)
    return None if text is None else parse_time(text, key=key)


def item_from_json(record: object, environment_id: str, profile: Profile) -> ItemState:
    """The item that :func:`item_to_json` wrote (checked field by field; 400 naming the key)."""
    if not isinstance(record, Mapping):
        raise InvalidInputError(
            f"an item record must be an object, got {type(record).__name__}",
            key="record",
            expected="a JSON object",
            got=record,
        )
    data = _field(record, "data", (dict,), False)
    metadata = _field(record, "metadata", (dict,), False)
    if not all(type(k) is str and type(v) is str for k, v in metadata.items()):
        raise InvalidInputError(
            "metadata must map strings to strings", key="metadata", expected="strings", got=metadata
        )
    state_text = _field(record, "state", (str,), False)
    try:
        state = State(state_text)
    except ValueError:
        raise InvalidInputError(
            f"state {state_text!r} is not a state",
            key="state",
            expected=", ".join(s.value for s in State),
            got=state_text,
        ) from None
    created_at = _stamp(record, "created_at", nullable=False)
    touched_at = _stamp(record, "touched_at", nullable=False)
    assert created_at is not None
    assert touched_at is not None
    body = WorkBody(
        id=_field(record, "id", (str,), False),
        environment_id=environment_id,
        data=WorkData(
            type=_field(data, "type", (str,), False), id=_field(data, "id", (str,), False)
        ),
        created_at=created_at,
        metadata=MappingProxyType(metadata),  # read-only, as in records built by operations
        secret=_field(record, "secret", (str,), True),
        profile=profile,
    )
    stamps = {key: _stamp(record, key) for key in _TIMES}
    work = Work(
        body=body,
        state=state,
        last_heartbeat=_field(record, "last_heartbeat", (str,), True),
        ttl_seconds=_field(record, "ttl_seconds", (int,), True),
        delivered_to=_field(record, "delivered_to", (str,), True),
        attempt=_field(record, "attempt", (int,), False),
        version=_field(record, "version", (int,), False),
        touched_at=touched_at,
        **stamps,
    )
    return ItemState(work=work, seq=-1, window_until=_stamp(record, "window_until"))


def _state_to_json(state: EnvironmentState) -> dict[str, Any]:
    return {
        "id_counter": state.id_counter,
        "next_seq": state.next_seq,
        "named_poll_seen": state.named_poll_seen,
        "pollers": {worker: format_time(at) for worker, at in state.pollers.items()},
    }


def _state_from_json(record: object) -> EnvironmentState:
    if not isinstance(record, Mapping):
        raise InvalidInputError(
            "an environment record must be an object", key="state", expected="a JSON object"
        )
    pollers = _field(record, "pollers", (dict,), False)
    return EnvironmentState(
        id_counter=_field(record, "id_counter", (int,), False),
        next_seq=_field(record, "next_seq", (int,), False),
        named_poll_seen=_field(record, "named_poll_seen", (bool,), False),
        pollers={worker: parse_time(at, key=f"pollers.{worker}") for worker, at in pollers.items()},
    )


def _settings(profile: Profile) -> dict[str, str]:
    """The profile's fields, as text, to tell a file written under other settings."""
    return {f.name: repr(getattr(profile, f.name)) for f in attrs.fields(type(profile))}


# ------------------------------------------------------------------------------ the records
@attrs.frozen(kw_only=True)
class Snapshot:
    """Everything a store holds, as :meth:`Store.load` hands it back."""

    clock: _dt.datetime | None = None
    """The time the server last handed to the core; None for a new store."""
    environments: Mapping[str, tuple[EnvironmentState, tuple[ItemState, ...]]] = attrs.field(
        factory=dict
    )
    """Each environment's bookkeeping and items, in order of first use."""
    records: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    """The keyed records: kind → key → JSON value."""


@attrs.frozen(kw_only=True)
class Saved:
    """One environment as the store held it, for the server to rebuild."""

    now: _dt.datetime
    """The latest time the server handed to the core."""
    state: EnvironmentState
    """The environment's bookkeeping."""
    items: tuple[ItemState, ...]
    """Its items."""


@attrs.frozen(kw_only=True)
class Batch:
    """The changes one hold of the server's lock made, committed together or not at all."""

    clock: _dt.datetime | None
    """The server's clock, when it moved (None: unchanged)."""
    clear: bool = False
    """Whether to forget everything stored before the rest of the batch (a reset)."""
    changes: tuple[tuple[str, EnvironmentChanges], ...] = ()
    """Each touched environment's changes, in the order they were taken."""
    puts: Mapping[tuple[str, str], str] = attrs.field(factory=dict)
    """Keyed records written: (kind, key) → the value as JSON text."""
    deletes: frozenset[tuple[str, str]] = frozenset()
    """Keyed records deleted: (kind, key)."""


class SqliteStore:
    """State in a SQLite file (WAL mode), surviving restarts and SIGKILL of the server.

    ``synchronous`` is ``"normal"`` (the default: every commit reaches the operating system
    before the answer, no ``fsync`` per request) or ``"full"`` (also synced to the disk, for a
    power cut); see the module's theory of operation.
    """

    durable = True

    def __init__(self, path: str | os.PathLike[str], *, synchronous: str = "normal") -> None:
        if synchronous not in _SYNCHRONOUS:
            raise InvalidInputError(
                f"synchronous must be one of {list(_SYNCHRONOUS)}, got {synchronous!r}",
                key="synchronous",
                expected=" or ".join(_SYNCHRONOUS),
                got=synchronous,
            )
        self.path = os.fspath(path)
        """The state file."""
        self.synchronous = synchronous
        """``normal`` or ``full``."""
        self._con: sqlite3.Connection | None = None
        self._con = self._open()

    # -------------------------------------------------------------- opening
    def _error(self, problem: str) -> StateFileError:
        return StateFileError(self.path, problem)

    def _open(self) -> sqlite3.Connection:
        path = self.path
        if os.path.isdir(path):
            raise self._error("is a directory; give the path of a file (it is created if missing)")
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        if new:
            try:  # owner-only: the file holds the items' secrets
                os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
            except OSError as exc:
                raise self._error(f"cannot be created: {exc.strerror}") from None
        import sqlite3  # only a server with --state needs it: not imported at start-up otherwise

        try:
            con = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0.2)
        except sqlite3.Error as exc:
            raise self._error(f"cannot be opened: {exc}") from None
        try:
            self._configure(con)
        except BaseException:
            con.close()
            raise
        return con

    def _configure(self, con: sqlite3.Connection) -> None:
        import sqlite3  # imported by _open already: this only binds the name

        try:
            self._check_and_init(con)
        except sqlite3.OperationalError as exc:  # locked by the server that holds the file
            raise self._error(
                f"is in use ({exc}): another server may be running on it; stop it, or give "
                "another path"
            ) from None
        except sqlite3.DatabaseError as exc:
            raise self._error(
                f"is not a workstate state file ({exc}); give a new path, or the file an "
                "earlier `serve --state` wrote"
            ) from None

    def _check_and_init(self, con: sqlite3.Connection) -> None:
        app_id = con.execute("PRAGMA application_id").fetchone()[0]
        version = con.execute("PRAGMA user_version").fetchone()[0]
        tables = con.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app_id != APPLICATION_ID and not (app_id == 0 and tables == 0):
            raise self._error(
                f"is a SQLite database but not a workstate state file (application_id "
                f"{app_id:#x}, expected {APPLICATION_ID:#x}); give a new path, or the file an "
                "earlier `serve --state` wrote"
            )
        if app_id == APPLICATION_ID and version != SCHEMA_VERSION:
            raise self._error(
                f"has schema version {version}, and this workstate reads version "
                f"{SCHEMA_VERSION}; use the workstate that wrote it, or start on a new file"
            )
        # Exclusive locking: a second server on this file fails at start-up, not later.
        con.execute("PRAGMA locking_mode=EXCLUSIVE")
        mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode != "wal":  # pragma: no cover - only on file systems without shared memory
            raise self._error(f"cannot use write-ahead logging (journal mode {mode!r})")
        con.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
        con.execute("BEGIN IMMEDIATE")  # takes the exclusive lock for the life of the server
        if tables == 0:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    con.execute(statement)
            con.execute(f"PRAGMA application_id={APPLICATION_ID}")
            con.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        con.execute("COMMIT")

    # -------------------------------------------------------------- the interface
    def _connection(self) -> sqlite3.Connection:
        con = self._con
        if con is None:
            raise self._error("is closed")
        return con

    def load(self, profile: Profile) -> Snapshot:
        """Everything committed, checked record by record (a :class:`StateFileError` if not)."""
        import sqlite3  # imported by _open already: this only binds the name

        con = self._connection()
        try:
            meta = dict(con.execute("SELECT key, value FROM meta"))
            env_rows = list(con.execute("SELECT id, state FROM environments ORDER BY rowid"))
            item_rows = list(  # by creation, as Environment.item_states gives them
                con.execute("SELECT environment_id, work_id, seq, record FROM items ORDER BY seq")
            )
            record_rows = list(con.execute("SELECT kind, key, value FROM records"))
        except sqlite3.DatabaseError as exc:
            raise self._error(f"cannot be read ({exc}); it may be damaged") from None
        stored = meta.get("profile")
        settings = _settings(profile)
        if stored is None:
            with self._transaction() as cur:
                cur.execute("INSERT INTO meta VALUES ('profile', ?)", (profile.name,))
                cur.execute("INSERT INTO meta VALUES ('profile_settings', ?)", (_dumps(settings),))
        elif stored != profile.name:
            raise self._error(
                f"was written under the profile {stored!r}, not {profile.name!r}; start with "
                f"--profile {stored}, or on a new file"
            )
        else:
            # The items' leases were made under these settings (TTL range, precision, ...).
            try:
                saved = json.loads(meta.get("profile_settings", "{}"))
            except ValueError:
                saved = None
            if saved != settings:
                if not isinstance(saved, dict):
                    saved = {}
                differ = ", ".join(
                    f"{key} {saved.get(key, '?')} (now {value})"
                    for key, value in settings.items()
                    if saved.get(key) != value
                )
                raise self._error(
                    f"was written under profile {stored!r} with other settings: {differ}; "
                    "start with the same settings (e.g. --default-ttl, --min-ttl, --max-ttl), "
                    "or on a new file"
                )
        clock = None
        try:
            if "clock" in meta:
                clock = parse_time(meta["clock"], key="clock")
            environments: dict[str, tuple[EnvironmentState, list[ItemState]]] = {}
            for env_id, text in env_rows:
                environments[env_id] = (_state_from_json(json.loads(text)), [])
            for env_id, work_id, seq, text in item_rows:
                where = f"item {work_id!r} of environment {env_id!r}"
                if env_id not in environments:
                    raise self._error(f"holds {where}, an environment it has no record of")
                try:
                    item = item_from_json(json.loads(text), env_id, profile)
                except InvalidInputError as exc:
                    raise self._error(f"{where} does not restore: {exc.message}") from None
                except ValueError as exc:
                    raise self._error(
                        f"{where} does not restore: its record is not JSON ({exc})"
                    ) from None
                if item.work.id != work_id or type(seq) is not int:
                    raise self._error(f"{where} does not restore: its record names another id")
                environments[env_id][1].append(attrs.evolve(item, seq=seq))
            records: dict[str, dict[str, Any]] = {}
            for kind, key, text in record_rows:
                records.setdefault(kind, {})[key] = json.loads(text)
        except InvalidInputError as exc:
            raise self._error(f"does not restore: {exc.message}") from None
        except ValueError as exc:  # JSON
            raise self._error(f"does not restore: a record is not JSON ({exc})") from None
        return Snapshot(
            clock=clock,
            environments={k: (state, tuple(items)) for k, (state, items) in environments.items()},
            records=records,
        )

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        con = self._connection()
        cur = con.cursor()
        cur.execute("BEGIN IMMEDIATE")
        try:
            yield cur
        except BaseException:
            cur.execute("ROLLBACK")
            raise
        cur.execute("COMMIT")

    def commit(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction: all of it or (if this raises) none of it."""
        with self._transaction() as cur:
            if batch.clear:
                for table in ("environments", "items", "records"):
                    cur.execute(f"DELETE FROM {table}")  # our own table names, not input
                cur.execute("DELETE FROM meta WHERE key = 'clock'")
            for env_id, changes in batch.changes:
                if changes.state is not None:
                    cur.execute(
                        "INSERT INTO environments VALUES (?, ?) "
                        "ON CONFLICT (id) DO UPDATE SET state = excluded.state",
                        (env_id, _dumps(_state_to_json(changes.state))),
                    )
                if changes.items:
                    cur.executemany(
                        "INSERT INTO items VALUES (?, ?, ?, ?) ON CONFLICT (environment_id, "
                        "work_id) DO UPDATE SET seq = excluded.seq, record = excluded.record",
                        [
                            (env_id, item.work.id, item.seq, _dumps(item_to_json(item)))
                            for item in changes.items
                        ],
                    )
                if changes.dropped:
                    cur.executemany(
                        "DELETE FROM items WHERE environment_id = ? AND work_id = ?",
                        [(env_id, work_id) for work_id in changes.dropped],
                    )
            if batch.clock is not None:
                cur.execute(
                    "INSERT INTO meta VALUES ('clock', ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (format_time(batch.clock),),
                )
            if batch.deletes:
                cur.executemany("DELETE FROM records WHERE kind = ? AND key = ?", batch.deletes)
            if batch.puts:
                cur.executemany(
                    "INSERT INTO records VALUES (?, ?, ?) "
                    "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value",
                    [(kind, key, text) for (kind, key), text in batch.puts.items()],
                )

    def close(self) -> None:
        """Close the file (idempotent); the lock on it goes with it."""
        con, self._con = self._con, None
        if con is not None:
            con.close()


# ------------------------------------------------------------------------------ the server's side
