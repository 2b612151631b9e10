"""The mock server under an external load generator (wrk), against a bare Starlette floor.

Run by hand (not in CI; needs ``wrk``: ``apt-get install -y wrk``)::

    python benchmarks/server.py            # about 10 minutes: 3 rounds, 5 s per run
    python benchmarks/server.py --quick    # about 2 minutes: 1 round, 2 s per run, smaller expiry
    python benchmarks/server.py --stacks plain,fast --connections 1,10,100 --rounds 3

What it runs.  Two servers per stack, each pinned to core 0 (``taskset -c 0``): ``python -m
workstate serve`` and ``benchmarks/floor.py``, a bare Starlette app with the same routes, the
same uvicorn settings and HTTP stack, and answers of the same size and shape (captured from the
workstate server at the start of the run), but no workstate code.  wrk runs pinned to core 1
with one thread and 1, 10 and 100 connections, driving Lua scripts from ``benchmarks/wrk/``:

* ``heartbeat``: ``POST .../work/{id}/heartbeat``, round robin over as many pre-acked items as
  connections (so no two requests in flight touch one item);
* ``poll_ack``: poll, and ack what the poll delivered (the script's ``response()`` reads the
  id); every run gets its own environment, filled first to a depth the run cannot drain (the
  script counts empty polls, and the run is flagged if there were any);
* ``get``: ``GET .../work/{id}`` over the same items.

Rounds alternate which server goes first; every figure is the median over rounds.  Printed per
stack, scenario and connection count: requests/s, p50/p99/max latency, server CPU per request
(``/proc/<pid>/stat`` utime+stime over the run) and page faults per request (its minflt), the
server core's busy share (the floor near
100% shows the server, not wrk, is the bottleneck; wrk's own CPU share is printed too) and the
workstate/floor ratios.  With ``--peel`` a third server runs in the same rounds,
``benchmarks/unharnessed.py`` (``serve`` without the harness's middleware), and a second table
per stack splits the gap to the floor into the harness's share and the rest.

Then, on the chosen (first) stack: the cost of the access log (``serve --access-log``,
heartbeats at 10 connections), and a mass expiry: heartbeat p99 at 10 connections while
250,000 leases lapse at once, against the same server's quiet p99 (``benchmarks/
mass_expiry_server.py`` builds that state in process, then serves it exactly as ``serve`` does).

Stacks: ``plain`` is uvicorn's h11 parser on asyncio with the standard library's json; ``fast``
is what ``pip install 'sandbox-workstate[fast]'`` brings and ``serve`` then uses (see
``docs/performance.md``).  The floor always runs the same stack as the server it is compared
with, so each ratio compares like with like.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WRK_DIR = HERE / "wrk"
SERVER_CORE, LOAD_CORE = "0", "1"
HB_ENV = "env_bench"

# What each stack means for the two servers: serve's flag, and the floor's uvicorn options.
STACKS: dict[str, dict[str, Any]] = {
    "plain": {"serve": ["--stack", "plain"], "floor": ["--loop", "asyncio", "--http", "h11"]},
    "fast": {
        "serve": ["--stack", "fast"],
        "floor": ["--loop", "uvloop", "--http", "h11", "--json", "orjson"],
    },
}


# ------------------------------------------------------------------------------ processes
def _stat(pid: int) -> list[str]:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()  # from field 3 (state) on


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid``."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def minor_faults(pid: int) -> int:
    """Page faults of process ``pid`` served without I/O (a fresh page of memory, say)."""
    return int(_stat(pid)[7])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(core: str, argv: list[str]) -> list[str]:
    return ["taskset", "-c", core, *argv] if shutil.which("taskset") else argv


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited early with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise SystemExit(f"nothing listens on port {port} after {timeout} s")


@contextlib.contextmanager
def running(argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(pinned(SERVER_CORE, argv), stdout=subprocess.DEVNULL)
    try:
        wait_listening(port, proc)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def workstate_argv(port: int, *extra: str, peeled: bool = False) -> list[str]:
    command = [str(HERE / "unharnessed.py")] if peeled else ["-m", "workstate", "serve"]
    return [
        sys.executable, *command, "--port", str(port),
        "--log-level", "warning", "--default-ttl", "3600", *extra,
    ]  # fmt: skip


def floor_argv(port: int, samples: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(HERE / "floor.py"), "--port", str(port),
        "--samples", str(samples), *extra,
    ]  # fmt: skip


# ------------------------------------------------------------------------------ setup calls
class Client:
    """A keep-alive HTTP/1.1 client for the setup calls (not the measured load)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str) -> Any:
        self.conn.request(method, path, headers={"content-length": "0"})
        response = self.conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise SystemExit(f"{method} {path}: {response.status} {body[:300]!r}")
        return json.loads(body)

    def close(self) -> None:
        self.conn.close()


def acked_items(port: int, env: str, count: int) -> tuple[list[str], dict[str, Any]]:
    """``count`` items created, polled and acked; their ids, and one answer of each kind."""
    client = Client(port)
    ids: list[str] = []
    samples: dict[str, Any] = {}
    for _ in range(count):
        client.call("POST", f"/mock/environments/{env}/work")
        polled = client.call("GET", f"/v1/environments/{env}/work/poll")
        samples.setdefault("poll", polled)
        samples.setdefault(
            "ack", client.call("POST", f"/v1/environments/{env}/work/{polled['id']}/ack")
        )
        ids.append(polled["id"])
    samples["heartbeat"] = client.call("POST", f"/v1/environments/{env}/work/{ids[0]}/heartbeat")
    samples["get"] = client.call("GET", f"/v1/environments/{env}/work/{ids[0]}")
    client.close()
    return ids, samples


def queued(port: int, env: str) -> int:
    client = Client(port)
    try:
        return int(client.call("GET", f"/v1/environments/{env}/work/stats")["depth"])
    finally:
        client.close()


# ------------------------------------------------------------------------------ wrk
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def wrk(
    port: int, script: str, connections: int, duration: float, *args: str, pid: int | None = None
) -> dict[str, Any]:
    """One wrk run; its rate, latencies, and the server's and wrk's CPU over it."""
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency",
        "--timeout", "30s", "-s", str(WRK_DIR / script), f"http://127.0.0.1:{port}", "--", *args,
    ]  # fmt: skip
    before = cpu_seconds(pid) if pid else 0.0
    faults = minor_faults(pid) if pid else 0
    children = os.times()
    begin = time.monotonic()
    out = subprocess.run(pinned(LOAD_CORE, argv), capture_output=True, text=True, check=True).stdout
    elapsed = time.monotonic() - begin
    after = os.times()
    server_cpu = (cpu_seconds(pid) - before) if pid else 0.0
    faults = (minor_faults(pid) - faults) if pid else 0
    wrk_cpu = (after.children_user - children.children_user) + (
        after.children_system - children.children_system
    )
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    result: dict[str, Any] = {
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": requests,
        "max": _ms(re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out).group(1)),  # type: ignore[union-attr]
        "server_cpu_us": server_cpu / max(requests, 1) * 1e6,
        "server_busy": server_cpu / elapsed,
        # (A server that maps fresh memory for a request shows here: see docs/performance.md.)
        "faults_per_request": faults / max(requests, 1),
        "wrk_busy": wrk_cpu / elapsed,
        "errors": _errors(out),
    }
    for pct in ("50", "99"):
        result[f"p{pct}"] = _ms(re.search(rf"^\s+{pct}%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    found = re.search(r"POLL_ACK delivered=(\d+) empty=(\d+)", out)
    if found:
        result["delivered"], result["empty"] = int(found.group(1)), int(found.group(2))
    return result


def _errors(out: str) -> int:
    total = 0
    for pattern in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        found = re.search(pattern, out)
        if found:
            total += sum(int(n) for n in re.findall(r"\d+", found.group(1)))
    return total


# ------------------------------------------------------------------------------ one stack
class Stack:
    """The workstate server and the floor for one stack, and the runs made against them."""

    def __init__(self, name: str, args: argparse.Namespace, tmp: Path) -> None:
        self.name, self.args, self.tmp = name, args, tmp
        self.results: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
        self.fill_count = 0
        self.ids: dict[str, list[str]] = {}  # per server: the pre-acked items it heartbeats
        self.pair_rate = 3000.0  # poll+ack pairs/s guess, refined by each run

    def run(self) -> None:
        args, spec = self.args, STACKS[self.name]
        most = max(args.connections)
        ws_port, floor_port = free_port(), free_port()
        serve = [*spec["serve"], *shlex.split(args.serve_args)]
        with contextlib.ExitStack() as up:
            ws = up.enter_context(running(workstate_argv(ws_port, *serve), ws_port))
            ids, samples = acked_items(ws_port, HB_ENV, most)
            self.ids = {"workstate": ids, "floor": ids}  # (the floor takes any id)
            sample_file = self.tmp / f"samples-{self.name}.json"
            sample_file.write_text(json.dumps(samples))
            fl = up.enter_context(
                running(floor_argv(floor_port, sample_file, *spec["floor"]), floor_port)
            )
            servers = {"floor": (floor_port, fl.pid), "workstate": (ws_port, ws.pid)}
            if args.peel:
                bare_port = free_port()
                bare = up.enter_context(
                    running(workstate_argv(bare_port, *serve, peeled=True), bare_port)
                )
                self.ids["unharnessed"] = acked_items(bare_port, HB_ENV, most)[0]
                servers["unharnessed"] = (bare_port, bare.pid)
            for who, (port, pid) in servers.items():  # warm them up
                wrk(port, "heartbeat.lua", 10, 1, HB_ENV, ",".join(self.ids[who][:10]), pid=pid)
            names = list(servers)
            for level in args.connections:
                for round_ in range(args.rounds):
                    order = names if round_ % 2 == 0 else names[::-1]
                    for scenario in args.scenarios:
                        for who in order:
                            port, pid = servers[who]
                            result = self.one(scenario, who, port, pid, level)
                            self.results.setdefault((scenario, level, who), []).append(result)
                            progress(self.name, scenario, level, round_, who, result)

    def one(self, scenario: str, who: str, port: int, pid: int, level: int) -> dict[str, Any]:
        duration = self.args.duration
        ids = ",".join(self.ids[who][:level])
        if scenario == "heartbeat":
            return wrk(port, "heartbeat.lua", level, duration, HB_ENV, ids, pid=pid)
        if scenario == "get":
            return wrk(port, "get.lua", level, duration, HB_ENV, ids, pid=pid)
        env = HB_ENV
        if who != "floor":  # a workstate server, harnessed or not: a queue of its own
            self.fill_count += 1
            env = f"env_queue_{self.fill_count}"
            self.fill(port, env, int(self.pair_rate * duration * 1.5) + 1000)
        result = wrk(port, "poll_ack.lua", level, duration, env, pid=pid)
        if who != "floor":
            self.pair_rate = max(self.pair_rate, result["rate"] / 2)
        return result

    def fill(self, port: int, env: str, depth: int) -> None:
        """Queue at least ``depth`` items in ``env`` (with wrk: one by one would take minutes)."""
        while (have := queued(port, env)) < depth:
            seconds = max(0.5, min(30.0, (depth - have) / 2500))
            wrk(port, "create.lua", 10, seconds, env)


def progress(
    stack: str, scenario: str, level: int, round_: int, who: str, r: dict[str, Any]
) -> None:
    print(
        f"  [{stack} {scenario} c={level} round {round_ + 1} {who}] {r['rate']:.0f} req/s, "
        f"p99 {r['p99']:.2f} ms, server {r['server_cpu_us']:.0f} µs/req, "
        f"{r['faults_per_request']:.1f} page faults/req, "
        f"busy {r['server_busy']:.0%}, wrk {r['wrk_busy']:.0%}"
        + (f", EMPTY POLLS {r['empty']}" if r.get("empty") else "")
        + (f", ERRORS {r['errors']}" if r["errors"] else ""),
        file=sys.stderr,
        flush=True,
    )


def median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def spread(floor: list[dict[str, Any]], other: list[dict[str, Any]]) -> str:
    """The lowest and highest of the rounds' own ratios (each round's runs are back to back):
    how far the host moved the ratio in this run."""
    ratios = [o["rate"] / f["rate"] for f, o in zip(floor, other, strict=True)]
    return f"{min(ratios):.2f}–{max(ratios):.2f}"


def report(stack: Stack) -> list[str]:
    lines = [
        f"\n### stack {stack.name} (`serve {' '.join(STACKS[stack.name]['serve'])}`; "
        f"floor `{' '.join(STACKS[stack.name]['floor'])}`)",
        "",
        "| scenario | conns | floor req/s | workstate req/s | **ratio** | rounds' ratios "
        "| p50 ms floor / ws "
        "| p99 ms floor / ws | max ms floor / ws | server µs/req floor / ws | page faults/req "
        "floor / ws | server core busy floor / ws | wrk busy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in stack.args.scenarios:
        for level in stack.args.connections:
            f = stack.results[(scenario, level, "floor")]
            w = stack.results[(scenario, level, "workstate")]
            flag = ""
            if any(r.get("empty") for r in w) or any(r["errors"] for r in f + w):
                flag = " (!)"
            lines.append(
                f"| {scenario} | {level} | {median(f, 'rate'):,.0f} | {median(w, 'rate'):,.0f} "
                f"| **{median(w, 'rate') / median(f, 'rate'):.2f}**{flag} | {spread(f, w)} "
                f"| {median(f, 'p50'):.2f} / {median(w, 'p50'):.2f} "
                f"| {median(f, 'p99'):.2f} / {median(w, 'p99'):.2f} "
                f"| {median(f, 'max'):.1f} / {median(w, 'max'):.1f} "
                f"| {median(f, 'server_cpu_us'):.0f} / {median(w, 'server_cpu_us'):.0f} "
                f"| {median(f, 'faults_per_request'):.1f} / {median(w, 'faults_per_request'):.1f} "
                f"| {median(f, 'server_busy'):.0%} / {median(w, 'server_busy'):.0%} "
                f"| {median(f + w, 'wrk_busy'):.0%} |"
            )
    if stack.args.peel:
        lines += peeled(stack)
    return lines


def peeled(stack: Stack) -> list[str]:
    """The same runs of the server without the harness (``--peel``): what the harness costs,
    and what is left of the gap to the floor without it."""
    lines = [
        "",
        "Without the harness's middleware (`benchmarks/unharnessed.py`: no request ids, fault "
        "rules, API key check or journal):",
        "",
        "| scenario | conns | unharnessed req/s | **ratio to floor** | rounds' ratios "
        "| ratio with the harness | server µs/req floor / unharnessed / ws | harness µs/req |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in stack.args.scenarios:
        for level in stack.args.connections:
            f, w, u = (stack.results[(scenario, level, who)] for who in _WHO)
            rate, cpu = median(f, "rate"), [median(r, "server_cpu_us") for r in (f, u, w)]
            flag = " (!)" if any(r.get("empty") or r["errors"] for r in u) else ""
            lines.append(
                f"| {scenario} | {level} | {median(u, 'rate'):,.0f} "
                f"| **{median(u, 'rate') / rate:.2f}**{flag} | {spread(f, u)} "
                f"| {median(w, 'rate') / rate:.2f} "
                f"| {cpu[0]:.0f} / {cpu[1]:.0f} / {cpu[2]:.0f} | {cpu[2] - cpu[1]:.0f} |"
            )
    return lines


_WHO = ("floor", "workstate", "unharnessed")


# ------------------------------------------------------------------------------ extras
def access_log(args: argparse.Namespace) -> list[str]:
    """Heartbeats at 10 connections, access log off against on (same stack, alternating)."""
    spec = STACKS[args.stacks[0]]
    rates: dict[str, list[float]] = {"off": [], "on": []}
    for round_ in range(args.rounds):
        for mode in ("off", "on") if round_ % 2 == 0 else ("on", "off"):
            port = free_port()
            extra = [
                *spec["serve"],
                *(["--access-log", "--log-level", "info"] if mode == "on" else []),
            ]
            with running(workstate_argv(port, *extra), port) as proc:
                ids, _ = acked_items(port, HB_ENV, 10)
                wrk(port, "heartbeat.lua", 10, 1, HB_ENV, ",".join(ids), pid=proc.pid)
                r = wrk(
                    port, "heartbeat.lua", 10, args.duration, HB_ENV, ",".join(ids), pid=proc.pid
                )
                rates[mode].append(r["rate"])
                print(f"  [access log {mode}] {r['rate']:.0f} req/s", file=sys.stderr, flush=True)
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    return [
        "",
        f"access log (stack {args.stacks[0]}, heartbeat, 10 connections, access lines to "
        f"/dev/null): off {off:,.0f} req/s, on {on:,.0f} req/s: costs {1 - on / off:.0%} "
        "(target <= 10%)",
    ]


def mass_expiry(args: argparse.Namespace) -> list[str]:
    """Heartbeat p99 at 10 connections, quiet and while ``args.mass`` leases lapse at once."""
    spec = STACKS[args.stacks[0]]
    port = free_port()
    info_file = Path(tempfile.mktemp(prefix="mass-", suffix=".json"))
    argv = [
        sys.executable, str(HERE / "mass_expiry_server.py"), "--port", str(port),
        "--items", str(args.mass), "--info", str(info_file), "--quiet-seconds",
        str(args.duration + 3), *spec["serve"],
    ]  # fmt: skip
    print(f"  [mass expiry] building {args.mass:,} leases in process", file=sys.stderr, flush=True)
    with running(argv, port) as proc:
        info = json.loads(info_file.read_text())
        info_file.unlink()
        ids = ",".join(info["ids"])
        wrk(port, "heartbeat.lua", 10, 1, info["environment_id"], ids, pid=proc.pid)
        quiet = wrk(
            port, "heartbeat.lua", 10, args.duration, info["environment_id"], ids, pid=proc.pid
        )
        wait = info["lapse_at"] - time.time() - 0.5
        if wait < 0:
            return [
                "",
                f"mass expiry: the leases lapsed before the quiet run ended ({-wait:.1f} s late)",
            ]
        time.sleep(wait)
        # Long enough that a stall of a few seconds ends inside the run: wrk records only the
        # requests that complete, so a stall still going at the end would vanish from it.
        lapse = wrk(port, "heartbeat.lua", 10, 8, info["environment_id"], ids, pid=proc.pid)
        left = queued(port, info["environment_id"])
    print(f"  [mass expiry] quiet {quiet}, lapse {lapse}", file=sys.stderr, flush=True)
    return [
        "",
        f"mass expiry (stack {args.stacks[0]}, {args.mass:,} leases lapsing at once, heartbeats "
        f"on 10 other items of the same environment, 10 connections; {left:,} items queued "
        "again after the run):",
        f"  quiet:  {quiet['rate']:,.0f} req/s, p50 {quiet['p50']:.2f} ms, "
        f"p99 {quiet['p99']:.2f} ms, max {quiet['max']:.1f} ms",
        f"  lapse:  {lapse['rate']:,.0f} req/s, p50 {lapse['p50']:.2f} ms, "
        f"p99 {lapse['p99']:.2f} ms, max {lapse['max']:.1f} ms (8 s from 0.5 s before the lapse; "
        f"the max is the longest stall, {lapse['server_cpu_us'] * lapse['requests'] / 1e6:.2f} s "
        "of server CPU in all)",
        f"  p99 lapse / quiet = {lapse['p99'] / quiet['p99']:.1f}x (target <= 3x); "
        f"max lapse / quiet p99 = {lapse['max'] / quiet['p99']:.0f}x",
    ]


# ------------------------------------------------------------------------------ stack survey
# The floor alone on each candidate stack: what each package is worth before any workstate code.
SURVEY: dict[str, list[str]] = {
    "uvicorn h11, asyncio, json": ["--loop", "asyncio", "--http", "h11"],
    "uvicorn h11, asyncio, orjson": ["--loop", "asyncio", "--http", "h11", "--json", "orjson"],
    "uvicorn h11, uvloop, orjson": ["--loop", "uvloop", "--http", "h11", "--json", "orjson"],
    "uvicorn httptools, uvloop, orjson": [
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--json",
        "orjson",
    ],
}


def tree_cpu(pid: int) -> float:
    """CPU seconds of ``pid`` and its descendants (granian serves from a child process)."""
    total = cpu_seconds(pid)
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += tree_cpu(int(child))
    return total


def survey(args: argparse.Namespace, tmp: Path) -> list[str]:
    """Heartbeat-shaped requests at 10 connections against the floor on each stack."""
    port = free_port()
    with running(workstate_argv(port, "--stack", "plain"), port):
        ids, samples = acked_items(port, HB_ENV, 10)
    sample_file = tmp / "samples-survey.json"
    sample_file.write_text(json.dumps(samples))
    variants: dict[str, tuple[list[str], dict[str, str]]] = {
        name: (floor_argv(0, sample_file, *extra), {}) for name, extra in SURVEY.items()
    }
    if shutil.which("granian") or (Path(sys.executable).parent / "granian").exists():
        granian = str(Path(sys.executable).parent / "granian")
        for name, loop in (("granian, uvloop, orjson", "uvloop"),):
            variants[name] = (
                [
                    granian,
                    "--interface",
                    "asgi",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    "0",
                    "--workers",
                    "1",
                    "--runtime-threads",
                    "1",
                    "--loop",
                    loop,
                    "--no-log",
                    "--working-dir",
                    str(HERE),
                    "--factory",
                    "floor:granian_app",
                ],
                {"FLOOR_SAMPLES": str(sample_file), "FLOOR_JSON": "orjson"},
            )
    rates: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, (argv, env) in variants.items():
            port = free_port()
            argv = [
                str(port) if a == "0" and argv[i - 1] == "--port" else a for i, a in enumerate(argv)
            ]
            proc = subprocess.Popen(
                pinned(SERVER_CORE, argv), stdout=subprocess.DEVNULL, env={**os.environ, **env}
            )
            try:
                wait_listening(port, proc)
                wrk(port, "heartbeat.lua", 10, 1, HB_ENV, ",".join(ids))
                before = tree_cpu(proc.pid)
                r = wrk(port, "heartbeat.lua", 10, args.duration, HB_ENV, ",".join(ids))
                cpu = (tree_cpu(proc.pid) - before) / max(r["requests"], 1) * 1e6
                rates[name].append((r["rate"], cpu))
                print(f"  [survey {name}] {r['rate']:.0f} req/s, {cpu:.0f} µs/req", file=sys.stderr)
            finally:
                proc.terminate()
                proc.wait(10)
    base = statistics.median(r for r, _ in rates[next(iter(variants))])
    lines = [
        "",
        "| floor stack (heartbeat, 10 connections) | req/s | vs plain | server CPU µs/req |",
    ]
    lines.append("|---|---:|---:|---:|")
    for name, runs in rates.items():
        rate = statistics.median(r for r, _ in runs)
        cpu = statistics.median(c for _, c in runs)
        lines.append(f"| {name} | {rate:,.0f} | {rate / base:.2f} | {cpu:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s, 25k-lease expiry")
    parser.add_argument("--duration", type=float, default=None, help="seconds per run [5]")
    parser.add_argument("--rounds", type=int, default=None, help="[3]")
    parser.add_argument("--connections", default="1,10,100")
    parser.add_argument("--scenarios", default="heartbeat,poll_ack,get")
    parser.add_argument("--stacks", default="auto", help="plain, fast or both (plain,fast) [auto]")
    parser.add_argument("--mass", type=int, default=None, help="leases in the expiry [250000]")
    parser.add_argument("--no-extras", action="store_true", help="skip access log and expiry")
    parser.add_argument("--survey", action="store_true", help="only the floor on each stack")
    parser.add_argument(
        "--peel",
        action="store_true",
        help="also run serve without the harness's middleware (what the harness costs)",
    )
    parser.add_argument("--extras-only", action="store_true", help="only access log and expiry")
    parser.add_argument(
        "--serve-args",
        default="",
        help="more options for serve, e.g. '--state /tmp/b.db' (its file must not exist yet)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit(
            "wrk is not installed: on Debian or Ubuntu, apt-get install -y wrk "
            "(https://github.com/wg/wrk builds it elsewhere)"
        )
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.mass = args.mass or (25_000 if args.quick else 250_000)
    args.connections = [int(n) for n in args.connections.split(",")]
    args.scenarios = args.scenarios.split(",")
    if args.stacks == "auto":
        fast = all(importlib.util.find_spec(name) for name in ("orjson", "uvloop"))
        args.stacks = "plain,fast" if fast else "plain"
    args.stacks = args.stacks.split(",")
    if len(os.sched_getaffinity(0)) < 2:
        print("warning: fewer than 2 cores; wrk and the server share one", file=sys.stderr)
    begin = time.monotonic()
    lines = [
        f"benchmarks/server.py: {args.rounds} round(s) of {args.duration:g} s, medians; "
        f"server on core {SERVER_CORE}, wrk (1 thread) on core {LOAD_CORE}; "
        f"Python {sys.version.split()[0]}"
    ]
    if args.survey:
        with tempfile.TemporaryDirectory() as tmp:
            lines += survey(args, Path(tmp))
        print("\n".join(lines))
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name in [] if args.extras_only else args.stacks:
            stack = Stack(name, args, Path(tmp))
            stack.run()
            table = report(stack)
            lines += table
            print("\n".join(table), flush=True)
    if not args.no_extras:
        lines += access_log(args)
        lines += mass_expiry(args)
    lines.append(f"\n(took {time.monotonic() - begin:.0f} s)")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
