"""Where the mock server keeps its state: in memory, or in a SQLite file that survives restarts.

Theory of operation
-------------------
One store interface (:class:`Store`): ``load`` hands back a :class:`Snapshot` of everything
that was committed, ``commit`` writes a :class:`Batch` of changes atomically, ``close`` lets go
of the file.  :class:`MemoryStore` loads nothing and commits nowhere (the default: a test
double that forgets on exit); :class:`~workstate.server._sqlite.SqliteStore` keeps a file (it,
and the records a durable store exchanges, are in ``_sqlite``, loaded with the first file).
The environments never know which one is behind them: each records what a call changed
(:meth:`Environment.take_changes <workstate._environment.Environment.take_changes>`), and the
server hands that to whichever store it has.

When.  Every touch of an environment happens under the server's lock, and the server answers
only after it let go of the lock.  So the lock is the commit point: :class:`CommittingLock`
runs :meth:`StateKeeper.flush` before it releases (the outermost hold, if re-entered), which
gathers the changes of every environment touched under it, the server's clock and the staged
keyed records into one batch and commits it.  Every applied call is therefore on disk before
its answer is sent, a rejected call's effects (time passing, leases that fell due) too, and
no handler can forget to commit.  A call that changed nothing and left the clock where it was
commits nothing.  If a commit fails the batch is kept, merged into the next one, and the
request gets a 500 (its change is applied in memory, and the next successful commit writes it).

What.  Only what changed: the items a call created or changed (one upsert each, in their latest
state), the stopped items the retention bound dropped (one delete each), an environment's own
bookkeeping when it moved (id counter, sequence, recent pollers), the server's clock (the time
last handed to the core) when it moved, and the keyed records staged by :meth:`StateKeeper.put`
and :meth:`StateKeeper.delete`.  A heartbeat costs one transaction of two small upserts.

SQLite.  The standard library's ``sqlite3``, in WAL mode, with ``synchronous=NORMAL`` by
default: a commit has reached the operating system (the WAL file) before ``commit`` returns, so
it survives the server process being killed, even with SIGKILL; what NORMAL gives up is only
the last transactions on a power cut or kernel crash (the file stays consistent), in exchange
for no ``fsync`` per request.  ``synchronous="full"`` syncs the WAL on every commit, for state
that must survive a power cut, at the price of a disk flush per request.  The file is opened in
exclusive locking mode, so a second server on the same file fails at start-up instead of
interleaving its writes; the lock dies with the process.  A new file is created readable by
its owner only (it holds the items' secrets).  ``sqlite3`` is imported when a file is
opened, so a server without ``--state`` never loads it.

Tables (schema version :data:`SCHEMA_VERSION`, stored as ``PRAGMA user_version``; the file is
marked as ours with ``PRAGMA application_id``): ``meta`` (key → text: the profile's name and
settings, the clock), ``environments`` (id → its bookkeeping as JSON, in order of first use),
``items`` (environment, work id → sequence number and the full record as JSON, private lease
fields included: token, TTL, deadline, delivery time and worker, attempt, version, the
redelivery window) and ``records`` (kind, key → JSON), a generic keyed table for the rest of
the server.

Start-up.  :meth:`SqliteStore.load` refuses, with a :class:`StateFileError` that says what to
do, a file that is not SQLite, a SQLite file that is not a state file, another schema version,
a file written under another profile, a file in use by another server, and records that do not
restore (every item is checked by
:meth:`Environment.restore <workstate._environment.Environment.restore>`).

Other server state (keyed records).  A part of the server with state of its own (scripted
sessions, fault rules, ...) persists it in two lines: stage a JSON-able value under a kind and
a key while holding the server's lock, and read the kind back when the server starts::

    server._keeper.put("session", session_id, session_json)   # committed with the call
    server._keeper.delete("session", session_id)
    saved = server._keeper.records("session", parse)          # {key: parse(value)} at start

A staged value is committed with the call that staged it, before its answer, exactly as the
environments' changes are; with the memory store it goes nowhere.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import threading
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from workstate._environment import Environment
from workstate._errors import WorkstateError
from workstate._profile import Profile

# The state file's half (SqliteStore, and the records only a durable store makes or takes:
# Snapshot, Saved, Batch) is in _sqlite, imported where a file is opened or one is made, so
# that a server in memory starts without it (see there).
if TYPE_CHECKING:
    from workstate._environment_state import EnvironmentChanges
    from workstate.server._sqlite import Batch, Saved, Snapshot

__all__ = ["CommittingLock", "MemoryStore", "StateFileError", "StateKeeper", "Store"]

_log = logging.getLogger("workstate.server")


class StateFileError(Exception):
    """The state file cannot be used; the message says why and what to do."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"state file {path}: {problem}")
        self.path = path
        """The file."""
        self.problem = problem
        """What is wrong with it."""


def _dumps(value: Any) -> str:
    # ASCII only: a string the core accepted always round-trips, whatever it holds.
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


# ------------------------------------------------------------------------------ the interface
class Store(Protocol):
    """Where the server's state lives: :class:`MemoryStore` or :class:`SqliteStore`."""

    durable: bool
    """Whether committed state outlives the process."""

    def load(self, profile: Profile) -> Snapshot:
        """Everything committed so far (checked against ``profile``)."""

    def commit(self, batch: Batch) -> None:
        """Write ``batch`` atomically; raise if it could not be written."""

    def close(self) -> None:
        """Let go of the store's resources (idempotent)."""


class MemoryStore:
    """The default store: nothing to load, nowhere to commit (the process holds the state)."""

    durable = False

    def load(self, profile: Profile) -> Snapshot:
        """An empty snapshot."""
        from workstate.server._sqlite import Snapshot

        return Snapshot()

    def commit(self, batch: Batch) -> None:
        """Nothing to do: the environments in memory are the state."""

    def close(self) -> None:
        """Nothing to let go of."""


class StateKeeper:
    """The server's link to its store: what was touched, staged, and when to commit it.

    ``clock`` reads the time the server last handed to the core.  Use it only under
    :attr:`lock`, which commits (:meth:`flush`) before it releases.
    """

    def __init__(self, store: Store, *, clock: Callable[[], _dt.datetime | None]) -> None:
        self.store = store
        """The store behind the server."""
        self.lock = CommittingLock(self.flush)
        """The server's lock: every hold ends with a commit."""
        self._clock = clock
        self._saved_clock: _dt.datetime | None = None
        self._touched: dict[str, Environment] = {}
        self._watched: dict[str, Environment] = {}
        self._changes: list[tuple[str, EnvironmentChanges]] = []
        self._puts: dict[tuple[str, str], str] = {}
        self._deletes: set[tuple[str, str]] = set()
        self._records: Mapping[str, Mapping[str, Any]] = {}
        self._clear = False

    def load(self, profile: Profile) -> Snapshot:
        """The store's snapshot; its clock and keyed records become the saved state."""
        snapshot = self.store.load(profile)
        self._saved_clock = snapshot.clock
        self._records = snapshot.records
        return snapshot

    def restore(
        self, profile: Profile, build: Callable[[str, Saved], Environment]
    ) -> tuple[_dt.datetime | None, dict[str, Environment]]:
        """The saved clock and every environment rebuilt by ``build`` (a StateFileError if not)."""
        if not self.store.durable:
            return None, {}  # (nothing was ever committed: a store in memory starts empty)
        from workstate.server._sqlite import Saved

        snapshot = self.load(profile)
        now, path = snapshot.clock, getattr(self.store, "path", "")
        if now is None:
            if snapshot.environments:
                raise StateFileError(path, "holds environments but no clock; it is damaged")
            return None, {}
        environments = {}
        for environment_id, (state, items) in snapshot.environments.items():
            saved = Saved(now=now, state=state, items=items)
            try:
                environments[environment_id] = build(environment_id, saved)
            except WorkstateError as exc:
                raise StateFileError(path, f"does not restore: {exc.message}") from None
        return now, environments

    def records(
        self, kind: str, parse: Callable[[Any], Any] | None = None, *, forget: bool = False
    ) -> dict[str, Any]:
        """The keyed records of ``kind`` loaded at start-up: key → JSON value (or ``parse``'s
        answer for it; a record it refuses is a :class:`StateFileError` naming it).  With
        ``forget`` they are handed over once: the keeper lets go of its copy (a state file's
        sessions would otherwise be held twice for the server's life)."""
        loaded = self._records.get(kind, {})
        if forget and kind in self._records:
            self._records = {k: v for k, v in self._records.items() if k != kind}
        if parse is None:
            return dict(loaded)
        out = {}
        for key, value in loaded.items():
            try:
                out[key] = parse(value)
            except (WorkstateError, KeyError, TypeError, ValueError) as exc:
                problem = exc.message if isinstance(exc, WorkstateError) else repr(exc)
                raise StateFileError(
                    getattr(self.store, "path", ""),
                    f"the {kind} record {key!r} does not restore: {problem}",
                ) from None
        return out

    def record(self, kind: str, key: str) -> Any:
        """The keyed record (``kind``, ``key``) as staged or loaded at start-up; None if none."""
        if (kind, key) in self._puts:
            return json.loads(self._puts[kind, key])
        if (kind, key) in self._deletes:
            return None
        return self._records.get(kind, {}).get(key)

    def clear(self) -> None:
        """Forget everything, in the store too, with the next commit (the server's reset)."""
        self._touched.clear()
        self._watched.clear()
        self._changes.clear()
        self._puts.clear()
        self._deletes.clear()
        self._records = {}
        self._clear = True

    def touched(self, environment_id: str, env: Environment) -> None:
        """Note that ``env`` is being touched under the lock: its changes go in the commit."""
        self._touched[environment_id] = env

    def watch(self, environment_id: str, env: Environment) -> None:
        """Commit ``env``'s changes with every commit from now on, touched or not.

        For an environment handed out to code that may change it outside a request (a test
        holding :meth:`MockServer.environment <workstate.server.MockServer.environment>`'s
        answer): its changes are committed with the next hold of the lock, whatever it touches.
        """
        self._watched[environment_id] = env

    def discard(self, environment_id: str, *records: tuple[str, str]) -> None:
        """Forget a new environment that a refused first write made, and its staged ``records``
        (``(kind, key)`` pairs): nothing of it goes in the commit."""
        self._touched.pop(environment_id, None)
        self._watched.pop(environment_id, None)
        for record in records:
            self._puts.pop(record, None)

    def put(self, kind: str, key: str, value: Any) -> None:
        """Stage the JSON-able ``value`` under (``kind``, ``key``), committed with this call."""
        if not self.store.durable:
            return  # memory is the state: nothing to stage (a poll mints a token record)
        text = _dumps(value)  # now: a value that is not JSON fails in the caller, not the commit
        self._deletes.discard((kind, key))
        self._puts[kind, key] = text

    def delete(self, kind: str, key: str) -> None:
        """Stage the deletion of (``kind``, ``key``), committed with this call."""
        if not self.store.durable:
            return  # memory is the state (an item that leaves takes its tokens' records)
        self._puts.pop((kind, key), None)
        self._deletes.add((kind, key))

    def flush(self) -> None:
        """Commit what changed under the lock; a 500 (keeping it for the next try) on failure."""
        if not self.store.durable:
            # Memory is the state: nothing to collect (the environments track no changes) and
            # nowhere to write.  This runs at every release of the lock, so it must be cheap.
            self._touched.clear()
            self._puts.clear()
            self._deletes.clear()
            self._clear = False
            return
        touched = self._touched
        if self._watched:
            touched.update(self._watched)
        if touched:
            for environment_id, env in touched.items():
                changes = env.take_changes()
                if changes:
                    self._changes.append((environment_id, changes))
            touched.clear()
        clock = self._clock()
        moved = clock != self._saved_clock
        if not (self._changes or moved or self._puts or self._deletes or self._clear):
            return
        from workstate.server._sqlite import Batch  # (loaded: the store is durable)

        batch = Batch(
            clear=self._clear,
            clock=clock if moved else None,
            changes=tuple(self._changes),
            puts=dict(self._puts),
            deletes=frozenset(self._deletes),
        )
        try:
            self.store.commit(batch)
        except Exception as exc:
            _log.exception("the state could not be committed")
            raise WorkstateError(
                f"the mock server could not write its state file ({exc}); the change is kept "
                "in memory and written with the next successful commit",
                status=500,
            ) from None
        self._saved_clock = clock
        self._clear = False
        self._changes.clear()
        self._puts.clear()
        self._deletes.clear()


class CommittingLock:
    """A re-entrant lock that runs ``on_release`` before its outermost hold is released.

    The mock server touches its environments only while holding its lock and answers only
    after releasing it, so committing here puts every change on disk before its answer.
    """

    def __init__(self, on_release: Callable[[], None]) -> None:
        self._lock = threading.RLock()
        self._depth = 0
        self._on_release = on_release

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        """Acquire the lock, as :meth:`threading.RLock.acquire`."""
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._depth += 1
        return got

    def release(self) -> None:
        """Commit (if this is the outermost hold), then release, even if the commit fails."""
        try:
            if self._depth == 1:
                self._on_release()
        finally:
            self._depth -= 1
            self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
