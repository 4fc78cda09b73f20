"""Write a file in one step: a temporary beside it, renamed over it once complete.

A kill, a full disk or an exception mid-write leaves the previous file intact (or none at all),
never a truncated one, and no temporary behind. The finished file gets the modes the umask allows
(mkstemp alone would make it 0600). Checkpoints, metrics.json, downloads, exports and cache memos
are all written through `atomic_file`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from attnmt.permissions import publish_permissions


@contextmanager
def atomic_file(target: str | Path, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `target`; on a clean exit it replaces `target`.

        with atomic_file(path) as tmp:
            tmp.write_text(...)

    `fsync` flushes the data to disk before the rename (checkpoints: survive a power cut, not
    only a kill). The parent folder is created if needed.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
        publish_permissions(tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
