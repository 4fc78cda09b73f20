"""The one exception type for mistakes a user can fix (bad files, bad configs).

Raised anywhere in the package, caught at the CLI boundary (train.py, scripts/) and printed as
one clear line. Every other exception is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """A problem with the user's input: the message says what, where and what to do."""


class DataError(UserError):
    """A data file is missing, corrupt or inconsistent."""


class ConfigError(UserError):
    """A configuration value is impossible; the message names the config key."""


class CheckpointError(UserError):
    """A checkpoint is unreadable or does not match the vocabulary it is used with."""
