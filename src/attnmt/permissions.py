"""File modes under the user's umask, for files and folders written through a temporary.

tempfile's mkstemp/mkdtemp create 0600 files and 0700 folders whatever the umask; on a shared
cluster that hides checkpoints, caches and reports from the rest of the group. Everything written
through a temporary and renamed into place gets the modes a plain open()/mkdir() would have given.
"""

from __future__ import annotations

import os
from pathlib import Path


def umask_mode(mode: int = 0o666) -> int:
    """`mode` with the process's umask applied: what a plain open() (0o666) or mkdir() (0o777) gives."""
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def publish_permissions(path: str | Path) -> None:
    """Give a file or a folder (and everything in it) the modes the umask allows."""
    path = Path(path)
    for child in path.rglob("*") if path.is_dir() else ():
        child.chmod(umask_mode(0o777 if child.is_dir() else 0o666))
    path.chmod(umask_mode(0o777 if path.is_dir() else 0o666))
