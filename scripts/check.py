"""Run every check the project requires: lint, format, types, tests, doctests, coverage.

Usage: python scripts/check.py [extra pytest args]   (run with the project's virtual environment)
Exits non-zero on the first failing step.

The last step runs the official worker's end-to-end tests, the strict shape tests and the SDK
client's tests (both stop answers, every profile knob) against the newest ``anthropic`` release
as well as the pinned one, in ``.venv-sdk-latest``: created on
first use, reinstalled when :data:`LATEST_SDK` changes, reused otherwise.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys
import venv

STEPS = [
    ["ruff", "check", "."],
    ["ruff", "format", "--check", "."],
    ["mypy", "--strict", "workstate"],
    [
        "pytest",
        "--cov=workstate",
        "--cov-branch",
        "--cov-report=term-missing:skip-covered",
        "--cov-fail-under=95",
        "-q",
    ],
]


ROOT = pathlib.Path(__file__).resolve().parent.parent
LATEST_SDK = "anthropic==2.15.0"
LATEST_VENV = ROOT / ".venv-sdk-latest"
LATEST_TESTS = [  # what talks through the SDK's client and worker, and takes no version pin
    "tests/test_worker_e2e.py",
    "tests/test_sessions.py",
    "tests/test_session_api.py",
    "tests/test_server_sdk.py",
    "tests/test_profile_knobs.py",
]


def latest_sdk() -> int:
    """The session tests against :data:`LATEST_SDK`, in a virtual environment of their own."""
    python = LATEST_VENV / "bin" / "python"
    marker = LATEST_VENV / "workstate-requirements.txt"
    wanted = f"-e .[testing,server] pytest httpx2 {LATEST_SDK}"
    if not python.exists():
        venv.create(LATEST_VENV, with_pip=True)
    if not marker.exists() or marker.read_text() != wanted:
        install = [str(python), "-m", "pip", "install", "-q", *wanted.split()]
        code = subprocess.call(install, cwd=ROOT)
        if code != 0:
            return code
        marker.write_text(wanted)
    version = LATEST_SDK.partition("==")[2]
    probe = f"import anthropic, sys; sys.exit(anthropic.__version__ != {version!r})"
    if subprocess.call([str(python), "-c", probe]) != 0:
        print(f"{LATEST_VENV.name} does not hold {LATEST_SDK}", flush=True)
        return 1
    return subprocess.call([str(python), "-m", "pytest", "-q", *LATEST_TESTS], cwd=ROOT)


def main() -> int:
    for step in STEPS:
        command = [sys.executable, "-m", *step]
        if step[0] == "pytest":
            command += sys.argv[1:]
        print("+", " ".join(step), flush=True)
        code = subprocess.call(command)
        if code != 0:
            print(f"FAILED: {' '.join(step)} (exit {code})", flush=True)
            return code
    print(f"+ pytest {' '.join(LATEST_TESTS)} with {LATEST_SDK}", flush=True)
    code = latest_sdk()
    if code != 0:
        print(f"FAILED: the session tests with {LATEST_SDK} (exit {code})", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
