"""Mutation testing of the core, by hand (never in CI): does the suite notice a wrong line?

Usage (from the worktree, with the project's virtual environment)::

    python scripts/mutation.py workstate/_time.py [more modules] [--tests tests/test_time.py]
        [--limit N] [--timeout SECONDS] [--list]

For each module it parses the source, and for every place where one small change makes sense
(a comparison flipped or made strict, ``and``/``or`` swapped, ``not`` dropped, an integer
constant moved by one, ``True``/``False`` swapped, ``+``/``-`` swapped, a ``return`` of a value
replaced by ``return None``) it writes that one mutant over the module, runs the tests, and
restores the file.  A mutant is *killed* when the tests fail (or time out), and *survives*
when they pass.  The script prints each survivor (line and change) and the score per module;
docstrings, ``__all__`` and type annotations are left alone.

By default the tests run are ``tests/test_<module without underscore>.py`` plus the files
that test the module's neighbours (see ``DEFAULT_TESTS``); ``--tests`` overrides them.  Each
run is ``pytest -x -q -p no:randomly`` with coverage off, so a mutant costs one test run: the
core's modules take minutes each, ``_environment`` and ``worker`` longer.  The file is always
restored, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import ast
import pathlib
import subprocess
import sys
import time
from collections.abc import Iterator

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_TESTS = {
    "_time": ["tests/test_time.py"],
    "_work": [
        "tests/test_work.py",
        "tests/test_table.py",
        "tests/test_spec_table.py",
        "tests/test_survivors.py",
        "tests/test_profile_knobs.py",
    ],
    "_environment": [
        "tests/test_environment.py",
        "tests/test_survivors.py",
        "tests/test_profile_knobs.py",
    ],
    "worker": ["tests/test_worker.py", "tests/test_survivors.py"],
}
_FLIP = {
    ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
    ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    ast.In: ast.NotIn, ast.NotIn: ast.In,
}  # fmt: skip


def _skipped_lines(tree: ast.Module) -> set[int]:
    """Lines of docstrings, ``__all__`` and annotations: mutating them tests nothing."""
    out: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
            value = body[0].value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                out.update(range(value.lineno, (value.end_lineno or value.lineno) + 1))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            out.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return out


def _returns_a_value(node: ast.AST) -> bool:
    if not isinstance(node, ast.Return) or node.value is None:
        return False
    return not (isinstance(node.value, ast.Constant) and node.value.value is None)


def mutants(source: str) -> Iterator[tuple[int, str, str]]:
    """Every (line, description, mutated source) of ``source``."""
    tree = ast.parse(source)
    skipped = _skipped_lines(tree)
    count = 0
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        kinds: list[tuple[str, object]] = []
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _FLIP:
                    kinds.append((f"{type(op).__name__} -> {_FLIP[type(op)].__name__}", ("cmp", i)))
        elif isinstance(node, ast.BoolOp):
            kinds.append(("and <-> or", ("bool",)))
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            kinds.append(("drop not", ("not",)))
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            kinds.append(("+ <-> -", ("arith",)))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            kinds.append((f"{node.value} -> {node.value + 1}", ("int", 1)))
            kinds.append((f"{node.value} -> {node.value - 1}", ("int", -1)))
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            kinds.append((f"{node.value} -> {not node.value}", ("boolconst",)))
        elif _returns_a_value(node):
            kinds.append(("return None", ("return",)))
        for description, _how in kinds:
            count += 1
            yield node.lineno, description, _apply(source, count)


def _apply(source: str, target: int) -> str:
    """The source with the ``target``-th mutation (in :func:`mutants` order) applied."""
    tree = ast.parse(source)
    skipped = _skipped_lines(tree)
    count = 0
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skipped:
            continue
        if isinstance(node, ast.Compare):
            for i, op in enumerate(node.ops):
                if type(op) in _FLIP:
                    count += 1
                    if count == target:
                        node.ops[i] = _FLIP[type(op)]()
                        return ast.unparse(tree)
        elif isinstance(node, ast.BoolOp):
            count += 1
            if count == target:
                node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
                return ast.unparse(tree)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            count += 1
            if count == target:
                # ``not x`` becomes ``not not x``: the truth value of x, negation dropped
                node.operand = ast.UnaryOp(op=ast.Not(), operand=node.operand)
                return ast.unparse(tree)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add | ast.Sub):
            count += 1
            if count == target:
                node.op = ast.Sub() if isinstance(node.op, ast.Add) else ast.Add()
                return ast.unparse(tree)
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            for delta in (1, -1):
                count += 1
                if count == target:
                    node.value += delta
                    return ast.unparse(tree)
        elif isinstance(node, ast.Constant) and type(node.value) is bool:
            count += 1
            if count == target:
                node.value = not node.value
                return ast.unparse(tree)
        elif _returns_a_value(node):
            count += 1
            if count == target:
                assert isinstance(node, ast.Return)
                node.value = ast.Constant(value=None)
                return ast.unparse(tree)
    raise AssertionError(f"no mutation number {target}")


def run_tests(tests: list[str], timeout: float) -> bool:
    """Whether the tests pass (a timeout counts as a failure: the mutant is killed)."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:randomly", "--no-cov",
               "-p", "no:cacheprovider", *tests]  # fmt: skip
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("modules", nargs="+", help="module files, e.g. workstate/_time.py")
    parser.add_argument("--tests", nargs="*", default=None, help="test files to run")
    parser.add_argument("--limit", type=int, default=None, help="at most N mutants per module")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per test run")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    args = parser.parse_args()
    scores = []
    for module in args.modules:
        path = (ROOT / module).resolve()
        stem = path.stem
        tests = args.tests or DEFAULT_TESTS.get(stem, [f"tests/test_{stem.lstrip('_')}.py"])
        original = path.read_text()
        todo = list(mutants(original))[: args.limit]
        if args.list:
            for line, description, _ in todo:
                print(f"{module}:{line}: {description}")
            continue
        if not run_tests(tests, args.timeout):
            print(f"{module}: the tests fail without any mutation; fix them first")
            return 2
        killed, survivors, start = 0, [], time.monotonic()
        try:
            for line, description, mutated in todo:
                path.write_text(mutated)
                if run_tests(tests, args.timeout):
                    survivors.append((line, description))
                    print(f"SURVIVED {module}:{line}: {description}", flush=True)
                else:
                    killed += 1
        finally:
            path.write_text(original)
        total = len(todo)
        score = 100.0 * killed / total if total else 100.0
        scores.append((module, killed, total, score, time.monotonic() - start))
    for module, killed, total, score, seconds in scores:
        print(f"{module}: {killed}/{total} killed ({score:.1f}%) in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
