"""``python -m workstate serve``: run the mock server until interrupted.

Theory of operation
-------------------
Parse the options, build a :class:`~workstate.server.MockServer`, bind the listening socket
*before* announcing it (so the printed address is one that accepts connections, and ``--port 0``
prints the port the system chose), then hand the socket to uvicorn, which serves until Ctrl-C
or SIGTERM and shuts down gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TextIO

import uvicorn

from workstate._errors import InvalidInputError
from workstate._profile_cli import (
    ProfileOptionError,
    add_profile_options,
    journal_header,
    profile_from_options,
)
from workstate._time import ManualClock, SystemClock, parse_time
from workstate.server import _render, _stack
from workstate.server._app import MockServer, base_url, bind
from workstate.server._limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_READ_TIMEOUT
from workstate.server._store import StateFileError

__all__ = ["main"]

_LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workstate serve",
        description="Serve the work API of self-hosted sandbox environments from memory, "
        "for testing workers. Point the SDK at it with base_url.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one [8765]")
    add_profile_options(parser)
    parser.add_argument(
        "--api-key",
        default=None,
        help="require this key (x-api-key or Authorization: Bearer); default: accept any",
    )
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        metavar="N",
        help=f"refuse request bodies over N bytes with 413 [{DEFAULT_MAX_BODY_BYTES}]",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=DEFAULT_READ_TIMEOUT,
        metavar="SECONDS",
        help="close a connection whose request head, or body, stalls this long "
        f"[{DEFAULT_READ_TIMEOUT:g}]",
    )
    parser.add_argument("--log-level", choices=_LOG_LEVELS, default="info", help="[info]")
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log one line per request (at info level; it cost 6-21%% of the throughput in "
        "benchmarks/server.py) [off]",
    )
    parser.add_argument(
        "--stack",
        choices=_stack.STACKS,
        default="auto",
        help="fast: uvloop and orjson (the 'fast' extra); plain: asyncio and json; auto: fast "
        "when installed [auto]",
    )
    parser.add_argument(
        "--clock",
        choices=("real", "manual"),
        default="real",
        help="real time, or a clock that only POST /mock/clock moves [real]",
    )
    parser.add_argument(
        "--start",
        default=None,
        metavar="RFC3339",
        help="with --clock manual: the clock's start time [the current time]; with a state "
        "file that holds a time, the clock resumes there instead",
    )
    parser.add_argument(
        "--state",
        default=None,
        metavar="FILE",
        help="keep the state in this SQLite file (created if missing) and restore it on start "
        "[in memory only]",
    )
    parser.add_argument(
        "--state-sync",
        choices=("normal", "full"),
        default="normal",
        help="normal: every answered call survives a kill of the server; full: also a power "
        "cut, at a disk flush per call [normal]",
    )
    parser.add_argument(
        "--retain-stopped",
        type=_count_or_all,
        default=10_000,
        metavar="N",
        help="keep the newest N stopped items per environment, or 'all' [10000]",
    )
    parser.add_argument(
        "--retain-stopped-seconds",
        type=float,
        default=None,
        metavar="S",
        help="drop stopped items stopped more than S seconds ago [no age limit]",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="make ids, request ids and fault draws the same from run to run [random]",
    )
    parser.add_argument(
        "--journal",
        default=None,
        metavar="FILE",
        help="write every request and its outcome to FILE as JSON Lines, after a header "
        "line with the profile served (check it with: python -m workstate check FILE)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="JSON",
        help='a fault rule, as POST /mock/faults takes it, e.g. \'{"match": {"operation": '
        '"heartbeat"}, "times": 1, "effect": {"status": 503}}\' (repeatable)',
    )
    return parser


def _journal_writer(stream: TextIO) -> Callable[[dict[str, Any]], None]:
    """A journal sink writing one JSON line per entry, flushed (the file may be read live)."""

    def write(entry: dict[str, Any]) -> None:
        stream.write(json.dumps(entry, separators=(",", ":")) + "\n")
        stream.flush()

    return write


def _count_or_all(text: str) -> int | None:
    if text == "all":
        return None
    return int(text)  # argparse turns a ValueError into a usage error naming the option


class _Stopped(Exception):
    """SIGTERM, raised as an exception once uvicorn has shut down gracefully."""


def _raise_stopped(signum: int, frame: object) -> None:
    raise _Stopped


def _reads_from_the_heap() -> None:
    """Have glibc's malloc serve asyncio's read buffers from its heap, not a mapping each.

    asyncio's selector transport reads with ``sock.recv(256 KiB)``: a bytes object that size,
    shrunk to what arrived.  glibc maps a block that large with ``mmap`` whenever its heap has
    no room for it (the threshold starts at 128 KiB), and shrinks and frees it with
    ``mremap`` and ``munmap``: three system calls and one or two page faults for a read.
    Whether the heap had room depended on what start-up happened to allocate and free: in 10
    of 21 ``serve`` runs under wrk every other request paid for it, 15-25 µs a request on
    the plain stack (the floor and the server without the harness never did; none of 16
    runs since this).  glibc raises its threshold to the size of a mapped block when one is
    freed (up to 32 MiB), and then extends its heap instead and keeps up to twice that free at
    its top: so one block of 4 MiB, mapped and freed here, makes the reads come from the heap
    from then on.  (``bytes`` asks for zeroed memory, which a fresh mapping is: no page is
    touched.)  Other allocators are not affected; uvloop (the fast stack) reads into a buffer
    of its own.
    """
    block = bytes(4 << 20)
    del block


@contextlib.contextmanager
def _quiet_collector() -> Iterator[None]:
    """Garbage collections that walk only what is new, and none that waits too long.

    A full collection walks every object the collector tracks, and runs on the event loop in
    the middle of some request: with 40,000 items and a full journal one took 84 ms.  So the
    objects start-up built (a restored state file's items) are frozen out of the collector's
    walks, and so is whatever survives each collection of the middle or the oldest generation
    (:func:`_freeze_survivors`): no collection walks what has survived two.  No generation
    waits long for its collection: see :class:`_CollectionTimer`, which the server's loop
    runs.  Put back on exit, for a caller (a test) that goes on in the same process.
    """
    gc.freeze()
    gc.callbacks.append(_freeze_survivors)
    try:
        yield
    finally:
        gc.callbacks.remove(_freeze_survivors)
        gc.unfreeze()


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    """After a collection of the middle or the oldest generation, freeze what survived it.

    What survives two collections is the server's state (items, records, sessions, journal
    entries), and walking it again costs more than one would think: the objects a request
    leaves lie scattered over a large heap, so the walk misses the cache on each one and on
    each object it points to, about 0.8 us an object.  Frozen after full collections only,
    the survivors of ~10 middle collections waited for the next full one, which then walked
    them all: 20-55 ms in the middle of some request, every few seconds under load (poll+ack
    p99 at 10 connections 6-22 ms against the floor's 2 ms; with this rule 2.5-2.7 ms).
    Frozen objects are still freed when their last reference goes (the server's items,
    records and journal entries are), but a reference cycle among them is never collected:
    the server's requests and long-lived data make none (``tests/test_server_stack.py`` runs
    a mix of every kind of request with the collector off and finds no garbage)."""
    if phase == "stop" and info["generation"] >= 1:
        gc.freeze()


class _CollectionTimer:
    """A collection on the loop whenever none has run for :attr:`INTERVAL` seconds.

    CPython starts a collection when its count of tracked objects allocated minus those freed
    passes a threshold.  A request that frees an old object for each new one it keeps leaves
    that count where it was while the young generation grows: a mass expiry does, since each
    request replaces the records of the 16 leases it applies (``EXPIRY_SLICE``; the old ones
    were frozen long ago, the new ones are young).  In a lapse of 250,000 leases the young
    generation grew from 68 to 31,798 objects over 1,750 requests before one collection walked
    it all (159 ms, in the middle of a request), and with young collections alone the middle
    generation then grew the same way (77 ms).  So a tick that finds no collection since the
    last one runs the collection Python's own rule would pick (:func:`_due_generation`): no
    generation goes uncollected for long, and under steady load Python's own collections come
    first and the tick does nothing.  Measured in ``benchmarks/server.py``'s mass expiry:
    heartbeat p99 during the lapse went from 24x its quiet value to 2x.
    """

    INTERVAL = 0.01
    _handle: asyncio.TimerHandle  # the next tick, from start on

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._collected = False

    def start(self) -> None:
        gc.callbacks.append(self._seen)
        self._handle = self._loop.call_later(self.INTERVAL, self._tick)

    def stop(self) -> None:
        self._handle.cancel()
        gc.callbacks.remove(self._seen)

    def _seen(self, phase: str, info: dict[str, Any]) -> None:
        self._collected = True

    def _tick(self) -> None:
        if not self._collected and gc.isenabled():  # (a caller that turned it off wants none)
            gc.collect(_due_generation(gc.get_count(), gc.get_threshold()))
        self._collected = False
        self._handle = self._loop.call_later(self.INTERVAL, self._tick)


def _due_generation(counts: tuple[int, ...], thresholds: tuple[int, ...]) -> int:
    """The generation Python's rule collects at these counts: the oldest one whose count
    (collections of the one below it) passed its threshold, else the young one.  (Python
    also puts off a full collection until a quarter of the long-lived objects are new.  That
    share is not visible from Python; a full collection run early costs little, since after
    :func:`_freeze_survivors` it walks only what survived one collection since the last.)"""
    for generation in (2, 1):
        if counts[generation] > thresholds[generation]:
            return generation
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, with a :class:`_CollectionTimer` on its loop while it serves."""

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        timer = _CollectionTimer(asyncio.get_running_loop())
        timer.start()
        try:
            await super().serve(sockets)
        finally:
            timer.stop()


def serve(
    server: MockServer,
    sock: socket.socket,
    log_level: str,
    *,
    stack: str = "plain",
    access_log: bool = False,
) -> None:
    """Run uvicorn on ``sock`` until it is told to stop (Ctrl-C, SIGTERM).

    ``stack`` is a resolved stack (``plain`` or ``fast``, see :mod:`workstate.server._stack`);
    ``access_log`` turns on uvicorn's line per request.  uvicorn handles both signals with a
    graceful shutdown and then raises the signal again for the handler that was there before;
    for a command, that stop is the normal end, so the handlers here turn it into a plain
    return (exit status 0, no traceback).
    """
    _render.use_orjson(stack == "fast")
    config = uvicorn.Config(
        server.app,
        log_level=log_level,
        lifespan="off",
        loop=_stack.loop(stack),
        access_log=access_log,
        **server.uvicorn_options(),
    )
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_stopped) if main_thread else None
    try:
        _reads_from_the_heap()
        with _quiet_collector():
            _Server(config).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str]) -> int:
    """Run the mock server with the options in ``argv``; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(list(argv))
    try:
        stack = _stack.resolve(args.stack)
    except _stack.StackUnavailableError as exc:
        parser.error(f"--stack fast: {exc}")
    clock: SystemClock | ManualClock
    if args.clock == "manual":
        try:
            start = SystemClock().now() if args.start is None else parse_time(args.start)
        except InvalidInputError as exc:
            parser.error(f"--start: {exc.message}")
        clock = ManualClock(start)
    elif args.start is not None:
        parser.error("--start needs --clock manual")
    else:
        clock = SystemClock()
    try:
        profile = profile_from_options(args)
    except ProfileOptionError as exc:
        parser.error(str(exc))
    try:
        server = MockServer(
            profile=profile,
            clock=clock,
            api_key=args.api_key,
            seed=args.seed,
            state=args.state,
            state_sync=args.state_sync,
            retain_stopped=args.retain_stopped,
            retain_stopped_seconds=args.retain_stopped_seconds,
            max_body_bytes=args.max_body_bytes,
            read_timeout=args.read_timeout,
        )
    except InvalidInputError as exc:  # a key no request could carry, a limit out of range
        parser.error(f"--{exc.key.replace('_', '-')}: {exc.message}")
    except ValueError as exc:
        parser.error(str(exc))
    except StateFileError as exc:
        print(f"cannot start: {exc}", file=sys.stderr)
        return 1
    p = server.profile
    for text in args.fault:
        try:
            server.harness.add_fault(json.loads(text))
        except ValueError as exc:
            parser.error(f"--fault {text}: not JSON: {exc}")
        except InvalidInputError as exc:
            parser.error(f"--fault {text}: {exc.message}")
    journal: TextIO | None = None
    if args.journal is not None:
        try:
            journal = open(args.journal, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
        except OSError as exc:
            print(f"cannot write the journal {args.journal}: {exc}", file=sys.stderr)
            return 1
        server.harness.journal.sink = _journal_writer(journal)
    try:
        sock = bind(args.host, args.port)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        if journal is not None:
            journal.close()
        return 1
    if journal is not None:
        # The profile first, so that check needs none of the options it was served with.
        journal.write(json.dumps(journal_header(p), separators=(",", ":")) + "\n")
        journal.flush()
    url = base_url(sock)
    key = ", API key required" if args.api_key is not None else ""
    if args.seed is not None:
        key += f", seed {args.seed}"
    if args.state is not None:
        key += f", state in {args.state}"
    print(
        f"workstate mock server listening on {url} "
        f"(profile {p.name}, {args.clock} clock{key}, lease TTL {p.default_ttl_seconds} s "
        f"in {p.min_ttl_seconds}-{p.max_ttl_seconds} s; {_stack.describe(stack)})\n"
        f"  SDK: anthropic.Anthropic(base_url={url!r}, api_key=...)\n"
        f"  queue an item: curl -X POST {url}/mock/environments/env_demo/work"
        # With a key required, the line a newcomer copies must carry it, or it answers 401.
        + (" -H 'x-api-key: <the --api-key>'" if args.api_key is not None else ""),
        flush=True,
    )
    try:
        serve(server, sock, args.log_level, stack=stack, access_log=args.access_log)
    finally:
        sock.close()
        if journal is not None:
            journal.close()
        server.close()
    return 0
