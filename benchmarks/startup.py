"""What ``import workstate`` and ``workstate serve`` cost at start-up, against bare floors.

Run by hand (not in CI)::

    python benchmarks/startup.py                  # 25 import rounds, 15 cold starts (~1 min)
    python benchmarks/startup.py --quick          # 8 and 5 rounds, noisier
    python benchmarks/startup.py --instructions   # also count instructions (valgrind, +1 min)

Every sample is a fresh process, so nothing is cached in memory between samples.  Rounds
alternate the floor and the subjects in a shuffled order, so load from other processes falls
on both, and the figures are medians.

Imports.  One round times, from spawn to exit, ``python -c pass`` (the bare interpreter, with
the same ``site`` and the same installed packages), ``python -c "import workstate"`` and
``python -c "import workstate.server"``.  The cost of an import is its time minus the bare
interpreter's in the same round; the figure is the median of those differences.  Wall clock
and CPU (user + system, from ``wait4``) are both shown.  Target: ``import workstate`` at most
70 ms over bare, wall clock.

Cold start.  One round starts a bare Starlette app under uvicorn (one route, the same uvicorn
``loop``/``http`` choice ``serve`` gets by default, the same log level, lifespan off) and
``python -m workstate serve`` with its default options, each on a free loopback port, and
times from spawn to the first successful answer to a GET (polled every 2 ms): ``/`` for the
bare app, ``GET /v1/environments/env_startup/work/stats`` (a real API read through the core)
for ``serve``; the CPU the server has used by then is read from ``/proc`` (10 ms clock ticks).
Then SIGTERM.  A few more fresh ``serve`` processes are asked for one create, poll and ack
each, so a cost merely moved from start-up to the first calls shows up (printed, with no
target).  Target: ``serve`` / bare app at most 1.3x, wall clock.

Instructions.  On a busy machine both clocks move with the load; ``--instructions`` also runs
each subject once under valgrind's callgrind and prints the instructions executed (to exit for
the imports, to the first answer for the servers, dumped then with ``callgrind_control``),
which do not depend on the load.  Needs ``valgrind`` (Debian package ``valgrind``).

Bytecode.  An installed wheel has its bytecode compiled at install time; an editable checkout
under ``PYTHONDONTWRITEBYTECODE`` (as on this project's machines) would compile every module on
every start.  So the script first compiles ``workstate`` (``compileall``, the same as ``pip
install`` does) and says so; ``--no-compile`` skips that.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import http.client
import importlib.util
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence

import uvicorn

import workstate
from workstate.server._cli import _parser as serve_parser

PY = sys.executable
IMPORT_TARGET_MS = 70.0
COLD_START_TARGET = 1.3
POLL_EVERY = 0.002
START_TIMEOUT = 30.0
ENV = "env_startup"
STATS = f"/v1/environments/{ENV}/work/stats"

# The floor app: one route, the answer a small JSON object, like the stats answer.
BARE_APP = textwrap.dedent(
    """
    import sys

    import uvicorn
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route


    async def stats(request):
        return JSONResponse({"depth": 0, "pending": 0, "workers_polling": 0})


    app = Starlette(routes=[Route("/", stats)])
    port, log_level, loop, http = sys.argv[1:]
    uvicorn.run(app, host="127.0.0.1", port=int(port), log_level=log_level, loop=loop, http=http,
                lifespan="off")
    """
)


def free_port() -> int:
    """A loopback port nobody listens on (the system's choice for port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def reap(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> float:
    """Wait for ``proc`` to exit (killing it after ``timeout``): its CPU seconds, user + system."""
    deadline = time.perf_counter() + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return usage.ru_utime + usage.ru_stime
        if time.perf_counter() > deadline:
            proc.kill()
            deadline = float("inf")
        time.sleep(POLL_EVERY)


def run_once(argv: Sequence[str]) -> tuple[float, float]:
    """Wall and CPU seconds from spawn to exit of ``argv``, which must succeed."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    cpu = reap(proc, timeout=START_TIMEOUT)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{argv} exited {proc.returncode}")
    return wall, cpu


def request(port: int, method: str, path: str, body: object = None) -> tuple[int, object]:
    """One HTTP call on a new connection: the status and the parsed JSON answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        payload = None if body is None else json.dumps(body)
        headers = {} if body is None else {"content-type": "application/json"}
        conn.request(method, path, body=payload, headers=headers)
        answer = conn.getresponse()
        data = answer.read()
        return answer.status, json.loads(data) if data else None
    finally:
        conn.close()


def cpu_so_far(pid: int) -> float:
    """CPU seconds (user + system) process ``pid`` has used so far, in clock ticks (10 ms)."""
    fields = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(
    argv: Sequence[str], port: int, path: str, timeout: float = START_TIMEOUT
) -> tuple[float, subprocess.Popen[bytes]]:
    """Spawn ``argv`` and poll ``GET path`` until it answers 200: seconds taken, the process."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = start + timeout
    while True:
        try:
            status, _ = request(port, "GET", path)
        except OSError:  # not listening yet
            status = 0
        if status == 200:
            return time.perf_counter() - start, proc
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise RuntimeError(f"{argv} exited {proc.returncode}: {err.decode()}")
        if time.perf_counter() > deadline:
            proc.kill()
            raise RuntimeError(f"{argv} gave no answer to GET {path} in {timeout:g} s")
        time.sleep(POLL_EVERY)


def stop(proc: subprocess.Popen[bytes]) -> float:
    """SIGTERM (uvicorn shuts down gracefully) and reap: the process's CPU seconds."""
    proc.send_signal(signal.SIGTERM)
    try:
        return reap(proc)
    finally:
        if proc.stderr is not None:
            proc.stderr.close()


def serve_stack() -> tuple[str, str]:
    """The event loop and HTTP implementation ``serve`` runs uvicorn with by default."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    from workstate.server import MockServer

    server = MockServer()
    try:
        options = server.uvicorn_options()
    finally:
        server.close()
    loop, http = options.get("loop", "auto"), options.get("http", "auto")
    if loop == "auto":  # uvicorn's own rule for "auto"
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    if isinstance(http, type):  # a protocol class: name the implementation it extends
        http = "h11" if issubclass(http, H11Protocol) else "httptools"
    elif http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    return str(loop), str(http)


def first_work_calls(port: int) -> float:
    """Seconds for one create, poll and ack on a fresh ``serve``: the first calls' cost."""
    start = time.perf_counter()
    status, item = request(port, "POST", f"/mock/environments/{ENV}/work", {})
    assert status == 200, (status, item)
    status, polled = request(port, "GET", f"/v1/environments/{ENV}/work/poll")
    assert status == 200, (status, polled)
    assert isinstance(polled, dict), polled
    status, acked = request(port, "POST", f"/v1/environments/{ENV}/work/{polled['id']}/ack")
    assert status == 200, (status, acked)
    return time.perf_counter() - start


IMPORTS = {
    "bare": [PY, "-c", "pass"],
    "import workstate": [PY, "-c", "import workstate"],
    "import workstate.server": [PY, "-c", "import workstate.server"],
}


def import_rounds(rounds: int) -> dict[str, list[tuple[float, float]]]:
    """Per round and subject: (wall, CPU) seconds; for the imports, minus the bare round's."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in IMPORTS}
    for _ in range(rounds):
        order = list(IMPORTS)
        random.shuffle(order)
        took = {name: run_once(IMPORTS[name]) for name in order}
        bare = took["bare"]
        out["bare"].append(bare)
        for name in IMPORTS:
            if name != "bare":
                out[name].append((took[name][0] - bare[0], took[name][1] - bare[1]))
    return out


def cold_start_rounds(
    rounds: int, bare_script: pathlib.Path, stack: tuple[str, str]
) -> dict[str, list[tuple[float, float]]]:
    """Per round: (wall, CPU) seconds to the first answer, of the bare app and of ``serve``."""
    log_level = serve_parser().get_default("log_level")
    commands = {
        "bare app": ([PY, str(bare_script), "{port}", log_level, *stack], "/"),
        "serve": ([PY, "-m", "workstate", "serve", "--port", "{port}"], STATS),
    }
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for _ in range(rounds):
        order = list(commands)
        random.shuffle(order)
        for name in order:
            port = free_port()
            argv, path = commands[name]
            wall, proc = start_server([a.format(port=port) for a in argv], port, path)
            cpu = cpu_so_far(proc.pid)
            stop(proc)
            out[name].append((wall, cpu))
    return out


def first_calls_rounds(rounds: int) -> list[float]:
    """Per round: a fresh ``serve``'s first create, poll and ack (seconds)."""
    out = []
    for _ in range(rounds):
        port = free_port()
        _, proc = start_server([PY, "-m", "workstate", "serve", "--port", str(port)], port, STATS)
        try:
            out.append(first_work_calls(port))
        finally:
            stop(proc)
    return out


def callgrind_total(path: pathlib.Path) -> int:
    """The instruction count a callgrind output file holds."""
    for line in path.read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no summary line in {path}")


def instructions(tmp: pathlib.Path, bare_script: pathlib.Path, stack: tuple[str, str]) -> None:
    """Print instruction counts under valgrind's callgrind: the same on a busy machine as on a
    quiet one (one run each; about a minute in all)."""
    valgrind = shutil.which("valgrind")
    control = shutil.which("callgrind_control")
    if valgrind is None or control is None:
        print("\ninstructions: valgrind is not installed (apt-get install valgrind); skipped")
        return
    counts: dict[str, int] = {}
    for n, (name, argv) in enumerate(IMPORTS.items()):
        out = tmp / f"imports.{n}"
        subprocess.run(
            [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}", *argv],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        counts[name] = callgrind_total(out)
    log_level = serve_parser().get_default("log_level")
    for name, argv, path in (
        ("bare app", [PY, str(bare_script), "{port}", log_level, *stack], "/"),
        ("serve", [PY, "-m", "workstate", "serve", "--port", "{port}"], STATS),
    ):
        port = free_port()
        out = tmp / f"start.{port}"
        cmd = [valgrind, "--tool=callgrind", f"--callgrind-out-file={out}"]
        cmd += [a.format(port=port) for a in argv]
        _, proc = start_server(cmd, port, path, timeout=600)  # valgrind: ~50x slower
        try:  # the counts up to now, the first answer (the server idles meanwhile)
            subprocess.run([control, "--dump", str(proc.pid)], check=True, capture_output=True)
        finally:
            stop(proc)
        counts[name] = callgrind_total(pathlib.Path(f"{out}.1"))
    bare = counts["bare"]
    print("\ninstructions (valgrind callgrind, millions; one run each)")
    print(f"  {'bare interpreter':<26}{bare / 1e6:8.1f}")
    for name in ("import workstate", "import workstate.server"):
        print(f"  {name:<26}{counts[name] / 1e6:8.1f}  = bare + {(counts[name] - bare) / 1e6:.1f}")
    print(f"  {'bare app, to first answer':<26}{counts['bare app'] / 1e6:8.1f}")
    print(f"  {'serve, to first answer':<26}{counts['serve'] / 1e6:8.1f}")
    print(f"  {'serve / bare app':<26}{counts['serve'] / counts['bare app']:8.2f}x")


def verdict(ok: bool) -> str:
    """PASS or FAIL."""
    return "PASS" if ok else "FAIL"


def ms(seconds: float) -> str:
    """Milliseconds, one decimal."""
    return f"{seconds * 1000:7.1f} ms"


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the tables and the verdicts; exit 0 when both targets are met."""
    with contextlib.ExitStack() as cleanup:
        return measure(cleanup, argv)


def measure(cleanup: contextlib.ExitStack, argv: Sequence[str] | None) -> int:
    """:func:`main`, with ``cleanup`` to remove its temporary files at the end."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, noisier")
    parser.add_argument("--import-rounds", type=int, default=None, metavar="N")
    parser.add_argument("--start-rounds", type=int, default=None, metavar="N")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count instructions under valgrind (deterministic, for a busy machine)",
    )
    parser.add_argument(
        "--no-compile", action="store_true", help="do not compile workstate's bytecode first"
    )
    args = parser.parse_args(argv)
    import_n = args.import_rounds or (8 if args.quick else 25)
    start_n = args.start_rounds or (5 if args.quick else 15)
    began = time.perf_counter()
    package = pathlib.Path(workstate.__file__).parent
    if not args.no_compile:
        compileall.compile_dir(package, quiet=1)
    stack = serve_stack()
    print(
        f"python {sys.version.split()[0]} ({PY})\nuvicorn {uvicorn.__version__}: loop {stack[0]}, "
        f"http {stack[1]} (serve's defaults, used by the bare app too); log level "
        f"{serve_parser().get_default('log_level')}\nbytecode of workstate: "
        f"{'as found' if args.no_compile else 'compiled first, as pip install does'} "
        f"(PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r})"
    )

    imports = import_rounds(import_n)
    bare_wall, bare_cpu = (statistics.median(x) for x in zip(*imports["bare"], strict=True))
    print(f"\nimports: {import_n} rounds of fresh processes, medians (wall clock; CPU)")
    print(f"  {'bare interpreter':<26}{ms(bare_wall)}; {ms(bare_cpu)}")
    over: dict[str, tuple[float, float]] = {}
    for name in ("import workstate", "import workstate.server"):
        wall, cpu = (statistics.median(x) for x in zip(*imports[name], strict=True))
        over[name] = (wall, cpu)
        print(f"  {name:<26}bare + {ms(wall).strip()}; bare + {ms(cpu).strip()}")

    tmp = pathlib.Path(cleanup.enter_context(tempfile.TemporaryDirectory()))
    script = tmp / "bare_app.py"
    script.write_text(BARE_APP)
    starts = cold_start_rounds(start_n, script, stack)
    first = first_calls_rounds(max(3, start_n // 3))
    print(
        f"\ncold start: {start_n} rounds, medians (wall clock from spawn to the first answer; "
        "CPU used by then, in 10 ms clock ticks)"
    )
    medians = {
        name: tuple(statistics.median(x) for x in zip(*samples, strict=True))
        for name, samples in starts.items()
    }
    for name, label in (("bare app", "bare Starlette + uvicorn"), ("serve", "workstate serve")):
        print(f"  {label:<26}{ms(medians[name][0])}; {ms(medians[name][1])}")
    print(
        f"  {'serve / bare app':<26}{medians['serve'][0] / medians['bare app'][0]:7.2f}x   ; "
        f"{medians['serve'][1] / medians['bare app'][1]:7.2f}x"
    )
    print(
        f"  {'a fresh serve: create, poll, ack':<34}{ms(statistics.median(first))} wall clock "
        "(its first three calls, no target)"
    )

    if args.instructions:
        instructions(tmp, script, stack)

    ws_over = over["import workstate"][0] * 1000
    ratio = medians["serve"][0] / medians["bare app"][0]
    checks: list[tuple[str, str, Callable[[], bool]]] = [
        (
            f"import workstate over bare: {ws_over:.1f} ms",
            f"<= {IMPORT_TARGET_MS:g} ms",
            lambda: ws_over <= IMPORT_TARGET_MS,
        ),
        (
            f"serve / bare app cold start: {ratio:.2f}x",
            f"<= {COLD_START_TARGET:g}x",
            lambda: ratio <= COLD_START_TARGET,
        ),
    ]
    print(
        "\ntargets (on the wall-clock figures; the CPU figures move less when the machine is busy)"
    )
    ok = True
    for what, target, check in checks:
        passed = check()
        ok = ok and passed
        print(f"  {what:<42}{target:<12}{verdict(passed)}")
    print(f"\n({time.perf_counter() - began:.0f} s)")
    return 0 if ok else 1


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
