"""The one exception type for mistakes a user can fix (bad files, bad configs).

Raised anywhere in the package, caught at the CLI boundary (train.py, scripts/) and printed as
one clear line. Every other exception is a bug and keeps its traceback.
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


def find_user_error(error: BaseException) -> UserError | None:
    """The UserError behind `error`, if any: Hydra's instantiate wraps what constructors raise."""
    from omegaconf.errors import MissingMandatoryValue

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, UserError):
            return error
        if isinstance(error, MissingMandatoryValue):  # a `???` the user was meant to fill in
            key = error.full_key or "a config key"
            return ConfigError(f"{key} has no value (??? in its config): set it on the command line, e.g. {key}=<value>")
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def report_user_error(error: BaseException) -> None:
    """At a command-line boundary: print the UserError behind `error` as one line on stderr.

    Anything else is a bug: it is raised again with its traceback.
    """
    user_error = find_user_error(error)
    if user_error is None:
        raise error
    print(f"error: {user_error}", file=sys.stderr)
