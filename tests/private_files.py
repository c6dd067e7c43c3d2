"""What the private-state tests share: a file's permission bits, read without following a link."""

from __future__ import annotations

import os
import stat
from pathlib import Path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)
