"""The profile options ``serve`` and ``check`` share: one set of flags, one way to read them.

A journal recorded by ``serve --default-ttl 2`` is only explained by a checker that knows the
default is 2, so ``check`` takes exactly the options ``serve`` does and builds the profile the
same way: the named profile, then the ``--profile-file`` table over it, then the TTL overrides
(:func:`~workstate._profile.evolve_profile`, so ``--default-ttl`` alone widens the range).
"""

from __future__ import annotations

import argparse

from workstate._errors import InvalidInputError
from workstate._profile import ANTHROPIC, PROFILES, Profile, evolve_profile, load_profile

__all__ = [
    "TTL_FLAGS",
    "ProfileOptionError",
    "add_profile_options",
    "option_dest",
    "profile_from_options",
]

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


def profile_from_options(args: argparse.Namespace) -> Profile:
    """The profile the options in ``args`` describe; :class:`ProfileOptionError` if none."""
    profile = PROFILES[args.profile]
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
