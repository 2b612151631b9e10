"""Safe echoes of bad input (``workstate._text``) and the one check for stored strings."""

from __future__ import annotations

import pytest

from workstate import InvalidInputError
from workstate._records import check_text
from workstate._text import bounded, excerpt, safe_message, unrenderable_at


def test_excerpt_escapes_and_bounds_every_kind_of_value() -> None:
    assert excerpt("\ud800\n") == "'\\ud800\\n'"
    assert excerpt(b"x" * 100).endswith("... (100 bytes)")
    assert excerpt(10**5000) == "<int too large to print>"
    long_list = excerpt(list(range(1000)))
    assert long_list.endswith("...")
    assert len(long_list) <= 4 * 64 + 3


def test_bounded_cuts_long_strings_only() -> None:
    assert bounded("x" * 1000) == "x" * 256
    assert bounded(b"y" * 300) == b"y" * 256
    value = ["x" * 1000]
    assert bounded(value) is value


def test_safe_message_escapes_surrogates_and_truncates() -> None:
    assert safe_message("a\ud800b") == "a\\ud800b"
    assert safe_message("x" * 5000).endswith("... (5000 characters)")
    assert unrenderable_at("ab\udfff") == 2
    assert unrenderable_at("é") is None


@pytest.mark.parametrize(
    ("value", "kwargs", "words"),
    [
        (5, {}, "must be a string, got 5"),
        ("", {"empty": False}, "non-empty string"),
        (None, {}, "must be a string"),
        (3, {"nullable": True}, "a string or null"),
        ("x" * 9, {"max_length": 8}, "9 characters long; at most 8"),
        ("ok\ud800", {}, "U+D800 at index 2"),
    ],
)
def test_check_text_names_the_key_and_the_problem(
    value: object, kwargs: dict[str, object], words: str
) -> None:
    with pytest.raises(InvalidInputError) as info:
        check_text(value, "thing", **kwargs)  # type: ignore[arg-type]
    assert info.value.key == "thing"
    assert words in info.value.message
    assert check_text(None, "thing", nullable=True) is None
    assert check_text("é", "thing") == "é"
