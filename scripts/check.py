"""Run every check the project requires: lint, format, types, tests, doctests, coverage.

Usage: python scripts/check.py [extra pytest args]   (run with the project's virtual environment)
Exits non-zero on the first failing step.
"""

from __future__ import annotations

import subprocess
import sys

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
    return 0


if __name__ == "__main__":
    sys.exit(main())
