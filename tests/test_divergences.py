"""docs/divergences.md stays in step with the Profile fields: every knob documented once, every
row a knob, and each row's profile values the shipped ones."""

from __future__ import annotations

import pathlib
import re

import attrs

from workstate import ANTHROPIC, QODER, Profile

DOC = pathlib.Path(__file__).parent.parent / "docs" / "divergences.md"
ROW = re.compile(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \| ([^|]+) \|", re.MULTILINE)


def rows() -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}
    for name, a, q in ROW.findall(DOC.read_text()):
        assert name not in found, f"{name} has two rows"
        found[name] = (a.strip(), q.strip())
    return found


def test_every_profile_field_has_exactly_one_row_and_every_row_a_field() -> None:
    assert sorted(rows()) == sorted(f.name for f in attrs.fields(Profile))


def shown(value: object) -> str:
    value = getattr(value, "value", value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return f'"{value}"' if isinstance(value, str) else str(value)


def test_each_rows_values_start_with_the_shipped_value() -> None:
    for name, (a, q) in rows().items():
        for cell, profile in ((a, ANTHROPIC), (q, QODER)):
            value = getattr(profile, name)
            expected = "none" if value is None else shown(value).strip('"')
            assert cell.replace("`", "").strip('"').startswith(expected), (name, profile.name)
