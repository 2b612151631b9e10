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


def test_the_departures_from_the_spec_file_quote_the_shipped_values() -> None:
    # The section names each knob with anthropic's value, and says qoder keeps the spec's.
    text = DOC.read_text()
    section = text.split("## Where `anthropic` departs from the spec file", 1)[1]
    section = section.split("\n## ", 1)[0]
    for name in ("ack_lease", "stop_response"):
        assert f'`{name} = "{getattr(ANTHROPIC, name).value}"`' in section, name
    assert (QODER.ack_lease.value, QODER.stop_response.value) == ("default_ttl", "item")
    assert "line 73" in section
    assert "#1746" in section
