"""Mutation testing of the core, by hand (never in CI): does the suite notice a wrong line?

Usage (from the worktree, with mutmut installed in the project's virtual environment only:
``pip install mutmut==3.8.1``)::

    python scripts/mutation.py                      # _time, _work, _environment, worker
    python scripts/mutation.py _work worker         # some modules, in this order
    python scripts/mutation.py --report             # only print the scores of earlier runs
    python scripts/mutation.py --survivors _time    # list a module's survivors with diffs
    python scripts/mutation.py --recheck _work      # rerun only the mutants not yet killed

It drives mutmut with the ``[tool.mutmut]`` section of ``pyproject.toml`` (the modules to
mutate, the core test files to run, ``-p no:randomly``), one module at a time in the order
given, so a run cut short still scores the modules it finished.  Naming a module makes mutmut
recheck all its mutants; ``--recheck`` names only those not killed yet (survivors, timeouts,
mutants without tests, and those never checked, as every mutant of a changed function is): the
quick loop while writing tests for survivors.  mutmut rewrites each function into a
trampoline, runs the whole selection once to learn which tests reach which function, and then
runs, for every mutant, only those tests in a process forked from one that has imported
everything (``tests/conftest.py`` empties the core's per-profile caches at the start of each
session, so a mutant is not answered by rows compiled from the unmutated code).

The score of a module is killed / (killed + survived + timed out + no tests); mutants mutmut
has not checked yet are left out and counted separately.  The target is at least 90% killed on
``_work``, ``_environment``, ``_time`` and ``worker``.  A full run of the four takes the better
part of an hour on two cores; mutmut keeps its results in ``mutants/`` (ignored by git).
"""

from __future__ import annotations

import argparse
import collections
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
MODULES = ("_time", "_work", "_environment", "worker")
MUTMUT = [sys.executable, "-m", "mutmut"]


def results() -> dict[str, collections.Counter[str]]:
    """mutmut's verdict per module: a count of each status."""
    out = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    per: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name.startswith("workstate."):
            continue
        module = name.split(".")[1]
        per[module][status] += 1
    return per


def report(modules: list[str]) -> None:
    per = results()
    for module in modules:
        counts = per.get(module, collections.Counter())
        killed = counts["killed"]
        judged = killed + counts["survived"] + counts["timeout"] + counts["no tests"]
        score = f"{100.0 * killed / judged:.1f}%" if judged else "n/a"
        print(
            f"{module}: {killed}/{judged} killed ({score}); {counts['survived']} survived, "
            f"{counts['no tests']} without tests, {counts['not checked']} not checked yet"
        )


def unkilled(module: str) -> list[str]:
    """The names of ``module``'s mutants that mutmut has not seen killed."""
    out = subprocess.run(
        [*MUTMUT, "results", "--all", "true"], cwd=ROOT, capture_output=True, text=True
    ).stdout
    names = []
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith(f"workstate.{module}.") and status != "killed":
            names.append(name)
    return names


def survivors(module: str) -> None:
    out = subprocess.run(
        [*MUTMUT, "results"], cwd=ROOT, capture_output=True, text=True
    ).stdout.splitlines()
    for line in out:
        name, _, status = line.strip().rpartition(": ")
        if status == "survived" and name.startswith(f"workstate.{module}."):
            print(subprocess.run([*MUTMUT, "show", name], cwd=ROOT, capture_output=True,
                                 text=True).stdout)  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="*", default=list(MODULES), help="e.g. _work worker")
    parser.add_argument("--report", action="store_true", help="only print earlier scores")
    parser.add_argument("--survivors", action="store_true", help="show the survivors' diffs")
    parser.add_argument(
        "--recheck", action="store_true", help="rerun only the mutants not killed yet"
    )
    parser.add_argument("--max-children", type=int, default=2, help="parallel workers [2]")
    args = parser.parse_args()
    if args.survivors:
        for module in args.modules:
            survivors(module)
        return 0
    if not args.report:
        for module in args.modules:
            names = unkilled(module) if args.recheck else [f"workstate.{module}.*"]
            # mutmut makes the mutants of a changed function only when it runs, so the names
            # a recheck gives it come from the results before: a second pass takes the new ones.
            passes = 2 if args.recheck else 1
            while names and passes:
                print(f"+ mutmut run {module}: {len(names)} name(s)", flush=True)
                subprocess.run(
                    [*MUTMUT, "run", "--max-children", str(args.max_children), *names],
                    cwd=ROOT,
                    check=False,
                )
                passes -= 1
                names = [n for n in unkilled(module) if n not in names] if passes else []
    report(args.modules)
    return 0


if __name__ == "__main__":
    sys.exit(main())
