"""The public surface is pinned, documented, and keeps dependencies in quarantine."""

from __future__ import annotations

import ast
import importlib
import inspect
import pathlib

import pytest

import workstate

PACKAGE = pathlib.Path(workstate.__file__).parent

EXPECTED = {
    "ANTHROPIC",
    "HEARTBEAT_PRECONDITION_FAILED",
    "MOVES",
    "NO_HEARTBEAT",
    "PROFILES",
    "QODER",
    "WORK_KEYS",
    "AckLease",
    "HeartbeatResult",
    "IllegalMoveError",
    "InvalidInputError",
    "LeaseEffect",
    "LeaseState",
    "ManualClock",
    "Move",
    "NotFoundError",
    "Operation",
    "Precision",
    "PreconditionFailedError",
    "Profile",
    "Rule",
    "Stamp",
    "State",
    "StopResponse",
    "SystemClock",
    "Violation",
    "History",
    "HistoryCall",
    "HistoryFormatError",
    "HistoryProblem",
    "HistoryReport",
    "Work",
    "WorkBody",
    "WorkData",
    "WorkstateError",
    "allowed_operations",
    "check_history",
    "ensure_utc",
    "error_from_json",
    "format_time",
    "heartbeat_from_json",
    "heartbeat_to_json",
    "history_from_journal",
    "invariant_violations",
    "lease_state_from_json",
    "load_profile",
    "mermaid",
    "parse_time",
    "profile_from_mapping",
    "profile_to_mapping",
    "read_history",
    "render_timeline",
    "to_pendulum",
    "work_from_json",
    "work_to_json",
}


def test_all_is_pinned() -> None:
    assert set(workstate.__all__) >= EXPECTED
    assert len(workstate.__all__) == len(set(workstate.__all__))
    for name in workstate.__all__:
        assert hasattr(workstate, name), name


@pytest.mark.parametrize(
    "module_name",
    [
        "workstate",
        "workstate.worker",
        "workstate.server",
        "workstate.testing",
        "workstate.pytest_plugin",
    ],
)
def test_every_public_callable_and_class_has_a_docstring(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert module.__doc__
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert inspect.getdoc(obj), name
            if inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if not attr.startswith("_") and (
                        inspect.isfunction(member) or isinstance(member, property)
                    ):
                        assert inspect.getdoc(member), f"{name}.{attr}"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


def test_dependencies_are_quarantined() -> None:
    owners = {"transitions": {"_engine.py"}, "pendulum": {"_time.py"}}
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE)
        imported = _imports(path)
        for dep, allowed in owners.items():
            if dep in imported:
                assert str(rel) in allowed, f"{rel} imports {dep}"
        if "hypothesis" in imported:
            assert rel.parts[0] == "testing", f"{rel} imports hypothesis"


def test_the_server_exports() -> None:
    import workstate.server

    assert workstate.server.__all__ == [
        "ConnectionDropped",
        "MockServer",
        "StateFileError",
        "serve_in_thread",
    ]


def test_the_environment_methods() -> None:
    public = sorted(name for name in vars(workstate.Environment) if not name.startswith("_"))
    assert public == [
        "ack",
        "create",
        "expire_due",
        "expiries_due",
        "get",
        "heartbeat",
        "item_states",
        "latest_now",
        "list",
        "next_change_at",
        "poll",
        "restore",
        "state",
        "stats",
        "stop",
        "take_changes",
        "update_metadata",
    ]
    limit = inspect.signature(workstate.Environment.expire_due).parameters["limit"]
    assert (limit.kind, limit.default) == (inspect.Parameter.KEYWORD_ONLY, None)


def test_core_does_no_io() -> None:
    forbidden = {"socket", "asyncio", "threading", "subprocess", "urllib", "http", "time"}
    # The history checker's command line is an adapter: it reads the clock for --timeout.
    allowed = {"_history_cli.py": {"time"}}
    for path in PACKAGE.glob("_*.py"):
        assert not (_imports(path) & forbidden - allowed.get(path.name, set())), path.name
