"""The one exception type for mistakes a user can fix (bad files, bad configs).

Raised anywhere in the package, caught at the command-line boundary (train.py and every console
command: attnmt.cli.command) and printed as one `error: ...` line with exit code 2. Hydra's own
composition and override errors (a wrong key or group on the command line) count as the user's
too. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with the user's input: the message says what, where and what to do."""


class DataError(UserError):
    """A data file is missing, corrupt or inconsistent."""


class ConfigError(UserError):
    """A configuration value is impossible; the message names the config key."""


class CheckpointError(UserError):
    """A checkpoint is unreadable or does not match the vocabulary it is used with."""


def find_user_error(error: BaseException) -> Exception | None:
    """The user's mistake behind `error`, if any: a UserError (Hydra's instantiate wraps what
    constructors raise), a `???` left unset (as a ConfigError naming the key) or a Hydra
    override/composition error (a wrong key or group on the command line); None for a bug."""
    from hydra.errors import ConfigCompositionException, OverrideParseException
    from omegaconf.errors import MissingMandatoryValue

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, (UserError, ConfigCompositionException, OverrideParseException)):
            return error
        if isinstance(error, MissingMandatoryValue):  # a `???` the user was meant to fill in
            key = error.full_key or "a config key"
            return ConfigError(f"{key} has no value (??? in its config): set it on the command line, e.g. {key}=<value>")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def error_line(error: BaseException) -> str:
    """`error: <message>` on one line (a message's line breaks become spaces)."""
    return "error: " + " ".join(str(error).split())


def report_user_error(error: BaseException) -> None:
    """At a command-line boundary: print the user's mistake behind `error` as one line on stderr.

    Anything else is a bug: it is raised again with its traceback.
    """
    user_error = find_user_error(error)
    if user_error is None:
        raise error
    print(error_line(user_error), file=sys.stderr)
