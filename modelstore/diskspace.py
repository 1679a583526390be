"""A full disk, told apart from other write errors and said as what happened and what to do.

OpenVINO's C++ streams lose the errno: a save that runs out of space raises `basic_ios::clear: iostream
error`. Such an error counts as a full disk only when the filesystem really has (almost) nothing left.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from modelstore.sizes import human_bytes

# Below this much free space after a failed write, the failure was the disk filling up.
_NEARLY_FULL = 64 << 20


def free_bytes(where: Path) -> int:
    """Free space on the filesystem holding `where`, or its nearest existing parent."""
    for folder in (where, *where.parents):
        if folder.exists():
            return shutil.disk_usage(folder).free
    return 0


def is_disk_full(exc: BaseException, where: Path) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return isinstance(exc, RuntimeError) and "iostream error" in str(exc) and free_bytes(where) < _NEARLY_FULL


def disk_full_message(doing: str, where: Path, needed: int | None = None) -> str:
    """`disk full while …`: where, how much was needed and is free, and what to do."""
    free = free_bytes(where)
    amounts = (
        f"about {human_bytes(needed)} are needed and {human_bytes(free)} are free"
        if needed
        else f"{human_bytes(free)} are free"
    )
    return (
        f"disk full while {doing} under {where}: {amounts}. Free some space (`ovembed rm` models you no "
        "longer need) and try again"
    )
