"""The profile options ``serve`` and ``check`` share: one set of flags, one way to read them.

A journal recorded by ``serve --default-ttl 2`` is only explained by a checker that knows the
default is 2, so ``check`` takes exactly the options ``serve`` does and builds the profile the
same way: the named profile, then the ``--profile-file`` table over it, then the TTL overrides
(:func:`~workstate._profile.evolve_profile`, so ``--default-ttl`` alone widens the range).

``serve --journal FILE`` heads the file with the profile it served under
(:func:`journal_header`), so ``check`` needs none of those options for it: with neither
``--profile`` nor ``--profile-file`` the recorded profile is the start, and TTL flags still
override it.  A journal without the header (an older one, or entries saved from
``GET /mock/journal``) is checked as before.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any

from workstate._errors import InvalidInputError
from workstate._profile import (
    ANTHROPIC,
    PROFILES,
    Profile,
    evolve_profile,
    load_profile,
    profile_from_mapping,
    profile_to_mapping,
)

__all__ = [
    "JOURNAL_VERSION",
    "TTL_FLAGS",
    "ProfileOptionError",
    "add_profile_options",
    "is_journal_header",
    "journal_header",
    "journal_profile",
    "option_dest",
    "profile_from_options",
]

JOURNAL_VERSION = 1
"""The version of the header line of ``serve --journal FILE`` (:func:`journal_header`)."""

TTL_FLAGS = {
    "--default-ttl": "default_ttl_seconds",
    "--min-ttl": "min_ttl_seconds",
    "--max-ttl": "max_ttl_seconds",
}
"""Each TTL flag and the :class:`~workstate._profile.Profile` field it overrides."""


def option_dest(flag: str) -> str:
    """The attribute argparse stores ``flag`` under: ``--default-ttl`` is ``default_ttl``."""
    return flag[2:].replace("-", "_")


class ProfileOptionError(Exception):
    """The profile options name no valid profile; the text says which option and why."""


def add_profile_options(parser: argparse.ArgumentParser) -> None:
    """Add ``--profile``, ``--profile-file`` and the :data:`TTL_FLAGS` to ``parser``."""
    parser.add_argument(
        "--profile",
        choices=sorted(PROFILES),
        default=ANTHROPIC.name,
        help="behaviour where providers differ [%(default)s]",
    )
    parser.add_argument(
        "--profile-file",
        metavar="P.toml",
        default=None,
        help="a custom profile: a TOML table of Profile fields over --profile (or its 'base')",
    )
    for flag, field in TTL_FLAGS.items():
        widens = " (--default-ttl alone widens the range to include it)"
        parser.add_argument(
            flag,
            type=int,
            default=None,
            metavar="SECONDS",
            help=f"override the profile's {field}{widens if flag == '--default-ttl' else ''} "
            "[the profile's]",
        )


def journal_header(profile: Profile) -> dict[str, Any]:
    """The first line of ``serve --journal FILE``: every field of the profile it serves.

    >>> header = journal_header(ANTHROPIC)
    >>> header["type"], header["version"], header["profile"]["default_ttl_seconds"]
    ('journal', 1, 120)
    >>> journal_profile(header) == ANTHROPIC
    True
    """
    return {"type": "journal", "version": JOURNAL_VERSION, "profile": profile_to_mapping(profile)}


def is_journal_header(record: object) -> bool:
    """Whether ``record`` (a parsed line) is a journal's header rather than an entry."""
    return isinstance(record, Mapping) and record.get("type") == "journal"


def journal_profile(header: Mapping[str, Any]) -> Profile:
    """The profile a journal's header records; :class:`ProfileOptionError` saying what is
    wrong with it (a version this reader does not know, a field out of range)."""
    version = header.get("version")
    if version != JOURNAL_VERSION or isinstance(version, bool):
        raise ProfileOptionError(
            f"the journal's header has version {version!r}; this workstate reads version "
            f"{JOURNAL_VERSION} (a newer workstate wrote it?)"
        )
    try:
        return profile_from_mapping(header.get("profile"))  # type: ignore[arg-type]
    except InvalidInputError as exc:  # (it checks that the profile is a mapping itself)
        raise ProfileOptionError(
            f"the journal's header records no valid profile: {exc.message} (key {exc.key}); "
            "give the server's options (--profile, --default-ttl, ...) instead"
        ) from None


def profile_from_options(args: argparse.Namespace, *, recorded: Profile | None = None) -> Profile:
    """The profile the options in ``args`` describe; :class:`ProfileOptionError` if none.

    ``recorded`` is the profile a journal says it was served under: the start when neither
    ``--profile`` (None: not given) nor ``--profile-file`` is, the TTL flags over it.
    """
    if recorded is not None and args.profile is None and args.profile_file is None:
        profile = recorded
    else:
        profile = PROFILES[args.profile or ANTHROPIC.name]
    if args.profile_file is not None:
        try:  # built with attrs.evolve over the base, so the TTL overrides compose with it
            profile = load_profile(args.profile_file, base=profile)
        except InvalidInputError as exc:
            raise ProfileOptionError(f"--profile-file: {exc.message} (key {exc.key})") from None
    overrides = {
        field: value
        for flag, field in TTL_FLAGS.items()
        if (value := getattr(args, option_dest(flag))) is not None
    }
    try:
        return evolve_profile(profile, overrides)
    except ValueError as exc:  # attrs' validators name the field and the rule it broke
        flags = ", ".join(
            f"{flag} {getattr(args, option_dest(flag))}"
            for flag in TTL_FLAGS
            if TTL_FLAGS[flag] in overrides
        )
        raise ProfileOptionError(f"{flags}: {exc}") from None
